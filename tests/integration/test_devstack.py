"""The local runners against real processes: Kafka from jars, SecantusDB, the SMTP sink."""

from __future__ import annotations

import asyncio
import contextlib
import os
import smtplib
import stat
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient, monitoring
from tribune_devstack import (
    RunningStack,
    StackConfig,
    ensure_infra,
    infra_names,
    kafka_ready,
    payments_ready,
    sms_ready,
    smtp_ready,
    stack_env,
    stack_secrets,
    stop_infra,
    store_ready,
)
from tribune_devstack.procs import kill_now, live_pid, record_alive, spawn, stop_records
from tribune_devstack.smtp_sink import serve
from tribune_devstack.stack import find_free_ports, repo_root

pytestmark = pytest.mark.integration


def _infra_ports(cfg: StackConfig) -> set[int]:
    return {
        cfg.kafka_port,
        cfg.kafka_controller_port,
        cfg.store_port,
        cfg.smtp_port,
        cfg.smtp_http_port,
        cfg.sms_port,
        cfg.payments_port,
    }


def test_for_tests_owns_its_infra_and_isolates_the_rest(infra: StackConfig) -> None:
    dev = StackConfig.from_env()
    other = StackConfig.for_tests()
    dev_ports = _infra_ports(dev) | {*dev.http_ports.values(), *dev.worker_ports.values()}
    ports = [*_infra_ports(infra), *infra.http_ports.values(), *infra.worker_ports.values()]
    # 7 infra ports, 6 HTTP (5 APIs + the live figures), 5 workers
    assert len(set(ports)) == 18 and not set(ports) & dev_ports
    # the session's infra holds its ports: a second test stack cannot be given them
    assert not _infra_ports(other) & _infra_ports(infra)
    assert infra.infra_dir == infra.state_dir == repo_root() / ".local" / "tests" / infra.name
    assert other.state_dir != infra.state_dir and dev.infra_dir != infra.infra_dir
    assert infra.store_in_memory and infra.ephemeral and not dev.ephemeral
    assert infra.topic_prefix and infra.topic_prefix != other.topic_prefix
    assert infra.database_prefix.startswith("tribune_") and infra.database_prefix not in (
        "tribune_",
        other.database_prefix,
    )


def test_the_session_runs_its_own_infra(infra: StackConfig) -> None:
    records = {name: live_pid(infra.infra_pids_dir, name) for name in infra_names(infra)}
    assert all(records.values()), records  # started by this session, not reused
    assert kafka_ready(infra) and store_ready(infra) and smtp_ready(infra) and sms_ready(infra)
    assert payments_ready(infra)
    sms = records["sms"]
    assert sms is not None and f"{infra.gateway_url}/api/v1/webhooks/sms" in sms.cmd
    store = records["store"]
    assert store is not None and ":memory:" in store.cmd
    assert infra.store_cache_size and infra.store_cache_size in store.cmd
    assert not (infra.infra_dir / "store" / "WiredTiger").exists()
    props = (infra.infra_dir / "kafka" / "server.properties").read_text()
    assert f"log.dirs={infra.infra_dir / 'kafka' / 'data'}\n" in props


def _own_store_and_sink(infra: StackConfig, root: Path, *, keep: bool) -> StackConfig:
    """A test stack that reuses the session's Kafka and starts a store and a sink of its own
    (cheap to start, unlike a second broker)."""
    cfg = StackConfig.for_tests(state_root=root, stores="one")
    return replace(
        cfg,
        kafka_port=infra.kafka_port,
        kafka_controller_port=infra.kafka_controller_port,
        keep_infra=keep,
    )


def test_a_test_stack_stops_what_it_started_and_deletes_its_folder(
    infra: StackConfig, tmp_path: Path
) -> None:
    cfg = _own_store_and_sink(infra, tmp_path, keep=False)
    with RunningStack(cfg, platform=False) as own:
        assert own.infra is not None
        assert (own.infra.reused, own.infra.started) == (
            ["kafka"],
            ["store", "smtp", "sms", "payments"],
        )
        store = live_pid(cfg.infra_pids_dir, "store")
        sink = live_pid(cfg.infra_pids_dir, "smtp")
        assert store is not None and sink is not None and store_ready(cfg) and smtp_ready(cfg)
        # the in-memory store's scratch home is inside the stack's folder (TMPDIR)
        assert any((cfg.infra_dir / "store").iterdir())
    assert not record_alive(store) and not record_alive(sink)
    assert not cfg.state_dir.exists()
    assert kafka_ready(infra)  # reused, so left running


def test_each_service_keeps_its_database_in_a_store_of_its_own(tmp_path: Path) -> None:
    cfg = StackConfig.for_tests(state_root=tmp_path, stores="per-service")
    stores = list(cfg.stores)
    handle = ensure_infra(cfg, only=stores)
    try:
        assert handle.started == stores and len(stores) == 5
        assert all(store_ready(cfg, name=name) for name in stores)
        env = stack_env(cfg, "test")

        async def write_through_each_service() -> dict[str, set[str]]:
            for svc in ("contacts", "messaging", "gateway"):
                url = env.get(f"{svc.upper()}_MONGO_URL", env["TRIBUNE_MONGO_URL"])
                client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
                try:
                    await client[f"{cfg.database_prefix}{svc}"]["probe"].insert_one({"n": 1})
                finally:
                    await client.close()
            found: dict[str, set[str]] = {}
            for name, url in cfg.store_urls.items():
                client = AsyncMongoClient(url)
                try:
                    names = await client.list_database_names()
                    found[name] = {n for n in names if n.startswith(cfg.database_prefix)}
                finally:
                    await client.close()
            return found

        found = asyncio.run(write_through_each_service())
        prefix = cfg.database_prefix
        assert found == {
            "store": {f"{prefix}gateway"},
            "store-contacts": {f"{prefix}contacts"},
            "store-consent": set(),
            "store-memberships": set(),
            "store-messaging": {f"{prefix}messaging"},
        }
        # every store on disk in a folder of its own, or in memory with its scratch there
        assert all((cfg.infra_dir / name).is_dir() for name in stores)
        # recorded, so the stack's next start keeps the layout its data has
        assert (cfg.infra_dir / "stores.layout").read_text() == "per-service\n"
    finally:
        assert handle.stop_started() == dict.fromkeys(stores, "stopped")


def test_keep_infra_leaves_a_test_stacks_infra_and_folder(
    infra: StackConfig, tmp_path: Path
) -> None:
    cfg = _own_store_and_sink(infra, tmp_path, keep=True)
    with RunningStack(cfg, platform=False):
        store = live_pid(cfg.infra_pids_dir, "store")
    try:
        assert store is not None and record_alive(store) and store_ready(cfg)
        assert (cfg.infra_logs_dir / "store.log").is_file()
    finally:
        assert stop_infra(cfg) == {
            "store": "stopped",
            "smtp": "stopped",
            "sms": "stopped",
            "payments": "stopped",
        }


def test_port_base_derives_every_service_port() -> None:
    c = StackConfig.from_env({"TRIBUNE_PORT_BASE": "9000", "TRIBUNE_STATE_DIR": "/tmp/x"})
    assert c.http_ports == {
        "gateway": 9000,
        "contacts": 9001,
        "consent": 9002,
        "memberships": 9003,
        "messaging": 9004,
        "live": 9005,  # memberships' live figures (memberships.live)
    }
    assert c.worker_ports["gateway"] == 9100 and c.worker_ports["messaging"] == 9104
    assert c.state_dir == Path("/tmp/x")


def test_stack_env_and_persistent_secrets(infra: StackConfig) -> None:
    env = stack_env(infra, "test")
    assert env["TRIBUNE_ENVIRONMENT"] == "test"
    assert env["TRIBUNE_KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{infra.kafka_port}"
    # the local store is one node, and its bookkeeping of retryable writes costs more
    # than they are worth there (stack.StackConfig.mongo_url)
    url = urlsplit(env["TRIBUNE_MONGO_URL"])
    assert parse_qs(url.query) == {"directConnection": ["true"], "retryWrites": ["false"]}
    assert env["CONTACTS_HTTP_PORT"] == str(infra.http_ports["contacts"])
    assert env["GATEWAY_WORKER_PORT"] == str(infra.worker_ports["gateway"])
    assert env["GATEWAY_MESSAGING_URL"] == f"http://127.0.0.1:{infra.http_ports['messaging']}"
    assert env["MESSAGING_SMTP_PORT"] == str(infra.smtp_port)
    assert len(env["TRIBUNE_IDENTITY_SECRET"]) >= 32
    assert stack_env(infra, "test") == env  # same secrets on every call (and restart)
    mode = stat.S_IMODE((infra.state_dir / "secrets.json").stat().st_mode)
    assert mode == 0o600
    assert stack_secrets(infra)["admin_password"] == env["GATEWAY_ADMIN_PASSWORD"]


async def test_kafka_produce_and_consume(infra: StackConfig) -> None:
    topic = f"{infra.topic_prefix}devstack-check-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        producer = AIOKafkaProducer(
            bootstrap_servers=infra.kafka_bootstrap, enable_idempotence=True
        )
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, b"hello", key=b"k1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=infra.kafka_bootstrap,
            group_id=f"{topic}-group",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), timeout=30)
            await consumer.commit()
            tp = TopicPartition(topic, msg.partition)
            assert await consumer.committed(tp) == msg.offset + 1
        finally:
            await consumer.stop()
        assert (msg.key, msg.value, msg.partition) == (b"k1", b"hello", sent.partition)
    finally:
        with contextlib.suppress(Exception):
            await admin.delete_topics([topic])
        await admin.close()


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.seen.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_store_insert_and_find(infra: StackConfig) -> None:
    commands = _Commands()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        infra.mongo_url, event_listeners=[commands]
    )
    db_name = f"{infra.database_prefix}devstack"
    try:
        coll = client[db_name]["things"]
        await coll.insert_one({"_id": "a", "n": 1})
        assert await coll.find_one({"_id": "a"}) == {"_id": "a", "n": 1}
        # a write outside a transaction goes without a txnNumber: the local store keeps no
        # retryable-write record for it (StackConfig.mongo_url says why)
        insert = next(c for c in commands.seen if "insert" in c)
        assert "txnNumber" not in insert
    finally:
        await client.drop_database(db_name)
        await client.close()


def _send_mail(host: str, port: int, to: str, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"] = "tribune@example.org"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.send_message(msg)


async def test_smtp_sink_keeps_messages(infra: StackConfig) -> None:
    to = f"{uuid.uuid4().hex[:8]}@example.org"
    await asyncio.to_thread(
        _send_mail, infra.host, infra.smtp_port, to, "Bonjour", "Corps du message"
    )
    async with httpx.AsyncClient(base_url=infra.smtp_http_url) as http:
        found = (await http.get("/messages", params={"to": to})).json()
    assert len(found) == 1
    m = found[0]
    assert (m["mail_from"], m["rcpt_tos"], m["subject"]) == ("tribune@example.org", [to], "Bonjour")
    assert m["text"].strip() == "Corps du message"
    assert await asyncio.to_thread(Path(m["eml_path"]).is_file)


@pytest.fixture
async def own_sink(tmp_path: Path) -> AsyncIterator[tuple[int, int, Path]]:
    smtp_port, http_port = find_free_ports(2)
    stop = asyncio.Event()
    task = asyncio.create_task(serve("127.0.0.1", smtp_port, http_port, tmp_path, 2, stop))
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{http_port}/health")).status_code == 200:
                    break
            await asyncio.sleep(0.05)
    yield smtp_port, http_port, tmp_path
    stop.set()
    await task


async def test_smtp_sink_filter_bound_and_clear(own_sink: tuple[int, int, Path]) -> None:
    smtp_port, http_port, maildir = own_sink
    for i in range(3):
        await asyncio.to_thread(_send_mail, "127.0.0.1", smtp_port, f"p{i}@x.org", f"s{i}", "b")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
        kept = (await http.get("/messages")).json()
        assert [m["subject"] for m in kept] == ["s1", "s2"]  # bounded: oldest dropped
        assert [m["subject"] for m in (await http.get("/messages?to=P2@x.org")).json()] == ["s2"]
        one = (await http.get(f"/messages/{kept[0]['id']}")).json()
        assert one["subject"] == "s1" and "Subject: s1" in one["raw"]
        assert (await http.delete("/messages")).json() == {"deleted": 2}
        assert (await http.get("/messages")).json() == []
        assert (await http.get("/health")).json() == {"status": "ok", "messages": 0}
        assert (await http.get("/nope")).status_code == 404
    assert len(list(maildir.glob("*.eml"))) == 3  # every message written, even dropped ones


def test_kill_and_stop_detached_process(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
    logs, pids = tmp_path / "logs", tmp_path / "pids"
    rec = spawn("sleeper", cmd, logs_dir=logs, pids_dir=pids, env=dict(os.environ))
    assert live_pid(pids, "sleeper") == rec
    kill_now(rec)  # SIGKILL, as a crash test would
    assert not record_alive(rec) and live_pid(pids, "sleeper") is None
    rec2 = spawn("sleeper", cmd, logs_dir=logs, pids_dir=pids, env=dict(os.environ))
    t0 = time.monotonic()
    assert stop_records([rec2], timeout=5, pids_dir=pids) == {"sleeper": "stopped"}
    assert time.monotonic() - t0 < 5
    assert not (pids / "sleeper.pid").exists()
