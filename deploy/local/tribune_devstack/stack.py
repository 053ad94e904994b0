"""One isolated instance of the platform ("stack"): ports, prefixes and folders, from env."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

SERVICES: tuple[str, ...] = ("contacts", "consent", "memberships", "messaging", "gateway")
"""Service packages; each runs `python -m <svc>.main` (API) and `python -m <svc>.worker`."""

# Offsets from TRIBUNE_PORT_BASE: gateway=base, contacts=base+1 .. messaging=base+4.
_PORT_OFFSETS: dict[str, int] = {
    "gateway": 0,
    "contacts": 1,
    "consent": 2,
    "memberships": 3,
    "messaging": 4,
    "live": 5,
}
_DEFAULT_HTTP_PORTS: dict[str, int] = {
    "gateway": 8000,
    "contacts": 8101,
    "consent": 8102,
    "memberships": 8103,
    "messaging": 8104,
    "live": 8105,
}
_WORKER_OFFSET = 100  # worker ops port = its API port base + 100 (gateway 8200 ...)
_DEFAULT_WORKER_PORTS: dict[str, int] = {
    "gateway": 8200,
    "contacts": 8201,
    "consent": 8202,
    "memberships": 8203,
    "messaging": 8204,
}
#: How the local stack lays out its stores (TRIBUNE_STORES). "per-service" (the default):
#: each service in OWN_STORE_SERVICES gets a SecantusDB process of its own, and the gateway
#: and the key vault share the main one (``store``). "one": every database in the main one.
#: Why: SecantusDB serves one command at a time per process (its Python threads take turns
#: under one interpreter lock, and a transactional statement waits for every other
#: transaction's statement: README, Known limits), so on one store an import's writes,
#: three consumers' batches and a revocation all queue behind each other; production's
#: MongoDB serves them in parallel. One process per service is what "each service owns its
#: database" looks like locally, and it lets the store use every core. The vault stays in
#: the main store because it is shared by every service (tribune_shared.vault).
StoreLayout = Literal["one", "per-service"]
STORE_LAYOUTS: tuple[StoreLayout, ...] = ("one", "per-service")
OWN_STORE_SERVICES: tuple[str, ...] = ("contacts", "consent", "memberships", "messaging")
#: a service's store port: the main store's + this offset (unless TRIBUNE_<SVC>_STORE_PORT)
_STORE_OFFSETS: dict[str, int] = {svc: i + 1 for i, svc in enumerate(OWN_STORE_SERVICES)}
#: memberships' live figures process (`python -m memberships.live`, faust): one HTTP port
#: (figures, /health, /ready, /metrics), `http_ports["live"]`, TRIBUNE_LIVE_PORT
LIVE = "live"


def repo_root() -> Path:
    """The monorepo root: the first ancestor of this file holding uv.lock (else the cwd)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "uv.lock").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def find_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct ports the OS reports free right now (all sockets held until all are picked)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class StackConfig:
    """Everything that tells one stack from another. Build with `from_env()` or `for_tests()`."""

    name: str = "dev"
    state_dir: Path = field(default_factory=lambda: repo_root() / ".local" / "dev")
    # Where Kafka/store/SMTP keep data, logs and pid files: state_dir unless TRIBUNE_INFRA_DIR
    # says otherwise (a stack of services on infra someone else runs).
    infra_dir: Path = field(default_factory=lambda: repo_root() / ".local" / "dev")
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    store_port: int = 27017
    store_layout: StoreLayout = "per-service"
    # the stores of OWN_STORE_SERVICES when store_layout is "per-service" (empty: the main
    # store's port + _STORE_OFFSETS)
    service_store_ports: Mapping[str, int] = field(default_factory=dict)
    smtp_port: int = 1025
    smtp_http_port: int = 8025
    sms_port: int = 8026  # the fake SMS provider (HTTP)
    payments_port: int = 8027  # the fake payment providers (HTTP: Stripe and HelloAsso styles)
    http_ports: Mapping[str, int] = field(default_factory=lambda: dict(_DEFAULT_HTTP_PORTS))
    worker_ports: Mapping[str, int] = field(default_factory=lambda: dict(_DEFAULT_WORKER_PORTS))
    topic_prefix: str = ""
    database_prefix: str = "tribune_"
    admin_email: str = "admin@tribune.local"
    admin_password: str | None = field(default=None, repr=False)  # None: generated per stack
    kafka_jars_dir: Path | None = None  # None: ~/.cache/tribune/kafka-<version>/libs
    kafka_heap_opts: str = "-Xms256m -Xmx768m"
    java: str = "java"
    mvn: str = "mvn"
    smtp_max_messages: int = 10_000
    # InfraHandle.stop_started() leaves infra running, so a test stack keeps its folder too
    # (TRIBUNE_KEEP_INFRA: to look at a session's logs and data after it ended).
    keep_infra: bool = False
    # The store keeps its data in memory only: a throwaway store needs no data on disk.
    store_in_memory: bool = False
    # secantusd's WiredTiger cache (None: its default, 1G). In memory it must hold every
    # document of the stack, not a working set: the 100,000-row import test alone nears 1G.
    store_cache_size: str | None = None
    # RunningStack.stop() deletes state_dir once nothing of the stack runs any more.
    ephemeral: bool = False
    kafka_ready_timeout: float = 90.0
    infra_ready_timeout: float = 30.0  # store and SMTP sink
    ready_timeout: float = 120.0  # service APIs and workers
    stop_timeout: float = 20.0

    @property
    def gateway_port(self) -> int:
        return self.http_ports["gateway"]

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def stores(self) -> dict[str, int]:
        """Every store process of the stack: infra name ("store", "store-<service>") → port."""
        out = {"store": self.store_port}
        if self.store_layout == "per-service":
            for svc in OWN_STORE_SERVICES:
                port = self.service_store_ports.get(svc, self.store_port + _STORE_OFFSETS[svc])
                out[f"store-{svc}"] = port
        return out

    @property
    def store_urls(self) -> dict[str, str]:
        """Every store process of the stack: infra name → its URL."""
        return {name: self._store_url_at(port) for name, port in self.stores.items()}

    def store_url(self, service: str) -> str:
        """The URL of the store that holds ``service``'s database (the main store's for the
        gateway, the vault, or every service when store_layout is "one")."""
        return self._store_url_at(self.stores.get(f"store-{service}", self.store_port))

    @property
    def mongo_url(self) -> str:
        """The main store's URL (every database but those of services with a store of their
        own: store_url)."""
        return self._store_url_at(self.store_port)

    def _store_url_at(self, port: int) -> str:
        # retryWrites=false: SecantusDB (0.7.0b3) keeps the reply of every retryable write
        # (a write outside a transaction: audit entries, counters, locks) for 30 min, up to
        # 10,000, and scans that table on each one, sorting it once full: with the driver's
        # default every such write cost milliseconds of the store's single command thread
        # after a few minutes of load (py-spy: 30 % of its time under the gateway's reads;
        # README, Store; deploy/local/README.md). A single local node has no failover for
        # the driver to retry across; transactions keep their own retries
        # (Store.run_transaction).
        # Production (MongoDB replica set) keeps the driver's default.
        return f"mongodb://{self.host}:{port}/?directConnection=true&retryWrites=false"

    @property
    def gateway_url(self) -> str:
        return self.service_url("gateway")

    @property
    def smtp_http_url(self) -> str:
        return f"http://{self.host}:{self.smtp_http_port}"

    @property
    def sms_url(self) -> str:
        return f"http://{self.host}:{self.sms_port}"

    @property
    def payments_url(self) -> str:
        return f"http://{self.host}:{self.payments_port}"

    def service_url(self, service: str) -> str:
        return f"http://{self.host}:{self.http_ports[service]}"

    def worker_url(self, service: str) -> str:
        return f"http://{self.host}:{self.worker_ports[service]}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def infra_logs_dir(self) -> Path:
        return self.infra_dir / "logs"

    @property
    def infra_pids_dir(self) -> Path:
        return self.infra_dir / "pids"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackConfig:
        """Read the TRIBUNE_* variables (see deploy/local/README.md); unset means default."""
        env = os.environ if env is None else env
        name = env.get("TRIBUNE_STACK_NAME", "").strip() or "dev"
        raw_state = env.get("TRIBUNE_STATE_DIR", "").strip()
        state_dir = Path(raw_state).expanduser() if raw_state else repo_root() / ".local" / name
        raw_infra = env.get("TRIBUNE_INFRA_DIR", "").strip()
        infra_dir = Path(raw_infra).expanduser() if raw_infra else state_dir

        http_ports = dict(_DEFAULT_HTTP_PORTS)
        worker_ports = dict(_DEFAULT_WORKER_PORTS)
        base_raw = env.get("TRIBUNE_PORT_BASE", "").strip()
        if base_raw:
            base = _env_int(env, "TRIBUNE_PORT_BASE", 0)
            for svc, off in _PORT_OFFSETS.items():
                http_ports[svc] = base + off
                worker_ports[svc] = base + _WORKER_OFFSET + off
        http_ports["gateway"] = _env_int(env, "TRIBUNE_GATEWAY_PORT", http_ports["gateway"])
        # Per-process overrides, mostly to dodge one busy port.
        for svc in SERVICES:
            up = svc.upper()
            http_ports[svc] = _env_int(env, f"TRIBUNE_{up}_PORT", http_ports[svc])
            worker_ports[svc] = _env_int(env, f"TRIBUNE_{up}_WORKER_PORT", worker_ports[svc])
        http_ports[LIVE] = _env_int(env, "TRIBUNE_LIVE_PORT", http_ports[LIVE])

        raw_jars = env.get("TRIBUNE_KAFKA_JARS_DIR", "").strip()
        defaults = cls.__dataclass_fields__
        raw_layout = env.get("TRIBUNE_STORES", "").strip()
        layout = _store_layout(raw_layout) if raw_layout else existing_layout(infra_dir)
        store_port = _env_int(env, "TRIBUNE_STORE_PORT", 27017)
        service_store_ports = {
            svc: _env_int(env, f"TRIBUNE_{svc.upper()}_STORE_PORT", store_port + off)
            for svc, off in _STORE_OFFSETS.items()
        }
        return cls(
            name=name,
            state_dir=state_dir,
            infra_dir=infra_dir,
            host=env.get("TRIBUNE_HOST", "").strip() or "127.0.0.1",
            kafka_port=_env_int(env, "TRIBUNE_KAFKA_PORT", 9092),
            kafka_controller_port=_env_int(env, "TRIBUNE_KAFKA_CONTROLLER_PORT", 9093),
            store_port=store_port,
            store_layout=layout,
            service_store_ports=service_store_ports,
            smtp_port=_env_int(env, "TRIBUNE_SMTP_PORT", 1025),
            smtp_http_port=_env_int(env, "TRIBUNE_SMTP_HTTP_PORT", 8025),
            sms_port=_env_int(env, "TRIBUNE_SMS_PORT", 8026),
            payments_port=_env_int(env, "TRIBUNE_PAYMENTS_PORT", 8027),
            http_ports=http_ports,
            worker_ports=worker_ports,
            topic_prefix=env.get("TRIBUNE_TOPIC_PREFIX", ""),
            database_prefix=env.get("TRIBUNE_DATABASE_PREFIX", "tribune_"),
            admin_email=env.get("TRIBUNE_ADMIN_EMAIL", "").strip() or "admin@tribune.local",
            admin_password=env.get("TRIBUNE_ADMIN_PASSWORD") or None,
            kafka_jars_dir=Path(raw_jars).expanduser() if raw_jars else None,
            kafka_heap_opts=env.get("TRIBUNE_KAFKA_HEAP_OPTS", "").strip()
            or str(defaults["kafka_heap_opts"].default),
            java=env.get("TRIBUNE_JAVA", "").strip() or _default_java(env),
            mvn=env.get("TRIBUNE_MVN", "").strip() or "mvn",
            smtp_max_messages=_env_int(env, "TRIBUNE_SMTP_MAX_MESSAGES", 10_000),
            store_cache_size=env.get("TRIBUNE_STORE_CACHE_SIZE", "").strip() or None,
            keep_infra=env.get("TRIBUNE_KEEP_INFRA", "").strip().lower() in ("1", "true", "yes"),
            kafka_ready_timeout=_env_float(env, "TRIBUNE_KAFKA_READY_TIMEOUT", 90.0),
            infra_ready_timeout=_env_float(env, "TRIBUNE_INFRA_READY_TIMEOUT", 30.0),
            ready_timeout=_env_float(env, "TRIBUNE_READY_TIMEOUT", 120.0),
            stop_timeout=_env_float(env, "TRIBUNE_STOP_TIMEOUT", 20.0),
        )

    @classmethod
    def for_tests(
        cls,
        name: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        state_root: Path | None = None,
        store_in_memory: bool = True,
        stores: StoreLayout | None = None,
    ) -> StackConfig:
        """A stack of its own for one test session or benchmark, sharing nothing with the
        dev stack: free ports for Kafka (broker and controller), the store, the SMTP sink
        and every service; unique topic/db prefixes; infra data, logs and pids in one
        ephemeral folder, `.local/tests/<name>` (or `<state_root>/<name>`). The fake SMS
        and payment providers get free ports too.

        The rest (JDK, Kafka heap and jars, timeouts, store cache, the store layout unless
        ``stores`` says, TRIBUNE_KEEP_INFRA) is read from env as for any stack.
        """
        base = cls.from_env(env)
        tag = uuid.uuid4().hex[:8]
        name = name or f"test-{tag}"
        state_dir = (state_root or repo_root() / ".local" / "tests") / name
        kafka, controller, store, smtp, smtp_http, sms, payments, *ports = find_free_ports(
            7 + 2 * len(SERVICES) + 1 + len(OWN_STORE_SERVICES), base.host
        )
        http_ports = {svc: ports[i] for i, svc in enumerate(SERVICES)}
        http_ports[LIVE] = ports[2 * len(SERVICES)]
        worker_ports = {svc: ports[len(SERVICES) + i] for i, svc in enumerate(SERVICES)}
        first = 2 * len(SERVICES) + 1
        service_store_ports = {svc: ports[first + i] for i, svc in enumerate(OWN_STORE_SERVICES)}
        return replace(
            base,
            name=name,
            state_dir=state_dir,
            infra_dir=state_dir,
            kafka_port=kafka,
            kafka_controller_port=controller,
            store_port=store,
            # a test stack is new: its layout never follows the dev stack's data
            store_layout=stores
            or _store_layout(
                (env or os.environ).get("TRIBUNE_STORES", "").strip() or "per-service"
            ),
            service_store_ports=service_store_ports,
            smtp_port=smtp,
            smtp_http_port=smtp_http,
            sms_port=sms,
            payments_port=payments,
            http_ports=http_ports,
            worker_ports=worker_ports,
            topic_prefix=f"t{tag}.",
            database_prefix=f"tribune_t{tag}_",
            store_in_memory=store_in_memory,
            store_cache_size=base.store_cache_size or ("4G" if store_in_memory else None),
            ephemeral=True,
        )


#: where a stack records the store layout its data was made with (tribune_devstack.infra)
LAYOUT_FILE = "stores.layout"


def _store_layout(value: str, source: str = "TRIBUNE_STORES") -> StoreLayout:
    if value not in STORE_LAYOUTS:
        raise ValueError(f"{source} must be one of {', '.join(STORE_LAYOUTS)}, got {value!r}")
    return value


def existing_layout(infra_dir: Path) -> StoreLayout:
    """The layout a stack's data already has: the one recorded when its stores last started;
    "one" for a stack made before stores per service (a main store's folder, no record),
    whose databases are all in it; else the default, "per-service"."""
    recorded = infra_dir / LAYOUT_FILE
    if recorded.is_file():
        return _store_layout(recorded.read_text().strip(), str(recorded))
    if (infra_dir / "store").is_dir():
        return "one"
    return "per-service"


def _default_java(env: Mapping[str, str]) -> str:
    java_home = env.get("JAVA_HOME", "").strip()
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return "java"
