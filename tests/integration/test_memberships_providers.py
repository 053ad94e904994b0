"""Provider webhooks over the real store: a Stripe-style or HelloAsso-style notification is
verified, recorded once whatever the provider's retries (and whichever of its events name
the same payment), and a refund or a lost dispute reverses it; anything not proven to come
from the provider changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from memberships.main import create_app
from memberships.payments.store import REFUNDS
from memberships.providers.service import ProviderWebhooks
from memberships.providers.stripe import read_event, signature_header
from memberships.service import MembershipsService
from memberships.settings import MembershipsSettings
from memberships.store import PAYMENTS
from support import deliver, identity_headers, make_identity
from tribune_shared.auth import Role
from tribune_shared.client_info import CLIENT_IP_HEADER
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store

pytestmark = pytest.mark.integration

STRIPE_SECRET = "whsec_integration-" + "s" * 32
HELLOASSO_KEY = "helloasso-integration-" + "k" * 40
PARIS = "/root/paris/"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def settings(isolated_env, monkeypatch) -> MembershipsSettings:
    monkeypatch.setenv("MEMBERSHIPS_STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
    monkeypatch.setenv("MEMBERSHIPS_HELLOASSO_SIGNATURE_KEY", HELLOASSO_KEY)
    return MembershipsSettings()


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def run(settings, work):
    async def go():
        store = Store(settings)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def seed_contact(settings, contact_id: str, path: str = PARIS) -> None:
    envelope = new_envelope(
        ContactCreatedV1(contact_id=contact_id, contact_version=1, contact=ContactState()),
        producer="contacts",
        federation_id=path.rstrip("/").rsplit("/", 1)[-1],
        federation_path=path,
    )
    run(settings, lambda store: deliver(store, ContactDirectory(store).handlers(), envelope))


def find(settings, collection: str, query: dict[str, Any] | None = None) -> list[dict]:
    return run(settings, lambda store: store[collection].find(query or {}).to_list())


def events_of(settings, event_type: str) -> list[dict]:
    return [d["envelope"] for d in find(settings, OUTBOX) if d["envelope"]["type"] == event_type]


def contact() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def stripe_event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> dict:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": obj},
    }


def intent(contact_id: str, pi: str, amount: int = 3000, **meta: str) -> dict[str, Any]:
    return {
        "id": pi,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount,
        "currency": "eur",
        "payment_method_types": ["card"],
        "metadata": {"tribune_contact_id": contact_id, "tribune_purpose": "dues", **meta},
    }


def session(contact_id: str, pi: str, amount: int = 3000) -> dict[str, Any]:
    return {
        "id": f"cs_{pi}",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "payment_intent": pi,
        "amount_total": amount,
        "currency": "eur",
        "metadata": {"tribune_contact_id": contact_id, "tribune_purpose": "dues"},
    }


def refunded(pi: str, refund_id: str, amount: int = 3000) -> dict[str, Any]:
    return {
        "id": f"ch_{pi}",
        "object": "charge",
        "payment_intent": pi,
        "amount": amount,
        "amount_refunded": amount,
        "refunds": {"data": [{"id": refund_id, "amount": amount, "created": int(time.time())}]},
    }


def post_stripe(client, payload: dict | bytes, *, secret=STRIPE_SECRET, timestamp=None):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    header = signature_header(secret, raw, int(time.time()) if timestamp is None else timestamp)
    return client.post(
        "/api/v1/webhooks/stripe",
        content=raw,
        headers={"Content-Type": "application/json", "Stripe-Signature": header},
    )


def post_helloasso(client, payload: dict, *, key=HELLOASSO_KEY, headers=None):
    raw = json.dumps(payload).encode()
    signature = hmac.new(key.encode(), raw, hashlib.sha256).hexdigest()
    return client.post(
        "/api/v1/webhooks/helloasso",
        content=raw,
        headers={
            "Content-Type": "application/json",
            "x-ha-signature": signature,
            **(headers or {}),
        },
    )


def helloasso_payment(payment_id: int, amount: int = 5000, state: str = "Authorized") -> dict:
    return {
        "id": payment_id,
        "amount": amount,
        "date": "2026-01-15T10:00:00.1234567+01:00",
        "paymentMeans": "Card",
        "installmentNumber": 1,
        "state": state,
        "refundOperations": (
            [{"id": payment_id + 1, "amount": amount, "status": "Processed"}]
            if state == "Refunded"
            else []
        ),
    }


def gift_metadata(contact_id: str) -> dict[str, Any]:
    return {
        "tribune_contact_id": contact_id,
        "tribune_purpose": "donation",
        "tribune_donor_natural_person": "true",
        "tribune_donor_nationality": "FR",
        "tribune_donor_resides_in_france": "true",
    }


def standing(client, settings, contact_id: str) -> list[dict]:
    headers = identity_headers(make_identity("/root/", Role.admin), settings.identity_secret)
    r = client.get("/api/v1/memberships", params={"contact_id": contact_id}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


# ---------------------------------------------------------------- Stripe-style


def test_a_stripe_payment_is_recorded_once_under_retries_and_both_of_its_events(client, settings):
    c = contact()
    seed_contact(settings, c)
    pi = f"pi_{uuid.uuid4().hex[:12]}"
    succeeded = stripe_event("payment_intent.succeeded", intent(c, pi))

    first = post_stripe(client, succeeded)
    assert first.status_code == 200, first.text
    [outcome] = first.json()["outcomes"]
    assert (outcome["action"], outcome["status"]) == ("payment", "recorded")
    assert first.json()["event_id"] == succeeded["id"]

    # the provider retries the same event, then sends the checkout's own event
    again = post_stripe(client, succeeded)
    completed = post_stripe(client, stripe_event("checkout.session.completed", session(c, pi)))
    assert again.json()["outcomes"][0]["status"] == "duplicate"
    assert completed.json()["outcomes"][0]["status"] == "duplicate"
    assert again.json()["outcomes"][0]["payment_id"] == outcome["payment_id"]

    [payment] = find(settings, PAYMENTS, {"contact_id": c})
    assert (payment["provider"], payment["provider_payment_id"]) == ("stripe", pi)
    assert (payment["status"], payment["amount_cents"], payment["method"]) == (
        "accepted",
        3000,
        "card",
    )
    assert (
        len([e for e in events_of(settings, "payment-received") if e["data"]["contact_id"] == c])
        == 1
    )
    [membership] = standing(client, settings, c)
    assert membership["in_good_standing"] is True


def test_concurrent_deliveries_of_one_payment_record_it_once(settings, client):
    c = contact()
    seed_contact(settings, c)
    pi = f"pi_{uuid.uuid4().hex[:12]}"
    events = [stripe_event("payment_intent.succeeded", intent(c, pi), "evt_same")] * 4
    events.append(stripe_event("checkout.session.completed", session(c, pi)))

    async def deliver_all(store: Store) -> list[str]:
        hooks = ProviderWebhooks(settings, MembershipsService(settings, store))
        results = await asyncio.gather(
            *(hooks.apply("stripe", read_event(e).actions) for e in events)
        )
        return sorted(r[0].status for r in results)

    assert run(settings, deliver_all) == ["duplicate"] * 4 + ["recorded"]
    assert len(find(settings, PAYMENTS, {"contact_id": c})) == 1


def test_a_refund_reported_by_stripe_reverses_the_payment_once(client, settings):
    c = contact()
    seed_contact(settings, c)
    pi = f"pi_{uuid.uuid4().hex[:12]}"
    assert (
        post_stripe(client, stripe_event("payment_intent.succeeded", intent(c, pi))).status_code
        == 200
    )
    assert standing(client, settings, c)[0]["in_good_standing"] is True

    refund = stripe_event("charge.refunded", refunded(pi, "re_1"))
    r = post_stripe(client, refund)
    assert r.status_code == 200, r.text
    assert r.json()["outcomes"][0]["action"] == "reversal"
    assert r.json()["outcomes"][0]["status"] == "reversed"
    assert post_stripe(client, refund).json()["outcomes"][0]["status"] == "duplicate"

    [payment] = find(settings, PAYMENTS, {"contact_id": c})
    assert payment["status"] == "refunded"
    assert len(find(settings, REFUNDS, {"payment_id": payment["_id"]})) == 1
    assert all(not m["in_good_standing"] for m in standing(client, settings, c))

    # a dispute lost afterwards has nothing left to take back: acknowledged
    dispute = {
        "id": "dp_1",
        "object": "dispute",
        "charge": f"ch_{pi}",
        "payment_intent": pi,
        "amount": 3000,
        "reason": "fraudulent",
        "status": "lost",
    }
    lost = post_stripe(client, stripe_event("charge.dispute.closed", dispute))
    assert lost.status_code == 200, lost.text
    assert lost.json()["outcomes"][0]["status"] == "already_reversed"
    assert find(settings, PAYMENTS, {"contact_id": c})[0]["status"] == "refunded"


def test_a_lost_dispute_charges_the_payment_back(client, settings):
    c = contact()
    seed_contact(settings, c)
    pi = f"pi_{uuid.uuid4().hex[:12]}"
    post_stripe(client, stripe_event("payment_intent.succeeded", intent(c, pi)))
    dispute = {"id": f"dp_{pi}", "charge": f"ch_{pi}", "payment_intent": pi, "amount": 3000}
    opened = post_stripe(
        client, stripe_event("charge.dispute.created", {**dispute, "status": "needs_response"})
    )
    assert opened.json()["outcomes"][0]["action"] == "ignored"
    assert find(settings, PAYMENTS, {"contact_id": c})[0]["status"] == "accepted"
    post_stripe(client, stripe_event("charge.dispute.closed", {**dispute, "status": "lost"}))
    assert find(settings, PAYMENTS, {"contact_id": c})[0]["status"] == "charged_back"


def test_a_refund_of_a_payment_not_recorded_yet_is_404_so_the_provider_retries(client, settings):
    r = post_stripe(client, stripe_event("charge.refunded", refunded("pi_unknown", "re_x")))
    assert r.status_code == 404, r.text
    assert not find(settings, REFUNDS)


def test_a_gift_the_law_refuses_is_kept_flagged_for_refund(client, settings):
    c = contact()
    seed_contact(settings, c)
    meta = {**gift_metadata(c), "tribune_donor_natural_person": "false"}
    obj = {**intent(c, f"pi_{uuid.uuid4().hex[:12]}"), "metadata": meta}
    r = post_stripe(client, stripe_event("payment_intent.succeeded", obj))
    assert r.status_code == 200, r.text
    [outcome] = r.json()["outcomes"]
    assert outcome["status"] == "flagged_for_refund" and outcome["reason"]
    [payment] = find(settings, PAYMENTS, {"contact_id": c})
    assert payment["status"] == "flagged_for_refund"
    assert not [e for e in events_of(settings, "donation-received") if e["data"]["contact_id"] == c]


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ({"secret": "whsec_wrong-" + "w" * 32}, "no v1 signature matches"),
        ({"timestamp": int(time.time()) - 301}, "tolerance"),
    ],
)
def test_a_bad_signature_is_401_with_the_reason_and_records_nothing(client, settings, how, reason):
    c = contact()
    seed_contact(settings, c)
    r = post_stripe(client, stripe_event("payment_intent.succeeded", intent(c, "pi_bad")), **how)
    assert r.status_code == 401
    assert reason in r.text
    assert not find(settings, PAYMENTS) and not find(settings, OUTBOX)


def test_a_missing_signature_is_401(client, settings):
    r = client.post(
        "/api/v1/webhooks/stripe", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 401 and "missing Stripe-Signature" in r.text


def test_a_signed_but_malformed_event_is_422_with_the_field(client, settings):
    c = contact()
    seed_contact(settings, c)
    obj = intent(c, "pi_malformed")
    obj["metadata"]["tribune_purpose"] = "membership"
    r = post_stripe(client, stripe_event("payment_intent.succeeded", obj))
    assert r.status_code == 422, r.text
    fields = [d["field"] for d in r.json()["detail"]]
    assert fields == ["data.object.metadata.tribune_purpose"]
    assert post_stripe(client, b"not json").status_code == 422
    assert not find(settings, PAYMENTS) and not find(settings, OUTBOX)


def test_unknown_event_types_are_acknowledged_and_ignored(client, settings):
    r = post_stripe(client, stripe_event("customer.subscription.updated", {"id": "sub_1"}))
    assert r.status_code == 200
    assert r.json()["outcomes"] == [
        {
            "action": "ignored",
            "status": "ignored",
            "provider_payment_id": None,
            "payment_id": None,
            "membership_id": None,
            "reason": "customer.subscription.updated is not used",
        }
    ]
    assert not find(settings, PAYMENTS)


def test_a_body_above_the_limit_is_413(isolated_env, monkeypatch):
    monkeypatch.setenv("MEMBERSHIPS_STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
    monkeypatch.setenv("MEMBERSHIPS_STRIPE_MAX_BODY_BYTES", "2048")
    settings = MembershipsSettings()
    with TestClient(create_app(settings)) as client:
        payload = stripe_event("payment_intent.succeeded", intent("c-big", "pi_big"))
        payload["padding"] = "x" * 4096
        r = post_stripe(client, payload)
        assert r.status_code == 413, r.text
        assert "2048" in r.text


def test_a_provider_without_a_secret_is_refused(isolated_env):
    with TestClient(create_app(MembershipsSettings())) as client:
        r = post_stripe(client, stripe_event("payment_intent.succeeded", intent("c-1", "pi_1")))
        assert r.status_code == 401 and "no secret is set" in r.text
        r = post_helloasso(client, {"eventType": "Payment", "data": {}})
        assert r.status_code == 401 and "no key is set" in r.text


# ---------------------------------------------------------------- HelloAsso-style


def test_a_helloasso_gift_is_recorded_once_from_its_order_and_payment(client, settings):
    c = contact()
    seed_contact(settings, c)
    payment_id = int(time.time() * 1000) % 10**9
    payment = helloasso_payment(payment_id)
    order = {"id": payment_id - 1, "formType": "Checkout", "payments": [payment]}
    meta = gift_metadata(c)

    r = post_helloasso(client, {"eventType": "Order", "data": order, "metadata": meta})
    assert r.status_code == 200, r.text
    assert r.json()["outcomes"][0]["status"] == "recorded"
    r = post_helloasso(client, {"eventType": "Payment", "data": payment, "metadata": meta})
    assert r.json()["outcomes"][0]["status"] == "duplicate"

    [doc] = find(settings, PAYMENTS, {"contact_id": c})
    assert (doc["provider"], doc["provider_payment_id"]) == ("helloasso", str(payment_id))
    assert (doc["purpose"], doc["amount_cents"], doc["currency"]) == ("donation", 5000, "EUR")
    assert doc["donor"]["natural_person"] is True
    assert (
        len([e for e in events_of(settings, "donation-received") if e["data"]["contact_id"] == c])
        == 1
    )

    refund = {"eventType": "Payment", "data": helloasso_payment(payment_id, state="Refunded")}
    r = post_helloasso(client, refund)
    assert r.json()["outcomes"][0]["status"] == "reversed", r.text
    assert post_helloasso(client, refund).json()["outcomes"][0]["status"] == "duplicate"
    assert find(settings, PAYMENTS, {"contact_id": c})[0]["status"] == "refunded"


def test_a_helloasso_notification_with_a_wrong_signature_changes_nothing(client, settings):
    c = contact()
    seed_contact(settings, c)
    body = {"eventType": "Payment", "data": helloasso_payment(7), "metadata": gift_metadata(c)}
    r = post_helloasso(client, body, key="not-the-key")
    assert r.status_code == 401 and "does not match" in r.text
    assert not find(settings, PAYMENTS)


def test_the_helloasso_sender_allow_list(isolated_env, monkeypatch):
    monkeypatch.setenv("MEMBERSHIPS_HELLOASSO_SIGNATURE_KEY", HELLOASSO_KEY)
    monkeypatch.setenv("MEMBERSHIPS_HELLOASSO_ALLOWED_IPS", '["51.138.206.200"]')
    settings = MembershipsSettings()
    c = contact()
    seed_contact(settings, c)
    body = {"eventType": "Payment", "data": helloasso_payment(11), "metadata": gift_metadata(c)}
    with TestClient(create_app(settings)) as client:
        r = post_helloasso(client, body, headers={CLIENT_IP_HEADER: "203.0.113.9"})
        assert r.status_code == 401 and "not one of HelloAsso's addresses" in r.text
        assert not find(settings, PAYMENTS)
        r = post_helloasso(client, body, headers={CLIENT_IP_HEADER: "51.138.206.200"})
        assert r.status_code == 200, r.text
        assert len(find(settings, PAYMENTS, {"contact_id": c})) == 1


def test_a_helloasso_payment_for_an_unknown_contact_is_404(client, settings):
    body = {
        "eventType": "Payment",
        "data": helloasso_payment(99),
        "metadata": gift_metadata("c-nobody"),
    }
    r = post_helloasso(client, body)
    assert r.status_code == 404
    assert not find(settings, PAYMENTS)
