"""`tribune rebuild messaging contacts` against real Kafka and the real store, run as an
operator runs it (the installed command, --json), while messaging's worker consumes and
its reads go on.

Messaging's contacts view is damaged (documents dropped, one address overwritten). The
rebuild reads the contact topics from their beginning into a fresh collection, with the
live worker still applying new events, then switches: every read during the run sees
either the damaged view or the rebuilt one whole (never a half-built one), and once the
rebuilt one is seen, never the damaged one again. A contact created during the run is in
the rebuilt view. An erased person stays erased (their events' sealed fields are
unreadable, their erasure is replayed as a tombstone). A second rebuild started while the
first runs is refused. A rollback goes back to the previous collection, caught up."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from messaging.handlers import contact_handlers
from messaging.privacy import erasure_handlers
from messaging.settings import MessagingSettings
from messaging.store import CONTACTS, MessagingStore
from support import wait_for
from tribune_shared.bus import EventConsumer, EventPublisher, ensure_topics
from tribune_shared.contact_directory import ERASED_VERSION
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState, ErasureRequestedV1
from tribune_shared.projections import Lease, Pointers, routes_task
from tribune_shared.store import PROJECTIONS, Store
from tribune_shared.vault import vault_for

pytestmark = pytest.mark.integration
TRIBUNE = Path(sys.executable).with_name("tribune")
PEOPLE = [f"c{i:03d}" for i in range(60)]
ERASED = "c007"
DROPPED = PEOPLE[20:30]
LATE = "late-comer"
AFTER = "after-the-switch"


def created(contact_id: str, email: str) -> Any:
    event = ContactCreatedV1(
        contact_id=contact_id,
        contact_version=1,
        contact=ContactState(given_name="Ana", family_name=contact_id, email=email),
    )
    return new_envelope(event, producer="contacts", federation_id="paris", federation_path="/p/")


def email_of(contact_id: str) -> str:
    return f"{contact_id}@example.org"


async def tribune(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(TRIBUNE), *args, "--json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
async def platform(isolated_env, monkeypatch):
    """Messaging's settings (fast route refresh and grace), its store, the topics, and
    publishers speaking for contacts and consent."""
    monkeypatch.setenv("MESSAGING_PROJECTION_ROUTES_REFRESH_SECONDS", "0.2")
    # long enough for a second command to start while the first one runs
    monkeypatch.setenv("MESSAGING_PROJECTION_FLIP_GRACE_SECONDS", "10")
    settings = MessagingSettings()
    await ensure_topics(settings, ["contact-created", "contact-updated", "contact-merged"])
    await ensure_topics(settings, ["erasure-requested"])
    store = Store(settings)
    contacts = EventPublisher(settings, producer="contacts")
    consent = EventPublisher(settings, producer="consent")
    await contacts.start()
    await consent.start()
    yield settings, store, contacts, consent
    await contacts.stop()
    await consent.stop()
    await store.client.drop_database(settings.database_name)
    await store.close()


async def test_a_damaged_view_is_rebuilt_from_the_topics_while_the_service_serves(platform):
    settings, store, contacts, consent = platform
    vault = vault_for(store)
    # personal fields travel sealed under each person's key, as the contacts outbox does
    await contacts.publish_many(await vault.seal_many([created(c, email_of(c)) for c in PEOPLE]))
    # the person is erased: their key destroyed, the request on its topic
    await vault.destroy(ERASED)
    request = ErasureRequestedV1(request_id="r1", contact_id=ERASED, requested_at=datetime.now(UTC))
    await consent.publish(
        new_envelope(request, producer="consent", federation_id="paris", federation_path="/p/")
    )

    # messaging's worker, live all along
    messages = MessagingStore(store)
    worker = EventConsumer(
        settings,
        store,
        group="messaging",
        handlers={**contact_handlers(messages), **erasure_handlers(store)},
        dlq_publisher=contacts,
    )
    await worker.start()
    live = asyncio.create_task(worker.run())
    # as its Worker does: reads and writes follow the pointers
    worker_stop = asyncio.Event()
    worker_routes = asyncio.create_task(routes_task(store, settings)(worker_stop))
    try:
        living = [c for c in PEOPLE if c != ERASED]

        async def projected() -> bool:
            found = await messages.recipients(PEOPLE)
            return set(found) == set(living) and await messages.is_erased(ERASED)

        await wait_for(projected, timeout=60)

        # the damage: documents gone, an address overwritten
        await store[CONTACTS].delete_many({"_id": {"$in": DROPPED}})
        await store[CONTACTS].update_one({"_id": "c001"}, {"$set": {"email": "wrong@x.org"}})
        damaged = {c for c in living if c not in DROPPED}

        # the API's reads: another process's store, following the pointers
        reader_store = Store(settings)
        await reader_store.load_routes()
        stop = asyncio.Event()
        follow = asyncio.create_task(routes_task(reader_store, settings)(stop))
        reads: list[tuple[frozenset[str], str | None, bool]] = []

        async def read_all() -> None:
            reader = MessagingStore(reader_store)
            while not stop.is_set():
                found = await reader.recipients([*PEOPLE, LATE])
                c001 = found["c001"].email if "c001" in found else None
                reads.append((frozenset(found), c001, ERASED in found))
                await asyncio.sleep(0.02)

        reading = asyncio.create_task(read_all())
        try:
            first = asyncio.create_task(tribune("rebuild", "messaging", "contacts", "--yes"))

            async def building() -> bool:
                doc = await store.db[PROJECTIONS].find_one({"_id": CONTACTS})
                return bool(doc and doc.get("building"))

            await wait_for(building, timeout=60, interval=0.05)
            # one at a time: whoever asks while it runs is told who holds the lease
            holder = await Lease(store, "someone-else", 30).acquire("rebuild messaging.x")
            assert holder is not None and holder.what == "rebuild messaging.contacts"
            second = await tribune("rebuild", "messaging", "contacts", "--yes")
            assert second.returncode == 1, second.stdout + second.stderr
            error = json.loads(second.stdout or "{}").get("error", "")
            assert "another rebuild is running" in error, second.stdout + second.stderr
            # a contact created while it builds
            await contacts.publish_many(await vault.seal_many([created(LATE, email_of(LATE))]))

            done = await first
            assert done.returncode == 0, done.stdout + done.stderr
            outcome = json.loads(done.stdout)
            await asyncio.sleep(0.5)  # a few reads on the rebuilt view
        finally:
            stop.set()
            await asyncio.gather(reading, follow)
            await reader_store.close()

        assert outcome["flipped"] and outcome["parked"] == 0
        assert outcome["active_before"] == CONTACTS
        assert outcome["active_after"] == f"{CONTACTS}__v2"
        assert outcome["previous"] == CONTACTS
        assert outcome["events"] >= len(PEOPLE) + 1
        assert outcome["group_deleted"]

        # every read saw one whole view: the damaged one, or the rebuilt one
        rebuilt = set(living)
        seen_rebuilt = False
        for ids, c001, erased_seen in reads:
            assert not erased_seen
            whole = ids - {LATE}
            if whole == rebuilt and c001 == email_of("c001"):
                seen_rebuilt = True
            else:
                assert not seen_rebuilt, "a read went back to the old view after the switch"
                assert whole == damaged and c001 == "wrong@x.org", "a half-built view was read"
        assert seen_rebuilt and reads[0][0] - {LATE} == damaged

        # the worker follows the switch too: what it writes now lands in the rebuilt view
        await wait_for(lambda: _routed(store), timeout=10)
        view = store.db[f"{CONTACTS}__v2"]
        await contacts.publish_many(await vault.seal_many([created(AFTER, email_of(AFTER))]))

        async def written_after() -> bool:
            return await view.find_one({"_id": AFTER}) is not None

        await wait_for(written_after, timeout=30)
        assert await store.db[CONTACTS].find_one({"_id": AFTER}) is None
        assert await view.count_documents({"_id": {"$in": [*PEOPLE, LATE]}}) == len(PEOPLE) + 1
        late = await view.find_one({"_id": LATE})
        assert late is not None and late["email"] == email_of(LATE)
        # erased: a tombstone, nothing of the person
        assert await view.find_one({"_id": ERASED}) == {
            "_id": ERASED,
            "erased": True,
            "version": ERASED_VERSION,
        }
        assert await store.db[f"{CONTACTS}__v2"].index_information()  # indexes were made
        # the build's own ids are gone; the live group's are untouched
        assert not await store["processed_events"].find_one(
            {"_id": {"$regex": "^messaging\\.rebuild\\."}}
        )
        assert await store["processed_events"].find_one({"_id": {"$regex": "^messaging:"}})

        # rollback: back to the previous collection, caught up with what came since the
        # switch (the contact only the rebuilt view had)
        back = await tribune("rebuild", "messaging", "contacts", "--rollback", "--yes")
        assert back.returncode == 0, back.stdout + back.stderr
        rolled = json.loads(back.stdout)
        assert rolled["mode"] == "rollback" and rolled["active_after"] == CONTACTS
        pointer = await Pointers(store).get(CONTACTS)
        assert pointer.active == CONTACTS and pointer.previous is None
        assert await store.db[CONTACTS].find_one({"_id": AFTER}) is not None
        assert await store.db[CONTACTS].find_one({"_id": ERASED}) == {
            "_id": ERASED,
            "erased": True,
            "version": ERASED_VERSION,
        }
    finally:
        worker.request_stop()
        worker_stop.set()
        await asyncio.gather(live, worker_routes)


async def _routed(store: Store) -> bool:
    return store.physical(CONTACTS) == f"{CONTACTS}__v2"


async def test_one_rebuild_lease_per_service_expires_with_its_holder(platform):
    _, store, _, _ = platform
    first = Lease(store, "host-a:1", seconds=3)
    second = Lease(store, "host-b:2", seconds=3)
    assert await first.acquire("rebuild messaging.contacts") is None
    assert await first.acquire("rebuild messaging.contacts") is None  # renewing is fine
    holder = await second.acquire("rebuild messaging.consents")
    assert holder is not None
    assert (holder.owner, holder.what) == ("host-a:1", "rebuild messaging.contacts")
    await second.release()  # not its lease: nothing happens
    assert await second.acquire("rebuild messaging.consents") is not None
    # the holder died: its lease expires, the next one takes it
    await store.db["locks"].update_one(
        {"_id": "projections.rebuild"},
        {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
    )
    assert await second.acquire("rebuild messaging.consents") is None
    assert await first.acquire("rebuild messaging.contacts") is not None
    await second.release()
    assert await first.acquire("rebuild messaging.contacts") is None
