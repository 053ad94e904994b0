"""Delivery feedback reaching the message log, the campaign counters and the bus.

Each webhook call is verified on its raw bytes, parsed whole (a bad field refuses the whole
call: nothing is half recorded), then recorded in one transaction: the messages' fields,
the campaigns' counters and the events in the outbox. A retried call changes nothing: each
message takes each kind of feedback once (``domain.decide``), and the counters and events
move only with a change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter as Metric
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope, EventContract, new_envelope, utcnow
from tribune_shared.events.contracts import (
    Channel,
    MessageBouncedV1,
    MessageComplainedV1,
    MessageDeliveredV1,
)
from tribune_shared.group_commit import GroupCommit
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store
from tribune_shared.suppression import email_hash
from tribune_shared.worker import BackgroundTask, periodic

from messaging.campaigns.store import CampaignStore
from messaging.composer import sender_domain
from messaging.feedback.domain import (
    Change,
    Feedback,
    FeedbackKind,
    check_signature,
    decide,
    from_receipt,
    handed_over,
    parse_email_events,
    parse_report,
)
from messaging.feedback.store import FeedbackStore
from messaging.settings import MessagingSettings, SmsProviderName
from messaging.sms.receipts import parse_receipt, receipt_secret
from messaging.store import MessagingStore

log = get_logger(__name__)

FEEDBACK = Metric(
    "tribune_message_feedback_total",
    "Delivery feedback by kind and outcome (applied, duplicate, unknown, early)",
    ["kind", "outcome"],
)


@dataclass
class FeedbackResult:
    """What one webhook call did (the answer's body)."""

    received: int = 0
    #: changed a message (first delivery, bounce or complaint of it)
    applied: int = 0
    #: already recorded (a provider retry, or a delivery reported after a hard bounce)
    duplicates: int = 0
    #: names no message of ours that was handed to a provider (or one since erased)
    unknown: int = 0
    #: SMS receipts that came before their message's outcome was recorded: they wait
    early: int = 0
    #: said nothing to record (a receipt still on its way, a relayed DSN, a non-abuse report)
    ignored: int = 0


class FeedbackService:
    def __init__(self, settings: MessagingSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.feedback = FeedbackStore(store)
        self.messages = MessagingStore(store)
        self.campaigns = CampaignStore(store)
        self.outbox = Outbox(store)
        self.sender_domain = sender_domain(settings.mail_from)
        # An SMS provider calls back once per message, many calls at once while a campaign
        # sends: concurrent single-feedback calls share one transaction (group commit).
        # Each call still answers only once its feedback is recorded, and fails with it.
        # One transaction per receipt held a 10,000-recipient SMS campaign's sends to about
        # 20 per second on the local store (bench/campaign_sms.py).
        self.singles = GroupCommit(
            self._record_calls,
            max_batch=settings.feedback_batch_max_calls,
            name="messaging.feedback",
        )

    async def close(self) -> None:
        """Feedback already received is recorded before the process stops."""
        await self.singles.close()

    # ------------------------------------------------------------ the three webhooks

    async def sms_receipt(
        self,
        provider: SmsProviderName,
        body: bytes,
        timestamp: str | None,
        signature: str | None,
        now: float,
    ) -> FeedbackResult:
        receipt = parse_receipt(
            provider,
            body,
            timestamp,
            signature,
            secret=receipt_secret(self.settings, provider),
            now=now,
            tolerance_seconds=self.settings.sms_receipt_tolerance_seconds,
        )
        if receipt is None:  # still on its way: the final receipt follows
            return FeedbackResult(received=1, ignored=1)
        return await self.record([from_receipt(receipt)])

    async def email_events(
        self, body: bytes, timestamp: str | None, signature: str | None, now: float
    ) -> FeedbackResult:
        self._verify_email(body, timestamp, signature, now)
        events = parse_email_events(
            body, sender_domain=self.sender_domain, max_events=self.settings.feedback_max_events
        )
        return await self.record(events)

    async def email_report(
        self, body: bytes, timestamp: str | None, signature: str | None, now: float
    ) -> FeedbackResult:
        signed_at = self._verify_email(body, timestamp, signature, now)
        feedback = parse_report(body, sender_domain=self.sender_domain, received=signed_at)
        if feedback is None:
            return FeedbackResult(received=1, ignored=1)
        return await self.record([feedback])

    def _verify_email(
        self, body: bytes, timestamp: str | None, signature: str | None, now: float
    ) -> datetime:
        secret = self.settings.email_events_secret
        return check_signature(
            secret.get_secret_value() if secret is not None else None,
            timestamp,
            signature,
            body,
            now=now,
            tolerance_seconds=self.settings.email_events_tolerance_seconds,
            what="email events",
        )

    # ------------------------------------------------------------ recording

    async def record(self, feedbacks: Sequence[Feedback]) -> FeedbackResult:
        """Record parsed feedback in one transaction (a single feedback: in one shared with
        the concurrent calls); an SMS receipt whose message is not known by its provider id
        yet waits for it."""
        if len(feedbacks) != 1:
            return (await self._record(feedbacks, early_entries=None))[0]
        call: dict[str, Any] = {"feedbacks": list(feedbacks)}
        await self.singles.write(call)
        return _summary(call["outcomes"])

    async def _record_calls(self, calls: list[dict[str, Any]]) -> None:
        """The feedbacks of concurrent calls, in one transaction; each call gets its own
        outcomes back (``calls[i]["outcomes"]``)."""
        feedbacks = [fb for call in calls for fb in call["feedbacks"]]
        _, outcomes = await self._record(feedbacks, early_entries=None)
        start = 0
        for call in calls:
            end = start + len(call["feedbacks"])
            call["outcomes"] = outcomes[start:end]
            start = end

    async def _record(
        self, feedbacks: Sequence[Feedback], *, early_entries: Sequence[str] | None
    ) -> tuple[FeedbackResult, list[_Outcome | None]]:
        """``early_entries``: the waiting receipts' entry ids, one per feedback (the worker
        matching them); a matched one is dropped in the same transaction, an unmatched one
        stays where it is (its outcome None). Returns what was done and each feedback's
        outcome."""
        outcomes: list[_Outcome | None] = []

        async def work(session: AsyncClientSession) -> FeedbackResult:
            outcomes[:] = [None] * len(feedbacks)
            result = FeedbackResult(received=len(feedbacks))
            by_id = await self.feedback.by_ids(
                [f.message_id for f in feedbacks if f.message_id], session
            )
            by_key = await self.feedback.by_provider_ids(
                [k for f in feedbacks if (k := f.provider_key) is not None], session
            )
            updates: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = []
            counts: dict[str, Counter[str]] = {}
            changed: list[tuple[dict[str, Any], Feedback, Change]] = []
            early: list[Feedback] = []
            matched: list[str] = []
            for index, fb in enumerate(feedbacks):
                key = fb.provider_key
                message = by_id.get(fb.message_id or "") if key is None else by_key.get(key)
                if message is None or not handed_over(message):
                    if message is None and key is not None and early_entries is None:
                        early.append(fb)
                        outcomes[index] = (fb.kind, "early")
                        result.early += 1
                    elif early_entries is None:
                        outcomes[index] = (fb.kind, "unknown")
                        result.unknown += 1
                    continue
                if early_entries is not None:
                    matched.append(early_entries[index])
                change = decide(message, fb)
                if change is None:
                    outcomes[index] = (fb.kind, "duplicate")
                    result.duplicates += 1
                    continue
                outcomes[index] = (fb.kind, "applied")
                result.applied += 1
                updates.append((message["_id"], change.expect, change.set_fields))
                message.update(change.set_fields)  # the call's next feedback sees this one
                if campaign_id := message.get("campaign_id"):
                    counts.setdefault(campaign_id, Counter()).update(change.stats)
                changed.append((dict(message), fb, change))
            events = await self._events(changed)
            await self.feedback.apply(updates, session)
            await self.campaigns.count_stats(counts, session)
            await self.outbox.add(session, *events)
            await self.feedback.keep_early(early, utcnow(), session)
            await self.feedback.drop_early(matched, session)
            return result

        result = await self.store.run_transaction(work, what="delivery feedback")
        for recorded in outcomes:
            if recorded is not None:
                FEEDBACK.labels(recorded[0].value, recorded[1]).inc()
        if result.applied or result.unknown:
            log.info("feedback.recorded", **vars(result))
        return result, outcomes

    async def _events(
        self, changed: Sequence[tuple[dict[str, Any], Feedback, Change]]
    ) -> list[Envelope]:
        """message-delivered / -bounced / -complained of each change; a hard bounce names
        the address's salted hash (the one consent suppresses)."""
        # a single message (not a campaign's) records no address hash: its contact's
        # address as messaging knows it now stands in
        without = [
            m["contact_id"]
            for m, fb, _ in changed
            if fb.bounce_type == "hard"
            and m.get("channel") == Channel.email.value
            and not _email_hash_of(m)
        ]
        recipients = await self.messages.recipients(without) if without else {}
        salt = self.settings.suppression_salt
        envelopes: list[Envelope] = []
        for message, fb, _ in changed:
            common: dict[str, Any] = {
                "message_id": message["_id"],
                "contact_id": message["contact_id"],
                "channel": Channel(message["channel"]),
                "campaign_id": message.get("campaign_id"),
            }
            event: EventContract
            if fb.kind is FeedbackKind.delivered:
                event = MessageDeliveredV1(**common, delivered_at=fb.at)
            elif fb.kind is FeedbackKind.complained:
                event = MessageComplainedV1(
                    **common, purpose=message.get("purpose") or "", complained_at=fb.at
                )
            else:
                address_hash = None
                if fb.bounce_type == "hard" and message["channel"] == Channel.email.value:
                    recipient = recipients.get(message["contact_id"])
                    address_hash = _email_hash_of(message) or (
                        email_hash(recipient.email, salt) if recipient and recipient.email else None
                    )
                event = MessageBouncedV1(
                    **common,
                    bounce_type=fb.bounce_type or "soft",
                    reason=fb.reason,
                    bounced_at=fb.at,
                    address_hash=address_hash,
                )
            envelopes.append(
                new_envelope(
                    event,
                    producer=self.settings.service_name,
                    federation_id=message.get("federation_id") or "",
                    federation_path=message["federation_path"],
                )
            )
        return envelopes

    # ------------------------------------------------------------ early SMS receipts

    async def match_early_receipts(self) -> int:
        """Record the waiting receipts whose message is now known by its provider id, page
        by page; drop those that waited longer than ``feedback_early_receipt_seconds``.
        Returns how many were recorded."""
        applied = 0
        after: str | None = None
        page = self.settings.feedback_max_events
        while True:
            entries = await self.feedback.early_receipts(page, after=after)
            if not entries:
                break
            result, _ = await self._record(
                [fb for _, fb in entries], early_entries=[entry for entry, _ in entries]
            )
            applied += result.applied
            if len(entries) < page:
                break
            after = entries[-1][0]
        expiry = utcnow() - timedelta(seconds=self.settings.feedback_early_receipt_seconds)
        if dropped := await self.feedback.drop_early_before(expiry):
            FEEDBACK.labels("receipt", "expired").inc(dropped)
            log.warning("feedback.early_receipts_expired", receipts=dropped)
        return applied


#: what became of one feedback: its kind, and applied, duplicate, unknown or early
_Outcome = tuple[FeedbackKind, str]

_COUNTED_AS = {"applied": "applied", "duplicate": "duplicates", "unknown": "unknown"}


def _summary(outcomes: Sequence[_Outcome | None]) -> FeedbackResult:
    """A call's answer from its feedbacks' outcomes."""
    result = FeedbackResult(received=len(outcomes))
    for recorded in outcomes:
        if recorded is not None:
            name = _COUNTED_AS.get(recorded[1], recorded[1])
            setattr(result, name, getattr(result, name) + 1)
    return result


def _email_hash_of(message: Mapping[str, Any]) -> str | None:
    """The hash of the address an email message went to (the dispatcher records it)."""
    if message.get("channel") != Channel.email.value:
        return None
    value = message.get("address_hash")
    return value if isinstance(value, str) else None


def early_receipts_task(service: FeedbackService) -> BackgroundTask:
    """The worker's loop matching SMS receipts that came before their message's outcome."""
    return periodic(
        "feedback.early_receipts",
        service.settings.feedback_early_receipt_poll_seconds,
        service.match_early_receipts,
    )
