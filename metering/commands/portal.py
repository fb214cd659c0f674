"""`metering portal-url` and `metering portal-revoke`: a tenant's portal link (a fresh token in its fragment), and
revoking every portal token issued to a tenant so far (admin key)."""

from __future__ import annotations

from typing import Annotated

import typer

from metering.commands.common import (
    DEFAULT_URL,
    AdminKey,
    Format,
    OutputFormat,
    Url,
    connect,
    echo_json,
    err,
    service_errors,
)


def portal_url(
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    ttl: Annotated[
        int, typer.Option("--ttl", min=1, max=86_400, help="Seconds the token lives (at most a day)")
    ] = 3600,
    output: Format = OutputFormat.TABLE,
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Print the URL of a tenant's portal page with a new token: what a SaaS puts in its iframe."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        link = client.portal_token(tenant, ttl_seconds=ttl)
    if output is not OutputFormat.TABLE:
        echo_json(link)
        return
    # The URL alone on stdout, so URL=$(metering portal-url acme) works; when it expires on stderr.
    typer.echo(link.url)
    err.print(f"expires {link.expires_at.isoformat()} (token id {link.token_id})", highlight=False)


def portal_revoke(
    tenant: Annotated[str, typer.Argument(help="Tenant id")],
    url: Url = DEFAULT_URL,
    admin_key: AdminKey = None,
) -> None:
    """Revoke every portal token issued to the tenant until now (its tokens_not_before setting)."""
    with connect(url, admin_key, admin=True) as client, service_errors(url):
        settings = client.set_tenant(tenant, tokens_not_before="now")
    revoked = settings.tokens_not_before
    typer.echo(f"portal tokens of {tenant} issued before {revoked.isoformat() if revoked else 'now'} are refused")
