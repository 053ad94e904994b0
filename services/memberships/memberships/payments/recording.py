"""The payment webhook's recording path at batch speed: payments arriving at once share one
transaction, with one read per collection for the whole batch (payments already recorded,
contacts, plans, elections, the legal totals, memberships, schedules) and one bulk write
per collection (payments, memberships, contacts, schedules, legal guards, outbox).

Every guarantee of the one-payment path (``MembershipsService.record_payment``) holds, and
the batch gives the state the same payments recorded one after the other would give:

- a provider's retry records once: against the store (read in the transaction, and the
  unique index), and inside the batch (a retry is answered from its original);
- the legal ceilings are checked across the batch: payments are decided in order against
  the stored totals plus the batch's payments accepted before (``BatchLedger``), and the
  guards of every (person, year) and (person, election) are written in the transaction, so
  concurrent batches or single payments of one person conflict and one runs again;
- a payment a rule refuses gets its own reason (flagged for refund: the provider already
  took the money) while the others are recorded; any other error (unknown contact, plan,
  election; an amount out of bounds) is that payment's alone and writes nothing for it;
- the transaction commits whole or not at all; if it cannot commit (anything but a write
  conflict, which the runner retries), each payment is recorded alone through the
  one-payment path, so each request gets its own answer and nothing is half written.

Receipts are not numbered here: the receipt handler numbers accepted payments from their
``payment-received`` events (gap-free, see ``memberships.receipts.numbering``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.consistency import record as record_written
from tribune_shared.errors import DomainError, NotFound
from tribune_shared.events import Envelope, utcnow
from tribune_shared.logging import get_logger

from memberships.domain import Membership, check_paid_at
from memberships.donations.rules import Gift, counts_toward_party_ceiling, year_bounds
from memberships.donations.service import GiftRefused
from memberships.donations.store import DonationsStore, campaign_guard_id, party_guard_id
from memberships.payments.batcher import Batcher
from memberships.payments.domain import (
    BatchLedger,
    campaign_totals,
    dues_paid,
    first_of_each,
    party_totals,
    payment_events,
)
from memberships.payments.notice import PaymentNotice, PaymentOutcome
from memberships.payments.store import PaymentsStore
from memberships.plans.service import PlanChoice
from memberships.service import (
    PRODUCER,
    WEBHOOKS,
    MembershipsService,
    _duplicate,
    _payment_doc,
)
from memberships.store import membership_from_doc

log = get_logger(__name__)

BATCHES = Counter(
    "tribune_payment_batches_total",
    "Webhook payment batches by how they ended (committed, or recorded one by one)",
    ["service", "outcome"],
)


@dataclass(frozen=True)
class Recorded:
    """One payment's answer and the events its recording committed."""

    outcome: PaymentOutcome
    events: tuple[Envelope, ...] = ()


#: a payment's answer, or its own error (a DomainError; in the one-by-one fallback, also
#: what the store raised for this payment alone)
Result = Recorded | Exception


@dataclass
class _Pending:
    """A payment of the batch still to be decided, with what was read for it."""

    index: int
    notice: PaymentNotice
    contact: dict[str, Any]
    choice: PlanChoice | None = None
    gift: Gift | None = None


class PaymentRecorder:
    """``record`` is the webhook's use case: it waits for the payment's batch."""

    def __init__(self, service: MembershipsService) -> None:
        self.service = service
        self.settings = service.settings
        self.store = service.store
        self.repo = PaymentsStore(service.store)
        self.donations = DonationsStore(service.store)
        self.batcher: Batcher[PaymentNotice, Recorded] = Batcher(
            self.record_many,
            max_batch=self.settings.webhook_batch_max_size,
            max_wait=self.settings.webhook_batch_max_wait_seconds,
            max_in_flight=self.settings.webhook_batch_max_in_flight,
            name="memberships.payment_batches",
        )

    async def record(self, notice: PaymentNotice) -> PaymentOutcome:
        """Record a provider's payment once (with its batch); its own answer or error."""
        try:
            recorded = await self.batcher.submit(notice)
        except DomainError as exc:
            WEBHOOKS.labels(PRODUCER, exc.code).inc()
            raise
        WEBHOOKS.labels(PRODUCER, recorded.outcome.status).inc()
        # The batch ran outside this request: its consistency token names its own events,
        # committed with the batch (nothing to look up).
        for env in recorded.events:
            record_written(env.type, env.event_id, env.key, committed=True)
        return recorded.outcome

    async def close(self) -> None:
        await self.batcher.close()

    # ------------------------------------------------------------ a batch

    async def record_many(self, notices: Sequence[PaymentNotice]) -> list[Result]:
        """Each payment's answer (or error), in order; one shared transaction for all."""
        results: list[Result | None] = [None] * len(notices)
        leaders = first_of_each([(n.provider, n.provider_payment_id) for n in notices])
        now = datetime.fromtimestamp(self.service.clock(), UTC)
        tolerance = timedelta(seconds=self.settings.webhook_tolerance_seconds)
        todo: list[int] = []
        for i, notice in enumerate(notices):
            if leaders[i] != i:
                continue
            try:
                check_paid_at(notice.paid_at, now, tolerance)
            except DomainError as exc:
                results[i] = exc
                continue
            todo.append(i)
        if todo:
            batch = [notices[i] for i in todo]
            try:
                decided = await self.store.run_transaction(
                    lambda session: self._decide(session, batch), what="memberships.payments"
                )
                BATCHES.labels(PRODUCER, "committed").inc()
            except Exception as exc:
                # Nothing of the batch is written: each payment alone, its own answer.
                BATCHES.labels(PRODUCER, "one_by_one").inc()
                log.warning("payments.batch_failed", payments=len(batch), error=repr(exc))
                decided = [await self._alone(n) for n in batch]
            for i, result in zip(todo, decided, strict=True):
                results[i] = result
        for i, leader in enumerate(leaders):
            if leader != i:
                results[i] = _retry_of(results[leader])
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def _alone(self, notice: PaymentNotice) -> Result:
        try:
            # the one-payment path (its metrics are counted by ``record``)
            return Recorded(await self.service._record_payment(notice))
        except Exception as exc:  # this payment's alone: the others keep their answers
            return exc

    async def _decide(
        self, session: AsyncClientSession, notices: list[PaymentNotice]
    ) -> list[Result]:
        """Run again whole on a write conflict: it re-reads everything it decides on."""
        out: list[Result | None] = [None] * len(notices)
        keys = [(n.provider, n.provider_payment_id) for n in notices]
        existing = await self.repo.payments_by_keys(keys, session)
        contacts = await self.repo.live_contacts([n.contact_id for n in notices], session)
        pending: list[_Pending] = []
        for i, notice in enumerate(notices):
            if (doc := existing.get(keys[i])) is not None:  # the provider retried
                out[i] = Recorded(_duplicate(doc))
            elif (contact := contacts.get(notice.contact_id)) is None:
                out[i] = NotFound("contact not found", field="contact_id")
            else:
                pending.append(_Pending(i, notice, contact))

        # the plans dues pay for, then the amount and election checks, each payment's own
        dues = [p for p in pending if p.notice.purpose == "dues"]
        choices = await self.service.plans.for_dues_many(
            [(p.contact, p.notice.plan, p.notice.rate) for p in dues], session
        )
        for p, choice in zip(dues, choices, strict=True):
            if isinstance(choice, DomainError):
                out[p.index] = choice
            else:
                p.choice = choice
        pending = [p for p in pending if out[p.index] is None]
        election_ids = sorted({p.notice.election_id for p in pending if p.notice.election_id})
        elections = await self.donations.elections_by_ids(election_ids, session)
        for p in pending:
            try:
                p.gift = self.service.gifts.gift_of(p.notice, elections)
            except DomainError as exc:
                out[p.index] = exc
        pending = [p for p in pending if out[p.index] is None]

        ledger = await self._ledger(pending, session)
        current = await self._current_memberships(pending, session)
        stored = {m.membership_id for m in current.values() if m is not None}

        payments: list[dict[str, Any]] = []
        membership_writes: list[tuple[Membership, Sequence[dict[str, Any]], dict[str, Any]]] = []
        current_ids: dict[str, str] = {}
        paid: list[tuple[PaymentNotice, str]] = []
        events: list[Envelope] = []
        for p in pending:
            notice, contact, cid = p.notice, p.contact, p.notice.contact_id
            assert p.gift is not None
            payment_id = uuid.uuid4().hex
            change = None
            if p.choice is not None:
                try:
                    change = dues_paid(
                        current.get(cid),
                        p.choice.plan,
                        self.service.local_day(notice.paid_at),
                        contact_id=cid,
                        payment_id=payment_id,
                        new_membership_id=uuid.uuid4().hex,
                        now=utcnow(),
                    )
                except DomainError as exc:
                    out[p.index] = exc
                    continue
            assessment = ledger.admit(cid, p.gift)
            if not assessment.accepted:
                refusal = self.service.gifts.refused(assessment, cid)
                if not notice.captured:
                    out[p.index] = refusal
                    continue
                payments.append(self._flagged(payment_id, p, refusal))
                out[p.index] = Recorded(
                    PaymentOutcome("flagged_for_refund", payment_id, refusal=refusal.message)
                )
                continue
            mine = payment_events(
                PRODUCER, payment_id, notice, contact, change.events if change else ()
            )
            membership = None
            if change is not None:
                membership = change.membership
                current[cid] = membership
                current_ids[cid] = membership.membership_id
                membership_writes += [(m, h, contact) for m, h in change.writes]
            payments.append(
                _payment_doc(
                    payment_id,
                    notice,
                    contact,
                    p.choice,
                    status="accepted",
                    membership_id=membership.membership_id if membership else None,
                )
            )
            if notice.schedule_id is not None:
                paid.append((notice, payment_id))
            events += mine
            out[p.index] = Recorded(
                PaymentOutcome(
                    "recorded",
                    payment_id,
                    membership=membership,
                    membership_id=membership.membership_id if membership else None,
                ),
                tuple(mine),
            )

        await self.repo.insert_payments(payments, session)
        await self.repo.save_memberships(membership_writes, session, stored=stored)
        await self.repo.set_current_memberships(current_ids, session)
        await self.service.schedules.advance_many(paid, session)
        await self.service.outbox.add(session, *events)
        log.info(
            "payments.batch_recorded",
            payments=len(notices),
            recorded=sum(1 for o in out if isinstance(o, Recorded) and o.events),
        )
        assert all(o is not None for o in out)
        return [o for o in out if o is not None]

    async def _ledger(self, pending: list[_Pending], session: AsyncClientSession) -> BatchLedger:
        """Guard every (person, year) and (person, election) the batch counts in, then read
        the stored totals (the guards make concurrent recordings of one person conflict)."""
        guards: dict[str, int] = {}
        party_people: dict[str, set[int]] = {}
        campaign_people: set[str] = set()
        elections: set[str] = set()
        for p in pending:
            assert p.gift is not None
            cid, gift = p.notice.contact_id, p.gift
            election_id = gift.election.election_id if gift.election else None
            if counts_toward_party_ceiling(
                gift.purpose, elected_official=gift.elected_official, election_id=election_id
            ):
                g = party_guard_id(cid, gift.paid_on.year)
                guards[g] = guards.get(g, 0) + 1
                party_people.setdefault(cid, set()).add(gift.paid_on.year)
            if election_id is not None:
                g = campaign_guard_id(cid, election_id)
                guards[g] = guards.get(g, 0) + 1
                campaign_people.add(cid)
                elections.add(election_id)
        await self.donations.guard_many(guards, session)
        ledger = BatchLedger(self.service.gifts.limits)
        if party_people:
            years = {y for ys in party_people.values() for y in ys}
            start, _ = year_bounds(min(years), self.settings.zone)
            _, end = year_bounds(max(years), self.settings.zone)
            docs = await self.donations.payments_of_many(sorted(party_people), start, end, session)
            ledger.party = party_totals(docs, self.settings.zone)
        if campaign_people:
            docs = await self.donations.campaign_payments_of_many(
                sorted(campaign_people), sorted(elections), session
            )
            ledger.campaign = campaign_totals(docs)
        return ledger

    async def _current_memberships(
        self, pending: list[_Pending], session: AsyncClientSession
    ) -> dict[str, Membership | None]:
        """contact id -> its current membership, for the people paying dues."""
        wanted = {
            p.notice.contact_id: p.contact.get("current_membership_id")
            for p in pending
            if p.choice is not None
        }
        docs = await self.repo.memberships_by_ids([m for m in wanted.values() if m], session)
        return {
            cid: membership_from_doc(docs[mid]) if mid and mid in docs else None
            for cid, mid in wanted.items()
        }

    def _flagged(self, payment_id: str, p: _Pending, refusal: GiftRefused) -> dict[str, Any]:
        """Money captured that the law refuses: kept for a treasurer to refund, counted
        nowhere, announced by no event (as the one-payment path)."""
        doc = _payment_doc(payment_id, p.notice, p.contact, p.choice, status="flagged_for_refund")
        doc["refusal"] = {"reason": refusal.message, **refusal.extra}
        log.warning("payment.flagged_for_refund", payment_id=payment_id, reason=refusal.message)
        return doc


def _retry_of(original: Result | None) -> Result:
    """A provider's retry in the same batch as its original: answered as a retry after it
    would be (the original's error, or a duplicate of what it recorded)."""
    assert original is not None
    if isinstance(original, Exception):
        return original
    o = original.outcome
    return Recorded(PaymentOutcome("duplicate", o.payment_id, membership_id=o.membership_id))
