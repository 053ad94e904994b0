"""Stripe-style webhooks (pure): the ``Stripe-Signature`` check and what each event type
means for Tribune.

Signature (Stripe, "Verify webhook signatures manually",
https://docs.stripe.com/webhooks#verify-manually): the header is
``t=<unix seconds>,v1=<hex>[,v1=<hex>...]`` (other schemes such as ``v0`` are discarded);
each ``v1`` is ``HMAC-SHA256(endpoint secret, "<t>.<raw body>")`` in hex. Any ``v1`` may
match (Stripe sends several while a rolled secret and its successor are both live). The
comparison is constant-time, and ``t`` must be within the tolerance of now (Stripe's
libraries default to 300 s) so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from tribune_shared.events.contracts import PaymentMethod
from tribune_shared.webhooks import InvalidSignature

from memberships.providers.domain import (
    Action,
    Ignored,
    Reader,
    Reversal,
    capture,
    read_metadata,
)

PROVIDER = "stripe"
SIGNATURE_HEADER = "Stripe-Signature"
SCHEME = "v1"
_TIMESTAMP = re.compile(r"^\d{1,12}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

#: events that mean money was captured
CAPTURE_EVENTS = (
    "payment_intent.succeeded",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
)
REFUND_EVENTS = ("charge.refunded",)
DISPUTE_EVENTS = ("charge.dispute.created", "charge.dispute.closed")

#: Stripe payment method types -> Tribune's methods (Stripe never takes cash)
_METHODS: dict[str, PaymentMethod] = {
    "card": "card",
    "link": "card",
    "sepa_debit": "debit",
    "bacs_debit": "debit",
    "au_becs_debit": "debit",
    "acss_debit": "debit",
    "us_bank_account": "debit",
    "customer_balance": "transfer",
}


@dataclass(frozen=True)
class StripeSignature:
    timestamp: str  # as sent: the signed payload uses this exact text
    signatures: tuple[str, ...]


def parse_signature_header(header: str | None) -> StripeSignature:
    """``t=...,v1=...[,v1=...]``; InvalidSignature (401) with the reason otherwise."""
    if not header or not header.strip():
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    timestamps: list[str] = []
    signatures: list[str] = []
    for element in header.split(","):
        key, sep, value = element.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamps.append(value.strip())
        elif key == SCHEME:
            signatures.append(value.strip())
    if len(timestamps) != 1 or not _TIMESTAMP.match(timestamps[0]):
        raise InvalidSignature(f"{SIGNATURE_HEADER} needs one timestamp t=<unix seconds>")
    if not signatures:
        raise InvalidSignature(f"{SIGNATURE_HEADER} has no {SCHEME} signature")
    return StripeSignature(timestamps[0], tuple(signatures))


def compute_signature(secret: str, timestamp: int | str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(
    secrets: str | Sequence[str], body: bytes, timestamp: int, *, v0: bool = False
) -> str:
    """The header Stripe sends for ``body`` (one ``v1`` per live secret); for tests."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    parts = [f"t={timestamp}"]
    parts += [f"{SCHEME}={compute_signature(k, timestamp, body)}" for k in keys]
    if v0:
        parts.append("v0=" + "0" * 64)
    return ",".join(parts)


def verify_signature(
    secret: str, header: str | None, body: bytes, *, now: float, tolerance_seconds: int
) -> int:
    """Check the header against the raw body; returns ``t`` or raises InvalidSignature."""
    parsed = parse_signature_header(header)
    expected = compute_signature(secret, parsed.timestamp, body)
    matched = False
    for candidate in parsed.signatures:
        # every candidate is compared (no early exit on the first match)
        if _HEX64.match(candidate):
            matched |= hmac.compare_digest(expected, candidate.lower())
    if not matched:
        raise InvalidSignature(
            f"no {SCHEME} signature matches the body (wrong endpoint secret or altered body)"
        )
    timestamp = int(parsed.timestamp)
    if abs(now - timestamp) > tolerance_seconds:
        raise InvalidSignature(
            f"timestamp is outside the {tolerance_seconds}s tolerance (stale or replayed event)"
        )
    return timestamp


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class StripeEvent:
    event_id: str
    type: str
    actions: tuple[Action, ...]


def _method(obj: Reader) -> PaymentMethod:
    """The method actually used: the charge's, when expanded; else the only allowed type."""
    charge = obj.raw("latest_charge")
    if isinstance(charge, Mapping):
        details = charge.get("payment_method_details")
        if isinstance(details, Mapping) and isinstance(details.get("type"), str):
            return _METHODS.get(details["type"], "card")
    types = obj.raw("payment_method_types")
    if isinstance(types, list) and len(types) == 1 and isinstance(types[0], str):
        return _METHODS.get(types[0], "card")
    return "card"


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _payment_intent(obj: Reader, created: int) -> Action:
    return capture(
        provider=PROVIDER,
        provider_payment_id=obj.required_text("id"),
        amount_cents=obj.integer("amount_received", minimum=1),
        currency=obj.currency(),
        method=_method(obj),
        paid_at=_at(created),
        metadata=read_metadata(obj.raw("metadata"), obj.path("metadata")),
    )


def _checkout_session(obj: Reader, created: int) -> Action:
    status = obj.raw("payment_status")
    if status != "paid":
        return Ignored(f"checkout session not paid (payment_status={status})")
    if obj.raw("mode") not in (None, "payment"):
        return Ignored(f"checkout session in {obj.raw('mode')} mode: only one-off payments")
    # Recorded under the payment intent's id, as payment_intent.succeeded is: the two
    # events of one payment are one payment.
    return capture(
        provider=PROVIDER,
        provider_payment_id=obj.required_text("payment_intent"),
        amount_cents=obj.integer("amount_total", minimum=1),
        currency=obj.currency(),
        method=_method(obj),
        paid_at=_at(created),
        metadata=read_metadata(obj.raw("metadata"), obj.path("metadata")),
    )


def _paid_by(obj: Reader) -> str:
    """Tribune records Stripe payments under their payment intent."""
    return obj.text("payment_intent", required=False) or obj.required_text("charge")


def _refund(obj: Reader, created: int) -> Action:
    charge_id = obj.required_text("id")
    payment = obj.text("payment_intent", required=False) or charge_id
    refunds = obj.raw("refunds")
    listed = refunds.get("data") if isinstance(refunds, Mapping) else None
    if isinstance(listed, list) and listed and isinstance(listed[0], Mapping):
        # newest first (Stripe lists refunds in reverse creation order)
        latest = Reader(listed[0], obj.path("refunds.data[0]"))
        reason = latest.raw("reason")
        when = latest.raw("created")
        return Reversal(
            provider=PROVIDER,
            provider_payment_id=payment,
            kind="refund",
            amount_cents=latest.integer("amount", minimum=1),
            reason=f"refunded by Stripe ({reason})" if reason else "refunded by Stripe",
            at=_at(when if isinstance(when, int) else created),
            reference=latest.required_text("id"),
        )
    # API versions since 2022-11-15 no longer list the refunds on the charge: the
    # cumulative amount refunded identifies this refund.
    refunded = obj.integer("amount_refunded", minimum=1)
    return Reversal(
        provider=PROVIDER,
        provider_payment_id=payment,
        kind="refund",
        amount_cents=refunded,
        reason="refunded by Stripe",
        at=_at(created),
        reference=f"{charge_id}:refunded:{refunded}",
    )


def _dispute(obj: Reader, event_type: str, created: int, reverse_on: str) -> Action:
    payment = _paid_by(obj)
    status = obj.raw("status")
    lost = event_type == "charge.dispute.closed" and status == "lost"
    opened = event_type == "charge.dispute.created"
    if not (lost or (opened and reverse_on == "created")):
        if opened:
            return Ignored("dispute opened: the payment is reversed if it is lost", payment)
        return Ignored(f"dispute closed ({status}): the payment stands", payment)
    reason = obj.raw("reason")
    return Reversal(
        provider=PROVIDER,
        provider_payment_id=payment,
        kind="chargeback",
        amount_cents=obj.integer("amount", minimum=1),
        reason=f"dispute {'lost' if lost else 'opened'} ({reason or 'no reason given'})",
        at=_at(created),
        reference=obj.required_text("id"),
    )


def read_event(
    payload: Any, *, dispute_reversal: Literal["lost", "created"] = "lost"
) -> StripeEvent:
    """What a (verified) Stripe event means; InvalidFields (422) naming a bad field."""
    event = Reader(payload)
    event_id = event.required_text("id")
    event_type = event.required_text("type")
    created = event.integer("created", minimum=1)
    if event_type not in (*CAPTURE_EVENTS, *REFUND_EVENTS, *DISPUTE_EVENTS):
        return StripeEvent(event_id, event_type, (Ignored(f"{event_type} is not used"),))
    obj = event.obj("data").obj("object")
    action: Action
    if event_type == "payment_intent.succeeded":
        action = _payment_intent(obj, created)
    elif event_type in CAPTURE_EVENTS:
        action = _checkout_session(obj, created)
    elif event_type in REFUND_EVENTS:
        action = _refund(obj, created)
    else:
        action = _dispute(obj, event_type, created, dispute_reversal)
    return StripeEvent(event_id, event_type, (action,))
