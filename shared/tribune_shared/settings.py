"""Settings: one class per service, each with its own env prefix.

Every field can be set as ``<SERVICE>_<FIELD>``; platform-wide values fall back to
``TRIBUNE_<FIELD>`` so one environment file configures the whole stack.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEV_SECRET = "change-me-dev-secret-0000000000000000"


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class ServiceSettings(BaseSettings):
    """Settings every Tribune process needs. Subclass per service and set ``service_name``."""

    service_name: ClassVar[str] = "tribune"
    secret_fields: ClassVar[tuple[str, ...]] = ("identity_secret",)

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    environment: Environment = Environment.development
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    worker_port: int = Field(default=8100, ge=1, le=65535, description="worker /metrics, /health")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    mongo_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    database_prefix: str = "tribune_"
    identity_secret: str = DEV_SECRET
    identity_ttl_seconds: int = Field(default=120, ge=5, le=3600)

    # Consumer limits
    consumer_max_retries: int = Field(default=3, ge=0, le=100)
    consumer_retry_backoff_seconds: float = Field(default=0.2, ge=0, le=60)
    # 100: measured under a 5,000-row import, a smaller batch holds the local store (which
    # runs one command at a time) for less time per command, so an urgent event's commands
    # queue less behind it; the fetch below keeps batches full.
    consumer_batch_max_records: int = Field(
        default=100, ge=1, le=10_000, description="records per poll and per partition batch"
    )
    # One at a time by default: measured on the local store (one process serialising every
    # command), concurrent batches of four services' consumers queue every other command,
    # a revocation's included, behind their bulk writes. Raise it on a MongoDB replica set.
    consumer_partition_concurrency: int = Field(
        default=1, ge=1, le=256, description="partition batches handled at once per consumer"
    )
    consumer_fetch_min_bytes: int = Field(
        default=256 * 1024,
        ge=1,
        le=64 * 1024 * 1024,
        description="bulk lane: bytes the broker gathers before answering a fetch",
    )
    consumer_fetch_max_wait_seconds: float = Field(
        default=0.25, gt=0, le=10, description="bulk lane: longest a fetch waits for them"
    )
    consumer_shutdown_timeout_seconds: float = Field(default=20, gt=0, le=600)
    # Store transactions (every command and every consumer batch runs in one)
    transaction_retry_seconds: float = Field(
        default=60,
        ge=0,
        le=3600,
        description="how long a transaction that lost a write conflict is retried (a killed "
        "worker's orphaned transaction holds its documents until the store aborts it)",
    )
    transaction_retry_backoff_seconds: float = Field(default=0.02, ge=0, le=5)
    # Read-your-writes across services (tribune_shared.consistency)
    consistency_wait_seconds: float = Field(
        default=5, ge=0, le=120, description="how long a request waits for the events it names"
    )
    consistency_horizon_seconds: float = Field(
        default=600, gt=0, le=86_400, description="older entries of a token are dropped"
    )
    consistency_max_entries: int = Field(default=32, ge=1, le=256)
    consistency_poll_seconds: float = Field(default=0.01, gt=0, le=5)
    # Outbox relay limits
    outbox_poll_interval_seconds: float = Field(default=0.05, gt=0, le=60)
    #: wake the relay on each outbox insert (a change stream) rather than at the next poll
    outbox_wake_on_insert: bool = False
    outbox_batch_size: int = Field(default=500, ge=1, le=10_000)
    outbox_retention_hours: float = Field(default=72, gt=0, le=24 * 365)
    processed_events_retention_days: float = Field(default=30, gt=0, le=3650)
    outbox_lease_seconds: float = Field(default=10, gt=0, le=600)
    # HTTP limits
    request_timeout_seconds: float = Field(default=10, gt=0, le=300)
    readiness_timeout_seconds: float = Field(default=2, gt=0, le=60)
    max_page_size: int = Field(default=200, ge=1, le=10_000)
    # Key vault (crypto-shredding of personal fields in events; see tribune_shared.vault)
    vault_mongo_url: str | None = Field(
        default=None, description="the vault's server; default: mongo_url (a KMS in production)"
    )
    vault_database: str = Field(default="", description="default: <database_prefix>vault")
    vault_key_cache_seconds: float = Field(default=30, ge=0, le=3600)
    vault_key_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)

    @property
    def database_name(self) -> str:
        return f"{self.database_prefix}{self.service_name}"

    @property
    def vault_database_name(self) -> str:
        return self.vault_database or f"{self.database_prefix}vault"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> ServiceSettings:
        # Tests run with generated secrets too, so only local development may use defaults.
        if self.environment is not Environment.development:
            for name in self.secret_fields:
                value = str(getattr(self, name))
                if value == DEV_SECRET or len(value) < 32:
                    prefix = self.model_config.get("env_prefix", "")
                    raise ValueError(
                        f"{prefix}{name.upper()} must be set to a strong secret (>= 32 chars) "
                        f"outside development"
                    )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        platform_env = EnvSettingsSource(settings_cls, env_prefix="TRIBUNE_")
        return init_settings, env_settings, platform_env, dotenv_settings, file_secret_settings
