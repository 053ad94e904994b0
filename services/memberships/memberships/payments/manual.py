"""A treasurer enters a payment by hand: a cheque, a transfer or cash.

The entry becomes a ``PaymentNotice`` (provider ``manual``, not captured: a legal refusal
refuses it outright and nothing is written) recorded by the one recording use case. The
``Idempotency-Key`` the client sends makes the notice's provider payment id, so a double
click records one payment (the core's uniqueness on (provider, provider_payment_id))."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from tribune_shared.auth import Identity
from tribune_shared.errors import Conflict, InvalidField, NotFound, Refused

from memberships.payments.domain import OPEN_SCHEDULES, check_manual_day
from memberships.payments.notice import DonorDeclaration, PaymentNotice, PaymentOutcome, Purpose
from memberships.payments.store import PaymentsStore
from memberships.service import MembershipsService

MANUAL_PROVIDER = "manual"
ManualMethod = Literal["cheque", "transfer", "cash"]


@dataclass(frozen=True)
class ManualEntry:
    contact_id: str
    amount_cents: int
    currency: str
    method: ManualMethod
    purpose: Purpose
    #: the day the money was received (default today)
    paid_on: date | None = None
    plan: str | None = None
    rate: str | None = None
    donor: DonorDeclaration | None = None
    elected_official: bool = False
    election_id: str | None = None
    schedule_id: str | None = None
    #: cheque_number, bank, drawer (cheque); reference (transfer)
    details: dict[str, str] = field(default_factory=dict)


class ManualEntries:
    def __init__(self, service: MembershipsService) -> None:
        self.service = service
        self.repo = PaymentsStore(service.store)

    def provider_payment_id(self, identity: Identity, idempotency_key: str) -> str:
        # Per user: two treasurers choosing the same key enter two payments.
        return f"{identity.user_id}:{idempotency_key}"

    async def enter(
        self, identity: Identity, entry: ManualEntry, idempotency_key: str
    ) -> PaymentOutcome:
        contact = await self.service.contacts.visible(identity, entry.contact_id)
        if contact is None:
            raise NotFound("contact not found", field="contact_id")
        provider_payment_id = self.provider_payment_id(identity, idempotency_key)
        existing = await self.service.repo.payment_by_provider_id(
            MANUAL_PROVIDER, provider_payment_id
        )
        if existing is not None:  # the same entry again (a double click, a retry)
            return self._replayed(existing, entry)
        today = self.service.today()
        paid_on = entry.paid_on or today
        check_manual_day(paid_on, today, self.service.settings.manual_backdate_days)
        if entry.schedule_id is not None:
            await self._check_schedule(entry)
        if entry.method == "cheque":
            same = await self.repo.same_cheque(
                contact["federation_id"],
                entry.details["bank"],
                entry.details["cheque_number"],
                provider_payment_id,
            )
            if same is not None:
                raise Refused(
                    "this cheque (bank and number) is already recorded",
                    payment_id=same["_id"],
                )
        notice = PaymentNotice(
            provider=MANUAL_PROVIDER,
            provider_payment_id=provider_payment_id,
            contact_id=entry.contact_id,
            amount_cents=entry.amount_cents,
            currency=entry.currency,
            method=entry.method,
            purpose=entry.purpose,
            paid_at=self._paid_at(paid_on, today),
            plan=entry.plan,
            rate=entry.rate,
            donor=entry.donor,
            elected_official=entry.elected_official,
            election_id=entry.election_id,
            captured=False,
            entered_by=identity.user_id,
            details=dict(entry.details),
            schedule_id=entry.schedule_id,
        )
        outcome = await self.service.record_payment(notice)
        if outcome.status == "duplicate":  # a concurrent double click committed first
            existing = await self.service.repo.payment_by_provider_id(
                MANUAL_PROVIDER, provider_payment_id
            )
            assert existing is not None
            return self._replayed(existing, entry)
        return outcome

    def _paid_at(self, paid_on: date, today: date) -> datetime:
        if paid_on == today:
            return datetime.fromtimestamp(self.service.clock(), UTC)
        # noon of an earlier day in the organisation's zone: that day, whatever the offset
        return datetime.combine(paid_on, time(12), self.service.settings.zone)

    def _replayed(self, existing: dict[str, Any], entry: ManualEntry) -> PaymentOutcome:
        same = (
            existing["contact_id"] == entry.contact_id
            and existing["amount_cents"] == entry.amount_cents
            and existing["method"] == entry.method
            and existing["purpose"] == entry.purpose
        )
        if not same:
            raise Conflict(
                "this Idempotency-Key was already used for another payment",
                field="Idempotency-Key",
            )
        return PaymentOutcome(
            "duplicate", existing["_id"], membership_id=existing.get("membership_id")
        )

    async def _check_schedule(self, entry: ManualEntry) -> None:
        schedule = await self.repo.schedule(
            {"_id": entry.schedule_id, "contact_id": entry.contact_id}
        )
        if (
            schedule is None
            or schedule["status"] not in OPEN_SCHEDULES
            or schedule["purpose"] != entry.purpose
        ):
            raise InvalidField(
                "no open schedule of this contact for this purpose", field="schedule_id"
            )
