"""The fake payment providers speak what memberships reads: their signatures verify with
memberships' checks, and every notification they send maps to the payment, refund or
chargeback it stands for."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest
from memberships.providers import helloasso, stripe
from memberships.providers.domain import Capture, Ignored, Reversal
from tribune_devstack.fake_payments import (
    Config,
    FakePayments,
    helloasso_signature,
    stripe_signature,
)

SECRET = "whsec_fake-" + "s" * 32
KEY = "ha-key-" + "k" * 40
GIFT = {
    "contact_id": "c-1",
    "amount_cents": 5000,
    "purpose": "donation",
    "donor": {"natural_person": True, "nationality": "FR", "resides_in_france": True},
}


def test_signatures_verify_with_memberships_checks():
    body = b'{"id": "evt_1"}'
    now = int(time.time())
    header = stripe_signature(SECRET, body, now)
    assert stripe.verify_signature(SECRET, header, body, now=now, tolerance_seconds=300) == now
    helloasso.verify_signature(KEY, helloasso_signature(KEY, body), body)


def bodies(fake: FakePayments, provider: str) -> list[dict]:
    return [json.loads(json.dumps(n.body)) for n in fake.notifications if n.provider == provider]


def test_a_stripe_checkout_refund_and_lost_dispute_read_as_memberships_reads_them():
    fake = FakePayments(Config())  # no webhook URL: recorded, not sent
    status, answer = fake.stripe_checkout({**GIFT, "method": "sepa_debit"})
    assert status == 201
    events = [stripe.read_event(b) for b in bodies(fake, "stripe")]
    assert [e.type for e in events] == ["payment_intent.succeeded", "checkout.session.completed"]
    captures = [e.actions[0] for e in events]
    assert all(isinstance(c, Capture) for c in captures)
    notices = [c.notice for c in captures if isinstance(c, Capture)]
    assert {n.provider_payment_id for n in notices} == {answer["payment_intent"]}
    n = notices[0]
    assert (n.contact_id, n.amount_cents, n.currency, n.method, n.purpose) == (
        "c-1",
        5000,
        "EUR",
        "debit",
        "donation",
    )
    assert n.donor is not None and n.donor.nationality == "FR"
    assert all(n.state == "not sent: no webhook URL" for n in fake.notifications)

    assert fake.stripe_refund({"payment_intent": answer["payment_intent"]})[0] == 201
    refund = stripe.read_event(bodies(fake, "stripe")[-1]).actions[0]
    assert isinstance(refund, Reversal)
    assert (refund.kind, refund.amount_cents) == ("refund", 5000)
    assert refund.reference.startswith("re_")
    assert fake.stripe_refund({"payment_intent": answer["payment_intent"]})[0] == 409

    fake.stripe_dispute({"payment_intent": answer["payment_intent"], "close": "lost"})
    opened, lost = (stripe.read_event(b).actions[0] for b in bodies(fake, "stripe")[-2:])
    assert isinstance(opened, Ignored)
    assert isinstance(lost, Reversal) and lost.kind == "chargeback"


def test_a_helloasso_checkout_refund_and_contest_read_as_memberships_reads_them():
    fake = FakePayments(Config())
    status, answer = fake.helloasso_checkout({**GIFT, "means": "Card"})
    assert status == 201
    now = datetime.now(UTC)
    read = [helloasso.read_notification(b, received_at=now) for b in bodies(fake, "helloasso")]
    assert [r.event_type for r in read] == ["Order", "Payment"]
    for r in read:
        [capture] = r.actions
        assert isinstance(capture, Capture)
        assert capture.notice.provider_payment_id == str(answer["payment_id"])
        assert capture.notice.amount_cents == 5000

    assert fake.helloasso_refund({"payment_id": answer["payment_id"]})[0] == 201
    [refund] = helloasso.read_notification(bodies(fake, "helloasso")[-1], received_at=now).actions
    assert isinstance(refund, Reversal) and refund.reference.startswith("refund-")
    # a refunded payment cannot be contested any more
    assert fake.helloasso_dispute({"payment_id": answer["payment_id"]})[0] == 409


@pytest.mark.parametrize(
    ("path", "payload", "error"),
    [
        ("/stripe/checkout", {"amount_cents": 100, "purpose": "dues"}, "contact_id"),
        ("/stripe/checkout", {"contact_id": "c", "amount_cents": 0, "purpose": "dues"}, "amount"),
        ("/stripe/refunds", {"payment_intent": "pi_nope"}, "no such payment intent"),
        ("/helloasso/refunds", {"payment_id": 1}, "no such payment"),
    ],
)
def test_bad_requests_are_400_with_the_reason(path, payload, error):
    fake = FakePayments(Config())
    status, answer = asyncio.run(fake.route("POST", path, {}, payload))
    assert status == 400 and error in answer["error"]


def test_notifications_are_listed_by_provider_and_contact():
    fake = FakePayments(Config())
    fake.stripe_checkout(GIFT)
    fake.helloasso_checkout({**GIFT, "contact_id": "c-2"})
    status, listed = asyncio.run(fake.route("GET", "/notifications", {"contact_id": ["c-2"]}, None))
    assert status == 200 and {n["provider"] for n in listed} == {"helloasso"}
    status, listed = asyncio.run(
        fake.route("GET", "/notifications", {"provider": ["stripe"]}, None)
    )
    assert [n["type"] for n in listed] == ["payment_intent.succeeded", "checkout.session.completed"]
