"""The kernel's expiry sweep (tribune_shared.expiry) on the real store: what a TTL index
did, without the local store's TTL monitor (which reads every kept document once a minute
holding the store's global lock: bench/expiry_stall.py measures the stall)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from pydantic_settings import SettingsConfigDict
from pymongo import ASCENDING
from support import index_scan, wait_for
from tribune_shared.events import utcnow
from tribune_shared.expiry import expired, expiry_task, sweep
from tribune_shared.outbox import OUTBOX, PROCESSED_EVENTS, kernel_indexes
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import IndexSpec, Store

pytestmark = pytest.mark.integration

HOUR = 3600.0


class ExpirySettings(ServiceSettings):
    service_name = "expirytest"
    model_config = SettingsConfigDict(env_prefix="EXPIRYTEST_", extra="ignore")


@asynccontextmanager
async def store_of(settings: ExpirySettings) -> AsyncIterator[Store]:
    store = Store(settings)
    try:
        yield store
    finally:
        await store.client.drop_database(settings.database_name)
        await store.close()


SESSIONS = IndexSpec("sessions", [("expires_at", ASCENDING)], expire_after_seconds=0)
EVENTS = IndexSpec("events", [("at", ASCENDING)], expire_after_seconds=HOUR)


async def ids(store: Store, collection: str) -> set[str]:
    return {d["_id"] async for d in store[collection].find({}, {"_id": 1})}


async def test_what_outlived_its_retention_goes_and_nothing_else(isolated_env):
    now = utcnow()
    async with store_of(ExpirySettings()) as store:
        await store.ensure_indexes([SESSIONS, EVENTS])
        await store["sessions"].insert_many(
            [
                {"_id": "over", "expires_at": now - timedelta(seconds=1)},
                {"_id": "running", "expires_at": now + timedelta(minutes=5)},
            ]
        )
        await store["events"].insert_many(
            [
                {"_id": "old", "at": now - timedelta(hours=2)},
                {"_id": "old-in-array", "at": [now, now - timedelta(hours=2)]},
                {"_id": "recent", "at": now - timedelta(minutes=30)},
                # as with a TTL index: no date, no expiry (an unpublished outbox row)
                {"_id": "no-date"},
                {"_id": "null", "at": None},
                {"_id": "text", "at": "2001-01-01"},
            ]
        )
        deleted = await sweep(store, batch_size=100, max_documents=1000, now=now)

        assert deleted == {"sessions": 1, "events": 2}
        assert await ids(store, "sessions") == {"running"}
        assert await ids(store, "events") == {"recent", "no-date", "null", "text"}
        # and again: nothing left to expire
        assert await sweep(store, batch_size=100, max_documents=1000, now=now) == {}


async def test_a_backlog_goes_in_bounded_batches_over_several_sweeps(isolated_env):
    now = utcnow()
    async with store_of(ExpirySettings()) as store:
        await store.ensure_indexes([EVENTS])
        await store["events"].insert_many(
            [{"_id": f"e{i}", "at": now - timedelta(hours=2, seconds=i)} for i in range(8)]
            + [{"_id": "recent", "at": now}]
        )
        first = await sweep(store, batch_size=3, max_documents=5, now=now)
        assert first == {"events": 5}
        assert len(await ids(store, "events")) == 4
        second = await sweep(store, batch_size=3, max_documents=5, now=now)
        assert second == {"events": 3}
        assert await ids(store, "events") == {"recent"}


async def test_the_sweep_reads_the_date_index_not_every_document(isolated_env):
    async with store_of(ExpirySettings()) as store:
        await store.ensure_indexes([EVENTS])
        await store["events"].insert_many([{"_id": f"e{i}", "at": utcnow()} for i in range(50)])
        cutoff = utcnow() - timedelta(hours=1)
        # a batch's read, then its delete (a range up to the newest date read)
        for query in (expired("at", cutoff), expired("at", cutoff, cutoff - timedelta(1))):
            explained = await store["events"].find(query, {"at": 1}).sort("at", 1).explain()
            assert index_scan(explained)["indexName"] == "at_expiry"


async def test_an_earlier_versions_ttl_indexes_are_dropped_and_expiry_indexes_made(
    isolated_env,
):
    settings = ExpirySettings()
    async with store_of(settings) as store:
        # what the previous version created: TTL indexes on the outbox and processed ids
        await store[OUTBOX].create_index(
            [("published_at", ASCENDING)], name="published_at_ttl", expireAfterSeconds=60
        )
        await store[PROCESSED_EVENTS].create_index([("at", ASCENDING)], expireAfterSeconds=60)

        async def indexes(collection: str) -> dict[str, dict]:
            return {i["name"]: dict(i) async for i in await store[collection].list_indexes()}

        await store.ensure_indexes(kernel_indexes(settings))
        for collection in (OUTBOX, PROCESSED_EVENTS):
            found = await indexes(collection)
            assert not [n for n, i in found.items() if "expireAfterSeconds" in i], found
        assert "published_at_expiry" in await indexes(OUTBOX)
        assert "at_expiry" in await indexes(PROCESSED_EVENTS)
        assert store.expiry == {
            (OUTBOX, "published_at"): settings.outbox_retention_hours * 3600,
            (PROCESSED_EVENTS, "at"): settings.processed_events_retention_days * 86400,
        }
        # a second start finds nothing to change
        before = await indexes(OUTBOX)
        await store.ensure_indexes(kernel_indexes(settings))
        assert await indexes(OUTBOX) == before


async def test_a_process_sweeps_on_its_own_every_interval(isolated_env):
    settings = ExpirySettings(expiry_interval_seconds=0.1)
    async with store_of(settings) as store:
        await store.ensure_indexes([SESSIONS])
        stop = asyncio.Event()
        task = asyncio.create_task(expiry_task(store, settings)(stop))
        try:
            await store["sessions"].insert_one(
                {"_id": "s", "expires_at": utcnow() - timedelta(seconds=1)}
            )

            async def gone() -> bool:
                return await store["sessions"].count_documents({}) == 0

            await wait_for(gone, timeout=10)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


def test_a_ttl_index_cannot_be_declared_nor_an_expiry_on_two_keys():
    with pytest.raises(ValueError, match="expire_after_seconds"):
        IndexSpec("c", [("at", ASCENDING)], {"expireAfterSeconds": 60})
    with pytest.raises(ValueError, match="one date key"):
        IndexSpec("c", [("at", ASCENDING), ("x", ASCENDING)], expire_after_seconds=60)
    with pytest.raises(ValueError, match="one date key"):
        IndexSpec("c", [("at", ASCENDING)], expire_after_seconds=-1)
