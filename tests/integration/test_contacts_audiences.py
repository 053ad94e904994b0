"""Campaign audiences on the real store: contacts resolves who a campaign reaches, range by
range of the (federation_path, _id) index, and selects each contact once."""

from __future__ import annotations

import asyncio
import json
import uuid
import zlib
from typing import Any

import pytest
from contacts.audiences.domain import Position
from contacts.audiences.jobs import AudienceRunner
from contacts.audiences.store import INDEXES as AUDIENCE_INDEXES
from contacts.audiences.store import AudienceStore
from contacts.settings import ContactsSettings
from contacts.store import CONTACTS, INDEXES, SEGMENTS
from tribune_shared.events import utcnow
from tribune_shared.store import Store

from tests.support import index_scan

pytestmark = pytest.mark.integration

SUBTREE = "/n/paris/"


def contact(path: str, *, email: str | None = "?", tags=(), cid: str | None = None):
    _id = cid or uuid.uuid4().hex
    return {
        "_id": _id,
        "federation_id": path.rstrip("/").rsplit("/", 1)[-1],
        "federation_path": path,
        "email": f"{_id}@example.fr" if email == "?" else email,
        "tags": list(tags),
    }


def job(segment_id: str | None = None, **over: Any) -> dict[str, Any]:
    return {
        "_id": uuid.uuid4().hex,
        "status": "running",
        "owner": "test",
        "lease_until": utcnow(),
        "channel": "email",
        "segment_id": segment_id,
        "needs_address": True,
        "federation_id": "paris",
        "federation_path": SUBTREE,
        "correlation_id": "c",
        "cause_event_id": "e",
        "cursor": None,
        "selected": 0,
        "created_at": utcnow(),
        **over,
    }


async def selected(store: Store, campaign_id: str) -> list[str]:
    """The contact ids of the campaign's recipient-selected events, in outbox order."""
    ids: list[str] = []
    async for row in store["outbox"].find({"batch": {"$ne": None}}).sort("seq", 1):
        for envelope in json.loads(zlib.decompress(row["batch"])):
            if envelope["data"].get("campaign_id") == campaign_id:
                ids.append(envelope["data"]["contact_id"])
    return ids


@pytest.fixture
def settings(isolated_env, monkeypatch) -> ContactsSettings:
    # small pages, so a range is read in several pages too
    monkeypatch.setenv("CONTACTS_AUDIENCE_PAGE_SIZE", "7")
    return ContactsSettings()


async def seeded(settings: ContactsSettings) -> tuple[Store, set[str], set[str]]:
    """Contacts in and out of the subtree; (store, every reachable one in it, the tagged)."""
    store = Store(settings)
    await store.ensure_indexes([*INDEXES, *AUDIENCE_INDEXES])
    docs = [contact(SUBTREE) for _ in range(40)]
    docs += [contact(f"{SUBTREE}p11/", tags=["vip"] if i % 2 else []) for i in range(30)]
    # ids at the edges of the id ranges, and ids that are not hex at all
    docs += [contact(SUBTREE, cid=c) for c in ("0", "00", "01", "ff", "fff0", "Z-9", "zz")]
    docs += [contact(SUBTREE, email=None)]  # no address
    docs += [contact("/n/lyon/"), contact("/n/"), contact("/n/paris2/")]  # outside
    await store[CONTACTS].insert_many(docs)
    reachable = {d["_id"] for d in docs if d["federation_path"].startswith(SUBTREE) and d["email"]}
    tagged = {d["_id"] for d in docs if "vip" in d["tags"]}
    return store, reachable, tagged


def on_seeded_store(settings: ContactsSettings, work) -> None:
    """Run ``work(store, reachable, tagged)`` on a freshly seeded store (from sync tests)."""

    async def go() -> None:
        store, reachable, tagged = await seeded(settings)
        try:
            await work(store, reachable, tagged)
        finally:
            await store.close()

    asyncio.run(go())


async def resolve(settings, store: Store, campaign: dict[str, Any], **run: Any) -> dict[str, Any]:
    """Record the job, run it to its end (or ``run``'s stop), and return it as it ends."""
    await store["campaign_audiences"].insert_one(campaign)
    await AudienceRunner(settings, store).run(campaign, "test", **run)
    return await store["campaign_audiences"].find_one({"_id": campaign["_id"]})


def test_an_audience_is_every_reachable_contact_of_the_subtree_once(settings) -> None:
    async def work(store: Store, reachable: set[str], tagged: set[str]) -> None:
        campaign = job()
        done = await resolve(settings, store, campaign)
        ids = await selected(store, campaign["_id"])
        assert sorted(ids) == sorted(reachable) and len(ids) == len(set(ids)) == 77
        assert done["status"] == "done" and done["selected"] == 77
        # full pages of 7, whatever the ranges they came from (a transaction and an outbox
        # row per range read would be about 60 here); some end early every 64 ranges
        pages = await store["outbox"].count_documents({"batch": {"$ne": None}})
        assert 11 <= pages < 20

    on_seeded_store(settings, work)


def test_a_segment_narrows_the_audience(settings) -> None:
    async def work(store: Store, reachable: set[str], tagged: set[str]) -> None:
        await store[SEGMENTS].insert_one(
            {
                "_id": "vip",
                "federation_path": "/n/",  # inherited down the tree
                "filter": {"op": "tags", "match": "any", "tags": ["vip"]},
            }
        )
        campaign = job(segment_id="vip")
        await resolve(settings, store, campaign)
        assert sorted(await selected(store, campaign["_id"])) == sorted(tagged)

    on_seeded_store(settings, work)


def test_a_job_resumes_where_its_worker_died_and_selects_no_one_twice(
    settings, monkeypatch
) -> None:
    async def work(store: Store, reachable: set[str], tagged: set[str]) -> None:
        stop = asyncio.Event()
        calls = 0
        read = AudienceStore.read

        async def stopping_read(self, position: Position, *, limit: int) -> list[dict[str, Any]]:
            nonlocal calls
            calls += 1
            if calls == 100:  # the worker is stopped after a few pages (ranges of ~0-2)
                stop.set()
            return await read(self, position, limit=limit)

        monkeypatch.setattr(AudienceStore, "read", stopping_read)
        campaign = job()
        released = await resolve(settings, store, campaign, stop=stop)
        first = await selected(store, campaign["_id"])
        assert 0 < len(first) < len(reachable)
        # released: the next worker claims it and goes on from its cursor
        assert released["status"] == "pending" and released["cursor"]["path"] == SUBTREE
        released.update(status="running", owner="next")
        await store["campaign_audiences"].replace_one({"_id": campaign["_id"]}, released)
        await AudienceRunner(settings, store).run(released, "next")
        ids = await selected(store, campaign["_id"])
        assert sorted(ids) == sorted(reachable) and len(ids) == len(set(ids))

    on_seeded_store(settings, work)


def test_a_job_an_earlier_version_left_half_done_goes_on_after_its_last_id(settings) -> None:
    """The earlier version read the subtree in one id order and saved the last id read."""

    async def work(store: Store, reachable: set[str], tagged: set[str]) -> None:
        last = sorted(reachable)[30]
        campaign = job(cursor=last, selected=31)
        done = await resolve(settings, store, campaign)
        ids = await selected(store, campaign["_id"])
        assert sorted(ids) == sorted(i for i in reachable if i > last)
        assert done["selected"] == len(reachable)

    on_seeded_store(settings, work)


def test_each_read_is_a_bounded_range_of_the_path_and_id_index(settings) -> None:
    async def work(store: Store, reachable: set[str], tagged: set[str]) -> None:
        for position in (Position(SUBTREE), Position(SUBTREE, "7f3a", strict=True)):
            query = AudienceStore.query(position)
            explained = await store[CONTACTS].find(query).sort("_id", 1).limit(7).explain()
            assert index_scan(explained)["indexName"] == "federation_path_1__id_1"
            assert "$lt" in query["_id"]  # bounded above: the reading order's point

    on_seeded_store(settings, work)
