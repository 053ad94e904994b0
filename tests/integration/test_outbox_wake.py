"""The outbox relay can be woken by a change stream on the outbox (a committed event is
relayed at once instead of at the next poll): what the revocation benchmark tunes."""

from __future__ import annotations

import asyncio

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


async def test_a_committed_event_wakes_the_relay_long_before_its_next_poll(isolated_env):
    # A poll a minute: only the change stream publishes within the first seconds.
    settings = WakeSettings(outbox_wake_on_insert=True, outbox_poll_interval_seconds=60)
    await ensure_topics(settings, ["consent-revoked"])
    store = Store(settings)
    publisher = EventPublisher(settings)
    await publisher.start()
    relay = OutboxRelay(store, publisher)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(1.0)  # the first (empty) poll is done; the stream is open
        async with store.transaction() as session:
            await Outbox(store).add(session, revoked("c1"))

        async def published():
            return await store[OUTBOX].count_documents({"published_at": {"$ne": None}}) == 1

        await wait_for(published, timeout=30)
    finally:
        relay.request_stop()
        await asyncio.wait_for(task, 30)  # stopping is not held up by the open stream
        await publisher.stop()
        await store.client.drop_database(settings.database_name)
        await store.close()
