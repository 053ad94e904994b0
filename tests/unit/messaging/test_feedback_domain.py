"""Delivery feedback, pure: DSNs and ARF reports shaped like real MTAs' (Postfix, Exim,
a mailbox provider's feedback loop), an ESP's JSON events, signatures, and what each piece
of feedback changes on its message (once)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from messaging.feedback.domain import (
    Feedback,
    FeedbackKind,
    check_signature,
    decide,
    from_receipt,
    our_message_id,
    parse_email_events,
    parse_report,
)
from messaging.sms.receipts import DeliveryReceipt, ReceiptStatus
from tribune_shared.errors import InvalidField, InvalidFields
from tribune_shared.webhooks import InvalidSignature, signature_headers

DOMAIN = "parti.example.org"
RECEIVED = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
SECRET = "feedback-secret-0123456789abcdef0123456789"


def report(*parts: tuple[str, str], report_type: str = "delivery-status") -> bytes:
    """A multipart/report mail as an MTA sends it back."""
    head = (
        "From: MAILER-DAEMON@mx1.example.net (Mail Delivery System)\r\n"
        "To: bounces@parti.example.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Sat, 14 Mar 2026 10:31:00 +0100 (CET)\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="B0UND"\r\n'
        "\r\nThis is a MIME-encapsulated message.\r\n"
    )
    body = "".join(
        f"\r\n--B0UND\r\nContent-Type: {ctype}\r\n\r\n{content.strip()}\r\n"
        for ctype, content in parts
    )
    return (head + body + "\r\n--B0UND--\r\n").encode()


HUMAN = ("text/plain; charset=us-ascii", "I'm sorry to have to inform you that your message...")
RETURNED = (
    "message/rfc822",
    """
From: Parti Exemple <news@parti.example.org>
To: ana@example.org
Subject: Réunion jeudi
Message-ID: <5f2a9c1e5b7d4e0f@parti.example.org>
X-Tribune-Message-Id: 5f2a9c1e5b7d4e0f
Content-Type: text/plain

Bonjour Ana
""",
)


def status(recipients: str, per_message: str = "Reporting-MTA: dns; mx1.example.net") -> tuple:
    return ("message/delivery-status", f"{per_message.strip()}\r\n\r\n{recipients.strip()}")


POSTFIX_HARD = """
Final-Recipient: rfc822; ana@example.org
Original-Recipient: rfc822;ana@example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 <ana@example.org>: Recipient address rejected: User
    unknown in virtual mailbox table
"""


def test_a_postfix_dsn_with_a_5xx_status_is_a_hard_bounce_of_our_message():
    per_message = (
        "Reporting-MTA: dns; mx1.example.net\r\nX-Postfix-Queue-ID: 4F1B2C3D\r\n"
        "Arrival-Date: Sat, 14 Mar 2026 10:30:00 +0100 (CET)"
    )
    raw = report(HUMAN, status(POSTFIX_HARD, per_message), RETURNED)

    feedback = parse_report(raw, sender_domain=DOMAIN, received=RECEIVED)

    assert feedback is not None
    assert (feedback.kind, feedback.bounce_type) == (FeedbackKind.bounced, "hard")
    assert feedback.message_id == "5f2a9c1e5b7d4e0f"
    assert feedback.at == datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    # the diagnostic, unfolded to one line, is the reason
    assert feedback.reason.startswith("smtp; 550 5.1.1 <ana@example.org>: Recipient address")
    assert "User unknown in virtual mailbox table" in feedback.reason


def test_an_exim_delay_warning_with_a_4xx_status_and_headers_only_is_a_soft_bounce():
    exim = """
Action: delayed
Final-Recipient: rfc822;bob@example.com
Status: 4.2.2
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full
Last-Attempt-Date: Sat, 14 Mar 2026 11:00:00 +0000
Will-Retry-Until: Tue, 17 Mar 2026 09:30:00 +0000
"""
    headers_only = (
        "text/rfc822-headers",
        "From: news@parti.example.org\r\nTo: bob@example.com\r\n"
        "X-Tribune-Message-Id: abc123\r\nSubject: hi",
    )
    raw = report(HUMAN, status(exim), headers_only)

    feedback = parse_report(raw, sender_domain=DOMAIN, received=RECEIVED)

    assert feedback is not None
    assert (feedback.kind, feedback.bounce_type) == (FeedbackKind.bounced, "soft")
    assert feedback.message_id == "abc123"
    assert feedback.at == datetime(2026, 3, 14, 11, 0, tzinfo=UTC)
    assert feedback.reason == "smtp; 452 4.2.2 Mailbox full"


def test_without_the_returned_message_the_original_envelope_id_names_it():
    per_message = "Reporting-MTA: dns; mx1.example.net\r\nOriginal-Envelope-Id: msg+2D42"
    raw = report(HUMAN, status(POSTFIX_HARD, per_message))

    feedback = parse_report(raw, sender_domain=DOMAIN, received=RECEIVED)

    assert feedback is not None and feedback.message_id == "msg-42"  # xtext decoded
    assert feedback.at == datetime(2026, 3, 14, 9, 31, tzinfo=UTC)  # the report's Date


def test_a_returned_message_id_counts_only_when_it_is_of_our_sender_domain():
    ours = ("text/rfc822-headers", "Message-ID: <m77@parti.example.org>\r\nSubject: x")
    theirs = ("text/rfc822-headers", "Message-ID: <m77@elsewhere.example>\r\nSubject: x")

    mine = parse_report(report(status(POSTFIX_HARD), ours), sender_domain=DOMAIN, received=RECEIVED)
    other = parse_report(
        report(status(POSTFIX_HARD), theirs), sender_domain=DOMAIN, received=RECEIVED
    )

    assert mine is not None and mine.message_id == "m77"
    # kept as given: it names no message of ours, so looking it up finds nothing
    assert other is not None and other.message_id == "<m77@elsewhere.example>"


def test_the_worst_fate_among_the_recipients_is_the_message_s_and_relays_say_nothing():
    delivered = "Final-Recipient: rfc822; a@example.org\r\nAction: delivered\r\nStatus: 2.0.0"
    relayed = "Final-Recipient: rfc822; a@example.org\r\nAction: relayed\r\nStatus: 2.0.0"
    both = f"{delivered}\r\n\r\n{POSTFIX_HARD.strip()}"

    got_delivered = parse_report(
        report(status(delivered), RETURNED), sender_domain=DOMAIN, received=RECEIVED
    )
    got_both = parse_report(report(status(both), RETURNED), sender_domain=DOMAIN, received=RECEIVED)
    got_relayed = parse_report(
        report(status(relayed), RETURNED), sender_domain=DOMAIN, received=RECEIVED
    )

    assert got_delivered is not None and got_delivered.kind is FeedbackKind.delivered
    assert got_both is not None and got_both.bounce_type == "hard"
    assert got_relayed is None


def test_an_arf_abuse_report_is_a_complaint_and_other_feedback_types_are_not():
    def arf(feedback_type: str) -> bytes:
        fields = (
            "message/feedback-report",
            f"Feedback-Type: {feedback_type}\r\nUser-Agent: SomeISP-FBL/1.0\r\nVersion: 1\r\n"
            "Original-Rcpt-To: <ana@example.org>\r\n"
            "Arrival-Date: Sat, 14 Mar 2026 10:45:00 +0000",
        )
        return report(HUMAN, fields, RETURNED, report_type="feedback-report")

    complaint = parse_report(arf("abuse"), sender_domain=DOMAIN, received=RECEIVED)
    not_spam = parse_report(arf("not-spam"), sender_domain=DOMAIN, received=RECEIVED)

    assert complaint is not None and complaint.kind is FeedbackKind.complained
    assert complaint.message_id == "5f2a9c1e5b7d4e0f"
    assert complaint.at == datetime(2026, 3, 14, 10, 45, tzinfo=UTC)
    assert not_spam is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"Subject: hello\r\n\r\njust a mail", "body"),
        (report(HUMAN, RETURNED, report_type="disposition-notification"), "body"),
        (report(status("Final-Recipient: rfc822; a@b.org\r\nAction: failed"), RETURNED), "Status"),
        (report(status(POSTFIX_HARD)), "message_id"),
    ],
    ids=["not-a-report", "unknown-report-type", "no-status", "no-message-named"],
)
def test_a_mail_that_is_not_a_usable_report_is_refused_with_the_field(raw, field):
    with pytest.raises(InvalidField) as refused:
        parse_report(raw, sender_domain=DOMAIN, received=RECEIVED)
    assert refused.value.field == field


# ---------------------------------------------------------------- JSON events


def events(*items: dict) -> bytes:
    return json.dumps(list(items)).encode()


def test_email_events_name_our_message_by_x_tribune_id_or_message_id():
    body = events(
        {"type": "delivered", "message_id": "m1", "at": "2026-03-14T10:00:00+01:00"},
        {
            "type": "bounced",
            "message_id": "<m2@Parti.Example.org>",
            "bounce_type": "hard",
            "reason": "550 5.1.1   no such\nuser",
            "at": "2026-03-14T10:00:00Z",
            "esp_specific": {"ignored": True},
        },
        {"type": "complained", "message_id": " m3 ", "at": "2026-03-14T11:00:00Z"},
    )

    parsed = parse_email_events(body, sender_domain=DOMAIN, max_events=10)

    assert [(f.kind, f.message_id, f.bounce_type) for f in parsed] == [
        (FeedbackKind.delivered, "m1", None),
        (FeedbackKind.bounced, "m2", "hard"),
        (FeedbackKind.complained, "m3", None),
    ]
    assert parsed[0].at == datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
    assert parsed[1].reason == "550 5.1.1 no such user"


def test_every_bad_event_field_is_named_and_nothing_is_accepted():
    body = events(
        {"type": "opened", "message_id": "m1", "at": "2026-03-14T10:00:00Z"},
        {"type": "bounced", "message_id": "m2", "at": "2026-03-14T10:00:00Z"},
        {"type": "delivered", "message_id": "", "at": "2026-03-14T10:00:00"},
    )

    with pytest.raises(InvalidFields) as refused:
        parse_email_events(body, sender_domain=DOMAIN, max_events=10)

    fields = [f for f, _ in refused.value.problems]
    assert fields == ["body[0].type", "body[2].message_id", "body[2].at"]
    # the missing bounce type is checked once the shapes are right
    with pytest.raises(InvalidFields) as refused:
        parse_email_events(events(json.loads(body)[1]), sender_domain=DOMAIN, max_events=10)
    assert refused.value.problems == [
        ("body[0].bounce_type", "required for a bounce: hard or soft")
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "must be a JSON list of events"),
        (b'{"type": "delivered"}', "must be a JSON list of events"),
        (b"[]", "must hold at least one event"),
        (events(*[{"type": "delivered", "message_id": "m", "at": "x"}] * 3), "at most 2"),
    ],
)
def test_a_body_that_is_not_a_list_of_events_is_refused(body, reason):
    with pytest.raises(InvalidField) as refused:
        parse_email_events(body, sender_domain=DOMAIN, max_events=2)
    assert refused.value.field == "body"
    assert reason in refused.value.message


def test_our_message_id_keeps_foreign_ids_as_given():
    assert our_message_id("<abc@parti.example.org>", DOMAIN) == "abc"
    assert our_message_id("abc", DOMAIN) == "abc"
    assert our_message_id("<abc@other.org>", DOMAIN) == "<abc@other.org>"
    assert our_message_id("has spaces", DOMAIN) == "has spaces"


# ---------------------------------------------------------------- signatures


def test_a_webhook_is_accepted_only_with_a_valid_fresh_signature_over_the_raw_body():
    body = events({"type": "delivered", "message_id": "m1", "at": "2026-03-14T10:00:00Z"})
    now = 1_773_480_000
    headers = signature_headers(SECRET, body, timestamp=now)
    ts, sig = headers["X-Tribune-Timestamp"], headers["X-Tribune-Signature"]

    def check(secret, body=body, ts=ts, sig=sig, at=now):
        return check_signature(
            secret, ts, sig, body, now=at, tolerance_seconds=300, what="email events"
        )

    assert check(SECRET) == datetime.fromtimestamp(now, UTC)
    for refused in (
        lambda: check(None),  # no secret set: nothing is accepted
        lambda: check("another-secret-0123456789abcdef0123456789"),
        lambda: check(SECRET, body=body.replace(b"m1", b"m2")),  # altered body
        lambda: check(SECRET, sig=None),
        lambda: check(SECRET, at=now + 301),  # replayed later
    ):
        with pytest.raises(InvalidSignature):
            refused()


# ---------------------------------------------------------------- SMS receipts


def test_an_sms_receipt_is_a_delivery_or_a_soft_bounce():
    at = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
    delivered = from_receipt(DeliveryReceipt("ovh", "123", ReceiptStatus.delivered, at))
    failed = from_receipt(
        DeliveryReceipt("twilio", "SM1", ReceiptStatus.failed, at, "undelivered (error 30003)")
    )

    assert (delivered.kind, delivered.provider_key) == (FeedbackKind.delivered, ("ovh", "123"))
    assert (failed.kind, failed.bounce_type, failed.reason) == (
        FeedbackKind.bounced,
        "soft",
        "undelivered (error 30003)",
    )


# ---------------------------------------------------------------- what it changes


AT = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def sent(**fields) -> dict:
    return {"_id": "m1", "status": "sent", **fields}


def bounce(kind: str) -> Feedback:
    return Feedback(FeedbackKind.bounced, AT, "m1", bounce_type=kind, reason="550")  # type: ignore[arg-type]


def test_each_kind_of_feedback_changes_a_message_once():
    delivered = Feedback(FeedbackKind.delivered, AT, "m1")
    complained = Feedback(FeedbackKind.complained, AT, "m1")

    first = decide(sent(), delivered)
    assert first is not None
    assert (first.set_fields, first.stats) == ({"delivered_at": AT}, {"delivered": 1})
    assert decide(sent(delivered_at=AT), delivered) is None  # a retry

    complaint = decide(sent(delivered_at=AT), complained)
    assert complaint is not None and complaint.stats == {"complained": 1}
    assert decide(sent(complained_at=AT), complained) is None


def test_a_soft_bounce_then_a_hard_one_is_one_bounce_that_became_final():
    soft = decide(sent(), bounce("soft"))
    assert soft is not None
    assert soft.stats == {"bounced": 1, "bounced_by.soft": 1}
    assert soft.set_fields == {"bounced_at": AT, "bounce_type": "soft", "bounce_reason": "550"}

    hard = decide(sent(bounce_type="soft"), bounce("hard"))
    assert hard is not None and hard.upgrade
    assert hard.stats == {"bounced_by.soft": -1, "bounced_by.hard": 1}  # still one bounce
    assert hard.expect == {"bounce_type": "soft"}

    assert decide(sent(bounce_type="hard"), bounce("soft")) is None
    assert decide(sent(bounce_type="hard"), bounce("hard")) is None
    # a delivery reported after a hard bounce contradicts it: the bounce stands
    assert decide(sent(bounce_type="hard"), Feedback(FeedbackKind.delivered, AT, "m1")) is None


@pytest.mark.parametrize("status", ["queued", "held", "refused", "cancelled", "failed"])
def test_a_message_never_handed_to_a_provider_takes_no_feedback(status):
    assert decide({"_id": "m1", "status": status}, bounce("hard")) is None
