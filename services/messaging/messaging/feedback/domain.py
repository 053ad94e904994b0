"""Delivery feedback (pure): parse what providers post, classify it, and decide what it
changes on its message.

Three ways in, one ``Feedback`` out:

- SMS delivery receipts: ``messaging.sms.receipts`` parses them (delivered, or failed:
  a failed SMS is a *soft* bounce, since an operator's "undelivered" does not say whether
  the number is gone for good, and a phone number put on the suppression list by mistake
  would never be texted again).
- An ESP's JSON events (``parse_email_events``): a list of
  ``{"type": "delivered"|"bounced"|"complained", "message_id", "bounce_type": "hard"|"soft",
  "reason", "at"}``; ``message_id`` is our ``X-Tribune-Message-Id`` or our ``Message-ID``.
- A report mail (``parse_report``), read with the stdlib ``email`` package: a DSN (RFC 3464,
  ``multipart/report; report-type=delivery-status``: Status 5.x.x is a hard bounce, 4.x.x a
  soft one, 2.x.x or Action ``delivered`` a delivery) or an ARF complaint (RFC 5965,
  ``report-type=feedback-report`` with ``Feedback-Type: abuse``). The message is the
  returned part's ``X-Tribune-Message-Id``, else the DSN's ``Original-Envelope-Id``, else
  the returned part's ``Message-ID`` when it is of our sender domain.

Each message takes each kind of feedback once (providers retry): ``decide`` compares the
feedback with the message's fields and returns the change, with the guard that makes the
write apply only once, or None for a duplicate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from tribune_shared.errors import InvalidField, InvalidFields
from tribune_shared.webhooks import signed_at

from messaging.domain import MessageStatus
from messaging.sms.receipts import DeliveryReceipt, ReceiptStatus

BounceType = Literal["hard", "soft"]

#: provider reasons are kept this long (a diagnostic line, not a mail)
REASON_MAX_CHARS = 500
#: our message ids (``X-Tribune-Message-Id``, the local part of our ``Message-ID``)
_OUR_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: RFC 3464 status: class.subject.detail
_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
#: RFC 3461 xtext: "+" and two hex digits stand for one byte
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")
#: the parts of a report that carry the returned message (whole, or its headers only)
_RETURNED = ("message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers")
#: message states that were handed to a provider: only they can have feedback
_HANDED_OVER = frozenset({MessageStatus.sending.value, MessageStatus.sent.value})


class FeedbackKind(StrEnum):
    delivered = "delivered"
    bounced = "bounced"
    complained = "complained"


@dataclass(frozen=True)
class Feedback:
    """What a provider says happened to one message. Email feedback names our message id;
    an SMS receipt names the provider's id for the message."""

    kind: FeedbackKind
    at: datetime
    message_id: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    bounce_type: BounceType | None = None
    reason: str = ""

    @property
    def provider_key(self) -> tuple[str, str] | None:
        if self.provider is None or self.provider_message_id is None:
            return None
        return (self.provider, self.provider_message_id)


# ---------------------------------------------------------------- signatures


#: the one check of a signed webhook (tribune_shared.webhooks.signed_at)
check_signature = signed_at


# ---------------------------------------------------------------- SMS receipts


def from_receipt(receipt: DeliveryReceipt) -> Feedback:
    """An SMS receipt as feedback: delivered, or a soft bounce with the operator's words."""
    bounce: BounceType | None = None
    kind = FeedbackKind.delivered
    if receipt.status is not ReceiptStatus.delivered:
        kind, bounce = FeedbackKind.bounced, "soft"
    return Feedback(
        kind,
        _utc(receipt.at),
        provider=receipt.provider,
        provider_message_id=receipt.provider_message_id,
        bounce_type=bounce,
        reason=_reason(receipt.reason),
    )


# ---------------------------------------------------------------- our message ids


def our_message_id(value: str, sender_domain: str) -> str:
    """Our message id from an ``X-Tribune-Message-Id`` (``abc``) or a ``Message-ID``
    (``<abc@our-domain>``). Anything else comes back as given: it names no message of ours,
    and looking it up finds nothing."""
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    local, at, domain = text.rpartition("@")
    if at:
        if domain.lower() != sender_domain.lower():
            return value.strip()
        text = local
    return text if _OUR_ID.match(text) else value.strip()


# ---------------------------------------------------------------- email events (JSON)


class EmailEvent(BaseModel):
    """One event of the email events webhook (unknown fields are ignored: ESPs add some)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: FeedbackKind = Field(description="delivered, bounced or complained")
    message_id: str = Field(
        min_length=1,
        max_length=998,
        description="our X-Tribune-Message-Id, or our Message-ID (<id@sender-domain>)",
    )
    bounce_type: BounceType | None = Field(
        default=None, description="hard (the address is gone) or soft; required for a bounce"
    )
    reason: str = Field(default="", description="the provider's words (kept to 500 chars)")
    at: AwareDatetime = Field(description="when it happened, with a time zone")


_EVENTS = TypeAdapter(list[EmailEvent])


def parse_email_events(body: bytes, *, sender_domain: str, max_events: int) -> list[Feedback]:
    """The events of a verified body; ``InvalidFields`` (422) listing every bad field
    (``body[3].message_id``) otherwise, and then none is recorded."""
    try:
        raw: Any = json.loads(body)
    except ValueError:
        raise InvalidField("must be a JSON list of events", field="body") from None
    if not isinstance(raw, list):
        raise InvalidField("must be a JSON list of events", field="body")
    if not raw:
        raise InvalidField("must hold at least one event", field="body")
    if len(raw) > max_events:
        raise InvalidField(f"holds {len(raw)} events; at most {max_events} per call", field="body")
    problems: list[tuple[str, str]] = []
    try:
        events = _EVENTS.validate_python(raw)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.get("loc", ())
            )
            problems.append((f"body{where}", error["msg"]))
        raise InvalidFields(problems) from None
    for index, event in enumerate(events):
        if event.type is FeedbackKind.bounced and event.bounce_type is None:
            problems.append((f"body[{index}].bounce_type", "required for a bounce: hard or soft"))
    if problems:
        raise InvalidFields(problems)
    return [
        Feedback(
            event.type,
            _utc(event.at),
            message_id=our_message_id(event.message_id, sender_domain),
            bounce_type=event.bounce_type if event.type is FeedbackKind.bounced else None,
            reason=_reason(event.reason),
        )
        for event in events
    ]


# ---------------------------------------------------------------- report mails (DSN, ARF)


def parse_report(raw: bytes, *, sender_domain: str, received: datetime) -> Feedback | None:
    """The feedback of a DSN or an ARF complaint report; None when it reports nothing to
    record (a DSN of a relay, an ARF report that is not a complaint). ``InvalidField``
    (422) when it is not such a report or names no message."""
    try:
        report = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception:  # the stdlib parser is lenient; this is a body it cannot even split
        raise InvalidField("must be a MIME message", field="body") from None
    if report.get_content_type() != "multipart/report":
        raise InvalidField(
            "must be a multipart/report message (an RFC 3464 delivery status notification "
            "or an RFC 5965 feedback report)",
            field="body",
        )
    parts = {part.get_content_type(): part for part in report.iter_parts()}
    report_type = str(report.get_param("report-type") or "").lower()
    returned = _returned_headers(parts)
    if report_type == "feedback-report" or "message/feedback-report" in parts:
        return _complaint(parts, returned, report, sender_domain, received)
    if report_type == "delivery-status" or "message/delivery-status" in parts:
        return _delivery_status(parts, returned, report, sender_domain, received)
    raise InvalidField(
        f"report-type {report_type!r} is neither delivery-status nor feedback-report",
        field="body",
    )


def _blocks(part: Message | None) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    if part is None:
        return []
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, str):  # a parser that kept it as text
        return [
            HeaderParser(policy=policy.default).parsestr(chunk)
            for chunk in re.split(r"\r?\n\r?\n", payload.strip())
            if chunk.strip()
        ]
    return []


def _returned_headers(parts: Mapping[str, Message]) -> Message | None:
    """The headers of the returned original message, whichever form it came in."""
    for content_type in _RETURNED:
        part = parts.get(content_type)
        if part is None:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        if isinstance(part, EmailMessage):
            text = part.get_content()
            if isinstance(text, str):
                return HeaderParser(policy=policy.default).parsestr(text)
    return None


def _message_id(returned: Message | None, envelope_id: str | None, sender_domain: str) -> str:
    if returned is not None and (ours := returned.get("X-Tribune-Message-Id")):
        return our_message_id(str(ours), sender_domain)
    if envelope_id:
        return our_message_id(_XTEXT.sub(lambda m: chr(int(m.group(1), 16)), envelope_id), "")
    if returned is not None and (mid := returned.get("Message-ID")):
        return our_message_id(str(mid), sender_domain)
    raise InvalidField(
        "names no message: the returned message has no X-Tribune-Message-Id nor Message-ID, "
        "and there is no Original-Envelope-Id",
        field="message_id",
    )


def _delivery_status(
    parts: Mapping[str, Message],
    returned: Message | None,
    report: Message,
    sender_domain: str,
    received: datetime,
) -> Feedback | None:
    blocks = _blocks(parts.get("message/delivery-status"))
    if len(blocks) < 2:
        raise InvalidField(
            "must hold a message/delivery-status part with per-message and per-recipient fields",
            field="body",
        )
    per_message, recipients = blocks[0], blocks[1:]
    message_id = _message_id(returned, _header(per_message, "Original-Envelope-Id"), sender_domain)
    found: list[tuple[int, Feedback]] = []
    for block in recipients:
        action = (_header(block, "Action") or "").lower()
        status = _header(block, "Status")
        match = _STATUS.match(status or "")
        if match is None:
            raise InvalidField("must be an RFC 3464 status such as 5.1.1", field="Status")
        at = (
            _date(_header(block, "Last-Attempt-Date"))
            or _date(_header(per_message, "Arrival-Date"))
            or _date(str(report.get("Date") or ""))
            or received
        )
        code = match.group(1)
        reason = _reason(_header(block, "Diagnostic-Code") or f"{status} ({action or 'no action'})")
        if code in ("5", "4"):
            bounce: BounceType = "hard" if code == "5" else "soft"
            feedback = Feedback(
                FeedbackKind.bounced, at, message_id, bounce_type=bounce, reason=reason
            )
            found.append((3 if bounce == "hard" else 2, feedback))
        elif action == "delivered":
            found.append((1, Feedback(FeedbackKind.delivered, at, message_id)))
        # 2.x.x "relayed" / "expanded": passed on, not delivered: nothing to record yet
    # one message per report: the worst fate among its recipients is its fate
    return max(found, key=lambda pair: pair[0])[1] if found else None


def _complaint(
    parts: Mapping[str, Message],
    returned: Message | None,
    report: Message,
    sender_domain: str,
    received: datetime,
) -> Feedback | None:
    blocks = _blocks(parts.get("message/feedback-report"))
    if not blocks:
        raise InvalidField("must hold a message/feedback-report part", field="body")
    fields = blocks[0]
    feedback_type = (_header(fields, "Feedback-Type") or "").lower()
    if not feedback_type:
        raise InvalidField("is required (abuse for a complaint)", field="Feedback-Type")
    if feedback_type != "abuse":
        return None  # not-spam, fraud, virus, other: not the person's complaint
    message_id = _message_id(returned, None, sender_domain)
    at = _date(_header(fields, "Arrival-Date")) or _date(str(report.get("Date") or "")) or received
    return Feedback(FeedbackKind.complained, at, message_id, reason="abuse report")


def _header(block: Message, name: str) -> str | None:
    value = block.get(name)
    return str(value).strip() if value is not None and str(value).strip() else None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return _utc(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError):
        return None


def _utc(at: datetime) -> datetime:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)


def _reason(text: str | None) -> str:
    return " ".join((text or "").split())[:REASON_MAX_CHARS]


# ---------------------------------------------------------------- what it changes


@dataclass(frozen=True)
class Change:
    """What one piece of feedback does to its message: the fields set (only on a message
    still matching ``expect``, so a concurrent twin applies once), the campaign counters
    added, and whether its event goes out."""

    set_fields: dict[str, Any]
    expect: dict[str, Any]
    stats: dict[str, int] = field(default_factory=dict)
    #: a hard bounce after a soft one: the message was already counted as bounced
    upgrade: bool = False


def handed_over(message: Mapping[str, Any]) -> bool:
    """Whether the message reached a provider (only such a message can have feedback)."""
    return message.get("status") in _HANDED_OVER


def decide(message: Mapping[str, Any], feedback: Feedback) -> Change | None:
    """The change ``feedback`` makes to ``message`` (its stored fields), or None when it
    changes nothing: the same feedback again (a provider retry), a delivery reported
    after a hard bounce, or a message never handed to a provider."""
    if not handed_over(message):
        return None
    at = feedback.at
    if feedback.kind is FeedbackKind.delivered:
        if message.get("delivered_at") is not None or message.get("bounce_type") == "hard":
            return None
        return Change(
            {"delivered_at": at},
            {"delivered_at": None, "bounce_type": {"$ne": "hard"}},
            {"delivered": 1},
        )
    if feedback.kind is FeedbackKind.complained:
        if message.get("complained_at") is not None:
            return None
        return Change({"complained_at": at}, {"complained_at": None}, {"complained": 1})
    bounce = feedback.bounce_type or "soft"
    fields = {"bounced_at": at, "bounce_type": bounce, "bounce_reason": feedback.reason}
    before = message.get("bounce_type")
    if before is None:
        return Change(fields, {"bounce_type": None}, {"bounced": 1, f"bounced_by.{bounce}": 1})
    if before == "soft" and bounce == "hard":  # the provider gave up: now it is final
        return Change(
            fields,
            {"bounce_type": "soft"},
            {"bounced_by.soft": -1, "bounced_by.hard": 1},
            upgrade=True,
        )
    return None
