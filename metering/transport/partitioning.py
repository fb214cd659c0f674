"""Which partition of a hub a partition key goes to, as Event Hubs chooses it (pure).

The service hashes the key's UTF-8 bytes with Bob Jenkins' lookup3 (hashlittle2, both seeds 0), folds the two
32-bit results into a signed 16-bit value and takes its absolute remainder by the partition count. The Azure
SDKs carry ports of the service's code for their client-side partitioning (the Java SDK's PartitionResolver:
bytes read as Java's signed bytes in the tail, the remainder truncated as in Java and C#); this follows them, so a
key lands on the same partition index locally as in a hub with as many partitions. What matters here is that the
choice is consistent: every message of one key goes to one partition, read by one feed.
"""

from __future__ import annotations

_M = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = ((a - c) & _M) ^ _rot(c, 4)
    c = (c + b) & _M
    b = ((b - a) & _M) ^ _rot(a, 6)
    a = (a + c) & _M
    c = ((c - b) & _M) ^ _rot(b, 8)
    b = (b + a) & _M
    a = ((a - c) & _M) ^ _rot(c, 16)
    c = (c + b) & _M
    b = ((b - a) & _M) ^ _rot(a, 19)
    a = (a + c) & _M
    c = ((c - b) & _M) ^ _rot(b, 4)
    b = (b + a) & _M
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    c = ((c ^ b) - _rot(b, 14)) & _M
    a = ((a ^ c) - _rot(c, 11)) & _M
    b = ((b ^ a) - _rot(a, 25)) & _M
    c = ((c ^ b) - _rot(b, 16)) & _M
    a = ((a ^ c) - _rot(c, 4)) & _M
    b = ((b ^ a) - _rot(a, 14)) & _M
    c = ((c ^ b) - _rot(b, 24)) & _M
    return a, b, c


def _signed(byte: int) -> int:
    return byte - 256 if byte > 127 else byte


def lookup3(data: bytes) -> tuple[int, int]:
    """hashlittle2 of `data` with both seeds 0: the pair (c, b)."""
    a = b = c = (0xDEADBEEF + len(data)) & _M
    i, size = 0, len(data)

    def word(at: int) -> int:
        return int.from_bytes(data[at : at + 4], "little")

    while size > 12:
        a, b, c = (a + word(i)) & _M, (b + word(i + 4)) & _M, (c + word(i + 8)) & _M
        a, b, c = _mix(a, b, c)
        i += 12
        size -= 12
    if size == 0:
        return c, b
    if size == 12:
        a, b, c = a + word(i), b + word(i + 4), c + word(i + 8)
    elif size >= 8:
        # The tail's last bytes one by one (signed, as the service reads them), then the whole words.
        for offset, shift in ((10, 16), (9, 8), (8, 0)):
            if size > offset:
                c += _signed(data[i + offset]) << shift
        a, b = a + word(i), b + word(i + 4)
    elif size >= 4:
        for offset, shift in ((6, 16), (5, 8), (4, 0)):
            if size > offset:
                b += _signed(data[i + offset]) << shift
        a += word(i)
    else:
        for offset, shift in ((2, 16), (1, 8), (0, 0)):
            if size > offset:
                a += _signed(data[i + offset]) << shift
    a, b, c = _final(a & _M, b & _M, c & _M)
    return c, b


def hash_code(partition_key: str) -> int:
    """The key's signed 16-bit hash, as the service computes it."""
    c, b = lookup3(partition_key.encode())
    folded = (c ^ b) & 0xFFFF
    return folded - 0x10000 if folded > 0x7FFF else folded


def partition_for(partition_key: str, partitions: int) -> int:
    """The index of the partition a key's messages go to, among `partitions`."""
    return abs(hash_code(partition_key)) % partitions
