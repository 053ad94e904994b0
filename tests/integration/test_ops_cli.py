"""The `tribune` ops CLI against real Kafka and the real store, run as an operator runs it
(the installed command, the platform's settings in the environment, --json documents).

A handler that fails parks a poison event on its DLQ; `dlq list` and `dlq show` report it
with its error; a dry run changes nothing; once the handler is fixed, a replay makes the
group that failed apply it exactly once while the group that had applied it skips it, and
a second replay re-publishes nothing. `lag` reports a backlog, then zero; `outbox`
reports the events a service committed and has not published yet."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import read_topic, wait_for
from tribune_ops.settings import service_settings
from tribune_shared.bus import EventConsumer
from tribune_shared.events import dlq_topic, new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState
from tribune_shared.outbox import Outbox, OutboxRelay
from tribune_shared.store import Store

pytestmark = pytest.mark.integration
TOPIC = "contact-created"
TRIBUNE = Path(sys.executable).with_name("tribune")


def envelope(contact_id: str):
    event = ContactCreatedV1(contact_id=contact_id, contact_version=1, contact=ContactState())
    return new_envelope(event, producer="contacts", federation_id="f", federation_path="/f/")


async def tribune(*args: str, expect: int = 0) -> dict[str, Any]:
    """Run the command with the test platform's environment; its JSON document."""
    done = await asyncio.to_thread(
        subprocess.run,
        [str(TRIBUNE), *args, "--json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == expect, done.stdout + done.stderr
    return json.loads(done.stdout)


def effect_handler(store: Store, collection: str, refuse: set[str]):
    async def handle(env, session):
        if env.key in refuse:
            raise RuntimeError(f"handler refuses {env.key}")
        await store[collection].update_one(
            {"_id": env.key}, {"$inc": {"applied": 1}}, upsert=True, session=session
        )

    return handle


async def consume_until(consumers: list[EventConsumer], predicate, timeout: float = 60.0):
    for consumer in consumers:
        await consumer.start()
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        await wait_for(predicate, timeout=timeout, interval=0.2)
    finally:
        for consumer in consumers:
            consumer.request_stop()
        await asyncio.gather(*tasks)


async def group_lag(*groups: str) -> dict[str, int]:
    document = await tribune("lag")
    return {g["group"]: g["total_lag"] for g in document["groups"] if g["group"] in groups}


async def test_a_parked_event_is_listed_shown_and_replayed_once_to_the_group_that_failed(bus_kit):
    settings, store, publisher = bus_kit
    prefix = settings.topic_prefix
    failing, healthy = f"{prefix}ops-failing", f"{prefix}ops-healthy"
    refused = {"poison"}  # the failing group's bug, fixed below
    poison = envelope("poison")
    await publisher.publish_many([poison, envelope("fine")])

    def consumers() -> list[EventConsumer]:
        return [
            EventConsumer(
                settings,
                store,
                group=group,
                handlers={TOPIC: effect_handler(store, collection, refuse)},
                dlq_publisher=publisher,
            )
            for group, collection, refuse in (
                ("ops-failing", "effects_failing", refused),
                ("ops-healthy", "effects_healthy", set()),
            )
        ]

    async def both_caught_up() -> bool:
        return await group_lag(failing, healthy) == {failing: 0, healthy: 0}

    await consume_until(consumers(), both_caught_up)
    assert await store["effects_failing"].find_one({"_id": "poison"}) is None
    assert (await store["effects_healthy"].find_one({"_id": "poison"}))["applied"] == 1

    parked_at = [
        r
        for r in await read_topic(settings.kafka_bootstrap_servers, settings.topic(TOPIC))
        if r.key == b"poison"
    ]

    # list: the DLQ, its count, the group that parked and its error
    listed = await tribune("dlq", "list")
    (dlq,) = [d for d in listed["dlqs"] if d["topic"] == f"{prefix}{TOPIC}-dlq"]
    assert (dlq["messages"], dlq["pending"], dlq["replayed"]) == (1, 1, 0)
    (by_group,) = dlq["groups"]
    assert by_group["group"] == failing
    assert "handler refuses poison" in by_group["errors"][0]["error"]
    assert (await tribune("dlq", "list", "--topic", TOPIC))["messages"] == 1

    # show: the parked event with its error
    shown = await tribune("dlq", "show", TOPIC)
    (message,) = shown["messages"]
    assert message["event_id"] == poison.event_id
    assert message["group"] == failing and message["attempts"] == 3
    assert "handler refuses poison" in message["error"] and message["replayed"] is False
    assert (await tribune("dlq", "show", TOPIC, "--error", "timeout"))["matched"] == 0
    assert (await tribune("dlq", "show", TOPIC, "--group", "ops-healthy"))["matched"] == 0

    # a dry run says what it would do and changes nothing
    dry = await tribune("dlq", "replay", TOPIC, "--dry-run")
    assert (dry["to_replay"], dry["replayed"]) == (1, 0)
    assert len(await read_topic(settings.kafka_bootstrap_servers, settings.topic(TOPIC))) == 2
    assert (await tribune("dlq", "show", TOPIC))["messages"][0]["replayed"] is False

    # the handler is fixed: the replay goes back to the topic, signed as before
    refused.clear()
    replay = await tribune("dlq", "replay", TOPIC, "--group", "ops-failing", "--yes")
    assert (replay["matched"], replay["replayed"]) == (1, 1)
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic(TOPIC), expect=3)
    (replayed,) = [r for r in records if "tribune-replayed-from" in dict(r.headers)]
    assert (replayed.partition, replayed.key) == (parked_at[0].partition, b"poison")
    headers = dict(replayed.headers)
    assert headers["tribune-replayed-from"] == f"{prefix}{TOPIC}-dlq:0:0".encode()
    assert not [name for name in headers if name.startswith("dlq_")]
    assert headers["event_id"] == poison.event_id.encode()

    # the failing group applies it once; the healthy group recognises it and skips it
    await consume_until(consumers(), both_caught_up)
    assert (await store["effects_failing"].find_one({"_id": "poison"}))["applied"] == 1
    assert (await store["effects_healthy"].find_one({"_id": "poison"}))["applied"] == 1
    parked = await read_topic(settings.kafka_bootstrap_servers, settings.topic(dlq_topic(TOPIC)))
    assert len(parked) == 1  # nothing failed this time

    # a second replay re-publishes nothing; --again would (dry run only here)
    second = await tribune("dlq", "replay", TOPIC, "--yes")
    assert (second["matched"], second["skipped_replayed_before"], second["replayed"]) == (1, 1, 0)
    assert len(await read_topic(settings.kafka_bootstrap_servers, settings.topic(TOPIC))) == 3
    assert (await tribune("dlq", "replay", TOPIC, "--again", "--dry-run"))["to_replay"] == 1
    listed = await tribune("dlq", "list", "--topic", TOPIC)
    assert (listed["pending"], listed["dlqs"][0]["replayed"]) == (0, 1)
    assert (await tribune("dlq", "show", TOPIC, "--pending"))["matched"] == 0


async def test_lag_reports_a_backlog_then_zero(bus_kit):
    settings, store, publisher = bus_kit
    group = settings.topic("consent")  # a worker group of the registry: consent reads contacts
    await publisher.publish_many([envelope(f"c{i}") for i in range(5)])

    # before its worker ever ran, the whole log is its backlog
    before = await tribune("lag", "--group", "consent")
    (bulk,) = [g for g in before["groups"] if g["group"] == group]
    assert bulk["state"] == "absent" and bulk["total_lag"] == 5
    on_topic = [p for p in bulk["partitions"] if p["topic"] == settings.topic(TOPIC)]
    assert sum(p["lag"] for p in on_topic) == 5 and {p["committed"] for p in on_topic} == {None}

    consumer = EventConsumer(
        settings,
        store,
        group="consent",
        handlers={TOPIC: effect_handler(store, "effects", set())},
        dlq_publisher=publisher,
    )

    async def applied() -> bool:
        return await store["effects"].count_documents({}) == 5

    await consume_until([consumer], applied)
    after = await tribune("lag", "--group", "consent", "--max-lag", "0")
    (bulk,) = [g for g in after["groups"] if g["group"] == group]
    assert bulk["total_lag"] == 0 and bulk["state"] == "Empty"

    await publisher.publish_many([envelope("late-1"), envelope("late-2")])
    behind = await tribune("lag", "--group", "consent", "--max-lag", "1", expect=1)
    assert [g["total_lag"] for g in behind["groups"] if g["group"] == group] == [2]
    await tribune("lag", "--group", "nobody", expect=1)


async def test_outbox_reports_what_a_service_committed_and_has_not_published(bus_kit):
    settings, _store, publisher = bus_kit
    contacts = Store(service_settings("contacts"))
    try:
        outbox = Outbox(contacts)
        async with contacts.transaction() as session:
            await outbox.add(session, envelope("o1"), envelope("o2"))
        packed = await outbox.pack([envelope(f"b{i}") for i in range(3)])
        async with contacts.transaction() as session:
            await outbox.add_packed(session, packed)

        report = await tribune("outbox")
        by_service = {s["service"]: s for s in report["services"]}
        assert set(by_service) == {"consent", "contacts", "gateway", "memberships", "messaging"}
        assert by_service["contacts"]["backlog"] == 5  # two events, and a batch of three
        assert by_service["contacts"]["database"] == f"{settings.database_prefix}contacts"
        assert by_service["contacts"]["oldest_pending_seconds"] >= 0
        assert by_service["messaging"]["backlog"] == 0 and report["total"] == 5
        only = await tribune("outbox", "--service", "contacts")
        assert [s["service"] for s in only["services"]] == ["contacts"]

        relay = OutboxRelay(contacts, publisher)
        while await relay.relay_once():
            pass
        after = await tribune("outbox", "--service", "contacts")
        assert after["total"] == 0 and after["services"][0]["oldest_pending_at"] is None
    finally:
        await contacts.client.drop_database(contacts.settings.database_name)
        await contacts.close()
