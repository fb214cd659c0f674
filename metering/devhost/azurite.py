"""Starting Azurite (Table, Queue and Blob storage) from the project's pinned npm package.

Azurite listens on port 0 and prints the ports it got (node.py); a restart keeps them.
"""

from __future__ import annotations

import re
from pathlib import Path

from metering.devhost.node import PROJECT_ROOT, NodeServer, NodeServerError

__all__ = ["PROJECT_ROOT", "Azurite", "AzuriteError", "connection_string"]
ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key: not a secret.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(NodeServerError):
    pass


def connection_string(blob_port: int, queue_port: int, table_port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT};"
    )


class Azurite(NodeServer):
    name = "Azurite"
    script = "azurite/dist/src/azurite.js"
    error = AzuriteError
    listening = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://[\d.]+:(\d+)")

    def __init__(self, location: Path) -> None:
        super().__init__()
        self.location = location
        self._fixed: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Azurite(location={self.location!r}, ports={self.ports!r})"

    @property
    def connection_string(self) -> str:
        return connection_string(self.ports["Blob"], self.ports["Queue"], self.ports["Table"])

    def arguments(self) -> list[str]:
        self.location.mkdir(parents=True, exist_ok=True)
        ports = {service: str(self._fixed.get(service, 0)) for service in ("Blob", "Queue", "Table")}
        return [
            "--blobPort", ports["Blob"], "--queuePort", ports["Queue"], "--tablePort", ports["Table"],
            "--location", str(self.location),
            "--skipApiVersionCheck", "--disableTelemetry", "--silent",
        ]  # fmt: skip

    def restart(self, timeout: float = 60.0) -> Azurite:
        """Stop, then start again on the same ports with the same data folder: to clients, the storage account
        was away and is back (its connection string still holds)."""
        self._fixed = dict(self.ports)
        self.stop()
        self.ports = {}
        return self.start(timeout)

    def ready(self) -> bool:
        return len(self.ports) == 3
