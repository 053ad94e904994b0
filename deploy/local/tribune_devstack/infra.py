"""Infra lifecycle: Kafka, the store (SecantusDB), the SMTP sink and the fake SMS and
payment providers.

Each is reused when its port already answers, else started detached with a pid file
under <infra dir>/pids and its output in <infra dir>/logs/<name>.log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from aiokafka import AIOKafkaClient
from pymongo import MongoClient

from tribune_devstack.kafka import fetch_kafka, kafka_version, prepare_kafka
from tribune_devstack.procs import (
    DevstackError,
    PidRecord,
    file_lock,
    live_pid,
    log_excerpt,
    pid_alive,
    port_open,
    read_pid,
    spawn,
    stop_records,
    wait_until,
)
from tribune_devstack.stack import LAYOUT_FILE, OWN_STORE_SERVICES, StackConfig

__all__ = [
    "INFRA",
    "InfraHandle",
    "ensure_infra",
    "fetch_kafka",
    "infra_names",
    "infra_status",
    "kafka_ready",
    "kafka_version",
    "payments_ready",
    "sms_ready",
    "smtp_ready",
    "stop_infra",
    "store_ready",
]

#: every infra process a stack may run; a stack runs the stores of its layout
#: (StackConfig.stores: "store", plus "store-<service>" per service with a store of its own)
INFRA: tuple[str, ...] = (
    "kafka",
    "store",
    *(f"store-{svc}" for svc in OWN_STORE_SERVICES),
    "smtp",
    "sms",
    "payments",
)
#: where the fake SMS provider calls the stack back, through the gateway: inbound SMS (the
#: consent STOP webhook) and delivery receipts (messaging's, one path per provider style)
SMS_INBOUND_PATH = "/api/v1/webhooks/sms"
SMS_RECEIPT_PATH = "/api/v1/webhooks/sms-receipts/{provider}"
#: where the fake payment providers notify the stack, through the gateway (memberships)
STRIPE_WEBHOOK_PATH = "/api/v1/webhooks/stripe"
HELLOASSO_WEBHOOK_PATH = "/api/v1/webhooks/helloasso"
T = TypeVar("T")


def _run_coro_in_thread(factory: Callable[[], Coroutine[object, object, T]]) -> T:
    # Probes must work from sync code called inside a running loop (pytest-asyncio
    # fixtures), where asyncio.run would refuse: give them a loop of their own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def kafka_ready(cfg: StackConfig, timeout: float = 5.0) -> bool:
    """TCP connect, then a metadata round trip that lists at least one broker."""
    if not port_open(cfg.host, cfg.kafka_port):
        return False

    async def probe() -> bool:
        client = AIOKafkaClient(
            bootstrap_servers=cfg.kafka_bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            return bool(client.cluster.brokers())
        except Exception:
            return False
        finally:
            await client.close()

    # aiokafka logs every refused connection at ERROR while the broker boots.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return _run_coro_in_thread(probe)
    finally:
        quiet.setLevel(level)


def infra_names(cfg: StackConfig) -> tuple[str, ...]:
    """The infra processes of this stack, in start order."""
    return tuple(n for n in INFRA if not n.startswith("store") or n in cfg.stores)


def store_ready(cfg: StackConfig, timeout: float = 2.0, *, name: str = "store") -> bool:
    """The store process ``name`` ("store" or "store-<service>") answers a ping."""
    port = cfg.stores[name]
    if not port_open(cfg.host, port):
        return False
    ms = int(timeout * 1000)
    client: MongoClient[dict[str, object]] = MongoClient(
        cfg.store_urls[name], serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
    )
    try:
        client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        client.close()


def smtp_ready(cfg: StackConfig, timeout: float = 2.0) -> bool:
    try:
        r = httpx.get(f"{cfg.smtp_http_url}/health", timeout=timeout)
        return r.status_code == 200 and r.json().get("status") == "ok"
    except (httpx.HTTPError, ValueError):
        return False


def sms_ready(cfg: StackConfig, timeout: float = 2.0) -> bool:
    try:
        r = httpx.get(f"{cfg.sms_url}/health", timeout=timeout)
        return r.status_code == 200 and r.json().get("status") == "ok"
    except (httpx.HTTPError, ValueError):
        return False


def payments_ready(cfg: StackConfig, timeout: float = 2.0) -> bool:
    try:
        r = httpx.get(f"{cfg.payments_url}/health", timeout=timeout)
        return r.status_code == 200 and r.json().get("status") == "ok"
    except (httpx.HTTPError, ValueError):
        return False


_PROBES: dict[str, Callable[[StackConfig], bool]] = {
    "kafka": kafka_ready,
    "smtp": smtp_ready,
    "sms": sms_ready,
    "payments": payments_ready,
}


def _ready(cfg: StackConfig, name: str) -> bool:
    if name.startswith("store"):
        return store_ready(cfg, name=name)
    return _PROBES[name](cfg)


def _port(cfg: StackConfig, name: str) -> int:
    if name.startswith("store"):
        return cfg.stores[name]
    return {
        "kafka": cfg.kafka_port,
        "smtp": cfg.smtp_port,
        "sms": cfg.sms_port,
        "payments": cfg.payments_port,
    }[name]


def _timeout(cfg: StackConfig, name: str) -> float:
    return cfg.kafka_ready_timeout if name == "kafka" else cfg.infra_ready_timeout


def _secantusd() -> str:
    beside = Path(sys.executable).parent / "secantusd-py"
    found = str(beside) if beside.is_file() else shutil.which("secantusd-py")
    if not found:
        raise DevstackError("secantusd-py not found: run `uv sync` (package secantusdb)")
    return found


def _command(cfg: StackConfig, name: str) -> list[str]:
    if name == "kafka":
        cmd, _ = prepare_kafka(cfg)
        return cmd
    if name.startswith("store"):
        home = cfg.infra_dir / name
        home.mkdir(parents=True, exist_ok=True)
        # An explicit (empty) config turns off secantusd's auto-discovery of
        # ./secantusd.toml and ~/.secantus/: the flags below are the whole config.
        conf = cfg.infra_dir / "secantusd.toml"
        if not conf.exists():
            conf.write_text("# tribune_devstack: settings come from command-line flags\n")
        cache = ["--cache-size", cfg.store_cache_size] if cfg.store_cache_size else []
        return [
            _secantusd(),
            "--config",
            str(conf),
            "--host",
            cfg.host,
            "--port",
            str(cfg.stores[name]),
            "--storage-path",
            ":memory:" if cfg.store_in_memory else str(home),
            *cache,
        ]
    if name == "sms":
        return [
            sys.executable,
            "-m",
            "tribune_devstack.fake_sms",
            "--host",
            cfg.host,
            "--port",
            str(cfg.sms_port),
            "--ovh-receipt-url",
            cfg.gateway_url + SMS_RECEIPT_PATH.format(provider="ovh"),
            "--twilio-receipt-url",
            cfg.gateway_url + SMS_RECEIPT_PATH.format(provider="twilio"),
            "--inbound-url",
            cfg.gateway_url + SMS_INBOUND_PATH,
        ]
    if name == "payments":
        return [
            sys.executable,
            "-m",
            "tribune_devstack.fake_payments",
            "--host",
            cfg.host,
            "--port",
            str(cfg.payments_port),
            "--stripe-webhook-url",
            cfg.gateway_url + STRIPE_WEBHOOK_PATH,
            "--helloasso-webhook-url",
            cfg.gateway_url + HELLOASSO_WEBHOOK_PATH,
        ]
    return [
        sys.executable,
        "-m",
        "tribune_devstack.smtp_sink",
        "--host",
        cfg.host,
        "--smtp-port",
        str(cfg.smtp_port),
        "--http-port",
        str(cfg.smtp_http_port),
        "--maildir",
        str(cfg.infra_dir / "mail"),
        "--max-messages",
        str(cfg.smtp_max_messages),
    ]


def _env(cfg: StackConfig, name: str) -> dict[str, str] | None:
    if name.startswith("store") and cfg.store_in_memory:
        # An in-memory secantusd still makes a scratch home with mkdtemp and deletes it on
        # a clean exit: after a SIGKILL it stays behind, so put it in the stack's folder.
        return {**os.environ, "TMPDIR": str(cfg.infra_dir / name)}
    if name == "sms":
        # The fake signs receipts and inbound SMS with the stack's secrets, which messaging
        # and consent are given too (platform.stack_env); in the environment, not argv.
        # Imported here: platform imports this module.
        from tribune_devstack.platform import stack_secrets

        sec = stack_secrets(cfg)
        return {
            **os.environ,
            "FAKE_SMS_RECEIPT_SECRET": sec["sms_receipt_secret"],
            "FAKE_SMS_INBOUND_SECRET": sec["sms_webhook_secret"],
        }
    if name == "payments":
        # signed with the secrets memberships checks (platform.stack_env), from the env
        from tribune_devstack.platform import stack_secrets

        sec = stack_secrets(cfg)
        return {
            **os.environ,
            "FAKE_PAYMENTS_STRIPE_SECRET": sec["stripe_webhook_secret"],
            "FAKE_PAYMENTS_HELLOASSO_KEY": sec["helloasso_signature_key"],
        }
    return None


@dataclass
class InfraHandle:
    """What `ensure_infra` found running (reused) and what it started."""

    cfg: StackConfig
    started: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    records: dict[str, PidRecord] = field(default_factory=dict)

    def stop_started(self, timeout: float | None = None) -> dict[str, str]:
        """Stop only the processes this handle started; reused ones keep running.

        No-op with TRIBUNE_KEEP_INFRA=1 (a test session's infra outlives it, to be looked at)."""
        if self.cfg.keep_infra:
            self.started.clear()
            return {}
        recs = [self.records[n] for n in self.started if n in self.records]
        out = stop_records(
            recs,
            timeout=self.cfg.stop_timeout if timeout is None else timeout,
            pids_dir=self.cfg.infra_pids_dir,
        )
        self.started.clear()
        return out


def ensure_infra(cfg: StackConfig, only: Iterable[str] | None = None) -> InfraHandle:
    """Make Kafka, the stores, SMTP sink and fake SMS and payment providers answer on cfg's
    ports (``only``: those named); start what is missing."""
    # Concurrent starts of one stack's infra (two `make up`): the second waits, then reuses.
    with file_lock(cfg.infra_dir / "infra.lock"):
        return _ensure_infra(cfg, infra_names(cfg) if only is None else only)


def _ensure_infra(cfg: StackConfig, only: Iterable[str]) -> InfraHandle:
    handle = InfraHandle(cfg)
    to_start: list[str] = []
    to_wait: list[str] = []
    for name in only:
        if _ready(cfg, name):
            handle.reused.append(name)
        elif live_pid(cfg.infra_pids_dir, name) is not None:
            to_wait.append(name)  # our earlier start, still booting
        elif port_open(cfg.host, _port(cfg, name)):
            raise DevstackError(
                f"port {cfg.host}:{_port(cfg, name)} is taken by something that does not "
                f"answer as {name}: stop it or set another TRIBUNE_*_PORT"
            )
        else:
            to_start.append(name)
    if any(name.startswith("store") for name in to_start):
        # what the data is laid out as, so a later start without TRIBUNE_STORES keeps it
        # (StackConfig.from_env: existing_layout)
        cfg.infra_dir.mkdir(parents=True, exist_ok=True)
        (cfg.infra_dir / LAYOUT_FILE).write_text(cfg.store_layout + "\n")
    try:
        for name in to_start:
            rec = spawn(
                name,
                _command(cfg, name),
                logs_dir=cfg.infra_logs_dir,
                pids_dir=cfg.infra_pids_dir,
                env=_env(cfg, name),
                cwd=cfg.infra_dir,
            )
            handle.records[name] = rec
            handle.started.append(name)
        for name in to_wait:
            existing = read_pid(cfg.infra_pids_dir, name)
            if existing is not None:
                handle.records[name] = existing
        for name in [*to_start, *to_wait]:
            _wait_ready(cfg, name, handle.records.get(name))
            if name in to_wait:
                handle.reused.append(name)
    except BaseException:
        handle.stop_started(timeout=5)
        raise
    return handle


def _wait_ready(cfg: StackConfig, name: str, rec: PidRecord | None) -> None:
    timeout = _timeout(cfg, name)
    log = rec.log if rec else str(cfg.infra_logs_dir / f"{name}.log")
    start = rec.log_offset if rec else 0

    def died() -> str | None:
        if rec is None or pid_alive(rec.pid):
            return None
        return f"{name} exited before it was ready; log {log}:\n{log_excerpt(log, start=start)}"

    if not wait_until(lambda: _ready(cfg, name), timeout=timeout, interval=0.5, abort=died):
        raise DevstackError(
            f"{name} not ready after {timeout:.0f}s (raise TRIBUNE_"
            f"{'KAFKA' if name == 'kafka' else 'INFRA'}_READY_TIMEOUT?); "
            f"log {log}:\n{log_excerpt(log, start=start)}"
        )


def stop_infra(cfg: StackConfig, timeout: float | None = None) -> dict[str, str]:
    """Stop infra by pid files: SIGTERM, wait up to `timeout` s, then SIGKILL."""
    recs = [r for n in INFRA if (r := read_pid(cfg.infra_pids_dir, n)) is not None]
    out = stop_records(
        recs, timeout=cfg.stop_timeout if timeout is None else timeout, pids_dir=cfg.infra_pids_dir
    )
    for rec in recs:
        out.setdefault(rec.name, "not running")
    return out


def infra_status(cfg: StackConfig) -> list[tuple[str, int | None, int, bool]]:
    """(name, pid or None if not ours, port, ready) for each infra process."""
    rows: list[tuple[str, int | None, int, bool]] = []
    for name in infra_names(cfg):
        rec = live_pid(cfg.infra_pids_dir, name)
        rows.append((name, rec.pid if rec else None, _port(cfg, name), _ready(cfg, name)))
    return rows
