"""Packed outbox rows: a bulk writer commits a whole batch of events as one row; the one
relay publishes them in commit order with the single events around them, then deletes
the batch row."""

from __future__ import annotations

import pytest
from pydantic_settings import SettingsConfigDict
from support import read_topic
from tribune_shared.bus import EventPublisher, ensure_topics
from tribune_shared.events import Envelope, decode, new_envelope, utcnow
from tribune_shared.events.contracts import ConsentRevokedV1
from tribune_shared.outbox import OUTBOX, Outbox, OutboxRelay
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store

pytestmark = pytest.mark.integration


class BatchSettings(ServiceSettings):
    service_name = "batchtest"
    model_config = SettingsConfigDict(env_prefix="BATCHTEST_", extra="ignore")


def revoked(contact_id: str):
    event = ConsentRevokedV1(
        contact_id=contact_id, channel="email", purpose="news", source="t", revoked_at=utcnow()
    )
    return new_envelope(event, producer="batchtest", federation_id="f", federation_path="/f/")


async def test_batches_and_single_events_are_published_in_commit_order(isolated_env):
    settings = BatchSettings(outbox_batch_size=50)
    await ensure_topics(settings, ["consent-revoked"])
    store = Store(settings)
    outbox = Outbox(store)
    publisher = EventPublisher(settings)
    await publisher.start()
    try:
        async with store.transaction() as session:
            await outbox.add(session, revoked("before"))
        batch = [revoked(f"batch-{i:03d}") for i in range(120)]  # larger than a relay batch
        async with store.transaction() as session:
            await outbox.add_batch(session, batch)
        async with store.transaction() as session:
            await outbox.add(session, revoked("after-1"), revoked("after-2"))
        # a batch never committed leaves nothing
        with pytest.raises(RuntimeError):
            async with store.transaction() as session:
                await outbox.add_batch(session, [revoked("rolled-back")])
                raise RuntimeError("abort")

        assert await outbox.backlog() == 123
        assert await store[OUTBOX].count_documents({}) == 4

        relay = OutboxRelay(store, publisher)
        published = [await relay.relay_once() for _ in range(4)]
        assert published == [1, 120, 2, 0]
        assert await outbox.backlog() == 0
        # the batch row is gone once published; single events stay (marked) for audit
        assert await store[OUTBOX].count_documents({"batch": {"$ne": None}}) == 0
        assert await store[OUTBOX].count_documents({"published_at": {"$ne": None}}) == 3

        records = await read_topic(
            settings.kafka_bootstrap_servers, settings.topic("consent-revoked"), expect=123
        )
        committed = ["before", *(f"batch-{i:03d}" for i in range(120)), "after-1", "after-2"]
        assert sorted(r.key.decode() for r in records) == sorted(committed)
        # keys spread over partitions: within each, commit order holds
        for partition in {r.partition for r in records}:
            keys = [r.key.decode() for r in records if r.partition == partition]
            assert keys == [k for k in committed if k in keys]
        sealed = Envelope.model_validate_json(records[0].value)
        assert decode(sealed).contact_id == records[0].key.decode()
    finally:
        await publisher.stop()
        await store.client.drop_database(settings.database_name)
        await store.close()
