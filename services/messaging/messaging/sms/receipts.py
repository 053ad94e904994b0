"""SMS delivery receipts (pure): verify the provider's signature, then read the outcome.

Receipts are signed like every Tribune webhook (tribune_shared.webhooks: HMAC-SHA256 of
``<timestamp>.<raw body>`` under the provider's receipt secret, with a timestamp tolerance),
so the signature is checked on the exact bytes before anything is parsed.

Bodies, by provider style:
- OVH-like, JSON: ``{"id": <job id>, "receiver": "+33...", "dlr": <code>, "description":
  ..., "date": <ISO 8601>}``; ``dlr`` 1 = delivered, 2 and 16 = not delivered, 4 and 8 =
  still on its way (pending, handed to the operator).
- Twilio-like, form-encoded: ``MessageSid``, ``MessageStatus`` (``delivered``;
  ``undelivered`` and ``failed`` are failures; ``accepted``, ``queued``, ``sending``,
  ``sent`` are on the way), ``To``, ``ErrorCode``.

A receipt that is not final yet parses to None: there is nothing to record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

from tribune_shared.errors import InvalidField
from tribune_shared.webhooks import signed_at

from messaging.settings import MessagingSettings, SmsProviderName

_OVH_DELIVERED = frozenset({1})
_OVH_FAILED = frozenset({2, 16})
_OVH_PENDING = frozenset({4, 8})
_TWILIO_DELIVERED = frozenset({"delivered"})
_TWILIO_FAILED = frozenset({"undelivered", "failed"})
_TWILIO_PENDING = frozenset({"accepted", "queued", "sending", "sent", "scheduled"})
_MAX_ID = 200


class ReceiptStatus(StrEnum):
    delivered = "delivered"
    failed = "failed"


@dataclass(frozen=True)
class DeliveryReceipt:
    provider: SmsProviderName
    provider_message_id: str
    status: ReceiptStatus
    at: datetime
    #: the provider's words on a failure (error code, description), if any
    reason: str | None = None


def receipt_secret(settings: MessagingSettings, provider: SmsProviderName) -> str | None:
    secret = (
        settings.sms_ovh_receipt_secret if provider == "ovh" else settings.sms_twilio_receipt_secret
    )
    return secret.get_secret_value() if secret is not None else None


def parse_receipt(
    provider: SmsProviderName,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    *,
    secret: str | None,
    now: float,
    tolerance_seconds: int,
) -> DeliveryReceipt | None:
    """The verified receipt, None if it is not final yet; InvalidSignature (401) or
    InvalidField (422, with the field and reason) otherwise. Nothing is read before the
    signature is proven."""
    received = signed_at(
        secret,
        timestamp_header,
        signature_header,
        body,
        now=now,
        tolerance_seconds=tolerance_seconds,
        what=f"receipts from {provider}",
    )
    if provider == "ovh":
        return _ovh(body, received)
    return _twilio(body, received)


def _message_id(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_ID:
        raise InvalidField(f"must be the provider's message id (1-{_MAX_ID} chars)", field=field)
    return value.strip()


def _ovh(body: bytes, received: datetime) -> DeliveryReceipt | None:
    try:
        payload = json.loads(body)
    except ValueError:
        raise InvalidField("must be a JSON object", field="body") from None
    if not isinstance(payload, dict):
        raise InvalidField("must be a JSON object", field="body")
    message_id = _message_id(payload.get("id"), "id")
    dlr = payload.get("dlr")
    if isinstance(dlr, str) and dlr.isdigit():
        dlr = int(dlr)
    if dlr in _OVH_PENDING:
        return None
    if dlr not in _OVH_DELIVERED and dlr not in _OVH_FAILED:
        raise InvalidField("must be a delivery code: 1, 2, 4, 8 or 16", field="dlr")
    at = received
    if (date := payload.get("date")) is not None:
        try:
            at = datetime.fromisoformat(str(date))
        except ValueError:
            raise InvalidField("must be an ISO 8601 date", field="date") from None
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    delivered = dlr in _OVH_DELIVERED
    description = payload.get("description")
    return DeliveryReceipt(
        "ovh",
        message_id,
        ReceiptStatus.delivered if delivered else ReceiptStatus.failed,
        at,
        None if delivered else (str(description)[:500] if description else f"dlr {dlr}"),
    )


def _twilio(body: bytes, received: datetime) -> DeliveryReceipt | None:
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidField("must be form-encoded UTF-8", field="body") from None
    message_id = _message_id(form.get("MessageSid", [None])[0], "MessageSid")
    status = (form.get("MessageStatus", [""])[0] or "").strip().lower()
    if status in _TWILIO_PENDING:
        return None
    if status not in _TWILIO_DELIVERED and status not in _TWILIO_FAILED:
        raise InvalidField(
            "must be a message status: delivered, undelivered, failed, or one on the way",
            field="MessageStatus",
        )
    delivered = status in _TWILIO_DELIVERED
    code = (form.get("ErrorCode", [""])[0] or "").strip()
    return DeliveryReceipt(
        "twilio",
        message_id,
        ReceiptStatus.delivered if delivered else ReceiptStatus.failed,
        received,
        None if delivered else (f"{status} (error {code})" if code else status),
    )
