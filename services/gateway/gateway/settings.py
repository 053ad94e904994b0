from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from tribune_shared.settings import DEV_SECRET, ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name = "gateway"
    secret_fields: ClassVar[tuple[str, ...]] = ("identity_secret", "jwt_secret")
    #: publishes no personal field and opens none: never holds the vault's KEK
    uses_vault: ClassVar[bool] = False
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    http_port: int = 8000
    worker_port: int = 8200

    # ------------------------------------------------------------ client tokens
    #: signs the clients' access tokens (HS256); refused outside development if default/short
    jwt_secret: str = DEV_SECRET
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86_400)
    #: a refresh token left unused this long stops working (each use hands out a new one)
    refresh_token_ttl_seconds: int = Field(
        default=14 * 86_400,
        ge=300,
        le=90 * 86_400,
        description="idle lifetime of a refresh token (gateway.sessions)",
    )
    #: a session (a login and its refreshes) ends this long after the login, whatever the
    #: refreshes: then the user logs in again
    session_max_seconds: int = Field(
        default=30 * 86_400,
        ge=3600,
        le=365 * 86_400,
        description="absolute lifetime of a session",
    )

    # ------------------------------------------------------------ bootstrap (first start only)
    root_federation_name: str = Field(default="National", min_length=1, max_length=200)
    admin_email: str = Field(default="admin@tribune.local", min_length=3, max_length=254)
    #: when unset, a strong password is generated and printed once to the terminal the
    #: gateway runs in (never to its logs); with no terminal the first start is refused
    admin_password: str | None = Field(default=None, max_length=1024)

    # ------------------------------------------------------------ accounts and login
    password_min_length: int = Field(default=12, ge=8, le=128)
    #: login attempts per email (hashed) in a window that starts at the first one; each is
    #: reserved before the password is checked, in the store (shared by every replica); a
    #: success clears the email's count
    login_max_attempts: int = Field(default=5, ge=1, le=1000, description="attempts per window")
    login_window_seconds: float = Field(default=300, gt=0, le=86_400)
    #: login attempts per client network in the same window (an office behind one NAT
    #: shares it); a success gives its own attempt back
    login_network_max_attempts: int = Field(default=100, ge=1, le=100_000)
    #: how wide a client network is for the login limiter
    login_network_prefix_ipv4: int = Field(default=24, ge=8, le=32)
    login_network_prefix_ipv6: int = Field(default=56, ge=16, le=128)
    #: how long a user read from the store is trusted (active, role, federation) before it
    #: is read again: a deactivation or role change made on another replica takes effect
    #: within this time (at once on the replica that made it); 0: read on every request
    user_cache_seconds: float = Field(default=5, ge=0, le=300)
    user_cache_max_entries: int = Field(default=10_000, ge=1, le=1_000_000)
    #: an API key's last use is noted in memory and written for every key used meanwhile
    #: in one bulk write at most this often (and at shutdown): never a write per request
    api_key_last_used_flush_seconds: float = Field(
        default=60, ge=0, le=3600, description="how stale an API key's last_used_at may be"
    )

    # ------------------------------------------------------------ rate limits (gateway.rate_limits)
    #: requests per user and per API key are counted in fixed windows shared by every
    #: replica (the store); past the limit: 429 with Retry-After until the window ends
    rate_limit_enabled: bool = True
    rate_limit_window_seconds: float = Field(default=60, ge=1, le=3600)
    rate_limit_user_requests: int = Field(
        default=3000, ge=1, le=10_000_000, description="requests per user per window"
    )
    rate_limit_api_key_requests: int = Field(
        default=1200, ge=1, le=10_000_000, description="requests per API key per window"
    )
    #: a replica tells the store its requests once it gathered this share of the limit...
    rate_limit_sync_share: float = Field(default=0.05, gt=0, le=1)
    #: ... or this long after its last sync (how soon a limit reached on one replica is
    #: seen by the others)
    rate_limit_sync_seconds: float = Field(default=1, ge=0.01, le=60)

    # ------------------------------------------------------------ answers and browsers
    #: origins (scheme://host[:port], comma-separated) whose pages may call the API from a
    #: browser (CORS); empty: none (the back office is served by the gateway itself). Not
    #: the public forms: contacts answers their CORS per form.
    cors_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, max_length=100
    )
    #: Strict-Transport-Security max-age on every answer, when the gateway is reached over
    #: TLS (behind a TLS-terminating proxy); 0: not sent (plain HTTP, local runs)
    hsts_seconds: int = Field(default=0, ge=0, le=2 * 365 * 86_400)

    # ------------------------------------------------------------ clients behind proxies
    #: the proxies (CIDRs, comma-separated) whose X-Forwarded-For / X-Forwarded-Proto the
    #: gateway believes: the client's address (access audit, login limiter, consent proof)
    #: is the last one in X-Forwarded-For not in this list, when the direct peer is in it;
    #: anybody else's forwarded headers are ignored. Empty: the direct peer is the client.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list, max_length=100)

    # ------------------------------------------------------------ routing to services
    contacts_url: str = "http://127.0.0.1:8101"
    consent_url: str = "http://127.0.0.1:8102"
    memberships_url: str = "http://127.0.0.1:8103"
    messaging_url: str = "http://127.0.0.1:8104"
    #: the live figures process of memberships (python -m memberships.live)
    live_url: str = "http://127.0.0.1:8105"
    upstream_connect_timeout_seconds: float = Field(default=2, gt=0, le=60)
    upstream_timeout_seconds: float = Field(default=30, gt=0, le=600)
    upstream_max_connections: int = Field(default=200, ge=1, le=10_000)
    #: Load shedding: a request finding all upstream_max_connections busy waits this long
    #: for one, then gets 503 with Retry-After (upstream_retry_after_seconds) instead of
    #: queueing until the read timeout (a viral petition's burst beyond what a service
    #: answers: tens of seconds in a queue, then an accidental 5xx)
    upstream_pool_wait_seconds: float = Field(default=5, gt=0, le=600)
    upstream_retry_after_seconds: int = Field(
        default=5, ge=1, le=3600, description="Retry-After of a 503: service busy or unreachable"
    )
    #: an idle connection to a service is kept this long for the next call (a new
    #: connection per request would cost a TCP handshake every time); 0: never kept
    upstream_keepalive_expiry_seconds: float = Field(default=30, ge=0, le=3600)
    #: the body of an upload route (gateway.routing: the contacts import): the import's
    #: file limit (CONTACTS_IMPORT_MAX_BYTES, 64 MiB) and room for its form; every other
    #: route takes max_body_bytes or max_text_body_bytes (tribune_shared.settings)
    max_upload_body_bytes: int = Field(default=65 * 1024 * 1024, ge=1024, le=2**31)
    #: forwarded routes skip FastAPI's routing and dependency solving (gateway.dispatch);
    #: false: they go through their FastAPI endpoints (same behaviour, more CPU)
    fast_forward: bool = True

    # ------------------------------------------------------------ back office web app
    #: the session cookies carry the Secure flag (sent over HTTPS only); false only for a
    #: stack served over plain http://localhost (the local dev stack and the tests)
    webapp_cookie_secure: bool = Field(
        default=True, description="Secure flag on the web app's cookies (gateway.webapp)"
    )
    #: a form's anti-CSRF token stops working this long after the page was served
    webapp_csrf_ttl_seconds: int = Field(
        default=4 * 3600,
        ge=60,
        le=7 * 86_400,
        description="lifetime of the anti-CSRF token of a web app form",
    )
    #: rows on one page of the web app's lists (the API's own limit applies as well)
    webapp_page_size: int = Field(
        default=25, ge=1, le=200, description="rows per page of the web app's lists"
    )
    #: an import's page shows this many rejected (and flagged) rows; the CSV has them all
    webapp_import_rows_shown: int = Field(
        default=50, ge=1, le=1000, description="rejected/flagged rows shown on an import's page"
    )
    #: the segments page asks one size preview per segment (no batch preview API): at most
    #: this many at once
    webapp_parallel_calls: int = Field(
        default=6, ge=1, le=50, description="API calls one web app page makes at once"
    )
    #: contacts shown as a sample on a segment's page
    webapp_segment_sample: int = Field(
        default=10, ge=0, le=100, description="sample contacts on a segment's page"
    )
    #: the dashboard's message totals cover this many last days
    webapp_messages_days: int = Field(
        default=30, ge=1, le=366, description="period of the dashboard's message totals"
    )
    #: how often a page following a running import or a sending campaign asks again
    webapp_poll_seconds: int = Field(
        default=3, ge=1, le=300, description="refresh interval of the web app's live tables"
    )

    # ------------------------------------------------------------ access audit
    #: how long the access audit keeps an entry (then it expires)
    audit_retention_days: int = Field(default=365, ge=1, le=3650)
    #: entries are written in batches (one insert_many shared by concurrent requests, each
    #: waiting for the batch holding its entry): at most this many per write
    audit_batch_max_entries: int = Field(default=500, ge=1, le=10_000)
    #: how long a batch waits for more entries before it is written; 0: written as soon as
    #: the previous batch is (group commit: entries arriving meanwhile share the next write)
    audit_flush_interval_seconds: float = Field(default=0, ge=0, le=1)
    #: a write's entry is queued without its request waiting for the batch (the write is
    #: answered whatever becomes of the entry: a failed batch is logged); while this many
    #: entries wait (a slow or unreachable store), requests wait for theirs again
    audit_max_pending_entries: int = Field(default=5_000, ge=1, le=1_000_000)

    # ------------------------------------------------------------ read-your-writes
    #: users whose latest consistency token the gateway remembers (least recent forgotten)
    consistency_max_users: int = Field(default=100_000, ge=100, le=10_000_000)

    # ------------------------------------------------------------ live event stream
    #: (gateway.live_events) the worker records the registry's LIVE_EVENTS; API replicas
    #: follow them and serve each connection its subtree's
    live_events_retention_seconds: int = Field(
        default=3600, ge=60, le=7 * 86_400, description="how long a stream can be resumed"
    )
    live_events_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="events recorded per transaction"
    )
    live_events_retry_seconds: float = Field(
        default=2, ge=0.1, le=60, description="pause of the recorder after a failure"
    )
    live_events_poll_seconds: float = Field(
        default=0.25, ge=0.02, le=10, description="how often a replica reads new events"
    )
    live_events_heartbeat_seconds: float = Field(
        default=15, ge=1, le=300, description="idle time before a keep-alive comment"
    )
    #: a connection ends after this long and the client reconnects with Last-Event-ID: its
    #: token is checked again (an expired or deactivated user stops there)
    live_events_max_seconds: float = Field(default=300, ge=1, le=86_400)
    live_events_max_connections_per_user: int = Field(
        default=5, ge=1, le=1000, description="open streams per user (per API key) per replica"
    )
    live_events_max_connections: int = Field(
        default=1000, ge=1, le=100_000, description="open streams per replica"
    )
    live_events_replay_max: int = Field(
        default=1000, ge=0, le=100_000, description="events replayed to a resumed stream"
    )
    #: a connection more than this many events behind is ended (it resumes from its id)
    live_events_queue_size: int = Field(default=1000, ge=10, le=100_000)

    @field_validator("trusted_proxies", "cors_allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # Networks or addresses only: "*" (trust anybody) would let any client choose the
        # address the audit and the limiter see.
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"GATEWAY_TRUSTED_PROXIES: {item!r} is not an IP address or network"
                ) from None
        return value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        # exact origins only: "*" would let any website read answers with a user's token
        for origin in value:
            scheme, _, rest = origin.partition("://")
            if scheme not in ("http", "https") or not rest or "/" in rest or "*" in rest:
                raise ValueError(
                    f"GATEWAY_CORS_ALLOWED_ORIGINS: {origin!r} is not an origin "
                    "(scheme://host[:port])"
                )
        return value

    @field_validator("admin_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check_admin_password(self) -> GatewaySettings:
        if self.admin_password is not None and len(self.admin_password) < self.password_min_length:
            raise ValueError(
                f"GATEWAY_ADMIN_PASSWORD must have at least {self.password_min_length} characters"
            )
        return self
