"""Delivery receipts: only a body signed with the provider's secret, within the tolerance,
is read; each provider style parses to (provider message id, delivered|failed, at)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from messaging.settings import MessagingSettings
from messaging.sms.receipts import ReceiptStatus, parse_receipt, receipt_secret
from tribune_shared.errors import InvalidField
from tribune_shared.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidSignature,
    signature_headers,
)

SECRET = "receipt-secret-0123456789-0123456789"
NOW = 1_700_000_000


def parse(provider, body: bytes, *, secret=SECRET, signed_with=SECRET, at=NOW, now=NOW):
    headers = signature_headers(signed_with, body, timestamp=at)
    return parse_receipt(
        provider,
        body,
        headers[TIMESTAMP_HEADER],
        headers[SIGNATURE_HEADER],
        secret=secret,
        now=now,
        tolerance_seconds=300,
    )


def ovh_body(**fields) -> bytes:
    return json.dumps({"id": 123456789, "receiver": "+33612345678", **fields}).encode()


def twilio_body(**fields) -> bytes:
    return urlencode({"MessageSid": "SMabc", "To": "+33612345678", **fields}).encode()


def test_ovh_delivered_receipt() -> None:
    receipt = parse("ovh", ovh_body(dlr=1, date="2026-03-02T10:00:05+00:00"))
    assert receipt is not None
    assert (receipt.provider, receipt.provider_message_id) == ("ovh", "123456789")
    assert receipt.status is ReceiptStatus.delivered and receipt.reason is None
    assert receipt.at == datetime(2026, 3, 2, 10, 0, 5, tzinfo=UTC)


def test_ovh_failed_receipt_keeps_the_description() -> None:
    receipt = parse("ovh", ovh_body(dlr=2, description="Not delivered"))
    assert receipt is not None and receipt.status is ReceiptStatus.failed
    assert receipt.reason == "Not delivered"
    assert receipt.at == datetime.fromtimestamp(NOW, UTC)  # no date: when it was signed


def test_twilio_receipts() -> None:
    delivered = parse("twilio", twilio_body(MessageStatus="delivered"))
    assert delivered is not None and delivered.status is ReceiptStatus.delivered
    assert delivered.provider_message_id == "SMabc"
    failed = parse("twilio", twilio_body(MessageStatus="undelivered", ErrorCode="30003"))
    assert failed is not None and failed.status is ReceiptStatus.failed
    assert failed.reason == "undelivered (error 30003)"


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("ovh", ovh_body(dlr=4)),
        ("ovh", ovh_body(dlr="8")),
        ("twilio", twilio_body(MessageStatus="sent")),
        ("twilio", twilio_body(MessageStatus="queued")),
    ],
)
def test_a_receipt_on_the_way_is_not_final(provider, body) -> None:
    assert parse(provider, body) is None


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        parse("ovh", ovh_body(dlr=1), signed_with="another-secret-0123456789-01234567")


def test_a_stale_receipt_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="tolerance"):
        parse("twilio", twilio_body(MessageStatus="delivered"), at=NOW - 301)


def test_a_provider_without_secret_gets_no_receipt_in() -> None:
    with pytest.raises(InvalidSignature, match="no secret"):
        parse("ovh", ovh_body(dlr=1), secret=None)


def test_unsigned_receipt_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="missing"):
        parse_receipt(
            "ovh", ovh_body(dlr=1), None, None, secret=SECRET, now=NOW, tolerance_seconds=300
        )


@pytest.mark.parametrize(
    ("provider", "body", "field"),
    [
        ("ovh", b"not json", "body"),
        ("ovh", json.dumps({"dlr": 1}).encode(), "id"),
        ("ovh", ovh_body(dlr=3), "dlr"),
        ("ovh", ovh_body(dlr=1, date="yesterday"), "date"),
        ("twilio", urlencode({"MessageStatus": "delivered"}).encode(), "MessageSid"),
        ("twilio", twilio_body(MessageStatus="lost"), "MessageStatus"),
    ],
)
def test_a_signed_but_malformed_receipt_is_a_422_on_the_field(provider, body, field) -> None:
    with pytest.raises(InvalidField) as caught:
        parse(provider, body)
    assert caught.value.field == field


def test_receipt_secret_comes_from_the_providers_setting() -> None:
    settings = MessagingSettings(sms_twilio_receipt_secret=SECRET)
    assert receipt_secret(settings, "twilio") == SECRET
    assert receipt_secret(settings, "ovh") is None
