"""Running an npm-packaged server (Azurite, the local Cosmos server) as a child process of this one.

Both listen on port 0 and print the ports they got, so several instances (test workers, a benchmark, the dev
host) run side by side without racing for free ports: a server is ready once its output has named them all.
"""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class NodeServerError(RuntimeError):
    pass


class NodeServer:
    """A server started from `node_modules/<script>`; subclasses say what it is and which lines name its ports."""

    name = "the server"
    script = ""
    error: type[NodeServerError] = NodeServerError
    listening: re.Pattern[str] = re.compile(r"$^")

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.ports: dict[str, int] = {}
        self.output: list[str] = []

    def arguments(self) -> list[str]:
        return []

    def ready(self) -> bool:
        return bool(self.ports)

    def start(self, timeout: float = 60.0) -> Self:
        script = PROJECT_ROOT / "node_modules" / self.script
        node = shutil.which("node")
        if node is None:
            raise self.error(f"Node.js is not installed: {self.name} needs it (see README, Set-up)")
        if not script.exists():
            raise self.error(f"{script} is missing: run bin/setup (it runs `npm ci`)")
        self.process = subprocess.Popen(
            [node, str(script), *self.arguments()],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self.ready():
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = ""
            if line is None or remaining <= 0:
                self.stop()
                raise self.error(f"{self.name} did not start:\n" + "".join(self.output[-20:]))
            match = self.listening.search(line)
            if match:
                *service, port = match.groups()
                self.ports[service[0] if service else "port"] = int(port)
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

    def __enter__(self) -> Self:
        return self.start() if self.process is None else self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
