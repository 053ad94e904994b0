"""Use cases: a payment, the membership it pays for and their events commit together."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError
from tribune_shared.auth import Identity
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.errors import DomainError, NotFound
from tribune_shared.events import utcnow
from tribune_shared.events.contracts import (
    EventContract,
)
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store
from tribune_shared.webhooks import verify_signature

from memberships.domain import (
    Membership,
    Plan,
    amount_check,
    check_paid_at,
)
from memberships.donations.service import GiftRefused, GiftRules
from memberships.payments.domain import dues_paid, payment_events
from memberships.payments.notice import DonorDeclaration, PaymentNotice, PaymentOutcome
from memberships.payments.schedules import Schedules
from memberships.plans.service import PlanCatalog, PlanChoice
from memberships.settings import MembershipsSettings
from memberships.store import MembershipsStore, membership_from_doc

log = get_logger(__name__)
PRODUCER = "memberships"

WEBHOOKS = Counter(
    "tribune_payment_webhooks_total", "Payment webhooks by outcome", ["service", "outcome"]
)


class MembershipsService:
    def __init__(
        self,
        settings: MembershipsSettings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.repo = MembershipsStore(store)
        self.contacts = ContactDirectory(store)
        self.outbox = Outbox(store)
        self.plans = PlanCatalog(settings, store)
        self.gifts = GiftRules(settings, store)
        self.schedules = Schedules(settings, store, clock=clock)
        self.clock = clock

    def today(self) -> date:
        return self.settings.day_at(self.clock())

    def local_day(self, moment: datetime) -> date:
        return moment.astimezone(self.settings.zone).date()

    # ------------------------------------------------------------ webhook

    def verify_webhook(self, timestamp: str | None, signature: str | None, body: bytes) -> None:
        try:
            verify_signature(
                self.settings.webhook_secret,
                timestamp,
                signature,
                body,
                now=self.clock(),
                tolerance_seconds=self.settings.webhook_tolerance_seconds,
            )
        except DomainError as exc:
            WEBHOOKS.labels(PRODUCER, "unauthorized").inc()
            log.warning("webhook.refused", reason=exc.message)
            raise

    async def record_payment(self, notice: PaymentNotice) -> PaymentOutcome:
        """Record a provider's payment once; dues activate or renew the membership.
        Everything (payment, membership, events) commits in one transaction."""
        try:
            outcome = await self._record_payment(notice)
        except DomainError as exc:
            WEBHOOKS.labels(PRODUCER, exc.code).inc()
            raise
        WEBHOOKS.labels(PRODUCER, outcome.status).inc()
        return outcome

    async def _record_payment(self, notice: PaymentNotice) -> PaymentOutcome:
        existing = await self.repo.payment_by_provider_id(
            notice.provider, notice.provider_payment_id
        )
        if existing is not None:  # the provider retried: answer as before, change nothing
            return _duplicate(existing)
        now = datetime.fromtimestamp(self.clock(), UTC)
        check_paid_at(
            notice.paid_at, now, timedelta(seconds=self.settings.webhook_tolerance_seconds)
        )
        try:
            return await self.store.run_transaction(
                lambda session: self._record_in(session, notice), what="memberships.payment"
            )
        except DuplicateKeyError:
            # A concurrent delivery of the same payment committed first.
            existing = await self.repo.payment_by_provider_id(
                notice.provider, notice.provider_payment_id
            )
            if existing is None:
                raise
            return _duplicate(existing)

    async def _record_in(
        self, session: AsyncClientSession, notice: PaymentNotice
    ) -> PaymentOutcome:
        existing = await self.repo.payment_by_provider_id(
            notice.provider, notice.provider_payment_id, session
        )
        if existing is not None:
            return _duplicate(existing)
        contact = await self.contacts.get(notice.contact_id, session)
        if contact is None:
            raise NotFound("contact not found", field="contact_id")
        choice: PlanChoice | None = None
        if notice.purpose == "dues":
            choice = await self.plans.for_dues(contact, notice.plan, notice.rate, session)
        try:
            # Counts the payment towards every legal limit, in this transaction.
            await self.gifts.admit(notice, contact, session)
        except GiftRefused as refusal:
            if not notice.captured:
                raise  # a treasurer's entry: refused, nothing written
            return await self._flag_for_refund(session, notice, contact, choice, refusal)
        plan = choice.plan if choice else None

        payment_id = uuid.uuid4().hex
        membership = None
        membership_events: Sequence[EventContract] = ()
        if notice.purpose == "dues":
            assert plan is not None
            membership, membership_events = await self._pay_dues(
                session, contact, plan, self.local_day(notice.paid_at), payment_id
            )
        events = payment_events(PRODUCER, payment_id, notice, contact, membership_events)
        await self.repo.insert_payment(
            _payment_doc(
                payment_id,
                notice,
                contact,
                choice,
                status="accepted",
                membership_id=membership.membership_id if membership else None,
            ),
            session,
        )
        if notice.schedule_id is not None:  # a recurring payment moves its schedule on
            await self.schedules.advance(notice, payment_id, session)
        await self.outbox.add(session, *events)
        log.info(
            "payment.recorded",
            payment_id=payment_id,
            purpose=notice.purpose,
            membership_id=membership.membership_id if membership else None,
        )
        return PaymentOutcome(
            "recorded",
            payment_id,
            membership=membership,
            membership_id=membership.membership_id if membership else None,
        )

    async def _pay_dues(
        self,
        session: AsyncClientSession,
        contact: dict[str, Any],
        plan: Plan,
        paid_on: date,
        payment_id: str,
    ) -> tuple[Membership, list[EventContract]]:
        """Activate or renew the contact's membership; a lapsed or cancelled one is closed
        and a new one starts (``dues_paid`` decides, here and in the batched recording)."""
        current = None
        if contact.get("current_membership_id"):
            current = await self.repo.membership(contact["current_membership_id"], session)
        change = dues_paid(
            current,
            plan,
            paid_on,
            contact_id=contact["_id"],
            payment_id=payment_id,
            new_membership_id=uuid.uuid4().hex,
            now=utcnow(),
        )
        for membership, history in change.writes:
            await self.repo.save_membership(membership, contact, session, history=history)
        paid = change.membership
        await self.repo.set_current_membership(contact["_id"], paid.membership_id, session)
        return paid, list(change.events)

    async def _flag_for_refund(
        self,
        session: AsyncClientSession,
        notice: PaymentNotice,
        contact: dict[str, Any],
        choice: PlanChoice | None,
        refusal: GiftRefused,
    ) -> PaymentOutcome:
        """Money a provider captured but the law refuses: kept on record (the provider
        will not send it again) so a treasurer refunds it; it buys no standing, no receipt
        and counts in no total, so no event announces it."""
        payment_id = uuid.uuid4().hex
        doc = _payment_doc(payment_id, notice, contact, choice, status="flagged_for_refund")
        doc["refusal"] = {"reason": refusal.message, **refusal.extra}
        await self.repo.insert_payment(doc, session)
        log.warning("payment.flagged_for_refund", payment_id=payment_id, reason=refusal.message)
        return PaymentOutcome("flagged_for_refund", payment_id, refusal=refusal.message)

    # ------------------------------------------------------------ reads

    async def _visible_contact(self, identity: Identity, contact_id: str) -> dict[str, Any]:
        contact = await self.contacts.visible(identity, contact_id)
        if contact is None:
            raise NotFound("contact not found", field="contact_id")
        return contact

    async def memberships(
        self, identity: Identity, contact_id: str, on: date | None = None
    ) -> list[dict[str, Any]]:
        """The contact's memberships with their status and standing at ``on`` (today)."""
        await self._visible_contact(identity, contact_id)
        day = on or self.today()
        docs = await self.repo.memberships_of(identity, contact_id, self.settings.max_page_size)
        items = []
        for doc in docs:
            m = membership_from_doc(doc)
            items.append(
                {
                    "membership_id": m.membership_id,
                    "contact_id": m.contact_id,
                    "plan": m.plan,
                    "status": m.status_on(day),
                    "starts_on": m.starts_on,
                    "ends_on": m.ends_on,
                    "grace_ends_on": m.grace_ends_on,
                    "in_good_standing": m.in_good_standing(day),
                    "federation_id": doc["federation_id"],
                }
            )
        return items

    async def payments(self, identity: Identity, contact_id: str) -> list[dict[str, Any]]:
        await self._visible_contact(identity, contact_id)
        docs = await self.repo.payments_of(identity, contact_id, self.settings.max_page_size)
        return [{"payment_id": d["_id"], **d} for d in docs]


def _duplicate(existing: dict[str, Any]) -> PaymentOutcome:
    return PaymentOutcome("duplicate", existing["_id"], membership_id=existing.get("membership_id"))


def _payment_doc(
    payment_id: str,
    notice: PaymentNotice,
    contact: dict[str, Any],
    choice: PlanChoice | None,
    *,
    status: str,
    membership_id: str | None = None,
) -> dict[str, Any]:
    donor: DonorDeclaration | None = notice.donor
    return {
        "_id": payment_id,
        "provider": notice.provider,
        "provider_payment_id": notice.provider_payment_id,
        "contact_id": notice.contact_id,
        "amount_cents": notice.amount_cents,
        "currency": notice.currency,
        "method": notice.method,
        "purpose": notice.purpose,
        "status": status,
        "plan": choice.plan.name if choice else None,
        "rate": notice.rate,
        # what the plan expected against what was paid; a difference is flagged
        "amount_check": amount_check(
            choice.expected_amount_cents if choice else None, notice.amount_cents
        ),
        # the plan version's split between levels, for the treasurers' split report
        "split": choice.split_record(notice.amount_cents) if choice else None,
        "donor": asdict(donor) if donor else None,
        "elected_official": notice.elected_official,
        "election_id": notice.election_id,
        "entered_by": notice.entered_by,
        "details": dict(notice.details),
        "schedule_id": notice.schedule_id,
        "paid_at": notice.paid_at,
        "recorded_at": utcnow(),
        "membership_id": membership_id,
        "federation_id": contact["federation_id"],
        "federation_path": contact["federation_path"],
    }
