"""The kernel's delivery guarantees on real Kafka and the real store."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import read_topic, wait_for
from tribune_shared.bus import EventConsumer
from tribune_shared.events import dlq_topic, new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState
from tribune_shared.metrics import EVENTS_HANDLED
from tribune_shared.outbox import OUTBOX, OutboxRelay
from tribune_shared.store import Store

pytestmark = pytest.mark.integration
TOPIC = "contact-created"
SCRIPT = Path(__file__).with_name("bus_child.py")


def envelope(contact_id: str):
    event = ContactCreatedV1(contact_id=contact_id, contact_version=1, contact=ContactState())
    return new_envelope(event, producer="contacts", federation_id="f", federation_path="/f/")


async def publish_to_one_partition(publisher, settings, envelopes) -> None:
    """Publish on partition 0 whatever the keys, so they make one partition batch."""
    await publisher.publish_many(envelopes, partition=0)


def recording_handler(store: Store, fail_for: set[str] = frozenset()):
    calls: list[str] = []

    async def handle(env, session):
        calls.append(env.key)
        if env.key in fail_for:
            raise RuntimeError(f"handler refuses {env.key}")
        await store["effects"].update_one(
            {"_id": env.key}, {"$inc": {"applied": 1}}, upsert=True, session=session
        )

    return handle, calls


async def run_consumer_until(consumer: EventConsumer, predicate, timeout=30.0):
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await wait_for(predicate, timeout=timeout)
    finally:
        consumer.request_stop()
        await task


async def test_failing_message_goes_to_dlq_and_the_next_is_processed(bus_kit):
    settings, store, publisher = bus_kit
    handle, calls = recording_handler(store, fail_for={"poison"})
    await publisher.publish_many([envelope("poison"), envelope("healthy")])
    consumer = EventConsumer(
        settings, store, group="g-dlq", handlers={TOPIC: handle}, dlq_publisher=publisher
    )

    async def healthy_done():
        return await store["effects"].find_one({"_id": "healthy"})

    await run_consumer_until(consumer, healthy_done)
    # isolated (alone, or split out of its batch), then first try + 2 retries, parked
    assert calls.count("poison") >= 3
    parked = await read_topic(
        settings.kafka_bootstrap_servers, settings.topic(dlq_topic(TOPIC)), expect=1
    )
    assert len(parked) == 1
    headers = dict(parked[0].headers)
    assert b"handler refuses poison" in headers["dlq_error"]
    assert headers["dlq_attempts"] == b"3"
    assert parked[0].key == b"poison"
    assert await store["effects"].find_one({"_id": "poison"}) is None


async def test_duplicate_delivery_changes_state_once(bus_kit):
    settings, store, publisher = bus_kit
    handle, calls = recording_handler(store)
    env = envelope("dup")
    await publisher.publish_many([env, env, env])  # provider-style redelivery
    await publisher.publish(envelope("marker"))
    consumer = EventConsumer(
        settings, store, group="g-dup", handlers={TOPIC: handle}, dlq_publisher=publisher
    )

    async def marker_done():
        return await store["effects"].find_one({"_id": "marker"})

    await run_consumer_until(consumer, marker_done)
    assert (await store["effects"].find_one({"_id": "dup"}))["applied"] == 1
    assert calls.count("dup") == 1


class Child:
    """A child process whose stdout lines are read by one thread (select() cannot see
    lines already buffered by the pipe's reader)."""

    def __init__(self, mode: str, env_extra: dict[str, str], arg: str = "") -> None:
        import queue
        import threading

        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), mode, arg],
            env={**os.environ, **env_extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_line(self, wanted: str, timeout: float = 60) -> None:
        import queue

        try:
            while True:
                line = self.lines.get(timeout=timeout)
                if not line:
                    break
                self.seen.append(line)
                if line.strip() == wanted:
                    return
        except queue.Empty:
            pass
        self.proc.kill()
        output = "".join(self.seen)[-3000:]
        raise AssertionError(f"child never printed {wanted!r}; output: {output}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.mark.parametrize("moment", ["after-handler-before-commit", "inside-handler"])
async def test_consumer_killed_before_commit_gets_the_message_again_and_handles_it_once(
    bus_kit, isolated_env, moment
):
    settings, store, publisher = bus_kit
    group = f"g-kill-{moment}"
    keys = [f"k{i}" for i in range(200)]
    await publish_to_one_partition(publisher, settings, [envelope(k) for k in keys])
    # the 200 events in one batch: the kill lands inside (or right after) its transaction
    child = Child(
        "consume",
        {"BUSTEST_CONSUMER_MAX_RETRIES": "0", "BUSTEST_CONSUMER_BATCH_MAX_RECORDS": "500"},
        f"{group}:{moment}",
    )
    child.wait_line("READY-TO-DIE")
    child.signal(signal.SIGKILL)
    child.wait(timeout=10)

    # killed inside the batch transaction: nothing of it committed; killed after the
    # transaction and before the offset commit: all of it did
    expected_before = len(keys) if moment == "after-handler-before-commit" else 0
    assert await store["effects"].count_documents({}) == expected_before

    handle, _calls = recording_handler(store)
    consumer = EventConsumer(
        settings, store, group=group, handlers={TOPIC: handle}, dlq_publisher=publisher
    )
    duplicates_before = EVENTS_HANDLED.labels("bustest", TOPIC, "duplicate")._value.get()
    ok_before = EVENTS_HANDLED.labels("bustest", TOPIC, "ok")._value.get()

    async def redelivered():
        dup = EVENTS_HANDLED.labels("bustest", TOPIC, "duplicate")._value.get()
        ok = EVENTS_HANDLED.labels("bustest", TOPIC, "ok")._value.get()
        return dup + ok - duplicates_before - ok_before >= len(keys)

    started = asyncio.get_running_loop().time()
    # An orphaned transaction of the killed process may hold its locks until the store
    # aborts it; the consumer waits that out as a transient conflict.
    await run_consumer_until(consumer, redelivered, timeout=150)
    print(f"redelivered and handled after {asyncio.get_running_loop().time() - started:.1f}s")
    applied = [d["applied"] async for d in store["effects"].find({})]
    assert len(applied) == len(keys)  # nothing lost
    assert set(applied) == {1}  # nothing doubled


async def test_sigkill_between_write_and_publish_neither_loses_nor_invents_events(
    bus_kit, isolated_env
):
    settings, store, publisher = bus_kit
    # 1) committed write, killed before any relay ran: the event must still go out.
    child = Child("write-then-hang", {}, "committed-1")
    child.wait_line("COMMITTED")
    child.signal(signal.SIGKILL)
    child.wait(timeout=10)
    # 2) killed inside the transaction, after the state write: nothing may go out.
    child = Child("hang-in-transaction", {}, "never-1")
    child.wait_line("IN-TRANSACTION")
    child.signal(signal.SIGKILL)
    child.wait(timeout=10)

    states = {d["_id"] async for d in store["states"].find({})}
    assert states == {"committed-1"}
    assert await store[OUTBOX].count_documents({"published_at": None}) == 1

    relay = OutboxRelay(store, publisher)
    assert await relay.relay_once() == 1
    assert await store[OUTBOX].count_documents({"published_at": None}) == 0
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic(TOPIC))
    published = [r.key.decode() for r in records]
    assert published == ["committed-1"]


async def test_projection_ignores_an_older_state_inside_a_handler_transaction(bus_kit):
    from tribune_shared.store import upsert_if_newer

    _settings, store, _publisher = bus_kit
    coll = store["projection"]
    async with store.transaction() as session:
        assert await upsert_if_newer(coll, "c1", 2, {"name": "new"}, session=session)
    # contact-updated v2 arrived before contact-created v1: v1 is a no-op, not an abort
    async with store.transaction() as session:
        assert not await upsert_if_newer(coll, "c1", 1, {"name": "old"}, session=session)
        await store["other"].insert_one({"_id": "still-commits"}, session=session)
    assert (await coll.find_one({"_id": "c1"}))["name"] == "new"
    assert await store["other"].find_one({"_id": "still-commits"})


async def test_set_each_gives_every_document_its_own_values_in_one_transaction(bus_kit):
    """The batch form of one UpdateOne per document, on the real store: each document
    gets its own fields (documents with other field names in their own statement), a
    document failing ``where`` and a document not in the batch are left alone, and the
    whole batch rolls back with its transaction."""
    from datetime import UTC, datetime

    from tribune_shared.store import set_each

    _settings, store, _publisher = bus_kit
    coll = store["messages"]
    await coll.insert_many(
        [{"_id": f"m{i}", "status": "sending" if i != 3 else "sent"} for i in range(5)]
    )
    at = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    values = {
        "m0": {"status": "sent", "sent_at": at, "provider": {"name": "ovh"}},
        "m1": {"status": "failed", "failure_reason": "550 mailbox"},
        "m2": {"status": "sent", "sent_at": at, "provider": None},
        "m3": {"status": "failed", "failure_reason": "too late"},
    }
    async with store.transaction() as session:
        matched = await set_each(coll, values, where={"status": "sending"}, session=session)
    assert matched == 3
    docs = {d["_id"]: d async for d in coll.find({})}
    assert docs["m0"]["status"] == "sent" and docs["m0"]["provider"] == {"name": "ovh"}
    assert docs["m0"]["sent_at"].replace(tzinfo=UTC) == at
    assert docs["m1"] == {"_id": "m1", "status": "failed", "failure_reason": "550 mailbox"}
    assert docs["m2"]["status"] == "sent" and docs["m2"]["provider"] is None
    assert docs["m3"] == {"_id": "m3", "status": "sent"}  # not sending: left alone
    assert docs["m4"] == {"_id": "m4", "status": "sending"}  # not in the batch

    class Abort(Exception):
        pass

    try:
        async with store.transaction() as session:
            await set_each(coll, {"m4": {"status": "sent"}}, session=session)
            raise Abort
    except Abort:
        pass
    assert (await coll.find_one({"_id": "m4"}))["status"] == "sending"


async def test_insert_absent_and_upserts_insert_the_new_and_leave_or_update_the_stored(bus_kit):
    """The batch paths that insert what is new in one statement: a document already
    stored is left alone (``insert_absent``) or updated only by a newer version
    (``upsert_many_if_newer``), one stored without a version counts as stored, a batch's
    second document with an ``_id`` is not inserted twice, and all of it rolls back with
    its transaction."""
    from tribune_shared.store import Projected, insert_absent, upsert_many_if_newer

    _settings, store, _publisher = bus_kit
    coll = store["intents"]
    await coll.insert_one({"_id": "old", "n": 0})
    docs = [
        {"_id": "a", "n": 1},
        {"_id": "old", "n": 2},
        {"_id": "b", "n": 3},
        {"_id": "a", "n": 4},
    ]
    async with store.transaction() as session:
        assert await insert_absent(coll, docs, session=session) == [0, 2]
    assert {d["_id"]: d["n"] async for d in coll.find({})} == {"old": 0, "a": 1, "b": 3}

    view = store["view"]
    await view.insert_many([{"_id": "v2", "name": "kept", "version": 2}, {"_id": "bare", "x": 1}])
    states = [
        Projected("new", 1, {"name": "first"}),
        Projected("new", 3, {"name": "newest"}),
        Projected("v2", 1, {"name": "older"}),
        Projected("bare", 1, {"name": "versioned"}),
        Projected("gone", 9, {"erased": True}, replace=True),
    ]
    async with store.transaction() as session:
        assert await upsert_many_if_newer(view, states, session=session) == 3
    got = {d.pop("_id"): d async for d in view.find({})}
    assert got == {
        "new": {"name": "newest", "version": 3},
        "v2": {"name": "kept", "version": 2},
        "bare": {"x": 1, "name": "versioned", "version": 1},
        "gone": {"erased": True, "version": 9},
    }

    class Abort(Exception):
        pass

    try:
        async with store.transaction() as session:
            await insert_absent(coll, [{"_id": "c", "n": 5}], session=session)
            await upsert_many_if_newer(view, [Projected("w", 1, {})], session=session)
            raise Abort
    except Abort:
        pass
    assert await coll.find_one({"_id": "c"}) is None and await view.find_one({"_id": "w"}) is None


async def test_sigterm_finishes_the_message_in_hand_and_commits_it(bus_kit, isolated_env):
    settings, store, publisher = bus_kit
    group = "g-sigterm"
    await publisher.publish(envelope("t1"))
    child = Child("consume", {}, f"{group}:sigterm-while-handling")
    child.wait_line("HANDLING")
    child.signal(signal.SIGTERM)
    child.wait_line("STOPPED", timeout=30)
    assert child.wait(timeout=10) == 0
    assert (await store["effects"].find_one({"_id": "t1"}))["applied"] == 1

    # The offset was committed: a new member of the group is not handed t1 again.
    await publisher.publish(envelope("marker"))
    handle, calls = recording_handler(store)
    consumer = EventConsumer(
        settings, store, group=group, handlers={TOPIC: handle}, dlq_publisher=publisher
    )
    duplicates_before = EVENTS_HANDLED.labels("bustest", TOPIC, "duplicate")._value.get()

    async def marker_done():
        return await store["effects"].find_one({"_id": "marker"})

    await run_consumer_until(consumer, marker_done)
    assert calls == ["marker"]
    assert EVENTS_HANDLED.labels("bustest", TOPIC, "duplicate")._value.get() == duplicates_before
