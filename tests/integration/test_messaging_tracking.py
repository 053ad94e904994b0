"""Open and click tracking on the real store: the messaging API's public routes (its
real app, through which the gateway forwards them), the buffered counters written in
batches, and the per-person records only for people who consented to tracking.

A campaign's messages are the intents messaging's own handlers record from
campaign-recipient-selected envelopes; the tracked HTML is what the dispatcher gets from
``link_tracker(settings).tracked`` for each of them."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from messaging.campaigns.domain import CampaignStatus, message_id
from messaging.campaigns.handlers import campaign_handlers
from messaging.campaigns.store import CampaignStore
from messaging.handlers import consent_handlers, contact_handlers
from messaging.main import create_app
from messaging.settings import MessagingSettings
from messaging.store import MESSAGES, MessagingStore
from messaging.tracking.service import TrackingService, link_tracker
from messaging.tracking.store import TRACKING_SEEN
from support import deliver, wait_for
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import (
    CampaignRecipientSelectedV1,
    Channel,
    ConsentGrantedV1,
    ConsentRevokedV1,
    ContactCreatedV1,
    ContactState,
    EventContract,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
GATEWAY = "https://gw.example.org"
HTML = (
    '<html><body><p>Bonjour</p><a href="https://tribune.example/agir">Agir</a> '
    '<a href="https://tribune.example/don">Donner</a>'
    '<a href="http://127.0.0.1:8000/api/v1/public/consents/unsubscribe?token=x">Stop</a>'
    "</body></html>"
)
TEXT = "Agir : https://tribune.example/agir"
TRACKING_STATS = {"opened", "unique_opened", "clicked", "unique_clicked", "clicked_links", "ab"}


@dataclass
class World:
    settings: MessagingSettings
    store: Store
    campaign_id: str = ""

    def __post_init__(self) -> None:
        messages = MessagingStore(self.store)
        self.handlers = (
            Subscriptions("messaging")
            .add(contact_handlers(messages))
            .add(consent_handlers(messages))
            .add(campaign_handlers(self.store))
        )
        self.tracker = link_tracker(self.settings)

    async def feed(self, event: EventContract, producer: str) -> None:
        envelope = new_envelope(
            event, producer=producer, federation_id="paris", federation_path=PARIS
        )
        await deliver(self.store, self.handlers, envelope)

    async def campaign(self) -> str:
        self.campaign_id = uuid.uuid4().hex
        await CampaignStore(self.store).insert(
            {
                "_id": self.campaign_id,
                "federation_id": "paris",
                "federation_path": PARIS,
                "name": "Réunion",
                "channel": Channel.email.value,
                "purpose": "news",
                "status": CampaignStatus.sending.value,
                "stats": {},
                "created_at": utcnow(),
            }
        )
        return self.campaign_id

    async def person(self, *, tracking: bool) -> str:
        """A recipient of the campaign (its message intent recorded), who granted the
        tracking consent or not."""
        cid = uuid.uuid4().hex
        state = ContactState(given_name="Ana", email=f"{cid}@example.org")
        await self.feed(
            ContactCreatedV1(contact_id=cid, contact_version=1, contact=state), "contacts"
        )
        if tracking:
            await self.feed(
                ConsentGrantedV1(
                    contact_id=cid,
                    channel=Channel.email,
                    purpose=self.settings.tracking_purpose,
                    source="test",
                    granted_at=utcnow(),
                ),
                "consent",
            )
        await self.feed(
            CampaignRecipientSelectedV1(campaign_id=self.campaign_id, contact_id=cid, position=0),
            "contacts",
        )
        return cid

    async def revoke_tracking(self, cid: str) -> None:
        await self.feed(
            ConsentRevokedV1(
                contact_id=cid,
                channel=Channel.email,
                purpose=self.settings.tracking_purpose,
                source="test",
                revoked_at=utcnow(),
            ),
            "consent",
        )

    def mail(self, cid: str, *, tracking: bool) -> tuple[str, list[str], str | None]:
        """(message id, click paths, pixel path) of the email the dispatcher would send."""
        mid = message_id(self.campaign_id, cid)
        html, _ = self.tracker.tracked(
            HTML, TEXT, message_id=mid, campaign_id=self.campaign_id, tracking_allowed=tracking
        )
        assert html is not None
        clicks = re.findall(r'href="https://gw\.example\.org(/api/v1/public/t/c/[^"]+)"', html)
        pixels = re.findall(r'src="https://gw\.example\.org(/api/v1/public/t/o/[^"]+)"', html)
        return mid, clicks, (pixels[0] if pixels else None)

    async def stats(self) -> dict[str, Any]:
        """The campaign's tracking counters (the sending ones left out)."""
        doc = (await CampaignStore(self.store).by_ids([self.campaign_id]))[self.campaign_id]
        return {k: v for k, v in doc["stats"].items() if k in TRACKING_STATS}

    async def message(self, mid: str) -> dict[str, Any]:
        doc = await self.store[MESSAGES].find_one({"_id": mid})
        assert doc is not None
        return doc

    async def events(self) -> list[dict[str, Any]]:
        """The events in messaging's outbox (batch rows unpacked)."""
        out: list[dict[str, Any]] = []
        async for row in self.store[OUTBOX].find({}):
            if row.get("batch") is not None:
                out += json.loads(zlib.decompress(row["batch"]))
            else:
                out.append(row["envelope"])
        return [e for e in out if e["type"] in ("message-opened", "message-clicked")]


def tracking_settings(**overrides: Any) -> MessagingSettings:
    return MessagingSettings(tracking_base_url=GATEWAY, **overrides)


@pytest.fixture
async def world(isolated_env) -> AsyncIterator[World]:
    settings = tracking_settings(tracking_flush_interval_ms=50)
    store = Store(settings)
    try:
        w = World(settings, store)
        await w.campaign()
        yield w
    finally:
        await store.client.drop_database(settings.database_name)
        await store.close()


async def test_a_click_redirects_and_counts_and_an_open_is_recorded_with_consent(world):
    ana = await world.person(tracking=True)
    mid, (agir, don), pixel = world.mail(ana, tracking=True)
    assert pixel is not None
    with TestClient(create_app(world.settings), follow_redirects=False) as api:
        answer = api.get(agir)
        assert (answer.status_code, answer.headers["location"]) == (
            302,
            "https://tribune.example/agir",
        )
        assert api.get(agir).status_code == 302  # the same link again
        assert api.get(don).headers["location"] == "https://tribune.example/don"
        gif = api.get(pixel)
        assert (gif.status_code, gif.headers["content-type"]) == (200, "image/gif")
        assert api.get(pixel).status_code == 200  # the mail shown again
        # a forged token: a page, no redirect, nothing counted
        forged = agir[:-4] + ("AAAA" if not agir.endswith("AAAA") else "BBBB")
        refused = api.get(forged)
        assert refused.status_code == 404 and "location" not in refused.headers

        async def counted() -> dict[str, Any] | None:
            stats = await world.stats()
            return stats if stats.get("clicked") == 3 and stats.get("opened") == 2 else None

        stats = await wait_for(counted, timeout=10)
    assert stats == {
        "clicked": 3,
        "unique_clicked": 1,
        "clicked_links": {"0": 2, "1": 1},
        "opened": 2,
        "unique_opened": 1,
    }
    message = await world.message(mid)
    assert message["clicked_at"] is not None and message["opened_at"] is not None
    events = await world.events()
    clicked = [e["data"] for e in events if e["type"] == "message-clicked"]
    opened = [e["data"] for e in events if e["type"] == "message-opened"]
    assert sorted(c["url"] for c in clicked) == [
        "https://tribune.example/agir",
        "https://tribune.example/agir",
        "https://tribune.example/don",
    ]
    assert {c["contact_id"] for c in clicked} == {ana}
    # the first open only: a mail client fetches the image each time the mail is shown
    assert [(o["message_id"], o["campaign_id"]) for o in opened] == [(mid, world.campaign_id)]
    assert {e["federation_path"] for e in events} == {PARIS}


async def test_a_person_without_tracking_consent_leaves_no_personal_trace(world):
    bob = await world.person(tracking=False)
    mid, (agir, _), pixel = world.mail(bob, tracking=False)
    assert pixel is None  # never in the mail without consent
    # consented when the mail was sent, withdrew since: no personal record either
    eve = await world.person(tracking=True)
    eve_mid, (eve_agir, _), _ = world.mail(eve, tracking=True)
    await world.revoke_tracking(eve)
    # both in an A/B subject test (the draw the campaign handlers make, set here)
    await world.store[MESSAGES].update_one({"_id": mid}, {"$set": {"variant": "a"}})
    await world.store[MESSAGES].update_one({"_id": eve_mid}, {"$set": {"variant": "b"}})
    svc = TrackingService(world.settings, world.store)
    for path in (agir, agir, eve_agir):
        svc.click(path.rsplit("/", 1)[1])
    assert await svc.flush() == 3
    assert await world.stats() == {
        "clicked": 3,
        "unique_clicked": 2,
        "clicked_links": {"0": 3},
        # aggregate: everyone's clicks count, once per message, in its variant
        "ab": {"a": {"clicked": 1}, "b": {"clicked": 1}},
    }
    for m in (mid, eve_mid):
        message = await world.message(m)
        assert "clicked_at" not in message and "opened_at" not in message
    assert await world.events() == []
    # what counting uniqueness keeps names no one: an opaque id and its expiry
    markers = await world.store[TRACKING_SEEN].find({}).to_list()
    assert len(markers) == 2
    for doc in markers:
        assert set(doc) == {"_id", "expires_at"}
        assert bob not in doc["_id"] and mid not in doc["_id"]


async def test_hits_are_buffered_then_written_in_one_flush(world):
    ana = await world.person(tracking=True)
    mid, (agir, don), pixel = world.mail(ana, tracking=True)
    assert pixel is not None
    svc = TrackingService(
        tracking_settings(tracking_flush_interval_ms=60_000, tracking_flush_max_hits=4),
        world.store,
    )
    token = pixel.rsplit("/", 1)[1].removesuffix(".gif")
    svc.open(token)
    svc.open(token)
    svc.click(agir.rsplit("/", 1)[1])
    # buffered: nothing written yet, whatever the store is asked
    assert svc.buffered == 3
    assert await world.stats() == {}
    assert "opened_at" not in await world.message(mid)
    # the flusher waits its (long) interval, but the fourth hit fills the batch: written
    # at once, every counter in one go
    stop = asyncio.Event()
    flusher = asyncio.create_task(svc.run(stop))
    try:
        svc.click(don.rsplit("/", 1)[1])

        async def written() -> dict[str, Any] | None:
            stats = await world.stats()
            return stats or None

        assert await wait_for(written, timeout=10) == {
            "opened": 2,
            "unique_opened": 1,
            "clicked": 2,
            "unique_clicked": 1,
            "clicked_links": {"0": 1, "1": 1},
        }
        assert svc.buffered == 0
        # the same message opened in a later batch: counted, not unique again
        svc.open(token)
    finally:
        stop.set()
        await flusher  # stopping flushes what is left
    stats = await world.stats()
    assert (stats["opened"], stats["unique_opened"]) == (3, 1)
    assert len([e for e in await world.events() if e["type"] == "message-opened"]) == 1
