"""Use cases of the provider webhooks: verify, then apply what the event means through the
one recording use case (captures) or the reversal use case (refunds, chargebacks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter
from tribune_shared.errors import DomainError
from tribune_shared.logging import get_logger
from tribune_shared.webhooks import InvalidSignature

from memberships.payments.domain import AlreadyReversed
from memberships.payments.refunds import RefundService
from memberships.providers import helloasso, stripe
from memberships.providers.domain import Action, Capture, Ignored, Reversal
from memberships.service import MembershipsService
from memberships.settings import MembershipsSettings

log = get_logger(__name__)

PROVIDER_WEBHOOKS = Counter(
    "tribune_provider_webhooks_total",
    "Provider webhook deliveries (Stripe, HelloAsso) by outcome",
    ["service", "provider", "outcome"],
)


@dataclass(frozen=True)
class Outcome:
    """What one action of a delivery did."""

    action: Literal["payment", "reversal", "ignored"]
    #: payment: recorded | duplicate | flagged_for_refund; reversal: reversed | duplicate
    #: (this reference was applied) | already_reversed (under another one); ignored
    status: str
    provider_payment_id: str | None = None
    payment_id: str | None = None
    membership_id: str | None = None
    #: why it was ignored, or the legal rule a flagged payment breaks
    reason: str | None = None


class ProviderWebhooks:
    def __init__(
        self,
        settings: MembershipsSettings,
        memberships: MembershipsService,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.memberships = memberships
        self.clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # ------------------------------------------------------------ verification

    def _refused(self, provider: str, exc: DomainError) -> None:
        PROVIDER_WEBHOOKS.labels("memberships", provider, "unauthorized").inc()
        log.warning("provider_webhook.refused", provider=provider, reason=exc.message)

    def verify_stripe(self, header: str | None, body: bytes) -> None:
        try:
            if not self.settings.stripe_webhook_secret:
                raise InvalidSignature("Stripe webhooks are not accepted: no secret is set")
            stripe.verify_signature(
                self.settings.stripe_webhook_secret,
                header,
                body,
                now=self.clock(),
                tolerance_seconds=self.settings.stripe_tolerance_seconds,
            )
        except InvalidSignature as exc:
            self._refused(stripe.PROVIDER, exc)
            raise

    def verify_helloasso(self, header: str | None, sender: str | None, body: bytes) -> None:
        try:
            if not self.settings.helloasso_signature_key:
                raise InvalidSignature("HelloAsso notifications are not accepted: no key is set")
            helloasso.check_sender(self.settings.helloasso_allowed_ips, sender)
            helloasso.verify_signature(self.settings.helloasso_signature_key, header, body)
        except InvalidSignature as exc:
            self._refused(helloasso.PROVIDER, exc)
            raise

    # ------------------------------------------------------------ events

    def read_stripe(self, payload: Any) -> stripe.StripeEvent:
        return stripe.read_event(payload, dispute_reversal=self.settings.stripe_dispute_reversal)

    def read_helloasso(self, payload: Any) -> helloasso.Notification:
        return helloasso.read_notification(payload, received_at=self.now())

    async def apply(self, provider: str, actions: Sequence[Action]) -> list[Outcome]:
        """Each action in turn, each in its own transaction: a provider's retry of a
        delivery that failed half-way redoes only what is missing (captures are recorded
        once per provider payment id, reversals once per reference)."""
        outcomes = []
        for action in actions:
            try:
                outcome = await self._apply(action)
            except DomainError as exc:
                PROVIDER_WEBHOOKS.labels("memberships", provider, exc.code).inc()
                raise
            PROVIDER_WEBHOOKS.labels("memberships", provider, outcome.status).inc()
            outcomes.append(outcome)
        return outcomes

    async def _apply(self, action: Action) -> Outcome:
        if isinstance(action, Capture):
            result = await self.memberships.record_payment(action.notice)
            return Outcome(
                "payment",
                result.status,
                provider_payment_id=action.notice.provider_payment_id,
                payment_id=result.payment_id,
                membership_id=result.membership_id,
                reason=result.refusal,
            )
        if isinstance(action, Reversal):
            return await self._reverse(action)
        assert isinstance(action, Ignored)
        log.info("provider_webhook.ignored", reason=action.reason)
        return Outcome("ignored", "ignored", action.provider_payment_id, reason=action.reason)

    async def _reverse(self, reversal: Reversal) -> Outcome:
        refunds = RefundService(self.settings, self.memberships.store, clock=self.clock)
        try:
            result = await refunds.reverse(
                provider=reversal.provider,
                provider_payment_id=reversal.provider_payment_id,
                kind=reversal.kind,
                amount_cents=reversal.amount_cents,
                reason=reversal.reason,
                at=reversal.at,
                reference=reversal.reference,
            )
        except AlreadyReversed as exc:
            # Money goes back once: a chargeback after a refund (or the other way round)
            # has nothing left to take back; acknowledged so the provider stops retrying.
            return Outcome(
                "reversal",
                "already_reversed",
                reversal.provider_payment_id,
                payment_id=exc.extra.get("payment_id"),
                reason=exc.message,
            )
        log.info(
            "provider_webhook.reversed",
            provider=reversal.provider,
            provider_payment_id=reversal.provider_payment_id,
            kind=reversal.kind,
            reference=reversal.reference,
            status=result.status,
        )
        return Outcome(
            "reversal",
            result.status,
            reversal.provider_payment_id,
            payment_id=result.payment_id,
            membership_id=result.membership_id,
            reason=reversal.reason,
        )
