"""Settings: one class per service, each with its own env prefix.

Every field can be set as ``<SERVICE>_<FIELD>``; platform-wide values fall back to
``TRIBUNE_<FIELD>`` so one environment file configures the whole stack.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEV_SECRET = "change-me-dev-secret-0000000000000000"


#: every setting must be at least this long to count as a secret outside development
MIN_SECRET_LENGTH = 32


class Environment(StrEnum):
    """Where a process runs. Unset means production: only an explicit ``development``
    accepts the published development secrets (anyone could sign identities with them)."""

    development = "development"
    #: the test suite and benchmarks: generated secrets, as in production
    test = "test"
    production = "production"


#: what a Kafka client may connect with (``kafka_security_protocol``)
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512"]


class ServiceSettings(BaseSettings):
    """Settings every Tribune process needs. Subclass per service and set ``service_name``."""

    service_name: ClassVar[str] = "tribune"
    secret_fields: ClassVar[tuple[str, ...]] = ("identity_secret",)
    #: whether this service seals or opens personal fields (the gateway does neither: it
    #: never holds the vault's KEK)
    uses_vault: ClassVar[bool] = True

    # "__" sets one entry of a map: TRIBUNE_EVENT_SIGNING_KEYS__CONTACTS=<key>
    model_config = SettingsConfigDict(
        extra="ignore", validate_default=True, env_nested_delimiter="__"
    )

    environment: Environment = Environment.production
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    #: an idle keep-alive connection is closed after this long. Longer than every client's
    #: own idle expiry (the gateway's GATEWAY_UPSTREAM_KEEPALIVE_EXPIRY_SECONDS, 30 s;
    #: common HTTP clients, 5 s): the client must be the one to drop an idle connection,
    #: or a request it sends on one the server is closing fails (the gateway's 503s
    #: "Server disconnected" in the forms burst, with uvicorn's 5 s default)
    http_keepalive_seconds: float = Field(default=75, ge=1, le=3_600)
    worker_port: int = Field(default=8100, ge=1, le=65535, description="worker /metrics, /health")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Kafka authentication and encryption, for every producer, consumer and admin client
    # (tribune_shared.bus.kafka_options; in production it refuses to connect unauthenticated)
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = Field(default=None, description="this service's principal")
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(
        default=None,
        description="CA bundle the broker's certificate is checked against (default: the system's)",
    )
    kafka_ssl_certfile: str | None = Field(default=None, description="client certificate (mTLS)")
    kafka_ssl_keyfile: str | None = Field(default=None, description="its private key")
    #: HMAC-SHA256 keys of the event producers, by service name: a service signs what it
    #: publishes with its own and checks what it consumes with its producers'. A value may
    #: list keys separated by commas: the first signs, every one verifies (rotation).
    #: Development and test derive them from identity_secret when unset; in production a
    #: worker without its own key, or without the key of a producer it consumes, does not
    #: start. API processes publish nothing (their relay is the worker's) and need none.
    event_signing_keys: dict[str, SecretStr] = Field(default_factory=dict)
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
    # queue less behind it; the fetch below keeps batches full. 500 was measured against it
    # back to back (README, issue 8's table): the digest ran 3.61x the import against 1.75x
    # and revocations during it p99 9.6 s against 2.1 s; 50 ran it 3.33x against 1.66x
    # (each transaction's fixed cost paid twice as often).
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
    # The lag gauge is read by Prometheus every few seconds; refreshed after every poll it
    # took about 15 % of a busy consumer loop's samples (py-spy on bench/consumer_throughput:
    # a gauge child per assigned partition, over a hundred for messaging). The bench's
    # throughput stayed within its noise either way (README), so this saves CPU, not rate.
    consumer_lag_report_seconds: float = Field(
        default=1.0,
        ge=0,
        le=300,
        description="how often a consumer refreshes its lag gauge (0: after every poll)",
    )
    # An event whose handler awaits another topic's fact (subscriptions.Awaiting) holds its
    # partition and is tried again at growing intervals (from the retry backoff, at most
    # 5 s); it is parked only when the fact has not come for this long.
    consumer_dependency_wait_seconds: float = Field(
        default=300,
        ge=0,
        le=86_400,
        description="how long an event waits for a fact from another topic before the DLQ",
    )
    # Store timeouts (tribune_shared.store.client_options): a store that stops answering
    # (paused, failing over, cut off) fails an operation in bounded time instead of holding
    # it; an API then answers 503 with Retry-After (tribune_shared.app), a worker waits and
    # retries without parking anything (tribune_shared.bus)
    store_server_selection_timeout_seconds: float = Field(
        default=5, gt=0, le=300, description="how long an operation waits for a reachable store"
    )
    # 10 s, not less: the same timeout bounds the driver's heartbeats, and a loaded local
    # store can take seconds to answer one; a missed heartbeat drops every connection
    store_connect_timeout_seconds: float = Field(
        default=10, gt=0, le=300, description="how long opening a store connection may take"
    )
    # 20 s: below the gateway's upstream timeout (30 s), so a client gets the service's
    # 503 rather than the gateway's 504; measured, a loaded local store held single
    # commands of consumer batches past 5 s (tests/chaos), so not much lower
    store_socket_timeout_seconds: float = Field(
        default=20,
        gt=0,
        le=3600,
        description="how long one store operation waits for an answer before it fails "
        "(the longest single command a request or a consumer batch sends must fit in it)",
    )
    store_retry_after_seconds: int = Field(
        default=5, ge=1, le=3600, description="Retry-After of a 503 answered for a store outage"
    )
    # Store transactions (every command and every consumer batch runs in one)
    transaction_retry_seconds: float = Field(
        default=60,
        ge=0,
        le=3600,
        description="how long a transaction that lost a write conflict is retried (a killed "
        "worker's orphaned transaction holds its documents until the store aborts it)",
    )
    # An API answers within the gateway's upstream timeout (30 s): a request whose
    # transaction keeps losing write conflicts gets 503 + Retry-After from the service after
    # this long, never the gateway's 504 (measured: tests/chaos met it with the 60 s of the
    # workers). Workers keep transaction_retry_seconds: nobody waits on them, and giving up
    # would park a good event on the DLQ.
    # 8 s + one last attempt within store_socket_timeout_seconds (20 s) < 30 s
    request_transaction_retry_seconds: float = Field(
        default=8,
        ge=0,
        le=3600,
        description="how long an API request's transaction that lost a write conflict is "
        "retried before the request is answered 503 with Retry-After",
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
    consistency_poll_seconds: float = Field(
        default=0.01, gt=0, le=5, description="first wait before a waiting request looks again"
    )
    consistency_poll_max_seconds: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description="longest wait between two looks (the waits double from the first)",
    )
    # The garbage collector of API and worker processes (tribune_shared.runtime). Measured
    # (bench/person_view.py, alternating runs on 2 CPUs): person view p99 142 and 146 ms
    # with Python's defaults (700, 10, 10), 94 and 106 ms with these, and 10-15 % less API
    # CPU per view. Memory grows by the young objects kept between collections (a few MB).
    gc_freeze_at_start: bool = Field(
        default=True,
        description="keep what the process holds at start out of every collection",
    )
    gc_gen0_threshold: int = Field(
        default=20_000, ge=100, le=10_000_000, description="allocations between collections"
    )
    gc_gen1_threshold: int = Field(
        default=20, ge=1, le=10_000, description="young collections between middle ones"
    )
    gc_gen2_threshold: int = Field(
        default=100, ge=1, le=10_000, description="middle collections between full ones"
    )
    # Outbox relay limits
    outbox_poll_interval_seconds: float = Field(
        default=0.05,
        gt=0,
        le=60,
        description="how often the relay looks for committed events while they flow",
    )
    # An idle relay's poll is a store round trip for nothing: five idle relays polling every
    # 50 ms took about a fifth of a core of the local store during a campaign (2026-12-04,
    # bench/campaign_email.py: 108 msg/s with 6.5 ms of store time per message, 125 msg/s
    # and 5.7 ms with 0.5 s polls). Relays that saw nothing for outbox_idle_after_seconds
    # poll at this slower pace; an event committed then waits at most this long (a write
    # in the relay's own process, and consent's wake on insert, wake it at once).
    outbox_idle_poll_interval_seconds: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description="how often an idle relay looks for committed events",
    )
    outbox_idle_after_seconds: float = Field(
        default=1,
        ge=0,
        le=3600,
        description="how long after its last event the relay goes on polling at "
        "outbox_poll_interval_seconds",
    )
    #: wake the relay on each outbox insert (a change stream) rather than at the next poll
    outbox_wake_on_insert: bool = False
    outbox_batch_size: int = Field(default=500, ge=1, le=10_000)
    # The backlog gauge is two store reads (pending rows counted, batch rows' sizes summed).
    # Reported after every batch row, it was as many reads as the relay's own work for a
    # stream of small batch rows (a campaign's hand-offs, an audience's pages).
    outbox_backlog_report_seconds: float = Field(
        default=1,
        ge=0,
        le=300,
        description="least time between two reports of the outbox backlog gauge while "
        "events flow (an empty outbox is reported at once)",
    )
    outbox_retention_hours: float = Field(default=72, gt=0, le=24 * 365)
    processed_events_retention_days: float = Field(default=30, gt=0, le=3650)
    # The expiry sweep (tribune_shared.expiry): every process deletes what expired in the
    # collections it declares, in batches read through their date index.
    expiry_interval_seconds: float = Field(
        default=60, gt=0, le=86_400, description="how often expired documents are deleted"
    )
    expiry_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="documents deleted per statement"
    )
    expiry_max_documents_per_sweep: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="per collection and sweep; a bigger backlog goes on at the next sweep",
    )
    outbox_lease_seconds: float = Field(default=10, gt=0, le=600)
    # Rebuildable projections (tribune_shared.projections)
    projection_routes_refresh_seconds: float = Field(
        default=1,
        gt=0,
        le=60,
        description="how often a process reads which collection each projection is in: "
        "a rebuild's flip reaches every process within this",
    )
    projection_flip_grace_seconds: float = Field(
        default=5,
        gt=0,
        le=600,
        description="how long a rebuild keeps applying events to the new collection after "
        "the flip (at least twice the refresh is used): what a process wrote to the old one "
        "before it saw the flip reaches the new one too",
    )
    projection_rebuild_lease_seconds: float = Field(
        default=30,
        ge=3,
        le=3600,
        description="the rebuild lease (one rebuild of a service at a time) expires this "
        "long after its holder stopped renewing it (a crashed rebuild)",
    )
    # HTTP limits
    request_timeout_seconds: float = Field(default=10, gt=0, le=300)
    readiness_timeout_seconds: float = Field(default=2, gt=0, le=60)
    max_page_size: int = Field(default=200, ge=1, le=10_000)
    # Request bodies (tribune_shared.limits): 413 beyond, checked before anything parses
    # them. Parsed JSON takes about 19 times its size in memory.
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, le=2**31, description="a route that names no other limit"
    )
    max_text_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=2**31,
        description="routes carrying a long text (a message, a consent text)",
    )
    # Key vault (crypto-shredding of personal fields in events; see tribune_shared.vault)
    vault_mongo_url: str | None = Field(
        default=None, description="the vault's server; default: mongo_url (a KMS in production)"
    )
    vault_database: str = Field(default="", description="default: <database_prefix>vault")
    vault_key_cache_seconds: float = Field(default=30, ge=0, le=3600)
    vault_key_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    #: key-encryption key wrapping every data key (envelope encryption; never in a database).
    #: Development and test derive one from identity_secret when unset; production does not.
    vault_kek: SecretStr | None = None
    #: earlier KEKs, still unwrapping keys until ``rewrap`` moved them (rotation)
    vault_previous_keks: list[SecretStr] = Field(default_factory=list, max_length=16)
    vault_rewrap_batch_size: int = Field(default=500, ge=1, le=10_000)
    # A federation moved in the tree: the worker re-paths what the service holds
    # (tribune_shared.federations.FederationDirectory.run_moves)
    federation_repath_batch_size: int = Field(
        default=1000, ge=1, le=10_000, description="documents re-pathed per bulk write"
    )
    federation_repath_interval_seconds: float = Field(
        default=1, gt=0, le=3600, description="how often the worker looks for re-path work"
    )
    federation_repath_settle_seconds: float = Field(
        default=300,
        ge=0,
        le=86_400,
        description="how long a finished re-path keeps sweeping the old path for late "
        "writes (work that read the old path before the move: a request, a running import)",
    )

    @property
    def database_name(self) -> str:
        return f"{self.database_prefix}{self.service_name}"

    @property
    def vault_database_name(self) -> str:
        return self.vault_database or f"{self.database_prefix}vault"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def env_names(self, name: str) -> str:
        """How an operator sets field ``name``: ``<SERVICE>_<NAME>`` or ``TRIBUNE_<NAME>``."""
        prefix = self.model_config.get("env_prefix", "")
        return f"{prefix}{name.upper()} (or TRIBUNE_{name.upper()})"

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> ServiceSettings:
        # Tests run with generated secrets too, so only local development may use defaults;
        # an unset environment is production (a forgotten variable must not open the door).
        if self.environment is Environment.development:
            return self
        weak = [
            name
            for name in type(self).model_fields
            if (value := _plain(getattr(self, name))) is not None
            and (
                value == DEV_SECRET
                or (name in self.secret_fields and len(value) < MIN_SECRET_LENGTH)
            )
        ]
        for producer, keys in self.event_signing_keys.items():
            if any(len(k) < MIN_SECRET_LENGTH for k in _key_list(keys)):
                weak.append(f"event_signing_keys__{producer}")
        if weak:
            raise ValueError(
                "; ".join(self.env_names(n) for n in weak)
                + f": set a strong secret (at least {MIN_SECRET_LENGTH} characters, e.g. "
                "`openssl rand -hex 32`). The published development defaults are accepted "
                f"only with TRIBUNE_ENVIRONMENT=development (this process runs as "
                f"{self.environment.value}; unset means production)"
            )
        return self

    @model_validator(mode="after")
    def _check_kafka_security(self) -> ServiceSettings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"{self.env_names('kafka_sasl_username')} and "
                f"{self.env_names('kafka_sasl_password')} are needed with "
                f"{self.kafka_security_protocol}"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError(
                f"{self.env_names('kafka_ssl_certfile')} and "
                f"{self.env_names('kafka_ssl_keyfile')} go together"
            )
        tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        if not tls and (self.kafka_ssl_cafile or self.kafka_ssl_certfile):
            raise ValueError(
                f"TLS files are set but {self.env_names('kafka_security_protocol')} is "
                f"{self.kafka_security_protocol} (use SSL or SASL_SSL)"
            )
        return self

    @model_validator(mode="after")
    def _check_vault_kek(self) -> ServiceSettings:
        if not self.uses_vault or self.environment is Environment.development:
            return self
        if self.environment is Environment.production and self.vault_kek is None:
            raise ValueError(
                f"{self.env_names('vault_kek')}: the key-encryption key of the vault must be "
                "set in production (at least "
                f"{MIN_SECRET_LENGTH} characters; keep it out of every database and backup)"
            )
        configured = [k for k in (self.vault_kek, *self.vault_previous_keks) if k is not None]
        if any(len(k.get_secret_value()) < MIN_SECRET_LENGTH for k in configured):
            raise ValueError(
                f"{self.env_names('vault_kek')} and {self.env_names('vault_previous_keks')}: "
                f"each key-encryption key needs at least {MIN_SECRET_LENGTH} characters"
            )
        return self

    def vault_keks(self) -> tuple[str, ...]:
        """The vault's key-encryption keys (tribune_shared.vault): the first wraps, all
        unwrap. As configured; in development and test, derived from identity_secret when
        unset (every process of a stack shares it); none in production."""
        previous = tuple(k.get_secret_value() for k in self.vault_previous_keks)
        if self.vault_kek is not None:
            return (self.vault_kek.get_secret_value(), *previous)
        if self.environment is Environment.production:
            return ()
        label = b"tribune-vault-kek"
        return (
            hmac.new(self.identity_secret.encode(), label, hashlib.sha256).hexdigest(),
            *previous,
        )

    def event_keys(self, producer: str) -> tuple[bytes, ...]:
        """The keys events of ``producer`` are signed with (the first signs, all verify):
        as configured; in development and test, derived from identity_secret when unset
        (every process of a stack shares that secret, so they agree); none otherwise."""
        configured = self.event_signing_keys.get(producer)
        if configured is not None:
            return tuple(k.encode() for k in _key_list(configured))
        if self.environment is Environment.production:
            return ()
        label = f"tribune-event-signing-key:{producer}".encode()
        return (hmac.new(self.identity_secret.encode(), label, hashlib.sha256).digest(),)

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


def _plain(value: object) -> str | None:
    """A setting's value as text, if it is one (secrets unwrapped)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value if isinstance(value, str) else None


def _key_list(value: SecretStr) -> list[str]:
    return [k.strip() for k in value.get_secret_value().split(",") if k.strip()]
