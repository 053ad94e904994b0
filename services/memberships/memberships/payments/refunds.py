"""Refunds and chargebacks: a recorded payment's money goes back, and so does what it bought.

One transaction: the payment's status (refunded / charged_back) with its audit trail, the
reversal record, the membership period the dues bought taken back, and the events. The
legal ceilings count only accepted payments, so the status change alone takes the money
out of every total. Idempotent on (provider, reference); a second reversal of the same
payment is 409."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from prometheus_client import Counter
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError
from tribune_shared.auth import Identity
from tribune_shared.errors import InvalidField, NotFound
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import (
    EventContract,
    MembershipCancelledV1,
    PaymentRefundedV1,
)
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from memberships.payments.domain import (
    REVERSIBLE,
    AlreadyReversed,
    ReversalKind,
    check_reversible,
    reverse_standing,
)
from memberships.payments.store import PaymentsStore, iso
from memberships.settings import MembershipsSettings
from memberships.store import membership_from_doc

log = get_logger(__name__)
PRODUCER = "memberships"

REVERSALS = Counter(
    "tribune_payment_reversals_total",
    "Refunds and chargebacks by kind and outcome",
    ["kind", "outcome"],
)


@dataclass(frozen=True)
class Reversal:
    status: str  # "reversed" | "duplicate"
    refund_id: str
    payment_id: str
    kind: str
    payment_status: str
    membership_id: str | None = None
    membership_status: str | None = None
    ends_on: date | None = None


class RefundService:
    def __init__(
        self,
        settings: MembershipsSettings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.repo = PaymentsStore(store)
        self.outbox = Outbox(store)
        self.clock = clock

    async def reverse(
        self,
        *,
        provider: str,
        provider_payment_id: str,
        kind: ReversalKind,
        amount_cents: int,
        reason: str,
        at: datetime,
        reference: str,
    ) -> Reversal:
        """A provider reports a refund or a dispute it lost (the provider path). The same
        (provider, reference) again answers ``duplicate`` and changes nothing; NotFound
        for a payment never recorded; AlreadyReversed (409) for one reversed under another
        reference; InvalidField for a partial amount."""
        if at.tzinfo is None:
            raise InvalidField("the reversal time needs a time zone", field="at")
        query = {"provider": provider, "provider_payment_id": provider_payment_id}
        return await self._reverse(
            query,
            provider=provider,
            kind=kind,
            amount_cents=amount_cents,
            reason=reason,
            at=at,
            reference=reference,
            by=None,
        )

    async def refund(
        self,
        identity: Identity,
        payment_id: str,
        *,
        kind: ReversalKind,
        reason: str,
        reference: str | None = None,
    ) -> Reversal:
        """A treasurer refunds (or records the chargeback of) a payment of their subtree, in
        full. 404 outside the subtree; 409 if already reversed."""
        payment = await self.repo.payment({"_id": payment_id, **identity.scope()})
        if payment is None:
            raise NotFound("payment not found", field="payment_id")
        return await self._reverse(
            {"_id": payment_id},
            provider=payment["provider"],
            kind=kind,
            amount_cents=payment["amount_cents"],
            reason=reason,
            at=datetime.fromtimestamp(self.clock(), UTC),
            reference=reference or f"treasurer-{uuid.uuid4().hex}",
            by=identity.user_id,
        )

    async def _reverse(self, query: dict[str, Any], **how: Any) -> Reversal:
        existing = await self.repo.refund_by_reference(how["provider"], how["reference"])
        if existing is not None:
            return _duplicate(existing)
        try:
            outcome = await self.store.run_transaction(
                lambda session: self._reverse_in(session, query, **how),
                what="memberships.reversal",
            )
        except DuplicateKeyError:
            # The same provider reference, applied concurrently, committed first.
            existing = await self.repo.refund_by_reference(how["provider"], how["reference"])
            if existing is None:
                raise
            outcome = _duplicate(existing)
        except AlreadyReversed:
            REVERSALS.labels(how["kind"], "already_reversed").inc()
            raise
        REVERSALS.labels(how["kind"], outcome.status).inc()
        return outcome

    async def _reverse_in(
        self,
        session: AsyncClientSession,
        query: dict[str, Any],
        *,
        provider: str,
        kind: ReversalKind,
        amount_cents: int,
        reason: str,
        at: datetime,
        reference: str,
        by: str | None,
    ) -> Reversal:
        existing = await self.repo.refund_by_reference(provider, reference, session)
        if existing is not None:
            return _duplicate(existing)
        payment = await self.repo.payment(query, session)
        if payment is None:
            raise NotFound("payment not found", field="provider_payment_id")
        status = check_reversible(payment, kind, amount_cents)
        refund_id = uuid.uuid4().hex
        trail = {
            "refund_id": refund_id,
            "kind": kind,
            "reason": reason,
            "reference": reference,
            "by": by,
            "source": "provider" if by is None else "treasurer",
            "at": at,
        }
        if not await self.repo.mark_reversed(
            payment["_id"], list(REVERSIBLE), status, trail, session
        ):
            # Read in this snapshot as reversible, changed since: the concurrent reversal won.
            raise AlreadyReversed("payment already reversed", payment_id=payment["_id"])

        def envelope(event: EventContract, cause: Envelope | None = None) -> Envelope:
            return new_envelope(
                event,
                producer=PRODUCER,
                federation_id=payment["federation_id"],
                federation_path=payment["federation_path"],
                causation=cause,
            )

        events: list[Envelope] = []
        standing: dict[str, Any] | None = None
        membership_status = ends_on = None
        # Money a legal rule refused bought nothing and was announced by no event: its
        # refund takes nothing back and announces nothing either.
        if payment["status"] == "accepted":
            refunded = envelope(
                PaymentRefundedV1(
                    payment_id=payment["_id"],
                    refund_id=refund_id,
                    contact_id=payment["contact_id"],
                    amount_cents=payment["amount_cents"],
                    currency=payment["currency"],
                    kind=kind,
                    purpose=payment["purpose"],
                    reason=reason,
                    refunded_at=at,
                )
            )
            events.append(refunded)
            if payment.get("membership_id"):
                standing, cancelled = await self._take_back(session, payment, refund_id, kind, at)
                if standing is not None:
                    membership_status = standing["membership_status"]
                    ends_on = standing["ends_on_after"]
                if cancelled is not None:
                    events.append(envelope(cancelled, refunded))
        await self.repo.insert_refund(
            {
                "_id": refund_id,
                "provider": provider,
                "reference": reference,
                "payment_id": payment["_id"],
                "kind": kind,
                "amount_cents": amount_cents,
                "currency": payment["currency"],
                "reason": reason,
                "at": at,
                "by": by,
                "previous_status": payment["status"],
                "standing": standing,
                "federation_id": payment["federation_id"],
                "federation_path": payment["federation_path"],
            },
            session,
        )
        if events:
            await self.outbox.add(session, *events)
        log.info(
            "payment.reversed",
            payment_id=payment["_id"],
            refund_id=refund_id,
            kind=kind,
            membership_status=membership_status,
        )
        return Reversal(
            "reversed",
            refund_id,
            payment["_id"],
            kind,
            status,
            membership_id=payment.get("membership_id"),
            membership_status=membership_status,
            ends_on=date.fromisoformat(ends_on) if ends_on else None,
        )

    async def _take_back(
        self,
        session: AsyncClientSession,
        payment: dict[str, Any],
        refund_id: str,
        kind: str,
        at: datetime,
    ) -> tuple[dict[str, Any] | None, MembershipCancelledV1 | None]:
        """The membership period the dues bought goes (from the membership's history)."""
        doc = await self.repo.membership_doc(payment["membership_id"], session)
        if doc is None:
            return None, None
        membership = membership_from_doc(doc)
        change = reverse_standing(membership, doc.get("history", []), payment["_id"])
        if change is None:
            return None, None
        after = change.membership
        entry = {
            "status": after.status.value,
            "at": at,
            "reversed_payment_id": payment["_id"],
            "refund_id": refund_id,
            "kind": kind,
            "ends_on": iso(change.ends_on_after),
            "ends_on_before": iso(change.ends_on_before),
        }
        await self.repo.change_memberships([(after, entry)], session)
        standing = {
            "membership_id": after.membership_id,
            "membership_status": after.status.value,
            "ends_on_before": iso(change.ends_on_before),
            "ends_on_after": iso(change.ends_on_after),
        }
        cancelled = None
        if change.cancelled:
            cancelled = MembershipCancelledV1(
                membership_id=after.membership_id,
                contact_id=after.contact_id,
                cancelled_on=at.astimezone(self.settings.zone).date(),
                reason=f"{kind}: no paid period left",
            )
        return standing, cancelled


def _duplicate(refund: dict[str, Any]) -> Reversal:
    standing = refund.get("standing") or {}
    ends_on = standing.get("ends_on_after")
    return Reversal(
        "duplicate",
        refund["_id"],
        refund["payment_id"],
        refund["kind"],
        "refunded" if refund["kind"] == "refund" else "charged_back",
        membership_id=standing.get("membership_id"),
        membership_status=standing.get("membership_status"),
        ends_on=date.fromisoformat(ends_on) if ends_on else None,
    )
