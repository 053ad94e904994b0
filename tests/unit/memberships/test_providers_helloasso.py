"""HelloAsso-style notifications: the x-ha-signature check, the optional sender allow-list,
and what Order and Payment notifications become."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from memberships.providers.domain import Capture, Ignored, Reversal
from memberships.providers.helloasso import (
    check_sender,
    compute_signature,
    read_notification,
    verify_signature,
)
from tribune_shared.errors import InvalidFields
from tribune_shared.webhooks import InvalidSignature

KEY = "AyCM0yTeQd8In2OzdP3R2HGTrYiCA818UCFLhrD9BCnNhTriWLipxEDpsaTbdfec"
BODY = b'{"eventType": "Payment", "data": {}}'
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HELLOASSO = [ipaddress.ip_network("51.138.206.200/32"), ipaddress.ip_network("4.233.135.234/32")]


# ---------------------------------------------------------------- verification


def test_the_signature_is_the_hex_hmac_of_the_raw_body():
    expected = hmac.new(KEY.encode(), BODY, hashlib.sha256).hexdigest()
    assert compute_signature(KEY, BODY) == expected
    verify_signature(KEY, expected, BODY)
    verify_signature(KEY, expected.upper(), BODY)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing x-ha-signature"),
        ("  ", "missing x-ha-signature"),
        ("sha256=" + "a" * 64, "64 hex digits"),
        ("a" * 63, "64 hex digits"),
    ],
)
def test_a_missing_or_malformed_signature_is_refused(header, reason):
    with pytest.raises(InvalidSignature, match=reason):
        verify_signature(KEY, header, BODY)


def test_a_wrong_key_or_an_altered_body_is_refused():
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(KEY, compute_signature(KEY + "x", BODY), BODY)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(KEY, compute_signature(KEY, BODY), BODY + b" ")


@pytest.mark.parametrize("address", ["51.138.206.200", "4.233.135.234", "::ffff:51.138.206.200"])
def test_helloasso_addresses_pass_the_allow_list(address):
    check_sender(HELLOASSO, address)


@pytest.mark.parametrize("address", ["51.138.206.201", "10.0.0.1", None, "not-an-ip"])
def test_other_senders_are_refused_when_a_list_is_set(address):
    with pytest.raises(InvalidSignature):
        check_sender(HELLOASSO, address)


def test_no_allow_list_checks_no_address():
    check_sender([], None)
    check_sender([], "10.0.0.1")


# ---------------------------------------------------------------- notifications

META = {"tribune_contact_id": "c-1", "tribune_purpose": "donation"}


def payment(**changes: Any) -> dict[str, Any]:
    """A payment as HelloAsso's documented examples show it."""
    body = {
        "order": {"id": 22707, "formType": "Checkout", "formSlug": "default"},
        "payer": {"email": "john@example.org", "country": "FRA"},
        "items": [{"id": 22707, "amount": 6000, "type": "Payment", "state": "Processed"}],
        "cashOutState": "Transfered",
        "id": 15222,
        "amount": 6000,
        "date": "2024-07-10T11:50:48.8859116+02:00",
        "paymentMeans": "Card",
        "installmentNumber": 1,
        "state": "Authorized",
        "meta": {"createdAt": "2024-07-10T11:50:34.0898335+02:00"},
        "refundOperations": [],
    }
    body.update(changes)
    return body


def notification(data: dict[str, Any], event_type: str = "Payment", metadata=META) -> dict:
    out: dict[str, Any] = {"data": data, "eventType": event_type}
    if metadata is not None:
        out["metadata"] = metadata
    return json.loads(json.dumps(out))


def read(payload: dict[str, Any]):
    return read_notification(payload, received_at=NOW)


def test_an_authorized_payment_is_a_captured_payment():
    result = read(notification(payment()))
    [action] = result.actions
    assert result.event_type == "Payment"
    assert isinstance(action, Capture)
    n = action.notice
    assert (n.provider, n.provider_payment_id, n.contact_id) == ("helloasso", "15222", "c-1")
    assert (n.amount_cents, n.currency, n.method, n.purpose) == (6000, "EUR", "card", "donation")
    assert n.paid_at == datetime.fromisoformat("2024-07-10T11:50:48.885911+02:00")
    assert n.captured is True


@pytest.mark.parametrize(
    ("means", "method"),
    [("Card", "card"), ("Sepa", "debit"), ("Check", "cheque"), ("Cash", "cash")],
)
def test_payment_means_map_to_methods(means, method):
    [action] = read(notification(payment(paymentMeans=means))).actions
    assert action.notice.method == method


def test_a_registered_offline_payment_is_captured_too():
    [action] = read(notification(payment(state="Registered", paymentMeans="Check"))).actions
    assert isinstance(action, Capture)


def test_an_order_records_each_authorized_payment_and_waits_for_installments():
    order = {
        "id": 22707,
        "formType": "Checkout",
        "payments": [
            payment(id=15222, amount=1000),
            payment(id=15223, amount=2000, state="Pending", date="2024-09-25T00:00:00+02:00"),
        ],
        "amount": {"total": 3000},
    }
    result = read(notification(order, "Order"))
    first, second = result.actions
    assert isinstance(first, Capture) and first.notice.provider_payment_id == "15222"
    assert first.notice.amount_cents == 1000
    assert isinstance(second, Ignored) and second.provider_payment_id == "15223"
    assert "Pending" in second.reason


def test_a_refunded_payment_is_a_refund_with_its_operation_as_reference():
    ops = [{"id": 901, "amount": 6000, "status": "Processed"}]
    [action] = read(notification(payment(state="Refunded", refundOperations=ops))).actions
    assert action == Reversal(
        provider="helloasso",
        provider_payment_id="15222",
        kind="refund",
        amount_cents=6000,
        reason="refunded on HelloAsso",
        at=NOW,
        reference="refund-901",
    )


def test_a_refunded_payment_without_operations_uses_the_payment():
    [action] = read(notification(payment(state="Refunded"))).actions
    assert isinstance(action, Reversal)
    assert (action.amount_cents, action.reference) == (6000, "15222:refunded")


def test_a_contested_payment_is_a_chargeback():
    [action] = read(notification(payment(state="Contested"))).actions
    assert isinstance(action, Reversal)
    assert (action.kind, action.reference) == ("chargeback", "15222:contested")


@pytest.mark.parametrize(
    "state", ["Pending", "Refused", "Unknown", "Refunding", "WaitingBankValidation"]
)
def test_payments_without_money_captured_are_ignored(state):
    [action] = read(notification(payment(state=state))).actions
    assert isinstance(action, Ignored) and action.provider_payment_id == "15222"


def test_refunds_and_ignored_states_need_no_tribune_metadata():
    # a donation form's payment refunded later: no checkout metadata is needed to reverse
    [action] = read(notification(payment(state="Refunded"), metadata=None)).actions
    assert isinstance(action, Reversal)


@pytest.mark.parametrize("event_type", ["Form", "Organization"])
def test_other_notifications_are_ignored(event_type):
    [action] = read(notification({"whatever": 1}, event_type)).actions
    assert isinstance(action, Ignored)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"data": payment()}, "eventType"),
        (notification(payment(), metadata=None), "metadata"),
        (notification(payment(), metadata={"tribune_purpose": "dues"}), "tribune_contact_id"),
        (notification(payment(amount=0)), "data.amount"),
        (notification(payment(amount="60")), "data.amount"),
        (notification(payment(date="yesterday")), "data.date"),
        (notification(payment(date="2024-07-10T11:50:48")), "data.date"),
        (notification(payment(paymentMeans="Bitcoin")), "data.paymentMeans"),
        (notification(payment(id=None)), "data.id"),
        (notification({"id": 1, "payments": "none"}, "Order"), "data.payments"),
        (notification({"id": 1, "payments": [payment(amount=-5)]}, "Order"), "payments[0].amount"),
        ({"eventType": "Payment", "data": [1]}, "data"),
    ],
)
def test_a_malformed_notification_names_the_field(payload, field):
    with pytest.raises(InvalidFields) as caught:
        read(payload)
    fields = [f for f, _ in caught.value.problems]
    assert any(f.endswith(field) for f in fields), fields
