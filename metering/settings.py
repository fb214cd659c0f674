"""Every setting the app reads, in one place.

Names are the app settings (environment variables) the Functions host and `local.settings.json` provide.
Storage uses the host's own connection, `AzureWebJobsStorage`: a connection string locally (Azurite), or in
Azure the identity-based form (`AzureWebJobsStorage__tableServiceUri` with `__credential` and `__clientId`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cache
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

WEBHOOK_SECRET_PREFIX = "whsec_"
# The Standard Webhooks specification's recommended key sizes.
WEBHOOK_SECRET_BYTES = (24, 64)
LOOPBACK_NAMES = ("localhost",)


class SettingsError(ValueError):
    pass


class LateEventPolicy(StrEnum):
    REVIEW = "review"
    ADJUST = "adjust"


class StoreKind(StrEnum):
    TABLE = "table"
    COSMOS = "cosmos"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    storage_connection: str | None = Field(None, validation_alias="AzureWebJobsStorage")
    storage_table_uri: str | None = Field(None, validation_alias="AzureWebJobsStorage__tableServiceUri")
    storage_credential: str | None = Field(None, validation_alias="AzureWebJobsStorage__credential")
    storage_client_id: str | None = Field(None, validation_alias="AzureWebJobsStorage__clientId")
    storage_blob_uri: str | None = Field(None, validation_alias="AzureWebJobsStorage__blobServiceUri")
    storage_queue_uri: str | None = Field(None, validation_alias="AzureWebJobsStorage__queueServiceUri")

    # Where the metering data lives. Queues and dead-letter blobs stay in storage whichever store is chosen.
    store: StoreKind = Field(StoreKind.TABLE, validation_alias="METERING_STORE")
    # The Cosmos DB store: the endpoint with an identity in Azure; locally the endpoint and a key.
    cosmos_endpoint: str | None = Field(None, validation_alias="COSMOS__accountEndpoint")
    cosmos_credential: str | None = Field(None, validation_alias="COSMOS__credential")
    cosmos_client_id: str | None = Field(None, validation_alias="COSMOS__clientId")
    cosmos_key: str | None = Field(None, validation_alias="COSMOS_KEY", description="Local only; Azure uses identity")
    cosmos_database: str = Field(
        "metering", validation_alias="COSMOS_DATABASE", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
    )
    cosmos_non_atomic_local: bool = Field(
        False,
        validation_alias="COSMOS_NON_ATOMIC_LOCAL",
        description="Commit one operation at a time (the local Cosmos server has no usable transactional batch); "
        "refused unless the endpoint is on loopback",
    )

    # The hub ingest publishes to and the aggregator's trigger reads: a connection string locally (or for the
    # Event Hubs emulator), the namespace with an identity in Azure. Neither set: the local queue transport.
    event_hub_connection: str | None = Field(None, validation_alias="EventHubConnection")
    event_hub_namespace: str | None = Field(None, validation_alias="EventHubConnection__fullyQualifiedNamespace")
    event_hub_credential: str | None = Field(None, validation_alias="EventHubConnection__credential")
    event_hub_client_id: str | None = Field(None, validation_alias="EventHubConnection__clientId")
    event_hub_name: str = Field("usage", validation_alias="EVENTHUB_NAME")
    event_hub_consumer_group: str = Field("aggregator", validation_alias="EVENTHUB_CONSUMER_GROUP")
    local_queue: str = Field(
        "meteringevents",
        validation_alias="METERING_LOCAL_QUEUE",
        pattern=r"^[a-z0-9](-?[a-z0-9]){2,62}$",
        description="Queue standing in for the hub when no Event Hub is configured (the dev host)",
    )
    local_partitions: int = Field(
        4,
        ge=1,
        le=32,
        validation_alias="METERING_LOCAL_PARTITIONS",
        description="Partitions of the local hub (one queue and one feed each), as an Event Hub has partitions",
    )
    close_periods_schedule: str = Field(
        "0 */5 * * * *", validation_alias="CLOSE_PERIODS_SCHEDULE", description="NCRONTAB, seconds first"
    )

    meters_file: str | None = Field(
        None, validation_alias="METERING_METERS_FILE", description="Meter catalog (TOML); the packaged one if unset"
    )
    usage_table: str = Field(
        "meteringusage", validation_alias="METERING_USAGE_TABLE", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$"
    )
    conflicts_table: str = Field(
        "meteringconflicts", validation_alias="METERING_CONFLICTS_TABLE", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$"
    )
    dead_letter_table: str = Field(
        "meteringdeadletters", validation_alias="METERING_DEADLETTER_TABLE", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$"
    )
    dead_letter_container: str = Field(
        "metering-deadletters",
        validation_alias="METERING_DEADLETTER_CONTAINER",
        pattern=r"^[a-z0-9](-?[a-z0-9]){2,62}$",
        description="Blob container for dead-lettered bodies too large for a table property",
    )
    tenants_table: str = Field(
        "meteringtenants", validation_alias="METERING_TENANTS_TABLE", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$"
    )
    statements_table: str = Field(
        "meteringstatements", validation_alias="METERING_STATEMENTS_TABLE", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$"
    )
    late_events_table: str = Field(
        "meteringlateevents", validation_alias="METERING_LATE_EVENTS_TABLE", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$"
    )
    control_table: str = Field(
        "meteringcontrol",
        validation_alias="METERING_CONTROL_TABLE",
        pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$",
        description="Open-period index, applied hub positions, alert records and the outbox",
    )
    journal_table: str = Field(
        "meteringjournal",
        validation_alias="METERING_JOURNAL_TABLE",
        pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$",
        description="Changes that do not travel through the hub (cancels, late-event carries), for audits and rebuilds",
    )
    exports_table: str = Field(
        "meteringexports",
        validation_alias="METERING_EXPORTS_TABLE",
        pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$",
        description="What each billing target (Stripe, the Azure Marketplace) was sent and acknowledged",
    )
    archive_container: str = Field(
        "usage-archive",
        validation_alias="METERING_ARCHIVE_CONTAINER",
        pattern=r"^[a-z0-9](-?[a-z0-9]){2,62}$",
        description="Blob container of the raw archive: Event Hubs Capture's in Azure, the dev host's locally",
    )
    notifications_queue: str = Field(
        "meteringnotifications",
        validation_alias="METERING_NOTIFICATIONS_QUEUE",
        pattern=r"^[a-z0-9](-?[a-z0-9]){2,62}$",
        description="Storage queue receiving period.closed and quota.threshold_crossed messages",
    )
    plans_file: str | None = Field(
        None, validation_alias="METERING_PLANS_FILE", description="Plan catalog (TOML); the packaged one if unset"
    )
    grace_hours: int = Field(
        24,
        ge=0,
        le=24 * 31,
        validation_alias="METERING_GRACE_HOURS",
        description="Hours after a period ends during which late events still count toward it",
    )
    dedupe_retention_days: int = Field(
        35,
        ge=1,
        le=3650,
        validation_alias="METERING_DEDUPE_RETENTION_DAYS",
        description="Days a closed period keeps its dedupe markers (longer than hub retention and client retries)",
    )
    late_event_policy: LateEventPolicy = Field(
        LateEventPolicy.REVIEW,
        validation_alias="METERING_LATE_EVENT_POLICY",
        description="review: late events wait in the late-events table; adjust: counted in the current period",
    )
    alert_thresholds: str = Field(
        "80,100",
        validation_alias="METERING_ALERT_THRESHOLDS",
        pattern=r"^\s*\d{1,3}(\.\d+)?\s*(,\s*\d{1,3}(\.\d+)?\s*)*$",
        description="Percentages of a hard limit whose crossing sends a quota.threshold_crossed alert",
    )
    max_event_age_days: int = Field(
        35,
        ge=1,
        le=365,
        validation_alias="METERING_MAX_EVENT_AGE_DAYS",
        description="Oldest event timestamp ingest accepts, in days: at most the grace plus the dedupe retention",
    )
    max_future_minutes: int = Field(5, ge=0, le=1440, validation_alias="METERING_MAX_FUTURE_MINUTES")

    # Webhooks: every notification also POSTed to one URL, signed per the Standard Webhooks specification.
    webhook_url: str | None = Field(
        None,
        validation_alias="METERING_WEBHOOK_URL",
        description="Receiver of every notification; https, or http to a loopback host; empty: no webhooks",
    )
    webhook_secret: str | None = Field(
        None,
        validation_alias="METERING_WEBHOOK_SECRET",
        repr=False,
        description="Signing secret, whsec_ + base64 of 24 to 64 random bytes",
    )
    webhook_timeout_seconds: float = Field(
        10, gt=0, le=60, validation_alias="METERING_WEBHOOK_TIMEOUT_SECONDS", description="Per delivery attempt"
    )
    deliver_webhooks_schedule: str = Field(
        "*/30 * * * * *", validation_alias="DELIVER_WEBHOOKS_SCHEDULE", description="NCRONTAB, seconds first"
    )

    # The tenant portal: its tokens are signed with the secret (and, while it is rotated, the previous one is
    # still accepted); the origins that may frame it. No secret: no portal.
    portal_secret: str | None = Field(
        None,
        validation_alias="METERING_PORTAL_SECRET",
        repr=False,
        description="HS256 key of portal tokens, at least 32 characters; empty: the portal is off",
    )
    portal_secret_previous: str | None = Field(
        None,
        validation_alias="METERING_PORTAL_SECRET_PREVIOUS",
        repr=False,
        description="The secret before a rotation: tokens it signed are still accepted until they expire",
    )
    portal_frame_ancestors: str = Field(
        "'none'",
        validation_alias="METERING_PORTAL_FRAME_ANCESTORS",
        description="CSP frame-ancestors of the portal page: the origins that may embed it",
    )

    # Billing exports: usage sent exactly once to Stripe and the Azure Marketplace (billing/exports/).
    export_schedule: str = Field(
        "0 */5 * * * *", validation_alias="EXPORT_SCHEDULE", description="NCRONTAB, seconds first"
    )
    export_settle_minutes: int = Field(
        60,
        ge=0,
        le=24 * 60,
        validation_alias="EXPORT_SETTLE_MINUTES",
        description="An hour is exported once its end plus this is behind every hub partition's applied position",
    )
    export_timeout_seconds: float = Field(
        10, gt=0, le=60, validation_alias="METERING_EXPORT_TIMEOUT_SECONDS", description="Per request to a target"
    )
    stripe_api_key: str | None = Field(
        None,
        validation_alias="METERING_STRIPE_API_KEY",
        repr=False,
        description="A Stripe secret or restricted key (meter events write, meters read); empty: no Stripe export",
    )
    stripe_api_base: str | None = Field(
        None,
        validation_alias="METERING_STRIPE_API_BASE",
        description="Stripe's API base URL (tests point it at a local server); empty: api.stripe.com",
    )
    stripe_decimals: bool = Field(
        False,
        validation_alias="METERING_STRIPE_DECIMALS",
        description="Whether the Stripe account takes decimal meter event values (Stripe enables it on request); "
        "without, only whole numbers are sent and a fraction is reported as a difference",
    )
    marketplace_enabled: bool = Field(
        False, validation_alias="METERING_MARKETPLACE_ENABLED", description="Send usage to the Azure Marketplace"
    )
    marketplace_api_base: str = Field(
        "https://marketplaceapi.microsoft.com",
        validation_alias="METERING_MARKETPLACE_API_BASE",
        description="The Marketplace metering API's base URL (tests point it at a local server)",
    )
    marketplace_identity_client_id: str | None = Field(
        None,
        validation_alias="METERING_MARKETPLACE_IDENTITY_CLIENT_ID",
        description="Client ID of the managed identity the Marketplace token is obtained with",
    )
    marketplace_app_id: str | None = Field(
        None,
        validation_alias="METERING_MARKETPLACE_APP_ID",
        description="Client ID of the Entra app registration named in the offer's technical configuration "
        "(SaaS offers); the identity signs in as it through a federated credential. Empty: the identity's own "
        "token (managed application offers)",
    )
    marketplace_tenant_id: str | None = Field(
        None,
        validation_alias="METERING_MARKETPLACE_TENANT_ID",
        description="Entra tenant of the app registration",
    )

    @field_validator(
        "meters_file",
        "plans_file",
        "webhook_url",
        "webhook_secret",
        "portal_secret",
        "portal_secret_previous",
        mode="before",
    )
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        # An app setting cannot always be removed, but it can be left empty: that means unset (the packaged
        # catalog; no webhooks).
        return None if value == "" else value

    @field_validator(
        "stripe_api_key",
        "stripe_api_base",
        "marketplace_identity_client_id",
        "marketplace_app_id",
        "marketplace_tenant_id",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Empty: no Stripe export; Stripe's own API; the identity's own token.
        return None if value == "" else value

    @field_validator("stripe_api_base", "marketplace_api_base")
    @classmethod
    def _target_url(cls, value: str | None) -> str | None:
        # Usage and a secret key travel to it: https, or http to a local test server.
        return None if value is None else check_webhook_url(value).rstrip("/")

    @model_validator(mode="after")
    def _marketplace_app_has_its_tenant(self) -> Settings:
        if self.marketplace_app_id is not None and self.marketplace_tenant_id is None:
            raise SettingsError(
                "METERING_MARKETPLACE_APP_ID is set but METERING_MARKETPLACE_TENANT_ID is not: the app registration's "
                "token is issued by its Entra tenant"
            )
        return self

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else check_webhook_url(value)

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str | None) -> str | None:
        if value is not None:
            check_webhook_secret(value)
        return value

    @field_validator("portal_secret", "portal_secret_previous")
    @classmethod
    def _portal_secret(cls, value: str | None) -> str | None:
        if value is not None:
            check_portal_secret(value)
        return value

    @field_validator("portal_frame_ancestors", mode="before")
    @classmethod
    def _frame_ancestors(cls, value: object) -> object:
        return "'none'" if value == "" else value

    @field_validator("portal_frame_ancestors")
    @classmethod
    def _frame_ancestors_sources(cls, value: str) -> str:
        return check_frame_ancestors(value)

    @model_validator(mode="after")
    def _portal_rotation(self) -> Settings:
        if self.portal_secret_previous is not None and self.portal_secret is None:
            raise SettingsError(
                "METERING_PORTAL_SECRET_PREVIOUS is set but METERING_PORTAL_SECRET is not: during a rotation the "
                "new secret signs and both verify"
            )
        return self

    @model_validator(mode="after")
    def _webhook_signed(self) -> Settings:
        if self.webhook_url is not None and self.webhook_secret is None:
            raise SettingsError(
                "METERING_WEBHOOK_URL is set but METERING_WEBHOOK_SECRET is not: every delivery is signed "
                "(a secret is whsec_ + base64 of 24 to 64 random bytes)"
            )
        return self

    @model_validator(mode="after")
    def _storage_given(self) -> Settings:
        if not self.storage_connection and not self.storage_table_uri:
            raise SettingsError(
                "no storage configured: set AzureWebJobsStorage (a connection string) or "
                "AzureWebJobsStorage__tableServiceUri (identity-based)"
            )
        if self.store is StoreKind.COSMOS and not self.cosmos_endpoint:
            raise SettingsError("METERING_STORE is cosmos: set COSMOS__accountEndpoint")
        return self

    @model_validator(mode="after")
    def _retries_stay_within_the_markers(self) -> Settings:
        # A period's dedupe markers live until its end plus grace plus the retention. An event older than that
        # may belong to a period whose markers are purged, and a retry of it would be counted again.
        if self.max_event_age > self.grace + self.dedupe_retention:
            raise SettingsError(
                f"METERING_MAX_EVENT_AGE_DAYS ({self.max_event_age_days}) must be at most "
                f"METERING_GRACE_HOURS/24 + METERING_DEDUPE_RETENTION_DAYS "
                f"({self.grace_hours}/24 + {self.dedupe_retention_days} days): an event older than that may belong "
                "to a period whose dedupe markers are purged, and a retry of it would be counted again"
            )
        return self

    @model_validator(mode="after")
    def _local_queues_named(self) -> Settings:
        longest = self.local_queues[-1]
        if len(longest) > 63:
            raise SettingsError(
                f"METERING_LOCAL_QUEUE ({self.local_queue!r}) is too long for {self.local_partitions} partitions: "
                f"the queue {longest!r} would have more than 63 characters"
            )
        return self

    @property
    def local_queues(self) -> list[str]:
        """The queues of the local hub's partitions: the queue itself for one, `<queue>-<i>` for several."""
        if self.local_partitions == 1:
            return [self.local_queue]
        return [f"{self.local_queue}-{i}" for i in range(self.local_partitions)]

    @property
    def uses_event_hub(self) -> bool:
        return bool(self.event_hub_connection or self.event_hub_namespace)

    @property
    def grace(self) -> timedelta:
        return timedelta(hours=self.grace_hours)

    @property
    def dedupe_retention(self) -> timedelta:
        return timedelta(days=self.dedupe_retention_days)

    @property
    def thresholds(self) -> tuple[Decimal, ...]:
        return tuple(sorted({Decimal(part.strip()) for part in self.alert_thresholds.split(",")}))

    @property
    def max_event_age(self) -> timedelta:
        return timedelta(days=self.max_event_age_days)

    @property
    def max_future(self) -> timedelta:
        return timedelta(minutes=self.max_future_minutes)

    @property
    def export_settle(self) -> timedelta:
        return timedelta(minutes=self.export_settle_minutes)


def check_webhook_url(url: str) -> str:
    """A receiver is https, or http to this machine (a local receiver): a notification carries a tenant's usage
    and a valid signature, so it does not cross a network in clear text. The URL has no user or password (it
    is logged) and no fragment (never sent)."""
    parsed = urlsplit(url)
    host = parsed.hostname or ""
    if parsed.scheme not in ("https", "http") or not host:
        raise ValueError("must be an absolute https URL (or http to a loopback host), e.g. https://example.com/hooks")
    if parsed.username or parsed.password:
        raise ValueError("must not carry a user or password (the URL is logged; authenticate by the signature)")
    if parsed.fragment:
        raise ValueError("must not have a #fragment (it is never sent)")
    if parsed.scheme == "http" and not _is_loopback(host):
        raise ValueError(
            f"must be https: http is allowed only to a loopback host (127.0.0.1, ::1, localhost), not {host}"
        )
    return url


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_secret(secret: str) -> bytes:
    """The key a `whsec_` secret stands for; the message never includes the secret."""
    low, high = WEBHOOK_SECRET_BYTES
    rule = f"must be {WEBHOOK_SECRET_PREFIX} followed by the base64 of {low} to {high} random bytes"
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"{rule} (it does not start with {WEBHOOK_SECRET_PREFIX})")
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{rule} (what follows the prefix is not base64)") from None
    if not low <= len(key) <= high:
        raise ValueError(f"{rule} (it holds {len(key)} bytes)")
    return key


PORTAL_SECRET_MIN_LENGTH = 32
# A CSP source expression as frame-ancestors takes one: a keyword, or scheme, host (a leading *. allowed) and
# port (or *) in any combination, with no path but "/". Nothing else reaches the header: no ; or , (which would start
# another directive or policy), no quotes but the keywords'.
_FRAME_SOURCE = re.compile(
    r"^(?:'none'|'self'|[a-z][a-z0-9+.-]*:|(?:[a-z][a-z0-9+.-]*://)?(?:\*|(?:\*\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*)"
    r"(?::(?:\d{1,5}|\*))?/?)$",
    re.IGNORECASE,
)


def check_portal_secret(secret: str) -> None:
    """HS256 wants a key at least as long as its hash (RFC 7518 3.2); the message never includes the secret."""
    if len(secret) < PORTAL_SECRET_MIN_LENGTH:
        raise ValueError(
            f"must be at least {PORTAL_SECRET_MIN_LENGTH} characters (it has {len(secret)}): e.g. the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def check_frame_ancestors(value: str) -> str:
    """The sources of a CSP frame-ancestors directive, separated by spaces: 'none' alone, or 'self' and origins
    such as https://app.example.com or https://*.example.com."""
    # The keywords are quoted in CSP; a setting may leave the quotes out (they are awkward in some shells).
    sources = [f"'{word}'" if word in ("none", "self") else word for word in value.split()]
    if not sources:
        raise ValueError("must name at least one source, or 'none'")
    for source in sources:
        if not _FRAME_SOURCE.fullmatch(source):
            raise ValueError(
                f"{source!r} is not a frame-ancestors source: use 'none', 'self' or origins such as "
                "https://app.example.com or https://*.example.com, separated by spaces"
            )
    if "'none'" in sources and len(sources) > 1:
        raise ValueError("'none' cannot be combined with other sources")
    return " ".join(sources)


@cache
def load_settings() -> Settings:
    return Settings()  # type: ignore[call-arg]
