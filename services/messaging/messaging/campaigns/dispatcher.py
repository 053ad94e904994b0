"""The campaign dispatcher: every messaging worker runs one; they share the queue.

A tick launches the scheduled campaigns that are due, claims a batch of queued messages of
the sending campaigns (``sending`` + claim token, committed: the intent is on record before
any provider sees the message), then works through the batch in hand-offs of
``campaign_handoff_size``. Right before each hand-off it re-reads the campaign's state
(paused or cancelled: the rest goes back to the queue or is cancelled) and the recipients'
consents, suppression and erasure from messaging's own views: a revocation applied by the
urgent lane stops every message not yet handed over. Each hand-off's outcomes, the
campaign's counters and the ``message-*`` events are written in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import (
    Channel,
    MessageFailedV1,
    MessageSentV1,
    OriginKind,
)
from tribune_shared.logging import get_logger
from tribune_shared.metrics import MESSAGES
from tribune_shared.outbox import Outbox
from tribune_shared.store import ID_BOUNDARIES, Store
from tribune_shared.suppression import email_hash, phone_hash
from tribune_shared.tokens import UnsubscribeTokens

from messaging.campaigns.domain import (
    VARIANT_B,
    AbMetric,
    BreakerPolicy,
    CampaignStatus,
    QueuePosition,
    UnsentSweep,
    ab_winner,
    breaker_reason,
)
from messaging.campaigns.guard import Guard
from messaging.campaigns.rules import (
    CONSENT_REQUEST_PURPOSE,
    RULE_ERASED,
    CampaignView,
    Defer,
    PastSend,
    RecipientView,
    SendPolicies,
    send_decision,
)
from messaging.campaigns.store import CampaignStore
from messaging.composer import (
    InvalidRecipientAddress,
    OutgoingEmail,
    build_campaign_email,
    unsubscribe_url,
)
from messaging.domain import (
    ConsentState,
    MessageStatus,
    Recipient,
    Refusal,
    Standing,
    tracking_allowed,
)
from messaging.mailer import DeliveryError
from messaging.settings import MessagingSettings
from messaging.sms.providers import SentSms, SmsSender
from messaging.store import MessagingStore
from messaging.templates.domain import Rendered
from messaging.tracking.service import link_tracker

log = get_logger(__name__)

_T = TypeVar("_T")


#: renders a campaign's message for one recipient (unsubscribe link given)
Render = Callable[[Recipient, str], Rendered]


class Content(Protocol):
    async def renderer(self, campaign: Mapping[str, Any], version: int | None = None) -> Render:
        """The campaign's template version (or ``version`` of its template), compiled
        once, as a per-recipient renderer."""
        ...


class EmailSender(Protocol):
    async def send(self, message: OutgoingEmail) -> None: ...


def _standings(campaign: Mapping[str, Any]) -> frozenset[Standing] | None:
    """The membership standings a campaign targets (None: anyone, members or not)."""
    wanted = campaign.get("standings")
    return frozenset(Standing(s) for s in wanted) if wanted else None


class _Blocked(Exception):
    """A "no" came in while the hand-off was being sent: this message does not go."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule
        self.reason = f"{rule.replace('_', ' ')} while the campaign was being sent"


class _NotRendered(Exception):
    """The message could not be rendered for its recipient (it fails, nothing went)."""


ERASED_REASON = "the person was erased, or merged into another contact"


@dataclass
class _View:
    """One recipient as the rules see it, the consents of the hand-off's purposes, and
    their recent marketing messages (grown as the hand-off sends them more)."""

    rules: RecipientView
    consents: dict[tuple[str, str], ConsentState]
    history: list[PastSend] = field(default_factory=list)
    address_hash: str | None = None
    #: every address hash of the person (email and phone), and the ids of the sent
    #: messages already in ``history``
    hashes: frozenset[str] = frozenset()
    seen: set[str] = field(default_factory=set)
    #: the person agreed to per-person open/click tracking (purpose tracking_purpose)
    tracking: bool = False


@dataclass(frozen=True)
class _Reads:
    """A hand-off's views, and how many hand-offs of its batch were on record when they
    were read (the later ones' sends are added before the rules use them)."""

    views: dict[str, _View]
    recorded: int


def _random_start() -> str:
    """One of the kernel's id ranges, at random: where a dispatcher starts reading a
    campaign's queue, so that workers seldom read (and race for) the same messages."""
    return random.choice(("", *ID_BOUNDARIES))


async def _nothing(value: _T) -> _T:
    """A read that a hand-off does not need (what asyncio.gather waits on instead)."""
    return value


def _add_sends(views: Mapping[str, _View], sent: Iterable[Outcome]) -> None:
    """Messages sent since ``views`` were read, as the store would have shown them: a
    person's past sends (frequency caps), a rented-file contact's consent request."""
    of_hash: dict[str, list[_View]] = {}
    for view in views.values():
        for h in view.hashes:
            of_hash.setdefault(h, []).append(view)
    for o in sent:
        m = o.message
        for view in of_hash.get(m.get("address_hash") or "", []):
            if m["_id"] not in view.seen:
                view.seen.add(m["_id"])
                view.history.append(PastSend(o.at, Channel(m["channel"])))
        view_of = views.get(m["contact_id"])
        if view_of is not None and m["purpose"] == CONSENT_REQUEST_PURPOSE:
            view_of.rules = replace(view_of.rules, consent_request_sent=True)


@dataclass(frozen=True)
class Outcome:
    message: dict[str, Any]
    status: MessageStatus
    at: datetime
    rule: str | None = None
    reason: str | None = None
    not_before: datetime | None = None
    #: the SMS provider that took it and its id there (delivery receipts name it)
    sms: SentSms | None = None


@dataclass(frozen=True)
class _Going:
    """A message decided to go, waiting for a session."""

    message: dict[str, Any]
    campaign: Mapping[str, Any]
    recipient: Recipient
    now: datetime
    tracking: bool


#: a hand-off's outcomes, and its campaigns as read before it
_HandedOff = tuple[list[Outcome], dict[str, dict[str, Any]]]


def _not_sent(
    message: dict[str, Any], campaign: Mapping[str, Any] | None, now: datetime
) -> Outcome:
    """A claimed message that does not go now: back to the queue while its campaign may
    still send it (sending, or paused), cancelled with a cancelled or gone campaign."""
    waiting = (CampaignStatus.sending.value, CampaignStatus.paused.value)
    back = campaign is not None and campaign["status"] in waiting
    return Outcome(message, MessageStatus.queued if back else MessageStatus.cancelled, now)


class Dispatcher:
    def __init__(
        self,
        settings: MessagingSettings,
        store: Store,
        *,
        content: Content,
        email: EmailSender,
        sms: SmsSender | None = None,
        launch: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.campaigns = CampaignStore(store)
        self.messages = MessagingStore(store)
        self.outbox = Outbox(store)
        self.content = content
        self.email = email
        self.sms = sms
        self.launch = launch
        self.policies = SendPolicies.from_settings(settings)
        self.tracker = link_tracker(settings)
        self.tokens = UnsubscribeTokens(settings.unsubscribe_secret)
        self.breaker = BreakerPolicy(
            min_sent=settings.campaign_breaker_min_sent,
            max_bounce_rate=settings.campaign_breaker_bounce_rate,
            max_complaint_rate=settings.campaign_breaker_complaint_rate,
            max_unsubscribe_rate=settings.campaign_breaker_unsubscribe_rate,
        )
        self.guard = guard
        # messages handed over at once: each is checked against the guard right before
        # it goes, not when the hand-off started
        self._inflight = asyncio.Semaphore(settings.smtp_pool_size)
        self._renderers: dict[tuple[str, int], Render] = {}
        #: the next batch, claimed while this one's last hand-offs are sent
        #: (campaign_claim_ahead_handoffs)
        self._claim_ahead: tuple[str, asyncio.Task[list[dict[str, Any]]]] | None = None
        #: where this dispatcher reads each sending campaign's queue next: each starts in a
        #: random id range, so that workers seldom read (and race to claim) the same messages
        self._positions: dict[str, QueuePosition] = {}
        #: where this dispatcher got to in cancelling each cancelled campaign's messages
        self._sweeps: dict[str, UnsentSweep] = {}
        self._next_sweep = 0.0
        self._next_breaker_check = 0.0
        #: campaign id -> (when its completion is asked again (monotonic), the wait before)
        self._completion_checks: dict[str, tuple[float, float]] = {}

    # ------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        watching = None
        if self.guard is not None:
            watching = asyncio.create_task(self.guard.run(stop))
            await self.guard.wait_started(timeout=30)
        try:
            await self._loop(stop)
        finally:
            await self.release_claimed_ahead()
            if watching is not None:
                await watching

    async def release_claimed_ahead(self) -> None:
        """The batch claimed ahead, none of it handed over, when this dispatcher stops or
        no campaign is sending any more: its messages go back to the queue, those of a
        cancelled campaign are cancelled (as a hand-off would), instead of waiting for the
        claim timeout."""
        ahead, self._claim_ahead = self._claim_ahead, None
        if ahead is None:
            return
        try:
            claimed = await ahead[1]
        except Exception as exc:  # the store went away: the claim timeout frees them
            log.warning("campaigns.claim_ahead_failed", error=repr(exc))
            return
        if not claimed:
            return
        current = await self.campaigns.by_ids(
            list({m["campaign_id"] for m in claimed}), with_stats=False
        )
        now = utcnow()
        outcomes = [_not_sent(m, current.get(m["campaign_id"]), now) for m in claimed]
        await self._record(outcomes, current)
        log.info("campaigns.claim_ahead_released", messages=len(outcomes))

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                worked = await self.tick()
            except Exception as exc:  # the store is down, a provider broke: try again
                log.warning("campaigns.tick_failed", error=repr(exc))
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), timeout=self.settings.campaign_poll_interval_seconds
                    )

    async def tick(self) -> bool:
        """One round; True if it sent (or refused) something, so the next one comes at once."""
        now = utcnow()
        if self.launch is not None:
            for campaign in await self.campaigns.due(now):
                await self.launch(campaign)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.settings.campaign_claim_timeout_seconds / 2
            stale = now - timedelta(seconds=self.settings.campaign_claim_timeout_seconds)
            # (not its own batch claimed ahead: it may have aged past the timeout while
            # the batch before it was slow, and is sent next)
            mine = [self._claim_ahead[0]] if self._claim_ahead is not None else []
            if released := await self.campaigns.release_stale(stale, keep=mine):
                log.warning("campaigns.stale_claims_released", messages=released)
        cancelled = await self._cancel_unsent()
        if self.guard is not None and not self.guard.healthy:
            log.warning("campaigns.guard_not_watching")  # nothing goes out unguarded
            return cancelled
        active = {c["_id"]: c for c in await self.campaigns.in_status([CampaignStatus.sending])}
        if not active:
            await self.release_claimed_ahead()  # their campaigns were paused or cancelled
            return cancelled
        for campaign in active.values():
            await self._decide_ab(campaign, now)
        claimed = await self._claimed(list(active), now)
        if not claimed:
            await self._complete(active.values())
            return cancelled
        self._completion_checks.clear()  # work came: a finish is asked at once again
        claim_next = None
        if len(claimed) >= self.settings.campaign_claim_size:  # a full batch: more to come
            claim_next = partial(self._claim_next, list(active))
        await self._handoffs(claimed, active, claim_next)
        return True

    async def _cancel_unsent(self) -> bool:
        """Cancel a batch of each cancelled campaign's messages not handed over yet (its
        statistics with them, in one transaction), where this dispatcher's sweep of it got
        to; a campaign with none left is done. True if any was cancelled."""
        cancelling = await self.campaigns.cancelling()
        for gone in set(self._sweeps) - set(cancelling):
            del self._sweeps[gone]
        worked = False
        for campaign_id in cancelling:
            if (sweep := self._sweeps.get(campaign_id)) is None:
                sweep = self._sweeps[campaign_id] = UnsentSweep.starting_at(_random_start())
            unsent = await self.campaigns.unsent(
                campaign_id, sweep, self.settings.campaign_cancel_batch_size
            )
            if not unsent:
                await self.campaigns.update(
                    campaign_id, expected=[CampaignStatus.cancelled], fields={"cancelling": False}
                )
                continue
            await self._cancel(campaign_id, unsent)
            worked = True
        return worked

    async def _cancel(self, campaign_id: str, unsent: dict[MessageStatus, list[str]]) -> None:
        async def write(session: AsyncClientSession) -> None:
            cancelled = await self.campaigns.cancel_messages(unsent, utcnow(), session)
            counts = {status: -n for status, n in cancelled.items()}
            counts["cancelled"] = sum(cancelled.values())
            await self.campaigns.count_stats({campaign_id: counts}, session)

        await self.store.run_transaction(write, what="campaign cancel")

    def _claim_next(self, campaign_ids: list[str]) -> None:
        """Claim the next batch while this one's last hand-offs are sent: a claim (one bulk
        update of the queue) took a quarter of a worker's time when it came in between.
        Not earlier: a claim older than campaign_claim_timeout_seconds is taken back."""
        if self._claim_ahead is None:
            token = uuid.uuid4().hex
            task = asyncio.create_task(self._claim(campaign_ids, utcnow(), token))
            self._claim_ahead = (token, task)

    async def _claim(
        self, campaign_ids: list[str], now: datetime, token: str
    ) -> list[dict[str, Any]]:
        for gone in set(self._positions) - set(campaign_ids):
            del self._positions[gone]
        for campaign_id in campaign_ids:
            if campaign_id not in self._positions:
                self._positions[campaign_id] = QueuePosition.starting_at(_random_start())
        return await self.campaigns.claim(
            campaign_ids,
            now=now,
            limit=self.settings.campaign_claim_size,
            token=token,
            positions=self._positions,
        )

    async def _claimed(self, campaign_ids: list[str], now: datetime) -> list[dict[str, Any]]:
        """The batch claimed ahead if there is one (its messages whose campaign was paused
        or cancelled since go back, or are cancelled, at their hand-off), else one claimed
        now."""
        ahead, self._claim_ahead = self._claim_ahead, None
        if ahead is not None:
            try:
                if claimed := await ahead[1]:
                    return claimed
            except Exception as exc:  # claimed again below; what it took, the timeout frees
                log.warning("campaigns.claim_ahead_failed", error=repr(exc))
        return await self._claim(campaign_ids, now, uuid.uuid4().hex)

    async def _decide_ab(self, campaign: dict[str, Any], now: datetime) -> None:
        """An A/B test whose time is up: the better subject goes to the held rest."""
        ab = campaign.get("ab_test")
        if not ab or ab.get("winner") or campaign.get("launched_at") is None:
            return
        launched = campaign["launched_at"].replace(tzinfo=campaign["launched_at"].tzinfo or UTC)
        if now < launched + timedelta(seconds=ab["decide_after_seconds"]):
            return
        winner, reason = ab_winner(campaign.get("stats") or {}, AbMetric(ab["metric"]))

        async def write(session: AsyncClientSession) -> int:
            decided = await self.campaigns.update(
                campaign["_id"],
                expected=[CampaignStatus.sending],
                fields={
                    "ab_test.winner": winner,
                    "ab_test.decided_at": now,
                    "ab_test.reason": reason,
                },
                session=session,
            )
            if decided is None:
                return 0
            released = await self.campaigns.release_held(campaign["_id"], winner, session)
            await self.campaigns.count_stats(
                {campaign["_id"]: {"held": -released, "queued": released}}, session
            )
            return released

        released = await self.store.run_transaction(write, what="campaign A/B decision")
        ab |= {"winner": winner, "decided_at": now, "reason": reason}
        log.info(
            "campaign.ab_decided", campaign_id=campaign["_id"], reason=reason, released=released
        )

    async def _complete(self, campaigns: Iterable[dict[str, Any]]) -> None:
        """Campaigns whose whole audience is in and nothing is left to send are done.

        A campaign that still holds messages with nothing due (deferred to the morning by
        quiet hours, held for an A/B winner, being sent by another worker) is asked again
        after a wait that doubles up to ``campaign_complete_check_max_seconds``: an idle
        dispatcher ticks every ``campaign_poll_interval_seconds``, and on the local store
        the question reads the index entry of every such message (20,000 deferred: about
        0.35 s of the store's CPU per tick, which kept it busy all night)."""
        clock = time.monotonic()
        for campaign in campaigns:
            audience = campaign.get("audience") or {}
            seen = (campaign.get("stats") or {}).get("selected", 0)
            if not audience.get("resolved") or seen < audience.get("recipients", 0):
                continue
            next_check, waited = self._completion_checks.get(campaign["_id"], (0.0, 0.0))
            if clock < next_check:
                continue
            if await self.campaigns.unfinished(campaign["_id"]):
                wait = min(
                    max(2 * waited, self.settings.campaign_poll_interval_seconds),
                    self.settings.campaign_complete_check_max_seconds,
                )
                self._completion_checks[campaign["_id"]] = (clock + wait, wait)
                continue
            self._completion_checks.pop(campaign["_id"], None)
            done = await self.campaigns.update(
                campaign["_id"],
                expected=[CampaignStatus.sending],
                fields={"status": CampaignStatus.completed.value, "completed_at": utcnow()},
            )
            if done is not None:
                log.info("campaign.completed", campaign_id=campaign["_id"], stats=done.get("stats"))

    # ------------------------------------------------------------ one hand-off

    async def _handoffs(
        self,
        claimed: list[dict[str, Any]],
        active: Mapping[str, dict[str, Any]],
        claim_next: Callable[[], None] | None = None,
    ) -> None:
        """Work through a claimed batch in hand-offs: each re-reads its campaigns' state,
        decides its messages from the views, hands them over and records their outcomes,
        in one transaction per hand-off, in order. What overlaps, so that the store, the
        SMTP server and this worker wait less on each other:

        - the views of the next ``campaign_read_ahead_handoffs`` hand-offs are read while
          this one is at the provider (only with the guard watching: see below);
        - with ``campaign_overlap_handoffs``, the next hand-off is read, decided and queued
          for the sessions as soon as every message of this one has a session, and this
          one is recorded once its last message is back: the sessions never sit idle
          while a hand-off's slowest messages finish, its record commits and the next
          one's campaign states are read (together about a fifth of a send, timed in the
          bench). Two hand-offs are then unrecorded at once, so each is half of
          ``campaign_handoff_size``: a crash still re-sends at most that many.
        """
        size = self.settings.campaign_handoff_size
        overlap = self.settings.campaign_overlap_handoffs and size > 1
        unit = size // 2 if overlap else size
        chunks = [claimed[start : start + unit] for start in range(0, len(claimed), unit)]
        # a view read early may miss a "no" that came after it: the guard, asked right
        # before each message goes, stops those; without it, read right before the hand-off
        ahead = self.settings.campaign_read_ahead_handoffs if self.guard is not None else 0
        standings = any(_standings(c) for c in active.values())
        reads: dict[int, asyncio.Task[_Reads]] = {}
        handed: list[list[Outcome]] = []  # each hand-off's messages that go out, once decided
        committed = 0  # hand-offs whose outcomes are on record (the first ones, in order)
        handoffs: list[asyncio.Task[_HandedOff]] = []  # each hand-off up to its record
        records: list[asyncio.Task[None]] = []  # each hand-off's, done once it is recorded

        def read(index: int) -> asyncio.Task[_Reads]:
            if index not in reads:
                reads[index] = asyncio.create_task(
                    self._views(chunks[index], standings=standings, recorded=committed)
                )
            return reads[index]

        async def record(index: int, handoff: asyncio.Task[_HandedOff]) -> None:
            nonlocal committed
            outcomes, current = await handoff
            if index in reads:  # read ahead for a hand-off with nothing left to send
                reads[index].cancel()
            if index:  # one record at a time, in order (a failed one fails the batch later)
                await asyncio.gather(records[index - 1], return_exceptions=True)
            await self._record(outcomes, current)
            committed += 1

        last = self.settings.campaign_claim_ahead_handoffs
        try:
            for index, chunk in enumerate(chunks):
                if claim_next is not None and last and len(chunks) - index <= last:
                    claim_next()  # (once: it does nothing while a claim ahead is pending)
                if ahead:  # this one's read first, if not begun yet, then the next ones'
                    for later in range(index, min(len(chunks), index + 1 + ahead)):
                        read(later)
                if index >= 2:
                    await records[index - 2]  # never more than two hand-offs unrecorded
                started = asyncio.Event()
                handoff = asyncio.create_task(
                    self._handoff(chunk, partial(read, index), handed, started)
                )
                handoffs.append(handoff)
                records.append(asyncio.create_task(record(index, handoff)))
                if not overlap:
                    await records[-1]
                    continue
                turn = asyncio.create_task(started.wait())
                await asyncio.wait({turn, handoff}, return_when=asyncio.FIRST_COMPLETED)
                turn.cancel()
                if handoff.done():
                    handoff.result()  # (raises what the hand-off raised)
            for unrecorded in records[-2:]:  # (the ones before were awaited above)
                await unrecorded
        except asyncio.CancelledError:
            # stopped: what is at the provider is not waited for (it stays claimed and
            # unrecorded, the crash window), but a record under way still finishes
            for handoff in handoffs:
                handoff.cancel()
            raise
        finally:
            # (a failed hand-off: what was read ahead is not needed any more; the other
            # hand-off at the provider finishes and is recorded, or what it holds would be
            # sent again)
            for task in reads.values():
                task.cancel()
            await asyncio.gather(*reads.values(), *handoffs, *records, return_exceptions=True)

    async def _handoff(
        self,
        claimed: list[dict[str, Any]],
        read: Callable[[], Awaitable[_Reads]],
        handed: list[list[Outcome]],
        started: asyncio.Event,
    ) -> _HandedOff:
        """One hand-off up to its record: the campaigns' state now, the decisions, the
        sends. ``started`` is set once every message that goes has a session. Returns
        every message's outcome, and the campaigns as read."""
        try:
            ids = list({m["campaign_id"] for m in claimed})
            current, mine = await asyncio.gather(
                self.campaigns.by_ids(ids, with_stats=False),  # their state only
                self.campaigns.still_claimed([m["_id"] for m in claimed], claimed[0]["claim"]),
            )
            if len(mine) < len(claimed):
                # claims older than the claim timeout, put back in the queue by a sweep:
                # they are sent by whoever claims them again, not here as well
                log.warning("campaigns.claims_lost", messages=len(claimed) - len(mine))
                claimed = [m for m in claimed if m["_id"] in mine]
            outcomes: list[Outcome] = []
            sendable: list[dict[str, Any]] = []
            now = utcnow()
            for message in claimed:
                campaign = current.get(message["campaign_id"])
                if campaign is not None and campaign["status"] == CampaignStatus.sending.value:
                    sendable.append(message)
                else:
                    outcomes.append(_not_sent(message, campaign, now))
            going: list[_Going] = []
            if sendable:
                reads = await read()
                # the hand-offs not on record when the read began may be missing from it:
                # their sends count for the caps and the rented-file rule all the same
                _add_sends(reads.views, [o for sent in handed[reads.recorded :] for o in sent])
                outcomes += self._decide(sendable, current, reads.views, going)
            # the hand-offs decided from now on count these as sent, before they are back
            # (so a failed one can only make a later cap stricter, never looser)
            handed.append([Outcome(g.message, MessageStatus.sent, now) for g in going])
            outcomes += await self._hand_over(going, started)
            return outcomes, current
        finally:
            started.set()  # (nothing more of it will take a session)

    def _decide(
        self,
        claimed: list[dict[str, Any]],
        campaigns: Mapping[str, dict[str, Any]],
        views: Mapping[str, _View],
        going: list[_Going],
    ) -> list[Outcome]:
        """Decide each message from messaging's views (rules.send_decision): the ones that
        may go are added to ``going``; returns the others' outcomes (refused, deferred)."""
        outcomes: list[Outcome] = []
        for message in claimed:
            now = utcnow()
            view = views.get(message["contact_id"])
            if view is None:
                outcomes.append(
                    Outcome(message, MessageStatus.refused, now, RULE_ERASED, ERASED_REASON)
                )
                continue
            campaign = campaigns[message["campaign_id"]]
            channel = Channel(message["channel"])
            consent = view.consents.get((message["channel"], message["purpose"]))
            decision = send_decision(
                replace(view.rules, consent=consent, recent_sends=tuple(view.history)),
                CampaignView(
                    channel=channel,
                    purpose=message["purpose"],
                    standings=_standings(campaign),
                ),
                now,
                self.policies,
            )
            if isinstance(decision, Refusal):
                outcomes.append(
                    Outcome(message, MessageStatus.refused, now, decision.rule, decision.reason)
                )
                continue
            if isinstance(decision, Defer):
                outcomes.append(
                    Outcome(message, MessageStatus.queued, now, not_before=decision.until)
                )
                if (position := self._positions.get(message["campaign_id"])) is not None:
                    # claimed at its time without asking the store which times have come
                    # (read whole: 2.2 s for 100,000 due, bench/campaign_deferred_claims.py)
                    position.learn([decision.until])
                continue
            view.history.append(PastSend(now, channel))  # the cap counts this one at once
            message["address_hash"] = view.address_hash
            message["per_person_tracking"] = view.tracking
            going.append(_Going(message, campaign, view.rules.recipient, now, view.tracking))
        return outcomes

    async def _hand_over(self, going: list[_Going], started: asyncio.Event) -> list[Outcome]:
        """Hand the messages that may go to their provider, concurrently (as many at once
        as there are sessions); ``started`` is set once the last one has its session."""
        if not going:
            return []
        waiting = len(going)

        def on_turn() -> None:
            nonlocal waiting
            waiting -= 1
            if not waiting:
                started.set()

        results = await asyncio.gather(
            *(self._deliver(g, on_turn) for g in going), return_exceptions=True
        )
        outcomes: list[Outcome] = []
        for g, result in zip(going, results, strict=True):
            message, at = g.message, utcnow()
            if isinstance(result, _Blocked):
                outcomes.append(
                    Outcome(message, MessageStatus.refused, at, result.rule, result.reason)
                )
            elif isinstance(result, InvalidRecipientAddress):
                outcomes.append(
                    Outcome(message, MessageStatus.refused, at, "bad_address", str(result))
                )
            elif isinstance(result, _NotRendered):
                outcomes.append(
                    Outcome(message, MessageStatus.failed, at, None, f"not rendered: {result}")
                )
            elif isinstance(result, DeliveryError):
                outcomes.append(Outcome(message, MessageStatus.failed, at, None, result.reason))
            elif isinstance(result, BaseException):
                outcomes.append(Outcome(message, MessageStatus.failed, at, None, repr(result)))
            else:
                sms = result if isinstance(result, SentSms) else None
                outcomes.append(Outcome(message, MessageStatus.sent, at, sms=sms))
        return outcomes

    async def _deliver(self, going: _Going, on_turn: Callable[[], None]) -> SentSms | None:
        """Render one message and hand it over once a session is free for it (``on_turn``
        is called then), unless a "no" about it came in since the views were read: the
        guard is asked right before it goes. Rendering on the session's turn keeps the
        SMTP server busy with the messages before while this one is built. Raises
        _Blocked, InvalidRecipientAddress (both refused) or _NotRendered (failed) when it
        does not go."""
        message = going.message
        async with self._inflight:
            on_turn()
            try:
                handoff = await self._handoff_of(
                    going.campaign, message, going.recipient, going.now, tracking=going.tracking
                )
            except InvalidRecipientAddress:
                raise
            except Exception as exc:  # a template that cannot render for this person
                raise _NotRendered(str(exc)) from exc
            if self.guard is not None:
                rule = self.guard.blocks(
                    message["contact_id"],
                    message["channel"],
                    message["purpose"],
                    message.get("address_hash"),
                )
                if rule is not None:
                    if asyncio.iscoroutine(handoff):
                        handoff.close()  # never started: nothing went out
                    raise _Blocked(rule)
            return await handoff

    async def _views(
        self, claimed: list[dict[str, Any]], *, standings: bool = False, recorded: int = 0
    ) -> _Reads:
        """What the rules need of these messages' recipients, read from messaging's own
        views: two rounds of a handful of concurrent queries for the whole hand-off. A
        contact missing from the result was erased or merged away. ``recorded``: how
        many hand-offs of the batch were on record when the read began."""
        contact_ids = list({m["contact_id"] for m in claimed})
        recipients = await self.messages.recipients(contact_ids)
        salt = self.settings.suppression_salt
        hashes = {
            cid: (email_hash(r.email, salt), phone_hash(r.phone, salt))
            for cid, r in recipients.items()
        }
        every_hash = [h for pair in hashes.values() for h in pair if h]
        window = self.policies.cap.window
        rented = [c for c, r in recipients.items() if r.origin_kind == OriginKind.rented_file]
        pairs = {(m["channel"], m["purpose"]) for m in claimed}
        # per-person tracking only concerns emails: an SMS hand-off does not read it
        if any(m["channel"] == Channel.email.value for m in claimed):
            pairs.add((Channel.email.value, self.settings.tracking_purpose))
        # (what no rule of this hand-off needs is not read: a store round trip each)
        suppressed, history, standing_of, asked, consents = await asyncio.gather(
            self.messages.suppressed_among(every_hash),
            self.campaigns.sent_since(every_hash, utcnow() - window)
            if self.policies.cap.enabled
            else _nothing({}),
            self.messages.standings(list(recipients), utcnow().date())
            if standings
            else _nothing({}),
            self.campaigns.asked_for_consent(rented, CONSENT_REQUEST_PURPOSE)
            if rented
            else _nothing(set()),
            self.messages.consents_among(contact_ids, pairs),
        )
        tracking_key = (Channel.email.value, self.settings.tracking_purpose)
        views: dict[str, _View] = {}
        for cid, recipient in recipients.items():
            email_key, phone_key = hashes[cid]
            key = email_key or phone_key
            past = {
                message_id: PastSend(at.replace(tzinfo=at.tzinfo or UTC), Channel(channel))
                for h in (email_key, phone_key)
                if h
                for message_id, at, channel in history.get(h, [])
            }
            views[cid] = _View(
                rules=RecipientView(
                    recipient=recipient,
                    consent=None,
                    suppressed=bool({email_key, phone_key} & suppressed),
                    phone=recipient.phone,
                    origin=OriginKind(recipient.origin_kind) if recipient.origin_kind else None,
                    consent_request_sent=cid in asked,
                    department=recipient.department,
                    standing=standing_of.get(cid),
                ),
                consents={
                    pair: state
                    for pair in pairs
                    if (state := consents.get((cid, *pair))) is not None
                },
                history=list(past.values()),
                address_hash=key,
                hashes=frozenset(h for h in (email_key, phone_key) if h),
                seen=set(past),
                tracking=tracking_allowed(consents.get((cid, *tracking_key))),
            )
        return _Reads(views, recorded)

    async def _handoff_of(
        self,
        campaign: Mapping[str, Any],
        message: Mapping[str, Any],
        recipient: Recipient,
        now: datetime,
        *,
        tracking: bool = False,
    ) -> Awaitable[SentSms | None]:
        """The hand-over of one message to its channel's provider (not awaited yet)."""
        version = campaign["template_version"]
        if message.get("variant") == VARIANT_B:  # an A/B test's other subject
            version = campaign["ab_test"]["template_version_b"]
        key = (campaign["template_id"], version)
        render = self._renderers.get(key)
        if render is None:
            render = self._renderers[key] = await self.content.renderer(campaign, version)
        link = unsubscribe_url(
            self.settings.unsubscribe_base_url,
            self.tokens.sign(recipient.contact_id, message["purpose"]),
        )
        rendered = render(recipient, link)
        if message["channel"] == Channel.sms.value:
            if self.sms is None or not recipient.phone:
                raise InvalidRecipientAddress("no SMS provider or no phone number")
            return self._sms(recipient.phone, rendered.text, message["_id"])
        if rendered.subject is None:  # an SMS template on an email campaign
            raise ValueError("the template has no subject")
        # links through the click redirect (aggregate counts for everyone); the open
        # pixel only for people who agreed to tracking
        html, text = self.tracker.tracked(
            rendered.html,
            rendered.text,
            message_id=message["_id"],
            campaign_id=campaign["_id"],
            tracking_allowed=tracking,
        )
        email = build_campaign_email(
            message_id=message["_id"],
            mail_from=self.settings.mail_from,
            recipient=recipient,
            subject=rendered.subject,
            text=text,
            html=html,
            unsubscribe_link=link,
            date=now,
            campaign_id=campaign["_id"],
        )
        return self.email.send(email)

    async def _sms(self, to: str, text: str, message_id: str) -> SentSms:
        assert self.sms is not None
        return await self.sms.send(to, self.settings.sms_sender_id, text, message_id)

    # ------------------------------------------------------------ outcomes

    async def _record(
        self, outcomes: list[Outcome], campaigns: Mapping[str, dict[str, Any]]
    ) -> None:
        if not outcomes:
            return
        updates: list[tuple[str, dict[str, Any]]] = []
        counts: dict[str, Counter[str]] = {}
        events: list[Envelope] = []
        for o in outcomes:
            m = o.message
            tally = counts.setdefault(m["campaign_id"], Counter())
            fields: dict[str, Any] = {"status": o.status.value, "claim": None}
            if o.status is MessageStatus.queued:  # back to the queue: paused, or deferred
                until = o.not_before
                fields["not_before"] = until.astimezone(UTC) if until is not None else None
                updates.append((m["_id"], fields))
                if until is not None:
                    tally["deferred"] += 1
                continue
            tally["queued"] -= 1
            tally[o.status.value] += 1
            if o.status is MessageStatus.sent:
                fields |= {
                    "sent_at": o.at,
                    "address_hash": m.get("address_hash"),
                    "per_person_tracking": m.get("per_person_tracking", False),
                }
                if o.sms is not None:  # what its delivery receipts will name
                    fields |= {
                        "provider": o.sms.provider,
                        "provider_message_id": o.sms.provider_message_id,
                    }
                if m.get("variant"):
                    tally[f"ab.{m['variant']}.sent"] += 1
                event: MessageSentV1 | MessageFailedV1 | None = MessageSentV1(
                    message_id=m["_id"],
                    contact_id=m["contact_id"],
                    channel=Channel(m["channel"]),
                    campaign_id=m["campaign_id"],
                    sent_at=o.at,
                )
            elif o.status is MessageStatus.failed:
                fields |= {"failed_at": o.at, "failure_reason": o.reason}
                event = MessageFailedV1(
                    message_id=m["_id"],
                    contact_id=m["contact_id"],
                    channel=Channel(m["channel"]),
                    campaign_id=m["campaign_id"],
                    reason=o.reason or "",
                    failed_at=o.at,
                )
            elif o.status is MessageStatus.refused:
                fields |= {"refused_at": o.at, "refused_rule": o.rule, "failure_reason": o.reason}
                tally[f"refused_by.{o.rule}"] += 1
                event = None
            else:
                fields["cancelled_at"] = o.at
                event = None
            updates.append((m["_id"], fields))
            MESSAGES.labels(m["channel"], o.status.value).inc()
            if event is not None:
                events.append(
                    new_envelope(
                        event,
                        producer=self.settings.service_name,
                        federation_id=m["federation_id"],
                        federation_path=m["federation_path"],
                    )
                )

        last_sent: dict[str, datetime] = {}
        for o in outcomes:  # when each campaign last made progress (stalled campaigns)
            if o.status is MessageStatus.sent:
                cid = o.message["campaign_id"]
                last_sent[cid] = max(o.at, last_sent.get(cid, o.at))

        claims = {o.message.get("claim") for o in outcomes}
        claim = claims.pop() if len(claims) == 1 else None  # (one batch's, always)

        async def write(session: AsyncClientSession) -> None:
            recorded = await self.campaigns.record_outcomes(updates, session, claim)
            if recorded < len(updates):  # a claim lost since the hand-off began (rare)
                log.warning("campaigns.outcomes_of_lost_claims", messages=len(updates) - recorded)
            await self.campaigns.count_stats(counts, session, last_sent=last_sent)
            await self.outbox.add_batch(session, events)

        await self.store.run_transaction(write, what="campaign hand-off")
        if time.monotonic() >= self._next_breaker_check:
            # bounces and complaints come in by webhook, a few per second at most: the
            # rates are looked at every few seconds, not after every hand-off
            self._next_breaker_check = (
                time.monotonic() + self.settings.campaign_breaker_check_seconds
            )
            await self._check_breaker(list(counts))

    async def _check_breaker(self, campaign_ids: list[str]) -> None:
        for campaign in (await self.campaigns.by_ids(campaign_ids)).values():
            campaign_id = campaign["_id"]
            if campaign["status"] != CampaignStatus.sending.value:
                continue
            reason = breaker_reason(campaign.get("stats") or {}, self.breaker)
            if reason is not None:
                await self.campaigns.update(
                    campaign_id,
                    expected=[CampaignStatus.sending],
                    fields={"status": CampaignStatus.paused.value, "status_reason": reason},
                )
                log.warning("campaign.breaker_tripped", campaign_id=campaign_id, reason=reason)
