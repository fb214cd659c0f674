"""The dev host as the benchmarks start it: `python -m metering dev` in a process of its own, on port 0, with its
own Azurite in a temporary data folder, ready once it has printed all it prints at start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class StartedHost:
    process: subprocess.Popen[str]
    base: str  # the HTTP functions' base URL, .../api
    output: str  # what it printed while starting (its storage connection, its hub)

    def printed(self, pattern: str) -> str:
        """The first group of `pattern` in what the host printed while starting."""
        found = re.search(pattern, self.output)
        if found is None:
            self.process.kill()
            raise SystemExit(f"the dev host did not print {pattern!r}:\n{self.output}")
        return found.group(1)

    def stop(self, timeout: float = 60) -> None:
        self.process.terminate()
        self.process.wait(timeout=timeout)


def start_host(name: str, env: Mapping[str, str], args: Sequence[str] = (), timeout: float = 120) -> StartedHost:
    """Start the dev host with `env` added to this environment and `args` added to its command line."""
    data = tempfile.mkdtemp(prefix=f"{name}-azurite-")
    process = subprocess.Popen(
        [sys.executable, "-m", "metering", "dev", "--port", "0", "--data", data, *args],
        cwd=ROOT,
        env={**os.environ, "AzureWebJobsStorage": "UseDevelopmentStorage=true", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Press Ctrl-C") or time.monotonic() > deadline:
            break
    output = "".join(lines)
    base = re.search(r"Functions running at (http://\S+/api)", output)
    if base is None:
        process.kill()
        raise SystemExit(f"the dev host did not start:\n{output}")
    # Keep reading its output, so a full pipe never blocks it.
    threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()
    return StartedHost(process, base.group(1), output)
