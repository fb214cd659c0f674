"""Starting the local Cosmos DB server (`@vercel/cosmosdb-server`, the project's pinned npm package).

It speaks the Cosmos REST API over HTTPS with a self-signed certificate and keeps data in memory. Its
transactional batch does not accept the Python SDK's requests and is not atomic, so the Cosmos store runs on it
only with `COSMOS_NON_ATOMIC_LOCAL`. It listens on port 0 and prints the port it got (node.py).
"""

from __future__ import annotations

import re

from metering.devhost.node import NodeServer, NodeServerError

# The server accepts any key; this is the Cosmos DB emulator's published well-known key, not a secret.
LOCAL_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


class CosmosServerError(NodeServerError):
    pass


class CosmosServer(NodeServer):
    name = "the local Cosmos server"
    script = "@vercel/cosmosdb-server/lib/cli.js"
    error = CosmosServerError
    listening = re.compile(r"Ready to accept HTTPS connections at [\d.]+:(\d+)")

    def __repr__(self) -> str:
        return f"CosmosServer(port={self.port!r})"

    @property
    def port(self) -> int | None:
        return self.ports.get("port")

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    @property
    def key(self) -> str:
        return LOCAL_KEY

    def arguments(self) -> list[str]:
        return ["--port", "0", "--host", "127.0.0.1"]
