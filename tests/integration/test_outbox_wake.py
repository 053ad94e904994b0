"""The outbox relay can be woken by a change stream on the outbox (a committed event is
relayed at once instead of at the next poll): what the revocation benchmark tunes. An idle
relay polls at a slower pace, and a write in its own process wakes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from pydantic_settings import SettingsConfigDict
from support import wait_for
from tribune_shared.bus import EventPublisher, ensure_topics
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ConsentRevokedV1
from tribune_shared.outbox import OUTBOX, Outbox, OutboxRelay
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store

pytestmark = pytest.mark.integration


class WakeSettings(ServiceSettings):
    service_name = "waketest"
    model_config = SettingsConfigDict(env_prefix="WAKETEST_", extra="ignore")


def revoked(contact_id: str):
    from tribune_shared.events import utcnow

    event = ConsentRevokedV1(
        contact_id=contact_id, channel="email", purpose="news", source="t", revoked_at=utcnow()
    )
    return new_envelope(event, producer="waketest", federation_id="f", federation_path="/f/")


@asynccontextmanager
async def running_relay(settings: WakeSettings) -> AsyncIterator[Store]:
    """A relay running with these settings for the block; its store, dropped after."""
    await ensure_topics(settings, ["consent-revoked"])
    store = Store(settings)
    publisher = EventPublisher(settings)
    await publisher.start()
    relay = OutboxRelay(store, publisher)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(1.0)  # the first (empty) poll is done; a stream is open
        yield store
    finally:
        relay.request_stop()
        await asyncio.wait_for(task, 30)  # stopping is not held up by an open stream
        await publisher.stop()
        await store.client.drop_database(settings.database_name)
        await store.close()


async def test_a_committed_event_wakes_the_relay_long_before_its_next_poll(isolated_env):
    # A poll a minute: only the change stream publishes within the first seconds.
    settings = WakeSettings(outbox_wake_on_insert=True, outbox_poll_interval_seconds=60)
    async with running_relay(settings) as store:
        # committed as another process would (Outbox.add would wake this process's relay)
        row = await Outbox(store).pack([revoked("c1")])
        await store[OUTBOX].insert_one(row)

        async def published():
            return await store[OUTBOX].count_documents({}) == 0  # a batch row goes once sent

        await wait_for(published, timeout=30)


async def test_an_idle_relay_slows_down_and_a_write_in_its_process_wakes_it(isolated_env):
    # Fast pace 50 ms, idle at once, idle pace a minute, no change stream.
    settings = WakeSettings(
        outbox_poll_interval_seconds=0.05,
        outbox_idle_after_seconds=0,
        outbox_idle_poll_interval_seconds=60,
    )
    async with running_relay(settings) as store:  # idle after its first (empty) poll
        row = await Outbox(store).pack([revoked("c1")])
        await store[OUTBOX].insert_one(row)  # committed by another process
        await asyncio.sleep(1.5)
        assert await store[OUTBOX].count_documents({}) == 1  # waits for the idle poll

        async with store.transaction() as session:  # a write here: relayed at once
            await Outbox(store).add(session, revoked("c2"))

        async def published():
            return await store[OUTBOX].count_documents({"published_at": None}) == 0

        await wait_for(published, timeout=30)
        assert await store[OUTBOX].count_documents({}) == 1  # c2 kept for audit, c1 gone
