"""Payment providers end to end: the stack's fake Stripe-style and HelloAsso-style providers
(tribune_devstack.fake_payments) capture a payment and notify memberships through the
gateway, signed as each provider signs; the person's standing and payments follow, and a
refund the provider reports takes them back."""

from __future__ import annotations

import uuid

import httpx
import pytest
from support import eventually

pytestmark = pytest.mark.e2e


def new_contact(user) -> str:
    tag = uuid.uuid4().hex[:8]
    body = {
        "given_name": "Louise",
        "family_name": f"Michel-{tag}",
        "email": f"louise.{tag}@example.fr",
        "origin": {"kind": "membership", "detail": "adhésion en ligne"},
    }
    r = user("POST", "/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    contact_id = r.json()["id"]
    # memberships learns the contact from contact-created (a payment before that is 404,
    # which the fake provider would retry, as a real one does)
    eventually(
        lambda: user("GET", "/api/v1/memberships", params={"contact_id": contact_id}),
        lambda r: r.status_code == 200,
    )
    return contact_id


def fake(stack, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, f"{stack.cfg.payments_url}{path}", timeout=30, **kw)


def notifications(stack, contact_id: str) -> list[dict]:
    r = fake(stack, "GET", "/notifications", params={"contact_id": contact_id})
    assert r.status_code == 200, r.text
    return r.json()


def delivered(stack, contact_id: str, count: int) -> list[dict]:
    """The fake's notifications for the contact, once ``count`` of them were delivered."""
    return eventually(
        lambda: notifications(stack, contact_id),
        lambda ns: len([n for n in ns if n["state"] == "delivered"]) >= count,
        timeout=60,
    )


def standing(user, contact_id: str) -> list[dict]:
    r = user("GET", "/api/v1/memberships", params={"contact_id": contact_id})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def payments(user, contact_id: str) -> list[dict]:
    r = user("GET", "/api/v1/payments", params={"contact_id": contact_id})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_a_stripe_payment_renews_a_membership_and_its_refund_takes_it_back(stack, federations):
    paris = federations["Paris"].user
    contact_id = new_contact(paris)
    checkout = fake(
        stack,
        "POST",
        "/stripe/checkout",
        json={"contact_id": contact_id, "amount_cents": 3000, "purpose": "dues"},
    )
    assert checkout.status_code == 201, checkout.text
    pi = checkout.json()["payment_intent"]

    # both of the payment's events reach memberships, signed; the second changes nothing
    sent = delivered(stack, contact_id, 2)
    assert [n["type"] for n in sent] == ["payment_intent.succeeded", "checkout.session.completed"]
    assert [n["answer"]["outcomes"][0]["status"] for n in sent] == ["recorded", "duplicate"]
    [membership] = standing(paris, contact_id)
    assert membership["status"] == "active" and membership["in_good_standing"] is True
    [payment] = payments(paris, contact_id)
    assert (payment["provider"], payment["provider_payment_id"]) == ("stripe", pi)
    assert (payment["amount_cents"], payment["purpose"]) == (3000, "dues")

    # the provider replays the capture: still one payment
    replay = fake(stack, "POST", f"/notifications/{sent[0]['id']}/resend")
    assert replay.json()["status"] == 200
    assert replay.json()["body"]["outcomes"][0]["status"] == "duplicate"
    assert len(payments(paris, contact_id)) == 1

    refund = fake(stack, "POST", "/stripe/refunds", json={"payment_intent": pi})
    assert refund.status_code == 201, refund.text
    [reversal] = [n for n in delivered(stack, contact_id, 3) if n["type"] == "charge.refunded"]
    assert reversal["answer"]["outcomes"][0]["status"] == "reversed"
    assert payments(paris, contact_id)[0]["status"] == "refunded"
    assert not any(m["in_good_standing"] for m in standing(paris, contact_id))


def test_a_helloasso_payment_records_a_donation_and_its_refund_reverses_it(
    stack, federations, new_user
):
    treasurer = new_user("treasurer", federations["Paris"])
    contact_id = new_contact(federations["Paris"].user)
    gift = {
        "contact_id": contact_id,
        "amount_cents": 5000,
        "purpose": "donation",
        "donor": {"natural_person": True, "nationality": "FR", "resides_in_france": True},
    }
    checkout = fake(stack, "POST", "/helloasso/checkout", json=gift)
    assert checkout.status_code == 201, checkout.text
    payment_id = checkout.json()["payment_id"]

    sent = delivered(stack, contact_id, 2)
    assert [n["type"] for n in sent] == ["Order", "Payment.Authorized"]
    assert [n["answer"]["outcomes"][0]["status"] for n in sent] == ["recorded", "duplicate"]
    [payment] = payments(treasurer, contact_id)
    assert (payment["provider"], payment["provider_payment_id"]) == ("helloasso", str(payment_id))
    assert (payment["purpose"], payment["amount_cents"], payment["status"]) == (
        "donation",
        5000,
        "accepted",
    )

    refund = fake(stack, "POST", "/helloasso/refunds", json={"payment_id": payment_id})
    assert refund.status_code == 201, refund.text
    delivered(stack, contact_id, 3)
    assert payments(treasurer, contact_id)[0]["status"] == "refunded"


def test_a_forged_provider_notification_is_refused_at_the_gateway(stack, http, federations):
    contact_id = new_contact(federations["Paris"].user)
    body = (
        '{"id": "evt_forged", "type": "payment_intent.succeeded", "created": 1, "data": {}, '
        f'"contact": "{contact_id}"}}'
    )
    r = http.post(
        "/api/v1/webhooks/stripe",
        content=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=" + "0" * 64},
    )
    assert r.status_code == 401, r.text
    assert "no v1 signature matches" in r.text
    r = http.post(
        "/api/v1/webhooks/helloasso",
        content=b'{"eventType": "Payment", "data": {}}',
        headers={"Content-Type": "application/json", "x-ha-signature": "0" * 64},
    )
    assert r.status_code == 401, r.text
    assert payments(federations["Paris"].user, contact_id) == []
