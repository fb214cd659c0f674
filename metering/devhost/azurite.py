"""Starting Azurite (Table, Queue and Blob storage) from the project's pinned npm package.

Azurite listens on port 0 and prints the ports it got, so several instances (test workers, a benchmark, the
dev host) run side by side without racing for free ports.
"""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key: not a secret.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://[\d.]+:(\d+)")


class AzuriteError(RuntimeError):
    pass


def connection_string(blob_port: int, queue_port: int, table_port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT};"
    )


@dataclass
class Azurite:
    location: Path
    process: subprocess.Popen[str] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    @property
    def connection_string(self) -> str:
        return connection_string(self.ports["Blob"], self.ports["Queue"], self.ports["Table"])

    def start(self, timeout: float = 60.0) -> Azurite:
        script = PROJECT_ROOT / "node_modules" / "azurite" / "dist" / "src" / "azurite.js"
        node = shutil.which("node")
        if node is None:
            raise AzuriteError("Node.js is not installed: Azurite needs it (see README, Set-up)")
        if not script.exists():
            raise AzuriteError(f"{script} is missing: run bin/setup (it runs `npm ci`)")
        self.location.mkdir(parents=True, exist_ok=True)
        command = [
            node, str(script),
            "--blobPort", "0", "--queuePort", "0", "--tablePort", "0",
            "--location", str(self.location),
            "--skipApiVersionCheck", "--disableTelemetry", "--silent",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while len(self.ports) < 3:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = ""
            if line is None or remaining <= 0:
                self.stop()
                raise AzuriteError("Azurite did not start:\n" + "".join(self.output[-20:]))
            match = _LISTENING.search(line)
            if match:
                self.ports[match.group(1)] = int(match.group(2))
        return self

    def _drain(self, lines: queue.Queue[str | None]) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            del self.output[:-200]
            lines.put(line)
        lines.put(None)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> Azurite:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
