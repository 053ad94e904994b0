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
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pymongo import AsyncMongoClient
from tribune_devstack import InfraHandle, StackConfig, ensure_infra, stack_env, stack_secrets
from tribune_devstack.procs import kill_now, live_pid, record_alive, spawn, stop_records
from tribune_devstack.smtp_sink import serve
from tribune_devstack.stack import find_free_ports

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack_cfg(tmp_path_factory: pytest.TempPathFactory) -> StackConfig:
    return StackConfig.for_tests(state_root=tmp_path_factory.mktemp("stacks"))


@pytest.fixture(scope="module")
def devstack_infra(stack_cfg: StackConfig) -> Iterator[InfraHandle]:
    handle = ensure_infra(stack_cfg)
    yield handle
    handle.stop_started()


def test_for_tests_shares_infra_and_isolates_the_rest(stack_cfg: StackConfig) -> None:
    dev = StackConfig.from_env()
    other = StackConfig.for_tests()
    assert (stack_cfg.kafka_port, stack_cfg.store_port, stack_cfg.smtp_port) == (
        dev.kafka_port,
        dev.store_port,
        dev.smtp_port,
    )
    assert stack_cfg.infra_dir == dev.infra_dir
    assert stack_cfg.topic_prefix and stack_cfg.topic_prefix != other.topic_prefix
    assert (
        stack_cfg.database_prefix.startswith("tribune_") and stack_cfg.database_prefix != "tribune_"
    )
    ports = [*stack_cfg.http_ports.values(), *stack_cfg.worker_ports.values()]
    assert len(set(ports)) == 10


def test_port_base_derives_every_service_port() -> None:
    c = StackConfig.from_env({"TRIBUNE_PORT_BASE": "9000", "TRIBUNE_STATE_DIR": "/tmp/x"})
    assert c.http_ports == {
        "gateway": 9000,
        "contacts": 9001,
        "consent": 9002,
        "memberships": 9003,
        "messaging": 9004,
    }
    assert c.worker_ports["gateway"] == 9100 and c.worker_ports["messaging"] == 9104
    assert c.state_dir == Path("/tmp/x")


def test_stack_env_and_persistent_secrets(stack_cfg: StackConfig) -> None:
    env = stack_env(stack_cfg, "test")
    assert env["TRIBUNE_ENVIRONMENT"] == "test"
    assert env["TRIBUNE_KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{stack_cfg.kafka_port}"
    assert env["TRIBUNE_MONGO_URL"].endswith("/?directConnection=true")
    assert env["CONTACTS_HTTP_PORT"] == str(stack_cfg.http_ports["contacts"])
    assert env["GATEWAY_WORKER_PORT"] == str(stack_cfg.worker_ports["gateway"])
    assert env["GATEWAY_MESSAGING_URL"] == f"http://127.0.0.1:{stack_cfg.http_ports['messaging']}"
    assert env["MESSAGING_SMTP_PORT"] == str(stack_cfg.smtp_port)
    assert len(env["TRIBUNE_IDENTITY_SECRET"]) >= 32
    assert stack_env(stack_cfg, "test") == env  # same secrets on every call (and restart)
    mode = stat.S_IMODE((stack_cfg.state_dir / "secrets.json").stat().st_mode)
    assert mode == 0o600
    assert stack_secrets(stack_cfg)["admin_password"] == env["GATEWAY_ADMIN_PASSWORD"]


async def test_kafka_produce_and_consume(
    stack_cfg: StackConfig, devstack_infra: InfraHandle
) -> None:
    topic = f"{stack_cfg.topic_prefix}devstack-check-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack_cfg.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        producer = AIOKafkaProducer(
            bootstrap_servers=stack_cfg.kafka_bootstrap, enable_idempotence=True
        )
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, b"hello", key=b"k1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=stack_cfg.kafka_bootstrap,
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


async def test_store_insert_and_find(stack_cfg: StackConfig, devstack_infra: InfraHandle) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack_cfg.mongo_url)
    db_name = f"{stack_cfg.database_prefix}devstack"
    try:
        coll = client[db_name]["things"]
        await coll.insert_one({"_id": "a", "n": 1})
        assert await coll.find_one({"_id": "a"}) == {"_id": "a", "n": 1}
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


async def test_smtp_sink_keeps_messages(
    stack_cfg: StackConfig, devstack_infra: InfraHandle
) -> None:
    to = f"{uuid.uuid4().hex[:8]}@example.org"
    await asyncio.to_thread(
        _send_mail, stack_cfg.host, stack_cfg.smtp_port, to, "Bonjour", "Corps du message"
    )
    async with httpx.AsyncClient(base_url=stack_cfg.smtp_http_url) as http:
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
