"""Every setting the app reads, in one place.

Names are the app settings (environment variables) the Functions host and `local.settings.json` provide.
Storage uses the host's own connection, `AzureWebJobsStorage`: a connection string locally (Azurite), or in
Azure the identity-based form (`AzureWebJobsStorage__tableServiceUri` with `__credential` and `__clientId`).
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    pass


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    storage_connection: str | None = Field(None, validation_alias="AzureWebJobsStorage")
    storage_table_uri: str | None = Field(None, validation_alias="AzureWebJobsStorage__tableServiceUri")
    storage_credential: str | None = Field(None, validation_alias="AzureWebJobsStorage__credential")
    storage_client_id: str | None = Field(None, validation_alias="AzureWebJobsStorage__clientId")

    meters_file: str | None = Field(
        None, validation_alias="METERING_METERS_FILE", description="Meter catalog (TOML); the packaged one if unset"
    )
    usage_table: str = Field(
        "meteringusage", validation_alias="METERING_USAGE_TABLE", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$"
    )
    conflicts_table: str = Field(
        "meteringconflicts", validation_alias="METERING_CONFLICTS_TABLE", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$"
    )
    max_event_age_days: int = Field(
        35,
        ge=1,
        le=365,
        validation_alias=AliasChoices("METERING_MAX_EVENT_AGE_DAYS"),
        description="Oldest event timestamp ingest accepts, in days (keep it below the dedupe retention)",
    )
    max_future_minutes: int = Field(5, ge=0, le=1440, validation_alias="METERING_MAX_FUTURE_MINUTES")

    @model_validator(mode="after")
    def _storage_given(self) -> Settings:
        if not self.storage_connection and not self.storage_table_uri:
            raise SettingsError(
                "no storage configured: set AzureWebJobsStorage (a connection string) or "
                "AzureWebJobsStorage__tableServiceUri (identity-based)"
            )
        return self

    @property
    def max_event_age(self) -> timedelta:
        return timedelta(days=self.max_event_age_days)

    @property
    def max_future(self) -> timedelta:
        return timedelta(minutes=self.max_future_minutes)


@cache
def load_settings() -> Settings:
    return Settings()  # type: ignore[call-arg]
