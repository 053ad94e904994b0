"""The five services' API and worker processes: environment, start, readiness, stop."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import httpx

from tribune_devstack.infra import INFRA, InfraHandle, ensure_infra, infra_status, stop_infra
from tribune_devstack.procs import (
    DevstackError,
    PidRecord,
    exit_code,
    kill_now,
    live_pid,
    log_excerpt,
    log_tail,
    pid_alive,
    pid_file,
    port_open,
    read_pid,
    spawn,
    stop_records,
)
from tribune_devstack.stack import LIVE, SERVICES, StackConfig

Kind = Literal["api", "worker", "live"]


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # "<service>-api" or "<service>-worker"
    service: str
    kind: Kind
    module: str  # run as `python -m <module>`
    port: int  # API: HTTP port; worker: ops port (/health, /ready, /metrics)

    @property
    def label(self) -> str:
        return f"{self.service} {'API' if self.kind == 'api' else self.kind}"


def process_specs(cfg: StackConfig) -> list[ProcessSpec]:
    specs: list[ProcessSpec] = []
    for svc in SERVICES:
        specs.append(ProcessSpec(f"{svc}-api", svc, "api", f"{svc}.main", cfg.http_ports[svc]))
        specs.append(
            ProcessSpec(f"{svc}-worker", svc, "worker", f"{svc}.worker", cfg.worker_ports[svc])
        )
    # memberships' live figures (faust): a process of its own, behind the gateway
    specs.append(
        ProcessSpec(
            "memberships-live", "memberships", "live", "memberships.live", cfg.http_ports[LIVE]
        )
    )
    return specs


def _spec(cfg: StackConfig, name: str) -> ProcessSpec:
    for spec in process_specs(cfg):
        if spec.name == name:
            return spec
    valid = ", ".join([*INFRA, *(s.name for s in process_specs(cfg))])
    raise DevstackError(f"unknown process {name!r}; one of: {valid}")


# --- secrets and environment -------------------------------------------------------------

_SECRET_KEYS = (
    "identity_secret",
    "jwt_secret",
    "webhook_secret",
    "unsubscribe_secret",
    "suppression_salt",
    "sms_webhook_secret",
    # the fake SMS provider's receipt signatures, and the credentials messaging sends it
    "sms_receipt_secret",
    "sms_provider_secret",
    # the fake payment providers' signatures (memberships checks them)
    "stripe_webhook_secret",
    "helloasso_signature_key",
    "admin_password",
)


def stored_secrets(cfg: StackConfig) -> dict[str, str]:
    """What <state dir>/secrets.json holds now (nothing generated)."""
    path = cfg.state_dir / "secrets.json"
    if not path.is_file():
        return {}
    try:
        return {k: str(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def stack_secrets(cfg: StackConfig) -> dict[str, str]:
    """Secrets generated once per stack, kept in <state dir>/secrets.json (mode 0600)."""
    path = cfg.state_dir / "secrets.json"
    stored = stored_secrets(cfg)
    missing = [k for k in _SECRET_KEYS if not stored.get(k)]
    if missing:
        for key in missing:
            stored[key] = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(stored, f, indent=2)
        tmp.replace(path)
    os.chmod(path, 0o600)
    if cfg.admin_password:
        stored["admin_password"] = cfg.admin_password
    return stored


def stack_env(cfg: StackConfig, environment: str = "development") -> dict[str, str]:
    """The environment every service process gets (on top of the caller's)."""
    sec = stack_secrets(cfg)
    env = {
        "TRIBUNE_ENVIRONMENT": environment,
        "TRIBUNE_KAFKA_BOOTSTRAP_SERVERS": cfg.kafka_bootstrap,
        "TRIBUNE_MONGO_URL": cfg.mongo_url,
        "TRIBUNE_TOPIC_PREFIX": cfg.topic_prefix,
        "TRIBUNE_DATABASE_PREFIX": cfg.database_prefix,
        "TRIBUNE_IDENTITY_SECRET": sec["identity_secret"],
        "TRIBUNE_LOG_LEVEL": "INFO",
        "MESSAGING_SMTP_HOST": cfg.host,
        "MESSAGING_SMTP_PORT": str(cfg.smtp_port),
        "MEMBERSHIPS_WEBHOOK_SECRET": sec["webhook_secret"],
        # provider webhooks, signed by the stack's fake providers (tribune_devstack.fake_payments)
        "MEMBERSHIPS_STRIPE_WEBHOOK_SECRET": sec["stripe_webhook_secret"],
        "MEMBERSHIPS_HELLOASSO_SIGNATURE_KEY": sec["helloasso_signature_key"],
        "GATEWAY_JWT_SECRET": sec["jwt_secret"],
        "MESSAGING_UNSUBSCRIBE_SECRET": sec["unsubscribe_secret"],
        # consent verifies the unsubscribe links messaging signs: the same secret
        "TRIBUNE_UNSUBSCRIBE_SECRET": sec["unsubscribe_secret"],
        "TRIBUNE_SUPPRESSION_SALT": sec["suppression_salt"],
        "CONSENT_WEBHOOK_SECRET": sec["sms_webhook_secret"],
        # SMS through the stack's fake provider, both styles (tribune_devstack.fake_sms)
        "MESSAGING_SMS_OVH_BASE_URL": f"{cfg.sms_url}/1.0",
        "MESSAGING_SMS_TWILIO_BASE_URL": f"{cfg.sms_url}/2010-04-01",
        "MESSAGING_SMS_OVH_APPLICATION_SECRET": sec["sms_provider_secret"],
        "MESSAGING_SMS_OVH_CONSUMER_KEY": sec["sms_provider_secret"],
        "MESSAGING_SMS_TWILIO_AUTH_TOKEN": sec["sms_provider_secret"],
        "MESSAGING_SMS_OVH_RECEIPT_SECRET": sec["sms_receipt_secret"],
        "MESSAGING_SMS_TWILIO_RECEIPT_SECRET": sec["sms_receipt_secret"],
        # links in emails point at this stack's gateway
        "CONSENT_PUBLIC_BASE_URL": cfg.gateway_url,
        "MESSAGING_UNSUBSCRIBE_BASE_URL": f"{cfg.gateway_url}/api/v1/public/consents/unsubscribe",
        "MESSAGING_TRACKING_BASE_URL": cfg.gateway_url,
        "GATEWAY_ADMIN_EMAIL": cfg.admin_email,
        "GATEWAY_ADMIN_PASSWORD": sec["admin_password"],
        # the back office's cookies: this stack serves plain http://127.0.0.1, where a
        # Secure cookie would never come back (gateway.webapp)
        "GATEWAY_WEBAPP_COOKIE_SECURE": "false" if cfg.gateway_url.startswith("http:") else "true",
    }
    if environment == "test":
        # end-to-end tests send SMS at whatever hour CI runs them: quiet hours and public
        # holidays are the send rules' own tests' business (tests/unit, tests/integration)
        env["MESSAGING_SMS_ALLOWED_HOURS"] = "mon-sun 00:00-24:00"
        env["MESSAGING_SMS_HOLIDAY_COUNTRY"] = ""
        # a figures stream ends soon (the authorization matrix reads whole answers)
        env["MEMBERSHIPS_LIVE_STREAM_MAX_SECONDS"] = "3"
        env["GATEWAY_LIVE_EVENTS_MAX_SECONDS"] = "1"
        # the membership sweep (grace, lapse) runs every second, not every 5 minutes
        env["MEMBERSHIPS_SWEEP_INTERVAL_SECONDS"] = "1"
        # the suites share the stack's administrator and poll through the gateway: its
        # per-user rate limit is the limiter's own tests' business (tests/integration)
        env["GATEWAY_RATE_LIMIT_USER_REQUESTS"] = "1000000"
    # Each service's database in its own store when the layout says so (StackConfig.stores);
    # the key vault is one for every service: in the main store, whatever the layout.
    env["TRIBUNE_VAULT_MONGO_URL"] = cfg.mongo_url
    for svc in SERVICES:
        if f"store-{svc}" in cfg.stores:
            env[f"{svc.upper()}_MONGO_URL"] = cfg.store_url(svc)
    env["MEMBERSHIPS_LIVE_PORT"] = str(cfg.http_ports[LIVE])
    env["GATEWAY_LIVE_URL"] = cfg.service_url(LIVE)
    for svc in SERVICES:
        up = svc.upper()
        env[f"{up}_HTTP_PORT"] = str(cfg.http_ports[svc])
        env[f"{up}_WORKER_PORT"] = str(cfg.worker_ports[svc])
        if svc != "gateway":
            env[f"GATEWAY_{up}_URL"] = cfg.service_url(svc)
    return env


def _process_env(cfg: StackConfig, environment: str) -> dict[str, str]:
    # Unbuffered so a crash's last log lines are in the file when we show the tail.
    return {**os.environ, **stack_env(cfg, environment), "PYTHONUNBUFFERED": "1"}


# --- probes ------------------------------------------------------------------------------


def _http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def _healthy(cfg: StackConfig, spec: ProcessSpec) -> bool:
    return _http_status(f"http://{cfg.host}:{spec.port}/health") == 200


def _ready(cfg: StackConfig, spec: ProcessSpec) -> bool:
    return _http_status(f"http://{cfg.host}:{spec.port}/ready") == 200


# --- lifecycle ---------------------------------------------------------------------------


def _start_one(cfg: StackConfig, spec: ProcessSpec, environment: str) -> PidRecord:
    return spawn(
        spec.name,
        [sys.executable, "-m", spec.module],
        logs_dir=cfg.logs_dir,
        pids_dir=cfg.pids_dir,
        env=_process_env(cfg, environment),
        # Relative paths a service writes (e.g. faust's default "<app>-data" datadir)
        # land in the git-ignored state dir, not in the repo.
        cwd=cfg.state_dir,
    )


def start_platform(
    cfg: StackConfig,
    environment: str = "development",
    *,
    only: Iterable[str] | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Start every API and worker not already healthy; wait until all answer /ready.

    Returns the names of the processes started by this call. On failure, stops those
    and raises DevstackError with the failing process's log tail.
    """
    specs = process_specs(cfg)
    if only is not None:
        wanted = set(only)
        specs = [s for s in specs if s.name in wanted]
    stack_secrets(cfg)  # create them once, before processes race to read the env
    started: dict[str, PidRecord] = {}
    try:
        for spec in specs:
            rec = live_pid(cfg.pids_dir, spec.name)
            if rec is not None and _healthy(cfg, spec):
                continue  # a running stack survives a second `up`
            if rec is not None:  # alive but not answering: replace it
                stop_records([rec], timeout=5, pids_dir=cfg.pids_dir)
            if port_open(cfg.host, spec.port):
                raise DevstackError(
                    f"port {cfg.host}:{spec.port} for {spec.name} is in use by another "
                    "process: stop it, or pick other ports (TRIBUNE_PORT_BASE)"
                )
            started[spec.name] = _start_one(cfg, spec, environment)
        wait_platform_ready(cfg, [s.name for s in specs], timeout=timeout, started=started)
    except BaseException:
        stop_records(list(started.values()), timeout=5, pids_dir=cfg.pids_dir)
        raise
    return list(started)


def wait_platform_ready(
    cfg: StackConfig,
    names: Iterable[str],
    *,
    timeout: float | None = None,
    started: dict[str, PidRecord] | None = None,
) -> None:
    """Poll GET /ready of each process until 200; fail fast if one of them exits."""
    timeout = cfg.ready_timeout if timeout is None else timeout
    pending = [_spec(cfg, n) for n in names]
    deadline = time.monotonic() + timeout
    recs = {
        s.name: r
        for s in pending
        if (r := (started or {}).get(s.name) or read_pid(cfg.pids_dir, s.name)) is not None
    }

    def dead() -> list[ProcessSpec]:
        return [s for s in pending if s.name in recs and not pid_alive(recs[s.name].pid)]

    while pending:
        if dead():
            time.sleep(0.5)  # let siblings failing the same way exit too: report the first
            exited = dead()
            rec = recs[exited[0].name]
            code = exit_code(rec.pid)
            others = (
                f" (also exited: {', '.join(s.name for s in exited[1:])})" if exited[1:] else ""
            )
            how = f" with code {code}" if code is not None else ""
            excerpt = log_excerpt(rec.log, start=rec.log_offset)
            raise DevstackError(
                f"{exited[0].label} exited{how} before it was ready{others}; "
                f"log {rec.log}:\n{excerpt}"
            )
        for spec in list(pending):
            if _ready(cfg, spec):
                pending.remove(spec)
        if not pending:
            return
        if time.monotonic() >= deadline:
            first = pending[0]
            body = ""
            try:
                body = httpx.get(f"http://{cfg.host}:{first.port}/ready", timeout=1.0).text
            except httpx.HTTPError as exc:
                body = f"({type(exc).__name__})"
            first_rec = recs.get(first.name)
            log = first_rec.log if first_rec else str(cfg.logs_dir / f"{first.name}.log")
            excerpt = log_excerpt(log, start=first_rec.log_offset if first_rec else 0)
            raise DevstackError(
                f"not ready after {timeout:.0f}s (TRIBUNE_READY_TIMEOUT): "
                f"{', '.join(s.name for s in pending)}; {first.name} /ready said {body[:300]}; "
                f"log {log}:\n{excerpt}"
            )
        time.sleep(0.5)


def stop_processes(
    cfg: StackConfig, names: Iterable[str], timeout: float | None = None
) -> dict[str, str]:
    recs = [r for n in names if (r := read_pid(cfg.pids_dir, n)) is not None]
    return stop_records(
        recs, timeout=cfg.stop_timeout if timeout is None else timeout, pids_dir=cfg.pids_dir
    )


def stop_platform(
    cfg: StackConfig, *, infra: bool = True, timeout: float | None = None
) -> dict[str, str]:
    """SIGTERM every service process (then infra), wait, SIGKILL leftovers, drop pid files."""
    names = [s.name for s in process_specs(cfg)]
    if cfg.pids_dir.is_dir():  # also sweep pid files of processes no longer in the list
        names += [p.stem for p in cfg.pids_dir.glob("*.pid") if p.stem not in names]
    if cfg.pids_dir == cfg.infra_pids_dir:
        names = [n for n in names if n not in INFRA]
    out = stop_processes(cfg, names, timeout)
    if infra:
        out.update(stop_infra(cfg, timeout))
    return out


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int | None
    port: int
    ready: bool


def status(cfg: StackConfig) -> list[ProcessStatus]:
    rows = [ProcessStatus(*row) for row in infra_status(cfg)]
    for spec in process_specs(cfg):
        rec = live_pid(cfg.pids_dir, spec.name)
        rows.append(
            ProcessStatus(spec.name, rec.pid if rec else None, spec.port, _ready(cfg, spec))
        )
    return rows


def format_status(rows: Iterable[ProcessStatus]) -> str:
    lines = [f"{'process':<20} {'pid':>8} {'port':>6}  ready"]
    for r in rows:
        pid = str(r.pid) if r.pid is not None else "-"
        lines.append(f"{r.name:<20} {pid:>8} {r.port:>6}  {'yes' if r.ready else 'no'}")
    return "\n".join(lines)


def _anything_running(cfg: StackConfig) -> bool:
    return any(
        live_pid(pids, path.stem) is not None
        for pids in {cfg.pids_dir, cfg.infra_pids_dir}
        if pids.is_dir()
        for path in pids.glob("*.pid")
    )


# --- for pytest ----------------------------------------------------------------------------


class RunningStack:
    """Infra + platform for a test session or benchmark; on exit stops only what it started.

        with RunningStack(StackConfig.for_tests()) as stack:
            httpx.get(stack.gateway_url + "/health")
            stack.kill("messaging-worker")      # SIGKILL, for crash tests
            stack.restart("messaging-worker")   # start again, wait for /ready

    `platform=False`: the infra alone. A second RunningStack on the same config reuses the
    running infra and leaves it alone. An ephemeral config's folder (`for_tests()`) is
    deleted by the stop that leaves nothing of the stack running.
    Also usable as `async with` (the blocking work runs in a thread).
    """

    def __init__(
        self,
        cfg: StackConfig | None = None,
        environment: str = "test",
        *,
        platform: bool = True,
    ) -> None:
        self.cfg = cfg or StackConfig.for_tests()
        self.environment = environment
        self.platform = platform
        self.infra: InfraHandle | None = None
        self.started: list[str] = []

    # lifecycle
    def start(self) -> Self:
        try:
            self.infra = ensure_infra(self.cfg)
            if self.platform:
                self.started = start_platform(self.cfg, self.environment)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.started:
            stop_processes(self.cfg, self.started)
            self.started = []
        if self.infra is not None:
            self.infra.stop_started()
        if self.cfg.ephemeral and not _anything_running(self.cfg):
            shutil.rmtree(self.cfg.state_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # addresses and credentials
    @property
    def env(self) -> dict[str, str]:
        return stack_env(self.cfg, self.environment)

    @property
    def gateway_url(self) -> str:
        return self.cfg.gateway_url

    @property
    def smtp_http_url(self) -> str:
        return self.cfg.smtp_http_url

    def url(self, service: str) -> str:
        return self.cfg.service_url(service)

    def worker_url(self, service: str) -> str:
        return self.cfg.worker_url(service)

    @property
    def admin_credentials(self) -> tuple[str, str]:
        return self.cfg.admin_email, stack_secrets(self.cfg)["admin_password"]

    def log_path(self, name: str) -> Path:
        base = self.cfg.infra_logs_dir if name in INFRA else self.cfg.logs_dir
        return base / f"{name}.log"

    def log_tail(self, name: str, lines: int = 40) -> str:
        return log_tail(self.log_path(name), lines)

    # crash tests
    def pid(self, name: str) -> int | None:
        pids = self.cfg.infra_pids_dir if name in INFRA else self.cfg.pids_dir
        rec = live_pid(pids, name)
        return rec.pid if rec else None

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send `sig` (default SIGKILL) to one process by name; wait until it is gone."""
        pids = self.cfg.infra_pids_dir if name in INFRA else self.cfg.pids_dir
        if name not in INFRA:
            _spec(self.cfg, name)
        rec = live_pid(pids, name)
        if rec is None:
            raise DevstackError(f"{name} is not running (no live pid in {pids})")
        kill_now(rec, sig)
        return rec.pid

    def restart(self, name: str, *, timeout: float | None = None) -> None:
        """Start one process again (after `kill`) and wait until it is ready."""
        if name in INFRA:
            handle = ensure_infra(self.cfg, only=[name])
            if self.infra is not None and name in handle.started:
                self.infra.started.append(name)
                self.infra.records.update(handle.records)
            return
        _spec(self.cfg, name)
        stop_processes(self.cfg, [name])
        pid_file(self.cfg.pids_dir, name).unlink(missing_ok=True)
        started = start_platform(self.cfg, self.environment, only=[name], timeout=timeout)
        if name in started and name not in self.started:
            self.started.append(name)
