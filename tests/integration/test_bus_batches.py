"""Batched, partition-parallel consumption on real Kafka and the real store: the batch path
keeps per-event semantics (order, duplicates, poison isolation), and lanes let an urgent
event overtake a bulk backlog."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from pymongo import UpdateOne
from support import read_topic, wait_for
from tribune_shared.bus import Batch, EventConsumer, EventPublisher, ensure_topics
from tribune_shared.events import dlq_topic, new_envelope
from tribune_shared.events.contracts import (
    Channel,
    ConsentRevokedV1,
    ContactCreatedV1,
    ContactState,
    ContactUpdatedV1,
)
from tribune_shared.store import Store
from tribune_shared.subscriptions import Awaiting

pytestmark = pytest.mark.integration
TOPIC = "contact-created"


def created(contact_id: str, version: int = 1, name: str = ""):
    event = ContactCreatedV1(
        contact_id=contact_id, contact_version=version, contact=ContactState(family_name=name)
    )
    return new_envelope(event, producer="contacts", federation_id="f", federation_path="/f/")


def updated(contact_id: str, version: int, name: str):
    event = ContactUpdatedV1(
        contact_id=contact_id, contact_version=version, contact=ContactState(family_name=name)
    )
    return new_envelope(event, producer="contacts", federation_id="f", federation_path="/f/")


async def publish(publisher: EventPublisher, settings, envelopes, partition: int | None = None):
    await publisher.publish_many(envelopes, partition=partition)


async def run_until(consumers, predicate, timeout=120.0):
    for c in consumers:
        await c.start()
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        return await wait_for(predicate, timeout=timeout, interval=0.02)
    finally:
        for c in consumers:
            c.request_stop()
        await asyncio.gather(*tasks)


async def test_a_poison_event_in_a_batch_of_500_is_parked_alone_and_the_499_others_apply_once(
    bus_kit,
):
    settings, store, publisher = bus_kit
    keys = [f"c{i:03d}" for i in range(500)]
    poison = keys[250]
    await publish(publisher, settings, [created(k) for k in keys], partition=0)
    sizes: list[int] = []

    async def project(envelopes, session):
        sizes.append(len(envelopes))
        if any(e.key == poison for e in envelopes):
            raise RuntimeError(f"cannot project {poison}")
        await store["effects"].bulk_write(
            [UpdateOne({"_id": e.key}, {"$inc": {"applied": 1}}, upsert=True) for e in envelopes],
            session=session,
        )

    consumer = EventConsumer(
        settings, store, group="g-poison", handlers={TOPIC: Batch(project)}, dlq_publisher=publisher
    )

    async def all_healthy_applied():
        return await store["effects"].count_documents({}) == 499

    await run_until([consumer], all_healthy_applied)
    await asyncio.sleep(0.5)  # nothing else may land afterwards
    applied = {d["_id"]: d["applied"] async for d in store["effects"].find({})}
    assert poison not in applied
    assert set(applied) == set(keys) - {poison}
    assert set(applied.values()) == {1}  # the split re-ran halves, never re-applied one
    assert max(sizes) >= 100  # it really was handled in batches
    parked = await read_topic(
        settings.kafka_bootstrap_servers, settings.topic(dlq_topic(TOPIC)), expect=1
    )
    assert [r.key.decode() for r in parked] == [poison]
    headers = dict(parked[0].headers)
    assert b"cannot project" in headers["dlq_error"]
    assert headers["dlq_attempts"] == b"3"


async def test_an_event_whose_personal_fields_cannot_be_opened_is_parked_and_the_rest_apply(
    bus_kit,
):
    """A data key the process cannot unwrap (a KEK it does not hold) fails the batch's one
    vault read: the events are then opened one by one, the unreadable one is parked, and
    the consumer goes on instead of stopping."""
    settings, store, publisher = bus_kit
    topic = settings.topic(dlq_topic(TOPIC))
    keys = [f"v{i:02d}" for i in range(20)]
    broken = keys[7]
    await publish(publisher, settings, [created(k) for k in keys], partition=1)

    async def project(envelopes, session):
        await store["effects-vault"].bulk_write(
            [UpdateOne({"_id": e.key}, {"$inc": {"applied": 1}}, upsert=True) for e in envelopes],
            session=session,
        )

    consumer = EventConsumer(
        settings, store, group="g-vault", handlers={TOPIC: Batch(project)}, dlq_publisher=publisher
    )
    real = consumer.vault

    class BrokenKey:
        async def open_many(self, envelopes):
            if any(e.key == broken for e in envelopes):
                raise RuntimeError("data key wrapped by an unknown KEK")
            return await real.open_many(envelopes)

        async def open(self, envelope):
            return (await self.open_many([envelope]))[0]

    consumer.vault = BrokenKey()  # type: ignore[assignment]

    async def healthy_applied():
        return await store["effects-vault"].count_documents({}) == len(keys) - 1

    await run_until([consumer], healthy_applied)
    applied = {d["_id"] async for d in store["effects-vault"].find({})}
    assert applied == set(keys) - {broken}
    parked = await read_topic(settings.kafka_bootstrap_servers, topic)
    assert broken in [r.key.decode() for r in parked]
    assert any(
        b"personal fields unreadable" in dict(r.headers)["dlq_error"]
        for r in parked
        if r.key.decode() == broken
    )


def holds(condition):
    """An async predicate of a plain one (for wait_for)."""

    async def predicate():
        return condition()

    return predicate


def awaiting_kit(store: Store, needed: str):
    """Handlers where contact-updated of ``needed`` awaits the contact-created of the
    cause (another topic, another partition); returns (handlers, applied order, tries)."""
    order: list[str] = []
    tries: list[str] = []

    async def on_created(envelope, session):
        await store["facts"].insert_one({"_id": envelope.key}, session=session)

    async def on_updated(envelope, session):
        tries.append(envelope.key)
        if envelope.key == needed and not await store["facts"].find_one(
            {"_id": "cause"}, session=session
        ):
            raise Awaiting("the cause is not known yet")
        order.append(envelope.key)

    return {"contact-created": on_created, "contact-updated": on_updated}, order, tries


async def test_an_event_awaiting_another_topics_fact_holds_its_partition_until_the_fact_comes(
    bus_kit,
):
    """A fact arriving on another topic long after the event that needs it: the event's
    partition waits at it (the events behind it keep their order), the other partitions go
    on and bring the fact, then the event applies. Nothing is parked."""
    settings, store, publisher = bus_kit
    handlers, order, tries = awaiting_kit(store, needed="a1")
    await publish(publisher, settings, [updated("a1", 2, "x"), updated("a2", 2, "y")], partition=2)
    consumer = EventConsumer(
        settings, store, group="g-await", handlers=handlers, dlq_publisher=publisher
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await wait_for(holds(lambda: tries.count("a1") >= 3), timeout=60, interval=0.02)
        assert order == []  # a2 waits behind a1: one key's order is kept
        await publish(publisher, settings, [created("cause")], partition=5)
        await wait_for(holds(lambda: len(order) == 2), timeout=60, interval=0.02)
    finally:
        consumer.request_stop()
        await task
    assert order == ["a1", "a2"]
    parked = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic(dlq_topic("contact-updated")),
        idle_seconds=1.0,
    )
    assert parked == []


async def test_an_event_whose_awaited_fact_never_comes_is_parked_after_the_wait(bus_kit):
    settings, store, publisher = bus_kit
    patient = settings.model_copy(update={"consumer_dependency_wait_seconds": 1.0})
    handlers, order, tries = awaiting_kit(store, needed="b1")
    await publish(publisher, settings, [updated("b1", 2, "x"), updated("b2", 2, "y")], partition=3)
    consumer = EventConsumer(
        patient, store, group="g-await-late", handlers=handlers, dlq_publisher=publisher
    )
    await run_until([consumer], holds(lambda: order == ["b2"]), timeout=60)
    assert tries.count("b1") >= 2  # tried again while it waited
    [parked] = await read_topic(
        settings.kafka_bootstrap_servers, settings.topic(dlq_topic("contact-updated")), expect=1
    )
    assert parked.key == b"b1"
    assert b"waited 1 s" in dict(parked.headers)["dlq_error"]


async def test_a_batch_handler_naming_its_waiting_event_applies_the_ones_before_it_at_once(
    bus_kit,
):
    """A batch of 60 whose 41st event awaits another topic's fact: the 40 before it are
    applied in one transaction (not in the halves of a split), the partition waits at the
    41st, and once the fact comes the rest follow, each event applied once."""
    settings, store, publisher = bus_kit
    keys = [f"w{i:02d}" for i in range(60)]
    needed = keys[40]
    await publish(publisher, settings, [updated(k, 2, "x") for k in keys], partition=4)
    applied_calls: list[list[str]] = []

    async def project(envelopes, session):
        if not await store["facts"].find_one({"_id": "cause"}, session=session):
            waiting = next((e for e in envelopes if e.key == needed), None)
            if waiting is not None:
                raise Awaiting("the cause is not known yet", event_id=waiting.event_id)
        await store["effects"].bulk_write(
            [UpdateOne({"_id": e.key}, {"$inc": {"applied": 1}}, upsert=True) for e in envelopes],
            session=session,
        )
        applied_calls.append([e.key for e in envelopes])

    async def on_created(envelope, session):
        await store["facts"].insert_one({"_id": envelope.key}, session=session)

    consumer = EventConsumer(
        settings,
        store,
        group="g-await-named",
        handlers={"contact-updated": Batch(project), "contact-created": on_created},
        dlq_publisher=publisher,
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await wait_for(holds(lambda: sum(map(len, applied_calls)) >= 40), timeout=60, interval=0.02)
        await asyncio.sleep(1.0)  # the partition waits at the 41st: nothing more lands
        assert applied_calls == [keys[:40]]
        await publish(publisher, settings, [created("cause")], partition=5)
        await wait_for(holds(lambda: sum(map(len, applied_calls)) >= 60), timeout=60, interval=0.02)
    finally:
        consumer.request_stop()
        await task
    assert [k for call in applied_calls for k in call] == keys
    applied = {d["_id"]: d["applied"] async for d in store["effects"].find({})}
    assert applied == dict.fromkeys(keys, 1)


async def test_the_batch_path_and_the_one_by_one_path_give_the_same_state(bus_kit):
    """Messaging's real contact projection, fed the same events (several versions per
    contact, updates overtaking creations, duplicates) in batches of 500 and one by one."""
    from messaging.handlers import contact_handlers
    from messaging.store import CONTACTS, MessagingStore

    settings, _store, publisher = bus_kit
    events = []
    for i in range(300):
        cid = f"p{i:03d}"
        if i % 3 == 0:  # the update arrives on its topic before the creation on its own
            events.append(updated(cid, 2, f"v2-{i}"))
        events.append(created(cid, 1, f"v1-{i}"))
        if i % 5 == 0:
            events.append(updated(cid, 3, f"v3-{i}"))
            events.append(updated(cid, 2, f"v2-late-{i}"))  # older: must not win
    events.extend(events[:40])  # redelivered duplicates
    await publish(publisher, settings, events)

    def expected_version(i: int) -> int:
        return 3 if i % 5 == 0 else 2 if i % 3 == 0 else 1

    async def project(batch_size: int) -> dict[str, dict]:
        tagged = settings.model_copy(
            update={
                "consumer_batch_max_records": batch_size,
                "database_prefix": f"{settings.database_prefix}b{batch_size}_",
            }
        )
        store = Store(tagged)
        handlers = contact_handlers(MessagingStore(store))
        consumer = EventConsumer(
            tagged,
            store,
            group=f"g-same-{batch_size}-{uuid.uuid4().hex[:6]}",
            handlers={t: handlers[t] for t in ("contact-created", "contact-updated")},
            dlq_publisher=publisher,
        )

        async def settled():
            docs = await store[CONTACTS].find({}).to_list()
            done = len(docs) == 300 and all(
                d["version"]
                == (3 if int(d["_id"][1:]) % 5 == 0 else 2 if int(d["_id"][1:]) % 3 == 0 else 1)
                for d in docs
            )
            return docs if done else None

        try:
            docs = await run_until([consumer], settled)
            return {d["_id"]: d for d in docs}
        finally:
            await store.client.drop_database(tagged.database_name)
            await store.close()

    batched = await project(500)
    single = await project(1)
    assert batched == single
    assert batched["p000"]["family_name"] == "v3-0"
    assert batched["p003"]["family_name"] == "v2-3"
    assert batched["p001"]["family_name"] == "v1-1"


async def test_a_revocation_overtakes_a_backlog_of_20000_contact_events(isolated_env):
    """Messaging's real worker consumers (one per lane) start on a 20,000-event contact
    backlog with one revocation behind it: the revocation is honoured while the backlog
    is still being digested."""
    from messaging.settings import MessagingSettings
    from messaging.store import CONSENTS, CONTACTS
    from messaging.worker import build_worker

    settings = MessagingSettings()
    await ensure_topics(settings)
    publisher = EventPublisher(settings, producer="contacts")  # the events' owners
    consent = EventPublisher(settings, producer="consent")
    await publisher.start()
    await consent.start()
    worker = build_worker(settings)
    store = worker.store
    try:
        backlog = [created(f"bulk-{i:05d}", 1) for i in range(20_000)]
        for start in range(0, len(backlog), 2000):
            await publish(publisher, settings, backlog[start : start + 2000])
        revoked = new_envelope(
            ConsentRevokedV1(
                contact_id="the-one-who-said-no",
                channel=Channel.email,
                purpose="newsletter",
                revoked_at=datetime.now(UTC),
                source="unsubscribe_link",
            ),
            producer="consent",
            federation_id="f",
            federation_path="/f/",
        )
        await publish(consent, settings, [revoked])

        async def honoured():
            doc = await store[CONSENTS].find_one({"contact_id": "the-one-who-said-no"})
            if doc is None:
                return None
            return {"status": doc["status"], "contacts": await store[CONTACTS].count_documents({})}

        seen = await run_until(worker.consumers, honoured, timeout=300)
        assert seen["status"] == "revoked"
        print(f"revocation honoured with {seen['contacts']} of 20,000 contacts projected")
        assert seen["contacts"] < 20_000  # it did not wait for the backlog
    finally:
        await publisher.stop()
        await consent.stop()
        await store.client.drop_database(settings.database_name)
        await store.close()


async def test_ensure_topics_raises_a_partition_count_below_the_registry_never_lowers_it(bus_kit):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import NewTopic
    from tribune_shared.bus import create_topics
    from tribune_shared.events import TOPICS

    settings, _store, _publisher = bus_kit
    topic = "payment-received"  # not created by the fixture
    await create_topics(settings, [NewTopic(settings.topic(topic), 1, 1)])
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        # an old deployment's topic, with fewer partitions than the registry now declares
        assert await wait_for(lambda: _partitions(consumer, settings.topic(topic)), timeout=30) == 1
        await ensure_topics(settings, [topic])
        await ensure_topics(settings, [topic])  # a second worker starting: nothing to do
        raised = await wait_for(
            lambda: _partitions(consumer, settings.topic(topic), above=1), timeout=30
        )
    finally:
        await consumer.stop()
    assert raised == TOPICS[topic].partitions


async def _partitions(consumer, topic: str, above: int = 0) -> int:
    await consumer._client.force_metadata_update()
    found = len(consumer.partitions_for_topic(topic) or ())
    return found if found > above else 0
