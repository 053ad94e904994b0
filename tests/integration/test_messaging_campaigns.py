"""The campaign dispatcher on the real store, into a real SMTP server (and the real fake SMS
provider, served in-process): intents queued by messaging's own handlers from
campaign-recipient-selected envelopes, a template created through TemplateService, a real
Dispatcher with its pooled SMTP sessions. No Kafka: the events are delivered to the
handlers as the consumer would (support.deliver)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from messaging.campaigns.content import TemplateContent
from messaging.campaigns.dispatcher import Dispatcher
from messaging.campaigns.domain import (
    Action,
    CampaignStatus,
    ClaimCursor,
    QueuePosition,
    message_id,
)
from messaging.campaigns.guard import Guard
from messaging.campaigns.handlers import campaign_handlers
from messaging.campaigns.rules import CONSENT_REQUEST_PURPOSE
from messaging.campaigns.service import CampaignService
from messaging.campaigns.store import INDEXES as CAMPAIGN_INDEXES
from messaging.campaigns.store import CampaignStore
from messaging.composer import OutgoingEmail
from messaging.handlers import consent_handlers, contact_handlers, suppression_handlers
from messaging.mailer import FailoverMailer
from messaging.privacy import erasure_handlers
from messaging.revocations import RevocationFeed
from messaging.settings import MessagingSettings
from messaging.sms.providers import build_sms_sender, sms_http_client
from messaging.store import MESSAGES, MessagingStore
from messaging.templates.service import TemplateService
from support import deliver, index_scan, make_identity, wait_for
from tribune_devstack import fake_sms
from tribune_devstack.stack import find_free_ports
from tribune_shared.auth import Role
from tribune_shared.bus import EventPublisher
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import (
    CampaignAudienceResolvedV1,
    CampaignRecipientSelectedV1,
    Channel,
    ConsentGrantedV1,
    ConsentRevokedV1,
    ContactCreatedV1,
    ContactState,
    DataOrigin,
    ErasureRequestedV1,
    EventContract,
    OriginKind,
    SuppressionAddedV1,
)
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions, apply_steps
from tribune_shared.suppression import email_hash

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
PURPOSE = "news"
LINK = '<a href="{{ unsubscribe_url }}">Se désinscrire</a>'
HTML = (
    "<p>Bonjour {{ contact.given_name | default('ami') }},</p>"
    "<p>{{ origin }}</p><p>{{ sender }}</p>" + LINK
)
SUBJECT = "{{ campaign.name }} : bonjour {{ contact.given_name | default('ami') }}"
SMS_TEXT = "Réunion jeudi 19h. {{ origin }} {{ sender }} STOP"
SMS_CREDENTIAL = "fake-sms-credential-0123456789abcdef0123"


@dataclass
class Kit:
    """One campaign world: the messaging service's settings and store, its services, and
    helpers feeding events to its real handlers."""

    settings: MessagingSettings
    store: Store
    sms_url: str | None = None

    def __post_init__(self) -> None:
        self.templates = TemplateService(self.settings, self.store)
        self.content = TemplateContent(self.templates)
        self.service = CampaignService(self.settings, self.store, self.content)
        self.campaigns = CampaignStore(self.store)
        messages = MessagingStore(self.store)
        self.handlers = (
            Subscriptions("messaging")
            .add(contact_handlers(messages))
            .add(consent_handlers(messages))
            .add(suppression_handlers(messages))
            .add(erasure_handlers(self.store))
            .add(campaign_handlers(self.store))
        )
        self.manager = make_identity(PARIS, Role.campaign_manager)

    # ------------------------------------------------------------ events

    async def feed(self, event: EventContract, producer: str) -> None:
        await deliver(self.store, self.handlers, self.envelope(event, producer))

    @staticmethod
    def envelope(event: EventContract, producer: str) -> Envelope:
        return new_envelope(event, producer=producer, federation_id="paris", federation_path=PARIS)

    async def person(
        self,
        *,
        consent: bool = True,
        phone: str | None = None,
        origin: OriginKind = OriginKind.web_form,
        channel: Channel = Channel.email,
        purpose: str = PURPOSE,
    ) -> str:
        """A contact projected by messaging (contact-created), granted ``purpose`` on
        ``channel`` unless ``consent`` is False."""
        cid = uuid.uuid4().hex
        state = ContactState(
            given_name="Ana",
            family_name="Martin",
            email=f"{cid}@example.org",
            phone=phone,
            origin=DataOrigin(kind=origin, detail="test"),
        )
        await self.feed(
            ContactCreatedV1(contact_id=cid, contact_version=1, contact=state), "contacts"
        )
        if consent:
            await self.grant(cid, channel, purpose)
        return cid

    async def grant(self, cid: str, channel: Channel = Channel.email, purpose: str = PURPOSE):
        event = ConsentGrantedV1(
            contact_id=cid, channel=channel, purpose=purpose, source="test", granted_at=utcnow()
        )
        await self.feed(event, "consent")

    def revocation(self, cid: str, channel: Channel = Channel.email) -> Envelope:
        event = ConsentRevokedV1(
            contact_id=cid, channel=channel, purpose=PURPOSE, source="test", revoked_at=utcnow()
        )
        return self.envelope(event, "consent")

    async def suppress(self, cid: str) -> None:
        address = email_hash(f"{cid}@example.org", self.settings.suppression_salt)
        assert address is not None
        event = SuppressionAddedV1(
            address_hash=address, kind="email", reason="objection", suppressed_at=utcnow()
        )
        await self.feed(event, "consent")

    async def erase(self, cid: str) -> None:
        event = ErasureRequestedV1(
            request_id=uuid.uuid4().hex, contact_id=cid, requested_at=utcnow()
        )
        await self.feed(event, "consent")

    # ------------------------------------------------------------ campaigns

    async def launched(
        self, channel: Channel = Channel.email, purpose: str = PURPOSE, name: str = "Réunion"
    ) -> str:
        if channel is Channel.email:
            template, _ = await self.templates.create(
                self.manager, name=name, channel=channel, subject=SUBJECT, html=HTML, text=None
            )
        else:
            template, _ = await self.templates.create(
                self.manager, name=name, channel=channel, subject=None, html=None, text=SMS_TEXT
            )
        campaign = await self.service.create(
            self.manager,
            name=name,
            channel=channel,
            purpose=purpose,
            template_id=template["_id"],
            template_version=None,
            segment_id=None,
        )
        launched = await self.service.act(self.manager, campaign["_id"], Action.launch)
        assert launched["status"] == CampaignStatus.sending.value
        return str(campaign["_id"])

    async def select(self, campaign_id: str, contact_ids: list[str]) -> None:
        """The audience as contacts streams it: one recipient event per contact, then
        the resolved count."""
        for position, cid in enumerate(contact_ids):
            event = CampaignRecipientSelectedV1(
                campaign_id=campaign_id, contact_id=cid, position=position
            )
            await self.feed(event, "contacts")
        resolved = CampaignAudienceResolvedV1(
            campaign_id=campaign_id, recipients=len(contact_ids), resolved_at=utcnow()
        )
        await self.feed(resolved, "contacts")

    async def act(self, campaign_id: str, action: Action) -> dict[str, Any]:
        return await self.service.act(self.manager, campaign_id, action)

    async def campaign(self, campaign_id: str) -> dict[str, Any]:
        return await self.service.get(self.manager, campaign_id)

    async def messages(self, campaign_id: str) -> list[dict[str, Any]]:
        return await self.store[MESSAGES].find({"campaign_id": campaign_id}).to_list()

    async def statuses(self, campaign_id: str) -> Counter[str]:
        return Counter(m["status"] for m in await self.messages(campaign_id))

    # ------------------------------------------------------------ dispatchers

    @contextlib.asynccontextmanager
    async def dispatcher(
        self,
        email: Any | None = None,
        settings: MessagingSettings | None = None,
        guard: Guard | None = None,
    ) -> AsyncIterator[Dispatcher]:
        """A real dispatcher on pooled SMTP sessions (``email`` wraps the pool if given),
        and the SMS sender of the fake provider when the kit has one."""
        settings = settings or self.settings
        pool = FailoverMailer.from_settings(settings)
        client = sms_http_client(settings)
        sms = build_sms_sender(settings, client) if self.sms_url else None
        try:
            yield Dispatcher(
                settings,
                self.store,
                content=self.content,
                email=email(pool) if email else pool,
                sms=sms,
                guard=guard,
            )
        finally:
            await pool.close()
            await client.aclose()


async def drain_one_at_a_time(
    kit: Kit, guard: Guard, before_first: Callable[[], Awaitable[None]]
) -> None:
    """Drain with the guard watching and one SMTP session, so that each message is checked
    against the guard once the previous one went; ``before_first`` runs when the first
    message is about to go (the rest of its hand-off is already decided)."""
    one_session = kit.settings.model_copy(update={"smtp_pool_size": 1})
    stop = asyncio.Event()
    watching = asyncio.create_task(guard.run(stop))
    try:
        assert await guard.wait_started(timeout=20)
        async with kit.dispatcher(
            email=lambda pool: Tap(pool, before_first), settings=one_session, guard=guard
        ) as d:
            await drain(d)
    finally:
        stop.set()
        await watching


async def drain(dispatcher: Dispatcher) -> None:
    """Tick until the dispatcher finds nothing more to claim."""
    for _ in range(1000):
        if not await dispatcher.tick():
            return
    raise AssertionError("the dispatcher never ran out of work")


class Tap:
    """The pool, seen from the dispatcher: ``before_first`` runs when the first message of
    the first hand-off is about to go (the rest of that hand-off is already decided);
    ``hang`` makes every send wait forever once its message reached the server (a worker
    frozen between the hand-over and the record of its outcomes)."""

    def __init__(
        self,
        pool: FailoverMailer,
        before_first: Callable[[], Awaitable[None]] | None = None,
        hang: bool = False,
        hang_from: int = 1,
    ) -> None:
        self.pool, self.before_first, self.hang = pool, before_first, hang
        self.hang_from = hang_from  # the first send (counted from 1, as they begin) that hangs
        self.began = 0
        self.sent = 0

    async def send(self, message: OutgoingEmail) -> None:
        if self.before_first is not None:
            first, self.before_first = self.before_first, None
            await first()
        self.began += 1
        turn = self.began
        await self.pool.send(message)
        self.sent += 1
        if self.hang and turn >= self.hang_from:
            await asyncio.Event().wait()


def message_ids(sink) -> Counter[str]:
    """How many times each Message-ID reached the SMTP server (and forget them)."""
    return Counter(str(message["Message-ID"]) for _, message in sink.take())


def campaign_settings(port: int, **overrides: Any) -> MessagingSettings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_pool_size": 4,
        "campaign_claim_size": 20,
        "campaign_handoff_size": 5,
        "campaign_poll_interval_seconds": 0.05,
        "campaign_claim_timeout_seconds": 5,
        # hand-offs of campaign_handoff_size, each recorded before the next goes: what
        # most tests count (the overlapping mode has its own test)
        "campaign_overlap_handoffs": False,
        "sms_holiday_country": "",
        **overrides,
    }
    return MessagingSettings(**values)


@pytest.fixture
async def kit(isolated_env, smtp_server) -> AsyncIterator[Kit]:
    sink, port = smtp_server
    sink.take()
    settings = campaign_settings(port)
    store = Store(settings)
    try:
        yield Kit(settings, store)
    finally:
        await store.client.drop_database(settings.database_name)
        await store.close()


# ---------------------------------------------------------------- at most once


async def test_claims_read_the_queue_in_bounded_windows_and_take_each_message_once(kit):
    """The queue is read in windows of message ids (ClaimCursor), each a range of the
    queue's index bounded on both sides: claims from a cursor in the middle of the id space
    take every queued message once, those before the cursor on the next turn."""
    await kit.store.ensure_indexes(CAMPAIGN_INDEXES)
    campaign_id = uuid.uuid4().hex
    ids = [message_id(campaign_id, f"c{i}") for i in range(600)]
    queued = {"campaign_id": campaign_id, "status": "queued", "not_before": None}
    await kit.store[MESSAGES].insert_many(
        [{"_id": mid, "contact_id": f"c{i}", **queued, "claim": None} for i, mid in enumerate(ids)]
    )
    campaigns = CampaignStore(kit.store)
    positions = {campaign_id: QueuePosition.starting_at("80")}
    taken: list[str] = []
    while got := await campaigns.claim(
        [campaign_id], now=utcnow(), limit=70, token=uuid.uuid4().hex, positions=positions
    ):
        assert len(got) <= 70
        taken += [d["_id"] for d in got]
    assert sorted(taken) == sorted(ids)  # every one, once
    assert await kit.store[MESSAGES].count_documents({"status": "sending"}) == 600

    window = {**queued, "_id": ClaimCursor("7f", span=2).ids()}
    explained = await kit.store[MESSAGES].find(window).sort("_id", 1).limit(10).explain()
    assert index_scan(explained)["indexName"] == "campaign_id_1_status_1_not_before_1__id_1"
    assert window["_id"] == {"$gte": "7f", "$lt": "81"}


async def test_messages_deferred_to_a_time_that_has_come_are_claimed_once_in_windows(kit):
    """SMS deferred by quiet hours wait for a few times, thousands each: once a time has
    come its messages are claimed in windows of ids on that one time (never a range of
    times, which the local store reads whole on every claim), each once, the earliest time
    first, and none deferred to a time still to come."""
    await kit.store.ensure_indexes(CAMPAIGN_INDEXES)
    campaign_id = uuid.uuid4().hex
    now = utcnow().replace(microsecond=0)
    times = [now - timedelta(hours=2), now - timedelta(minutes=5), now + timedelta(hours=1)]
    ids = [message_id(campaign_id, f"c{i}") for i in range(450)]
    deferred_to = {mid: times[i % 3] for i, mid in enumerate(ids)}
    await kit.store[MESSAGES].insert_many(
        [
            {
                "_id": mid,
                "contact_id": f"c{i}",
                "campaign_id": campaign_id,
                "status": "queued",
                "not_before": deferred_to[mid],
                "claim": None,
            }
            for i, mid in enumerate(ids)
        ]
    )
    campaigns = CampaignStore(kit.store)
    reads: list[dict] = []
    find = campaigns.messages.find

    def recorded(query, *args, **kwargs):
        reads.append(query)
        return find(query, *args, **kwargs)

    campaigns.messages.find = recorded  # type: ignore[method-assign]
    positions = {campaign_id: QueuePosition.starting_at("c0")}
    claims: list[list[str]] = []
    while got := await campaigns.claim(
        [campaign_id], now=now, limit=40, token=uuid.uuid4().hex, positions=positions
    ):
        assert len(got) <= 40
        claims.append([d["_id"] for d in got])
    taken = [mid for claim in claims for mid in claim]
    assert sorted(taken) == sorted(mid for mid in ids if deferred_to[mid] <= now)  # once each
    # the earliest time first: every message of the first time before any of the second
    firsts = [i for i, mid in enumerate(taken) if deferred_to[mid] == times[0]]
    assert firsts == list(range(150))
    assert positions[campaign_id].due == {}  # both times spent, the later one not followed
    assert await kit.store[MESSAGES].count_documents({"status": "queued"}) == 150
    deferred_reads = [q for q in reads if q.get("not_before") is not None]
    assert deferred_reads and all(
        isinstance(q["not_before"], datetime) and "_id" in q for q in deferred_reads
    )
    window = {
        "campaign_id": campaign_id,
        "status": "queued",
        "not_before": times[0],
        "_id": ClaimCursor("7f", span=2).ids(),
    }
    explained = await kit.store[MESSAGES].find(window).sort("_id", 1).limit(10).explain()
    assert index_scan(explained)["indexName"] == "campaign_id_1_status_1_not_before_1__id_1"


async def test_two_dispatchers_on_one_queue_send_each_message_exactly_once(kit, smtp_server):
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(60)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)

    stop = asyncio.Event()
    async with kit.dispatcher() as first, kit.dispatcher() as second:
        runs = [asyncio.create_task(d.run(stop)) for d in (first, second)]

        async def done() -> bool:
            return (await kit.campaign(campaign_id))["status"] == CampaignStatus.completed.value

        try:
            await wait_for(done, timeout=60)
        finally:
            stop.set()
            await asyncio.gather(*runs)

    received = message_ids(sink)
    assert len(received) == 60 and set(received.values()) == {1}
    campaign = await kit.campaign(campaign_id)
    assert campaign["stats"]["sent"] == 60 and campaign["stats"]["queued"] == 0
    assert await kit.statuses(campaign_id) == {"sent": 60}


async def test_a_worker_dead_after_claiming_is_taken_over_and_resends_at_most_one_handoff(
    kit, smtp_server
):
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(30)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)

    # the first worker claims 20, hands the first messages over (as many as it has
    # sessions), and freezes before recording: then it is killed (its task cancelled,
    # nothing more written)
    taps: list[Tap] = []

    def frozen(pool: FailoverMailer) -> Tap:
        taps.append(Tap(pool, hang=True))
        return taps[0]

    async with kit.dispatcher(email=frozen) as doomed:
        tick = asyncio.create_task(doomed.tick())
        handing = kit.settings.smtp_pool_size
        await wait_for(lambda: taps[0].sent == handing, timeout=20)
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    handed_over = message_ids(sink)
    assert len(handed_over) == handing
    assert (await kit.statuses(campaign_id)) == {"sending": 20, "queued": 10}

    # another worker, once the claim timeout has passed, takes the claimed ones back
    await asyncio.sleep(kit.settings.campaign_claim_timeout_seconds + 0.5)
    async with kit.dispatcher() as survivor:
        await drain(survivor)

    received = message_ids(sink)
    assert len(received) == 30  # nothing lost
    duplicates = [mid for mid in handed_over if mid in received]
    assert 0 < len(duplicates) <= kit.settings.campaign_handoff_size
    messages = await kit.messages(campaign_id)
    assert Counter(m["status"] for m in messages) == {"sent": 30}
    assert sum(1 for m in messages if m.get("resent")) == 20  # the dead worker's claim
    campaign = await kit.campaign(campaign_id)
    assert campaign["status"] == CampaignStatus.completed.value
    assert campaign["stats"]["sent"] == 30


async def test_a_claim_taken_back_by_a_sweep_is_not_sent_by_the_worker_that_lost_it(
    kit, smtp_server
):
    """A worker slower than the claim timeout (a stalled store) loses its claim to a
    sweep, which puts the messages back in the queue: each hand-off checks its claim
    first, so those messages go once, from their new claim, not twice."""
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(20)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)

    async def sweep_everything() -> None:  # as another worker's sweep would, much later
        released = await CampaignStore(kit.store).release_stale(utcnow() + timedelta(hours=1))
        assert released == 20  # the whole batch, its first hand-off on its way

    async with kit.dispatcher(email=lambda pool: Tap(pool, sweep_everything)) as d:
        await drain(d)
    received = message_ids(sink)
    assert len(received) == 20 and set(received.values()) == {1}  # every one, once
    messages = await kit.messages(campaign_id)
    assert Counter(m["status"] for m in messages) == {"sent": 20}
    campaign = await kit.campaign(campaign_id)
    assert campaign["status"] == CampaignStatus.completed.value


async def test_a_sweep_spares_the_sweeping_workers_own_claims(kit):
    people = [await kit.person() for _ in range(6)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)
    queue = CampaignStore(kit.store)
    now = utcnow()
    ours = await queue.claim([campaign_id], now=now, limit=3, token="ours")
    theirs = await queue.claim([campaign_id], now=now, limit=3, token="theirs")
    assert len(ours) == len(theirs) == 3
    released = await queue.release_stale(now + timedelta(hours=1), keep=["ours"])
    assert released == 3
    assert await queue.still_claimed([m["_id"] for m in ours], "ours") == {m["_id"] for m in ours}
    assert await queue.still_claimed([m["_id"] for m in theirs], "theirs") == set()


async def test_the_next_batch_is_claimed_during_the_last_handoffs_and_put_back_on_stop(
    kit, smtp_server
):
    """Batches of 20 in hand-offs of 5: the next batch is claimed when two hand-offs are
    left (campaign_claim_ahead_handoffs). A worker stopped then finishes its batch and
    puts the one claimed ahead back in the queue, none of it marked resent."""
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(30)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)
    stop = asyncio.Event()
    seen: list[dict[str, int]] = []

    class StopWhenClaimedAhead:
        def __init__(self, pool: FailoverMailer) -> None:
            self.pool, self.sent = pool, 0

        async def send(self, message: Any) -> None:
            self.sent += 1
            if self.sent in (6, 11):  # the second hand-off (3 left), the third (2 left)
                if self.sent == 11:
                    await wait_for(lambda: d._claim_ahead and d._claim_ahead[1].done())
                    stop.set()  # (SIGTERM) the batch in hand is finished, the one ahead put back
                seen.append(dict(await kit.statuses(campaign_id)))
            await self.pool.send(message)

    async with kit.dispatcher(email=StopWhenClaimedAhead) as d:
        await asyncio.wait_for(d.run(stop), timeout=60)
    assert seen[0] == {"sending": 15, "queued": 10, "sent": 5}  # not claimed ahead yet
    assert seen[1] == {"sending": 20, "sent": 10}  # the last 10, claimed ahead
    assert len(message_ids(sink)) == 20
    messages = await kit.messages(campaign_id)
    assert Counter(m["status"] for m in messages) == {"sent": 20, "queued": 10}
    assert not any(m.get("resent") or m.get("claim") for m in messages)


async def test_overlapping_handoffs_keep_the_crash_window(kit, smtp_server):
    """campaign_overlap_handoffs (the shipped default): the next hand-off goes as soon as
    every message of this one has a session, and this one is recorded once its messages
    are back, in hand-offs of half the size. Every message still goes once; a worker
    frozen mid-way (then killed) has at most campaign_handoff_size messages handed over
    and not on record, which the worker taking over sends again."""
    sink, _ = smtp_server
    overlapping = kit.settings.model_copy(update={"campaign_overlap_handoffs": True})
    people = [await kit.person() for _ in range(12)]
    first = await kit.launched(name="Première")
    await kit.select(first, people)
    async with kit.dispatcher(settings=overlapping) as d:
        await drain(d)
    received = message_ids(sink)
    assert len(received) == 12 and set(received.values()) == {1}
    campaign = await kit.campaign(first)
    assert campaign["stats"]["sent"] == 12 and campaign["stats"]["queued"] == 0
    assert campaign["status"] == CampaignStatus.completed.value

    second = await kit.launched(name="Seconde")
    await kit.select(second, people)
    # hand-offs of 2 on 4 sessions: the first goes and is recorded; from the third message
    # on, every send freezes once it reached the server. The second hand-off went with
    # the first's, the third once the first was on record; the fourth waits for the
    # second's record, which never comes: two hand-offs handed over and not on record
    taps: list[Tap] = []

    def frozen(pool: FailoverMailer) -> Tap:
        taps.append(Tap(pool, hang=True, hang_from=3))
        return taps[0]

    async with kit.dispatcher(email=frozen, settings=overlapping) as doomed:
        tick = asyncio.create_task(doomed.tick())
        await wait_for(lambda: taps[0].sent == 6, timeout=20)
        await asyncio.sleep(0.5)  # nothing more goes
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    handed_over = message_ids(sink)
    assert len(handed_over) == 6
    assert (await kit.statuses(second)) == {"sent": 2, "sending": 10}

    await asyncio.sleep(kit.settings.campaign_claim_timeout_seconds + 0.5)
    async with kit.dispatcher(settings=overlapping) as survivor:
        await drain(survivor)
    received = message_ids(sink)
    assert len(received) == 10  # the 10 not on record, the 4 frozen ones among them
    duplicates = [mid for mid in handed_over if mid in received]
    assert len(duplicates) == 4 <= kit.settings.campaign_handoff_size
    assert await kit.statuses(second) == {"sent": 12}


# ---------------------------------------------------------------- refusals


async def test_each_rule_refuses_its_recipients_and_is_counted_in_the_stats(kit, smtp_server):
    sink, _ = smtp_server
    ok = [await kit.person() for _ in range(3)]
    no_consent = await kit.person(consent=False)
    revoked = await kit.person()
    await deliver(kit.store, kit.handlers, kit.revocation(revoked))
    suppressed = await kit.person()
    await kit.suppress(suppressed)
    erased_before = await kit.person()
    await kit.erase(erased_before)
    erased_after = await kit.person()
    capped = await kit.person()
    first_id = await kit.launched(name="Première")
    await kit.select(first_id, [capped])
    async with kit.dispatcher(settings=kit.settings.model_copy(update={"cap_enabled": False})) as d:
        await drain(d)
    assert len(message_ids(sink)) == 1

    campaign_id = await kit.launched(name="Seconde")
    everyone = [*ok, no_consent, revoked, suppressed, erased_before, erased_after, capped]
    await kit.select(campaign_id, everyone)
    await kit.erase(erased_after)  # between its intent and its hand-off
    capping = kit.settings.model_copy(update={"cap_messages": 1})
    async with kit.dispatcher(settings=capping) as d:
        await drain(d)

    received = message_ids(sink)
    assert len(received) == 3
    messages = {m["contact_id"]: m for m in await kit.messages(campaign_id)}
    assert {cid for cid, m in messages.items() if m["status"] == "sent"} == set(ok)
    rules = {cid: m.get("refused_rule") for cid, m in messages.items() if m["status"] == "refused"}
    assert rules == {
        no_consent: "no_consent",
        revoked: "consent_revoked",
        suppressed: "suppressed",
        capped: "frequency_cap",
    }
    # nothing of an erased person stays, not even the intent
    assert erased_before not in messages and erased_after not in messages
    campaign = await kit.campaign(campaign_id)
    stats = campaign["stats"]
    assert stats["sent"] == 3 and stats["selected"] == 9
    assert stats["refused_by"] == {
        "no_consent": 1,
        "consent_revoked": 1,
        "suppressed": 1,
        "frequency_cap": 1,
    }
    assert campaign["status"] == CampaignStatus.completed.value


async def test_a_recipient_selected_twice_gets_one_intent_and_one_message(kit, smtp_server):
    """Recipients arrive in batches; the same person may come twice in one (the audience
    resumed by another worker) and again later (a redelivery under a new event id)."""
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(3)]
    campaign_id = await kit.launched()

    def selected(cid: str, position: int) -> Envelope:
        event = CampaignRecipientSelectedV1(
            campaign_id=campaign_id, contact_id=cid, position=position
        )
        return kit.envelope(event, "contacts")

    batch = [selected(cid, i) for i, cid in enumerate(people)] + [selected(people[0], 0)]
    async with kit.store.transaction() as session:
        await apply_steps(kit.handlers.steps("campaign-recipient-selected"), batch, session)
    await kit.feed(
        CampaignRecipientSelectedV1(campaign_id=campaign_id, contact_id=people[1], position=1),
        "contacts",
    )
    assert await kit.statuses(campaign_id) == Counter({"queued": 3})
    stats = (await kit.campaign(campaign_id))["stats"]
    assert stats["audience"] == 3 and stats["queued"] == 3

    async with kit.dispatcher() as d:
        await drain(d)
    assert sorted(message_ids(sink).values()) == [1, 1, 1]
    assert await kit.statuses(campaign_id) == Counter({"sent": 3})


async def test_hand_offs_read_ahead_still_count_the_messages_sent_since_for_the_cap(
    kit, smtp_server
):
    """With the guard watching, a dispatcher reads the views of the next hand-offs while
    one is being sent: the messages recorded after such a read count for the frequency
    cap all the same (a person in two campaigns of one batch gets one message)."""
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(10)]
    first = await kit.launched(name="Première")
    second = await kit.launched(name="Seconde")
    await kit.select(first, people)
    await kit.select(second, people)

    # one claim of 20 in 4 hand-offs of 5, all 4 read before the first is recorded
    ahead = kit.settings.model_copy(update={"cap_messages": 1, "campaign_read_ahead_handoffs": 3})
    guard = Guard(kit.store, memory_seconds=60)
    stop = asyncio.Event()
    watching = asyncio.create_task(guard.run(stop))
    try:
        assert await guard.wait_started(timeout=20)
        async with kit.dispatcher(settings=ahead, guard=guard) as d:
            await drain(d)
    finally:
        stop.set()
        await watching

    received = message_ids(sink)
    assert len(received) == 10 and set(received.values()) == {1}
    stats = [(await kit.campaign(c))["stats"] for c in (first, second)]
    assert sum(s.get("sent", 0) for s in stats) == 10
    assert sum(s.get("refused_by", {}).get("frequency_cap", 0) for s in stats) == 10


async def test_a_rented_file_contact_gets_the_consent_request_once_and_nothing_else(
    kit, smtp_server
):
    sink, _ = smtp_server
    rented = await kit.person(consent=False, origin=OriginKind.rented_file)
    request = await kit.launched(purpose=CONSENT_REQUEST_PURPOSE, name="Votre accord")
    await kit.select(request, [rented])
    news = await kit.launched(name="Actualités")
    await kit.select(news, [rented])
    again = await kit.launched(purpose=CONSENT_REQUEST_PURPOSE, name="Votre accord, bis")
    async with kit.dispatcher() as d:
        await drain(d)
        await kit.select(again, [rented])
        await drain(d)

    assert len(message_ids(sink)) == 1
    (first,) = await kit.messages(request)
    assert first["status"] == "sent"
    (other,) = await kit.messages(news)  # not consented: refused (the first rule that objects)
    assert other["status"] == "refused" and other["refused_rule"] == "no_consent"
    (second,) = await kit.messages(again)
    assert second["status"] == "refused" and second["refused_rule"] == "rented_file"
    assert (await kit.campaign(again))["stats"]["refused_by"] == {"rented_file": 1}


async def test_a_revocation_applied_between_two_handoffs_stops_the_later_ones(kit, smtp_server):
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(20)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)

    async def revoke_everyone() -> None:
        await deliver(kit.store, kit.handlers, *(kit.revocation(cid) for cid in people))

    async with kit.dispatcher(email=lambda pool: Tap(pool, revoke_everyone)) as d:
        await drain(d)

    # the hand-off in flight when the revocations were applied went; no later one did
    assert len(message_ids(sink)) == kit.settings.campaign_handoff_size
    stats = (await kit.campaign(campaign_id))["stats"]
    assert stats["sent"] == 5 and stats["refused_by"] == {"consent_revoked": 15}


async def test_a_revocation_during_a_handoff_stops_its_messages_not_yet_handed_over(
    kit, smtp_server
):
    """The guard follows messaging's consents through a change stream: a revocation that
    lands while a hand-off is being sent stops that hand-off's messages that had not
    reached a free session yet, not only the later hand-offs'."""
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(20)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)

    async def revoke_everyone() -> None:
        await deliver(kit.store, kit.handlers, *(kit.revocation(cid) for cid in people))
        await asyncio.sleep(0.5)  # the change stream's delivery, with room to spare

    await drain_one_at_a_time(kit, Guard(kit.store, memory_seconds=60), revoke_everyone)
    # the message in the session when the revocations landed went; the 4 others of its
    # hand-off (stopped by the guard) and every later hand-off (refused from the views)
    # did not
    assert len(message_ids(sink)) == 1
    stats = (await kit.campaign(campaign_id))["stats"]
    assert stats["sent"] == 1 and stats["refused_by"] == {"consent_revoked": 19}


async def test_revocations_read_from_kafka_stop_a_send_before_the_views_have_them(kit, smtp_server):
    """The guard also asks the revocation feed (messaging.revocations): revocations only
    published on Kafka, never applied to messaging's views (its consumer is slow, say),
    stop the messages not handed over yet, this hand-off's and every later one's."""
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(20)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)
    feed = RevocationFeed(kit.settings)
    stop = asyncio.Event()
    reading = asyncio.create_task(feed.run(stop))
    await wait_for(feed.ready.is_set, timeout=30)

    async def revoke_everyone() -> None:
        publisher = EventPublisher(kit.settings, producer="consent")
        await publisher.start()
        try:
            await publisher.publish_many([kit.revocation(cid) for cid in people])
        finally:
            await publisher.stop()
        keys = [f"{cid}:email:{PURPOSE}" for cid in people]
        await wait_for(lambda: all(feed.knows(k) for k in keys), timeout=10)

    try:
        guard = Guard(kit.store, memory_seconds=60, feed=feed)
        await drain_one_at_a_time(kit, guard, revoke_everyone)
    finally:
        stop.set()
        await reading
    assert len(message_ids(sink)) == 1
    stats = (await kit.campaign(campaign_id))["stats"]
    assert stats["sent"] == 1 and stats["refused_by"] == {"consent_revoked": 19}
    # the views never heard of it: the feed alone said no
    assert await kit.store["consents"].count_documents({"status": "revoked"}) == 0


# ---------------------------------------------------------------- pause, cancel, breaker


async def test_pause_mid_way_puts_the_claimed_messages_back_and_resume_sends_them(kit, smtp_server):
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(30)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)

    async def pause() -> None:
        await kit.act(campaign_id, Action.pause)

    async with kit.dispatcher(email=lambda pool: Tap(pool, pause)) as d:
        await drain(d)
    first = message_ids(sink)
    assert len(first) == 5
    assert await kit.statuses(campaign_id) == {"sent": 5, "queued": 25}
    assert (await kit.campaign(campaign_id))["status"] == CampaignStatus.paused.value

    await kit.act(campaign_id, Action.resume)
    async with kit.dispatcher() as d:
        await drain(d)
    rest = message_ids(sink)
    assert len(rest) == 25 and not set(rest) & set(first)
    campaign = await kit.campaign(campaign_id)
    assert campaign["status"] == CampaignStatus.completed.value
    assert campaign["stats"]["sent"] == 30 and campaign["stats"]["queued"] == 0


async def test_cancel_mid_way_cancels_the_claimed_and_the_queued_messages(kit, smtp_server):
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(30)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)

    async def cancel() -> None:
        await kit.act(campaign_id, Action.cancel)

    async with kit.dispatcher(email=lambda pool: Tap(pool, cancel)) as d:
        await drain(d)
        await drain(d)

    assert len(message_ids(sink)) == 5
    assert await kit.statuses(campaign_id) == {"sent": 5, "cancelled": 25}
    campaign = await kit.campaign(campaign_id)
    assert campaign["status"] == CampaignStatus.cancelled.value
    assert campaign["stats"]["cancelled"] == 25 and campaign["stats"]["queued"] == 0


async def test_a_cancel_changes_the_campaign_at_once_and_its_messages_in_batches(kit, smtp_server):
    """Cancelling changes only the campaign (one statement over 100,000 messages outlived
    the local store's transaction limit); the dispatchers then cancel its queued, deferred
    and held messages a batch per transaction, none of them sent, the counts moving with
    them."""
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(40)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)
    ids = sorted(m["_id"] for m in await kit.messages(campaign_id))
    later = utcnow() + timedelta(hours=2)
    await kit.store[MESSAGES].update_many(
        {"_id": {"$in": ids[:10]}},
        {"$set": {"not_before": later}},  # quiet hours
    )
    await kit.store[MESSAGES].update_many(
        {"_id": {"$in": ids[10:20]}},
        {"$set": {"status": "held"}},  # an A/B test's rest
    )
    async with kit.store.transaction() as session:
        await kit.campaigns.count_stats({campaign_id: {"queued": -10, "held": 10}}, session)

    cancelled = await kit.act(campaign_id, Action.cancel)
    assert cancelled["status"] == CampaignStatus.cancelled.value and cancelled["cancelling"]
    assert await kit.statuses(campaign_id) == {"queued": 30, "held": 10}

    batches: list[int] = []
    small = kit.settings.model_copy(update={"campaign_cancel_batch_size": 7})
    async with kit.dispatcher(settings=small) as d:
        cancel_messages = d.campaigns.cancel_messages

        async def counted(ids: Any, at: datetime, session: Any) -> dict[str, int]:
            batches.append(sum(len(some) for some in ids.values()))
            return await cancel_messages(ids, at, session)

        d.campaigns.cancel_messages = counted  # type: ignore[method-assign]
        await drain(d)

    assert not message_ids(sink)  # none sent
    assert await kit.statuses(campaign_id) == {"cancelled": 40}
    assert sum(batches) == 40 and max(batches) <= 7, batches
    campaign = await kit.campaign(campaign_id)
    assert campaign["status"] == CampaignStatus.cancelled.value and not campaign["cancelling"]
    assert campaign["stats"]["cancelled"] == 40
    assert campaign["stats"]["queued"] == 0 and campaign["stats"]["held"] == 0


async def test_the_circuit_breaker_pauses_a_bouncing_campaign_with_the_reason(kit, smtp_server):
    sink, _ = smtp_server
    people = [await kit.person() for _ in range(30)]
    campaign_id = await kit.launched()
    await kit.select(campaign_id, people)

    async def bounces() -> None:
        # what the bounce feed will count through the store: 2 of the first 5 bounced
        async with kit.store.transaction() as session:
            await kit.campaigns.count_stats({campaign_id: {"bounced": 2}}, session)

    strict = kit.settings.model_copy(update={"campaign_breaker_min_sent": 5})
    async with kit.dispatcher(email=lambda pool: Tap(pool, bounces), settings=strict) as d:
        await drain(d)

    assert len(message_ids(sink)) == 5
    campaign = await kit.campaign(campaign_id)
    assert campaign["status"] == CampaignStatus.paused.value
    assert "bounce rate 40.0% above the 5.0% threshold" in campaign["status_reason"]
    assert await kit.statuses(campaign_id) == {"sent": 5, "queued": 25}


# ---------------------------------------------------------------- SMS quiet hours


@pytest.fixture
async def sms_kit(isolated_env, smtp_server) -> AsyncIterator[Kit]:
    """A kit with the fake SMS provider (served in this loop) and allowed hours set so
    that it is daytime now in Paris and night in Tahiti."""
    (port,) = find_free_ports(1)
    stop = asyncio.Event()
    started: asyncio.Future[fake_sms.FakeSms] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        fake_sms.serve(fake_sms.Config(), port=port, stop=stop, started=started)
    )
    await started
    url = f"http://127.0.0.1:{port}"
    paris = datetime.now(ZoneInfo("Europe/Paris"))
    start = max(timedelta(0), timedelta(hours=paris.hour, minutes=paris.minute - 30))
    end = min(timedelta(hours=24), timedelta(hours=paris.hour, minutes=paris.minute + 120))
    window = f"mon-sun {_hhmm(start)}-{_hhmm(end)}"
    settings = campaign_settings(
        smtp_server[1],
        sms_allowed_hours=window,
        sms_provider_order=["ovh"],
        sms_ovh_base_url=f"{url}/1.0",
        sms_ovh_application_secret=SMS_CREDENTIAL,
        sms_ovh_consumer_key=SMS_CREDENTIAL,
    )
    store = Store(settings)
    try:
        yield Kit(settings, store, sms_url=url)
    finally:
        stop.set()
        await server
        await store.client.drop_database(settings.database_name)
        await store.close()


def _hhmm(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


async def test_sms_in_quiet_hours_is_deferred_to_the_recipients_morning_then_sent(
    sms_kit, monkeypatch
):
    kit = sms_kit
    paris = await kit.person(phone="+33611223344", channel=Channel.sms)
    tahiti = await kit.person(phone="+68987123456", channel=Channel.sms)
    campaign_id = await kit.launched(channel=Channel.sms, name="SMS")
    await kit.select(campaign_id, [paris, tahiti])
    async with kit.dispatcher() as d:
        await drain(d)

    messages = {m["contact_id"]: m for m in await kit.messages(campaign_id)}
    assert messages[paris]["status"] == "sent"
    deferred = messages[tahiti]
    assert deferred["status"] == "queued"
    not_before = deferred["not_before"].replace(tzinfo=deferred["not_before"].tzinfo or UTC)
    assert not_before.utcoffset() == timedelta(0)
    allowed = kit.settings.sms_allowed_hours.split()[1].split("-")[0]
    local = not_before.astimezone(ZoneInfo("Pacific/Tahiti"))
    assert local.strftime("%H:%M") == allowed and not_before > utcnow()
    assert (await kit.campaign(campaign_id))["stats"]["deferred"] == 1
    sent = await _sms_to(kit, "+68987123456")
    assert sent == []

    # the clock reaches the recipient's allowed time: the message goes
    later = not_before + timedelta(minutes=1)
    monkeypatch.setattr("messaging.campaigns.dispatcher.utcnow", lambda: later)
    async with kit.dispatcher() as d:
        await drain(d)
    assert len(await _sms_to(kit, "+68987123456")) == 1
    assert len(await _sms_to(kit, "+33611223344")) == 1
    campaign = await kit.campaign(campaign_id)
    assert campaign["stats"]["sent"] == 2
    assert campaign["status"] == CampaignStatus.completed.value


async def test_a_dispatcher_claims_what_it_deferred_at_its_time_without_asking_the_store(
    sms_kit, monkeypatch
):
    """The times a dispatcher defers messages to are the times it claims them at: when they
    come, it does not need the store to say which times have come (a read of every message
    due, 2.2 s for 100,000 on the local store)."""
    kit = sms_kit
    phones = [f"+6898712345{i}" for i in range(3)]
    people = [await kit.person(phone=phone, channel=Channel.sms) for phone in phones]
    campaign_id = await kit.launched(channel=Channel.sms, name="SMS")
    await kit.select(campaign_id, people)
    async with kit.dispatcher() as d:
        await drain(d)
        deferred = await kit.messages(campaign_id)
        assert [m["status"] for m in deferred] == ["queued"] * 3
        answers: list[list[datetime]] = []
        distinct = d.campaigns.messages.distinct

        async def asked(*args: Any, **kwargs: Any) -> list[datetime]:
            answers.append(await distinct(*args, **kwargs))
            return answers[-1]

        d.campaigns.messages.distinct = asked  # type: ignore[method-assign]
        later = max(m["not_before"] for m in deferred) + timedelta(minutes=1)
        monkeypatch.setattr("messaging.campaigns.dispatcher.utcnow", lambda: later)
        await drain(d)
    for phone in phones:
        assert len(await _sms_to(kit, phone)) == 1
    assert all(answer == [] for answer in answers), answers  # the store told it nothing


async def test_an_idle_dispatcher_asks_less_and_less_often_whether_a_deferred_campaign_is_done(
    sms_kit,
):
    """A campaign waiting for its recipients' morning: asking on every idle tick whether it
    is done read every deferred message's index entry each time (the store busy all
    night); the question now comes after waits that double."""
    kit = sms_kit
    tahiti = await kit.person(phone="+68987123456", channel=Channel.sms)
    campaign_id = await kit.launched(channel=Channel.sms, name="SMS")
    await kit.select(campaign_id, [tahiti])
    async with kit.dispatcher() as d:
        await drain(d)  # deferred to the morning in Tahiti
        asked = 0
        unfinished = d.campaigns.unfinished

        async def counted(cid: str) -> int:
            nonlocal asked
            asked += 1
            return await unfinished(cid)

        d.campaigns.unfinished = counted  # type: ignore[method-assign]
        for _ in range(30):
            assert not await d.tick()
    assert asked <= 3, asked  # 30 idle ticks, not 30 questions
    assert (await kit.campaign(campaign_id))["status"] == CampaignStatus.sending.value


async def _sms_to(kit: Kit, number: str) -> list[dict[str, Any]]:
    import httpx

    async with httpx.AsyncClient(trust_env=False) as client:
        r = await client.get(f"{kit.sms_url}/messages", params={"to": number})
    r.raise_for_status()
    return list(r.json())
