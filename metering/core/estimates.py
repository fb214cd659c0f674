"""The error bound of a sampled meter's estimate (pure).

A sampled event kept as one in k stands for k like it; the estimate of a total is then the Horvitz-Thompson sum,
and its variance V is kept exactly in every cell (ledger/batch.py `weighted`). What a read shows is the half-width
of a 95 % normal confidence interval, z * sqrt(V) with z = 1.96, rounded up to 12 decimal places (API.md,
"Exactness of derived figures": a square root is rarely a terminating decimal, and rounding a bound down would
claim more precision than the sample has). The rounding is computed with integers, so it is exact: the smallest
n with n / 10^12 >= 1.96 * sqrt(V).
"""

from __future__ import annotations

import math
from decimal import Decimal

from metering.core import decimals

CONFIDENCE = "95%"
# The two-sided 95 % quantile of the standard normal distribution, as the tables print it.
Z_95 = Decimal("1.96")
PLACES = 12


def error_bound(variance: Decimal | None) -> Decimal:
    """1.96 * sqrt(variance), rounded up to 12 places; 0 for no variance (nothing was sampled)."""
    if variance is None or variance <= 0:
        return decimals.ZERO
    # n^2 >= Z^2 * V * 10^24: scale Z^2 * V to an integer (ceiling), then take the integer square root, upwards.
    squared = decimals.multiply(decimals.multiply(Z_95, Z_95), variance)
    sign, digits, exponent = squared.as_tuple()
    assert isinstance(exponent, int)
    assert sign == 0
    mantissa = int("".join(map(str, digits)))
    shift = exponent + 2 * PLACES
    scaled = mantissa * 10**shift if shift >= 0 else -((-mantissa) // 10**-shift)
    root = math.isqrt(scaled)
    if root * root < scaled:
        root += 1
    return Decimal(root).scaleb(-PLACES, decimals.EXACT)
