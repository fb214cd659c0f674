"""Credentials for identity-based connections.

The Functions host reads `<Connection>__credential` and `<Connection>__clientId` for its bindings, but the
Azure SDK clients the app builds itself do not: this is the one place that turns those settings into a
credential, so the app's own clients authenticate as the same user-assigned identity as its bindings.
"""

from __future__ import annotations

from typing import Any


def credential(kind: str | None, client_id: str | None) -> Any:
    # Imported on first use: azure.identity is slow to import and local runs with a connection string never need it.
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential  # noqa: PLC0415

    if (kind or "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=client_id)
