"""HelloAsso-style notifications (pure): their verification and what each means for
Tribune.

HelloAsso documents two checks ("Vérifier l'authenticité des notifications",
https://dev.helloasso.com/docs/secure-webhook):
- the sender's IP address (production 51.138.206.200, sandbox 4.233.135.234): here an
  optional allow-list (``MEMBERSHIPS_HELLOASSO_ALLOWED_IPS``), checked on the client address
  the gateway passes on;
- a signature (for partners): each notification URL has a ``signatureKey`` and every
  notification carries ``x-ha-signature``, the hex HMAC-SHA256 of the raw body under that
  key. Tribune requires it (constant-time comparison).
The signature covers no timestamp, so there is no replay window to check: a replayed
notification changes nothing, since a payment is recorded once per HelloAsso payment id
and a reversal once per reference.

Notifications (https://dev.helloasso.com/docs/les-notifications and its examples):
``{"eventType": "Order"|"Payment"|"Form"|"Organization", "data": {...}, "metadata": {...}}``
where ``metadata`` is what the checkout intent was created with. A ``Payment`` is one
payment (``id``, ``amount`` in cents, ``date``, ``paymentMeans``, ``state``,
``refundOperations``); an ``Order`` lists its ``payments`` (installments included).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tribune_shared.errors import InvalidFields
from tribune_shared.events.contracts import PaymentMethod
from tribune_shared.webhooks import InvalidSignature

from memberships.providers.domain import (
    Action,
    Ignored,
    PaymentMetadata,
    Reader,
    Reversal,
    capture,
    read_metadata,
)

PROVIDER = "helloasso"
SIGNATURE_HEADER = "x-ha-signature"
#: HelloAsso takes euros only
CURRENCY = "EUR"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

#: payment states (HelloAsso PaymentState) that mean the money is taken
CAPTURED_STATES = ("Authorized", "Registered")
REFUNDED_STATE = "Refunded"
CONTESTED_STATE = "Contested"

_METHODS: dict[str, PaymentMethod] = {
    "Card": "card",
    "Sepa": "debit",
    "Check": "cheque",
    "Cash": "cash",
    "BankTransfer": "transfer",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def compute_signature(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(key: str, header: str | None, body: bytes) -> None:
    if not header or not header.strip():
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    value = header.strip()
    if not _HEX64.match(value):
        raise InvalidSignature(f"{SIGNATURE_HEADER} must be 64 hex digits (HMAC-SHA256)")
    if not hmac.compare_digest(compute_signature(key, body), value.lower()):
        raise InvalidSignature("signature does not match the body (wrong key or altered body)")


def check_sender(allowed: Sequence[Network], address: str | None) -> None:
    """The notification comes from one of ``allowed`` (no list: not checked)."""
    if not allowed:
        return
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        raise InvalidSignature(
            "the sender's address is unknown; HelloAsso's are required"
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not any(ip in network for network in allowed):
        raise InvalidSignature(f"sender {ip} is not one of HelloAsso's addresses")


@dataclass(frozen=True)
class Notification:
    event_type: str
    actions: tuple[Action, ...]


def _date(reader: Reader, key: str) -> datetime:
    value = reader.required_text(key, max_length=64)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidFields([(reader.path(key), "must be an ISO 8601 date with a time zone")])
    return moment


def _payment(payment: Reader, metadata: Any, received_at: datetime) -> Action:
    payment_id = payment.required_text("id", max_length=64)
    state = payment.raw("state")
    if state in CAPTURED_STATES:
        means = payment.raw("paymentMeans")
        if means not in _METHODS:
            raise InvalidFields(
                [(payment.path("paymentMeans"), f"must be one of {', '.join(_METHODS)}")]
            )
        meta: PaymentMetadata = read_metadata(metadata, "metadata")
        return capture(
            provider=PROVIDER,
            provider_payment_id=payment_id,
            amount_cents=payment.integer("amount", minimum=1),
            currency=CURRENCY,
            method=_METHODS[means],
            paid_at=_date(payment, "date"),
            metadata=meta,
        )
    if state == REFUNDED_STATE:
        operations = payment.raw("refundOperations")
        if isinstance(operations, list) and operations:
            last = Reader(operations[-1], payment.path(f"refundOperations[{len(operations) - 1}]"))
            reference = f"refund-{last.required_text('id', max_length=64)}"
            amount = last.integer("amount", minimum=1)
        else:
            reference = f"{payment_id}:refunded"
            amount = payment.integer("amount", minimum=1)
        return Reversal(
            provider=PROVIDER,
            provider_payment_id=payment_id,
            kind="refund",
            amount_cents=amount,
            reason="refunded on HelloAsso",
            at=received_at,
            reference=reference,
        )
    if state == CONTESTED_STATE:
        return Reversal(
            provider=PROVIDER,
            provider_payment_id=payment_id,
            kind="chargeback",
            amount_cents=payment.integer("amount", minimum=1),
            reason="payment contested with the payer's bank",
            at=received_at,
            reference=f"{payment_id}:contested",
        )
    if state == "Refunding":
        return Ignored("refund in progress: reversed once HelloAsso says Refunded", payment_id)
    return Ignored(f"payment {state}: no money captured", payment_id)


def read_notification(payload: Any, *, received_at: datetime) -> Notification:
    """What a (verified) HelloAsso notification means; InvalidFields (422) naming a bad
    field. ``received_at`` dates reversals (HelloAsso's refund operations carry no date)."""
    body = Reader(payload)
    event_type = body.required_text("eventType", max_length=64)
    if event_type == "Payment":
        action = _payment(body.obj("data"), body.raw("metadata"), received_at)
        return Notification(event_type, (action,))
    if event_type == "Order":
        order = body.obj("data")
        payments = order.raw("payments")
        if not isinstance(payments, list):
            raise InvalidFields([(order.path("payments"), "must be a list")])
        actions = tuple(
            _payment(Reader(p, order.path(f"payments[{i}]")), body.raw("metadata"), received_at)
            for i, p in enumerate(payments)
        )
        return Notification(event_type, actions or (Ignored("order without payment"),))
    return Notification(event_type, (Ignored(f"{event_type} notifications change no payment"),))
