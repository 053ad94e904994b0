"""The legal rules a payment must pass before it is accepted.

The recording of a payment (``memberships.service``) calls ``GiftRules.admit`` inside its
transaction, after the plan is known and before anything is written: a refusal there
changes nothing (or, for money a provider already captured, records the payment flagged
for refund)."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.errors import Refused
from tribune_shared.store import Store

from memberships.domain import check_payment
from memberships.payments.notice import PaymentNotice
from memberships.settings import MembershipsSettings


class GiftRefused(Refused):
    """A gift or due breaks a legal rule (``rule`` names it); the reason is for the payer."""

    code = "gift_refused"


class GiftRules:
    def __init__(self, settings: MembershipsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store

    async def admit(
        self, notice: PaymentNotice, contact: dict[str, Any], session: AsyncClientSession
    ) -> None:
        """Raise GiftRefused (with ``rule``) if the payment may not be accepted; otherwise
        count it wherever a limit needs it, in ``session``."""
        check_payment(
            notice.amount_cents,
            notice.method,
            cash_limit_cents=self.settings.cash_limit_cents,
            max_amount_cents=self.settings.max_amount_cents,
        )
