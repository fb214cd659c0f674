"""Starting the local Cosmos DB server (`@vercel/cosmosdb-server`, the project's pinned npm package).

It speaks the Cosmos REST API over HTTPS with a self-signed certificate and keeps data in memory. Its
transactional batch does not accept the Python SDK's requests and is not atomic, so the Cosmos store runs on it
only with `COSMOS_NON_ATOMIC_LOCAL`. It listens on port 0 and prints the port it got, so several instances run
side by side without racing for free ports.
"""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from metering.devhost.azurite import PROJECT_ROOT

# The server accepts any key; this is the Cosmos DB emulator's published well-known key, not a secret.
LOCAL_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
_LISTENING = re.compile(r"Ready to accept HTTPS connections at [\d.]+:(\d+)")


class CosmosServerError(RuntimeError):
    pass


@dataclass
class CosmosServer:
    process: subprocess.Popen[str] | None = None
    port: int | None = None
    output: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    @property
    def key(self) -> str:
        return LOCAL_KEY

    def start(self, timeout: float = 60.0) -> CosmosServer:
        script = PROJECT_ROOT / "node_modules" / "@vercel" / "cosmosdb-server" / "lib" / "cli.js"
        node = shutil.which("node")
        if node is None:
            raise CosmosServerError("Node.js is not installed: the local Cosmos server needs it (see README, Set-up)")
        if not script.exists():
            raise CosmosServerError(f"{script} is missing: run bin/setup (it runs `npm ci`)")
        command = [node, str(script), "--port", "0", "--host", "127.0.0.1"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while self.port is None:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = ""
            if line is None or remaining <= 0:
                self.stop()
                raise CosmosServerError("the local Cosmos server did not start:\n" + "".join(self.output[-20:]))
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
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

    def __enter__(self) -> CosmosServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
