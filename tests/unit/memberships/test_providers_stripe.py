"""Stripe-style webhooks: the Stripe-Signature check at its boundaries (tolerance, several
v1, wrong secret, other schemes) and what each event type becomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from memberships.providers.domain import METADATA_KEYS, Capture, Ignored, Reversal
from memberships.providers.stripe import (
    compute_signature,
    parse_signature_header,
    read_event,
    signature_header,
    verify_signature,
)
from tribune_shared.errors import InvalidFields
from tribune_shared.webhooks import InvalidSignature

SECRET = "whsec_unit-test-secret-0123456789abcdef"
OTHER = "whsec_another-secret-0123456789abcdefgh"
NOW = 1_760_000_000
BODY = b'{"id": "evt_1", "type": "payment_intent.succeeded"}'


def verify(header: str | None, body: bytes = BODY, *, now: float = NOW, tolerance: int = 300):
    return verify_signature(SECRET, header, body, now=now, tolerance_seconds=tolerance)


# ---------------------------------------------------------------- signature


def test_a_header_signed_with_the_secret_passes_and_gives_its_timestamp():
    assert verify(signature_header(SECRET, BODY, NOW)) == NOW


def test_the_signed_payload_is_timestamp_dot_raw_body():
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert compute_signature(SECRET, NOW, BODY) == expected
    assert verify(f"t={NOW},v1={expected}") == NOW


@pytest.mark.parametrize("skew", [-300, 300])
def test_a_timestamp_at_the_tolerance_passes(skew):
    assert verify(signature_header(SECRET, BODY, NOW + skew)) == NOW + skew


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_timestamp_one_second_beyond_the_tolerance_is_refused(skew):
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify(signature_header(SECRET, BODY, NOW + skew))


def test_any_of_several_v1_signatures_may_match():
    # Stripe signs with the old and the new secret while a rolled secret is live
    assert verify(signature_header([OTHER, SECRET], BODY, NOW)) == NOW
    assert verify(signature_header([SECRET, OTHER], BODY, NOW)) == NOW


def test_a_wrong_secret_is_refused():
    with pytest.raises(InvalidSignature, match="no v1 signature matches"):
        verify(signature_header(OTHER, BODY, NOW))


def test_an_altered_body_is_refused():
    header = signature_header(SECRET, BODY, NOW)
    with pytest.raises(InvalidSignature, match="no v1 signature matches"):
        verify(header, BODY.replace(b"evt_1", b"evt_2"))


def test_v0_and_unknown_elements_are_discarded():
    header = signature_header(SECRET, BODY, NOW, v0=True) + ",foo=bar,junk"
    assert verify(header) == NOW


def test_a_v0_signature_alone_is_not_enough():
    v0 = compute_signature(SECRET, NOW, BODY)
    with pytest.raises(InvalidSignature, match="no v1 signature"):
        verify(f"t={NOW},v0={v0}")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing Stripe-Signature"),
        ("", "missing Stripe-Signature"),
        ("v1=" + "a" * 64, "one timestamp"),
        (f"t=soon,v1={'a' * 64}", "one timestamp"),
        (f"t={NOW},t={NOW},v1={'a' * 64}", "one timestamp"),
        (f"t={NOW}", "no v1 signature"),
        (f"t={NOW},v1=not-hex", "no v1 signature matches"),
    ],
)
def test_malformed_headers_are_refused_with_the_reason(header, reason):
    with pytest.raises(InvalidSignature, match=reason):
        verify(header)


def test_the_signature_is_checked_before_the_timestamp():
    # a stale and forged header says it is forged (nothing about the clock)
    with pytest.raises(InvalidSignature, match="no v1 signature matches"):
        verify(signature_header(OTHER, BODY, NOW - 10_000))


def test_parse_keeps_the_timestamp_text_and_every_v1():
    parsed = parse_signature_header(f" t={NOW} , v1={'a' * 64}, v1={'B' * 64}")
    assert parsed.timestamp == str(NOW)
    assert parsed.signatures == ("a" * 64, "B" * 64)


# ---------------------------------------------------------------- events

META = {
    "tribune_contact_id": "c-1",
    "tribune_purpose": "dues",
    "tribune_plan": "annual",
    "tribune_rate": "student",
    "other_integration": "kept out",
}


def event(event_type: str, obj: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "evt_1",
        "object": "event",
        "type": event_type,
        "created": NOW,
        "livemode": False,
        "data": {"object": obj},
        **extra,
    }


def intent(**changes: Any) -> dict[str, Any]:
    obj = {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 3000,
        "amount_received": 3000,
        "currency": "eur",
        "payment_method_types": ["card"],
        "metadata": dict(META),
        "status": "succeeded",
    }
    obj.update(changes)
    return obj


def session(**changes: Any) -> dict[str, Any]:
    obj = {
        "id": "cs_1",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "payment_intent": "pi_1",
        "amount_total": 3000,
        "currency": "eur",
        "payment_method_types": ["card", "sepa_debit"],
        "metadata": dict(META),
    }
    obj.update(changes)
    return obj


def only(ev) -> Any:
    [action] = ev.actions
    return action


def test_payment_intent_succeeded_is_a_captured_payment():
    ev = read_event(event("payment_intent.succeeded", intent()))
    assert (ev.event_id, ev.type) == ("evt_1", "payment_intent.succeeded")
    action = only(ev)
    assert isinstance(action, Capture)
    n = action.notice
    assert (n.provider, n.provider_payment_id, n.contact_id) == ("stripe", "pi_1", "c-1")
    assert (n.amount_cents, n.currency, n.method, n.purpose) == (3000, "EUR", "card", "dues")
    assert (n.plan, n.rate, n.captured) == ("annual", "student", True)
    assert n.paid_at == datetime.fromtimestamp(NOW, UTC)


def test_checkout_session_completed_is_recorded_under_its_payment_intent():
    # both events of one payment name the same provider payment: it is recorded once
    a = only(read_event(event("checkout.session.completed", session())))
    b = only(read_event(event("payment_intent.succeeded", intent())))
    assert isinstance(a, Capture) and isinstance(b, Capture)
    assert a.notice.provider_payment_id == b.notice.provider_payment_id == "pi_1"
    assert a.notice.amount_cents == 3000


def test_an_unpaid_checkout_session_is_ignored():
    action = only(read_event(event("checkout.session.completed", session(payment_status="unpaid"))))
    assert isinstance(action, Ignored) and "not paid" in action.reason


def test_async_payment_succeeded_records_a_delayed_payment():
    action = only(read_event(event("checkout.session.async_payment_succeeded", session())))
    assert isinstance(action, Capture) and action.notice.provider_payment_id == "pi_1"


@pytest.mark.parametrize(
    ("types", "charge", "method"),
    [
        (["sepa_debit"], None, "debit"),
        (["customer_balance"], None, "transfer"),
        (["card", "sepa_debit"], None, "card"),
        (["card", "sepa_debit"], {"payment_method_details": {"type": "sepa_debit"}}, "debit"),
    ],
)
def test_the_method_is_the_one_used(types, charge, method):
    obj = intent(payment_method_types=types, latest_charge=charge)
    assert only(read_event(event("payment_intent.succeeded", obj))).notice.method == method


def test_a_gift_carries_the_donor_declaration_and_no_plan():
    meta = {
        "tribune_contact_id": "c-2",
        "tribune_purpose": "donation",
        "tribune_plan": "annual",
        "tribune_donor_natural_person": "true",
        "tribune_donor_nationality": "fr",
        "tribune_donor_resides_in_france": "false",
        "tribune_election_id": "muni-2026",
    }
    n = only(read_event(event("payment_intent.succeeded", intent(metadata=meta)))).notice
    assert (n.purpose, n.plan, n.election_id) == ("donation", None, "muni-2026")
    assert n.donor is not None
    assert (n.donor.natural_person, n.donor.nationality, n.donor.resides_in_france) == (
        True,
        "FR",
        False,
    )


def test_a_recurring_payment_names_its_schedule():
    meta = {**META, "tribune_schedule_id": "sched-1"}
    n = only(read_event(event("payment_intent.succeeded", intent(metadata=meta)))).notice
    assert n.schedule_id == "sched-1"


def test_dues_of_an_elected_official_say_so():
    meta = {**META, "tribune_elected_official": "true"}
    n = only(read_event(event("payment_intent.succeeded", intent(metadata=meta)))).notice
    assert n.elected_official is True


def test_charge_refunded_reverses_with_the_latest_refund():
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_1",
        "amount": 3000,
        "amount_refunded": 3000,
        "refunded": True,
        "refunds": {
            "data": [
                {"id": "re_2", "amount": 2000, "reason": "requested_by_customer", "created": NOW},
                {"id": "re_1", "amount": 1000, "created": NOW - 60},
            ]
        },
    }
    action = only(read_event(event("charge.refunded", charge)))
    assert action == Reversal(
        provider="stripe",
        provider_payment_id="pi_1",
        kind="refund",
        amount_cents=2000,
        reason="refunded by Stripe (requested_by_customer)",
        at=datetime.fromtimestamp(NOW, UTC),
        reference="re_2",
    )


def test_charge_refunded_without_the_refund_list_uses_the_amount_refunded():
    charge = {"id": "ch_1", "payment_intent": "pi_1", "amount": 3000, "amount_refunded": 3000}
    action = only(read_event(event("charge.refunded", charge)))
    assert isinstance(action, Reversal)
    assert (action.amount_cents, action.reference) == (3000, "ch_1:refunded:3000")


def dispute(status: str = "needs_response") -> dict[str, Any]:
    return {
        "id": "dp_1",
        "object": "dispute",
        "charge": "ch_1",
        "payment_intent": "pi_1",
        "amount": 3000,
        "reason": "fraudulent",
        "status": status,
    }


def test_a_lost_dispute_is_a_chargeback():
    action = only(read_event(event("charge.dispute.closed", dispute("lost"))))
    assert isinstance(action, Reversal)
    assert (action.kind, action.provider_payment_id, action.reference) == (
        "chargeback",
        "pi_1",
        "dp_1",
    )
    assert action.amount_cents == 3000 and "fraudulent" in action.reason


@pytest.mark.parametrize("status", ["won", "warning_closed"])
def test_a_dispute_closed_otherwise_leaves_the_payment(status):
    action = only(read_event(event("charge.dispute.closed", dispute(status))))
    assert isinstance(action, Ignored) and status in action.reason


def test_an_opened_dispute_waits_for_its_outcome_by_default():
    action = only(read_event(event("charge.dispute.created", dispute())))
    assert isinstance(action, Ignored) and action.provider_payment_id == "pi_1"


def test_an_opened_dispute_reverses_at_once_when_configured():
    ev = read_event(event("charge.dispute.created", dispute()), dispute_reversal="created")
    action = only(ev)
    assert isinstance(action, Reversal) and action.kind == "chargeback"
    # closing it lost later is the same reversal (same reference): applied once
    later = only(
        read_event(event("charge.dispute.closed", dispute("lost")), dispute_reversal="created")
    )
    assert isinstance(later, Reversal) and later.reference == action.reference


def test_a_dispute_of_a_charge_without_payment_intent_names_the_charge():
    obj = {**dispute("lost"), "payment_intent": None}
    assert only(read_event(event("charge.dispute.closed", obj))).provider_payment_id == "ch_1"


@pytest.mark.parametrize(
    "event_type", ["customer.created", "invoice.paid", "payment_intent.created", "charge.succeeded"]
)
def test_unknown_event_types_are_ignored(event_type):
    # even with a data object Tribune cannot read: it is not looked at
    action = only(read_event(event(event_type, {"weird": True})))
    assert isinstance(action, Ignored) and event_type in action.reason


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "payment_intent.succeeded", "created": NOW}, "id"),
        ({"id": "evt_1", "created": NOW}, "type"),
        (
            event("payment_intent.succeeded", intent(metadata={})),
            "data.object.metadata.tribune_contact_id",
        ),
        (
            event("payment_intent.succeeded", intent(metadata={**META, "tribune_purpose": "x"})),
            "data.object.metadata.tribune_purpose",
        ),
        (
            event(
                "payment_intent.succeeded",
                intent(metadata={**META, "tribune_contact_id": "a b"}),
            ),
            "data.object.metadata.tribune_contact_id",
        ),
        (event("payment_intent.succeeded", intent(amount_received=0)), "amount_received"),
        (event("payment_intent.succeeded", intent(currency="euro")), "data.object.currency"),
        (event("payment_intent.succeeded", intent(metadata=None)), "data.object.metadata"),
        ({**event("payment_intent.succeeded", intent()), "data": []}, "data"),
        (event("checkout.session.completed", session(payment_intent=None)), "payment_intent"),
    ],
)
def test_a_malformed_event_names_the_field(payload, field):
    with pytest.raises(InvalidFields) as caught:
        read_event(json.loads(json.dumps(payload)))
    fields = [f for f, _ in caught.value.problems]
    assert any(f.endswith(field) for f in fields), fields


def test_the_metadata_keys_are_documented_ones():
    assert set(METADATA_KEYS) == {
        "tribune_contact_id",
        "tribune_purpose",
        "tribune_plan",
        "tribune_rate",
        "tribune_elected_official",
        "tribune_election_id",
        "tribune_donor_natural_person",
        "tribune_donor_nationality",
        "tribune_donor_resides_in_france",
        "tribune_schedule_id",
    }
