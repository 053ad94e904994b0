"""A duplicate merged through the gateway: every service remaps the old id (contact-merged)
on the real processes. The survivor takes over the duplicate's consent (messaging may now
reach it), its payments and membership; the old id is reachable by nobody."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from support import eventually
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.e2e

GRANT = {"channel": "email", "purpose": "news", "source": "web_form", "reference": "form-12"}


def contact(user, tag: str, email: str) -> dict:
    r = user(
        "POST",
        "/api/v1/contacts",
        json={
            "given_name": "Jean",
            "family_name": f"Jaurès-{tag}",
            "email": email,
            "origin": {"kind": "event", "detail": "fête de la rose"},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def reachable(user, contact_id: str):
    r = user("GET", f"/api/v1/messages/reachability/{contact_id}", params={"purpose": "news"})
    return r.status_code == 200 and r.json()["reachable"]


def test_a_merged_duplicate_s_consent_payments_and_membership_follow_the_survivor(
    stack, http, federations
):
    paris = federations["Paris"]
    tag = uuid.uuid4().hex[:8]
    survivor = contact(paris.user, tag, f"jean.{tag}@example.fr")
    duplicate = contact(paris.user, tag, f"j.jaures.{tag}@example.fr")

    # the duplicate consented and paid its dues; the survivor did neither
    eventually(
        lambda: paris.user("POST", f"/api/v1/consents/{duplicate['id']}/grant", json=GRANT),
        lambda r: r.status_code == 200,
    )
    eventually(lambda: reachable(paris.user, duplicate["id"]))
    body = json.dumps(
        {
            "provider": "helloasso",
            "provider_payment_id": f"pay-{uuid.uuid4().hex}",
            "contact_id": duplicate["id"],
            "amount_cents": 3000,
            "currency": "EUR",
            "method": "card",
            "purpose": "dues",
            "paid_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        }
    ).encode()
    secret = stack.env["MEMBERSHIPS_WEBHOOK_SECRET"]
    eventually(
        lambda: http.post(
            "/api/v1/webhooks/payments",
            content=body,
            headers={"Content-Type": "application/json", **signature_headers(secret, body)},
        ),
        lambda r: r.status_code == 201,
    )
    assert not reachable(paris.user, survivor["id"])

    r = paris.user(
        "POST",
        f"/api/v1/contacts/{survivor['id']}/merge",
        json={"merged_id": duplicate["id"], "survivor_version": survivor["version"]},
    )
    assert r.status_code == 200, r.text
    merged = r.json()
    assert {e["address"] for e in merged["emails"]} == {survivor["email"], duplicate["email"]}

    # messaging may reach the survivor now (the consent came with the duplicate) ...
    eventually(lambda: reachable(paris.user, survivor["id"]))
    # ... and nobody reaches the old id any more
    eventually(lambda: not reachable(paris.user, duplicate["id"]))

    consents = paris.user("GET", f"/api/v1/consents/{survivor['id']}").json()
    [news] = [c for c in consents["consents"] if c["purpose"] == "news"]
    assert news["status"] == "granted"
    sources = [h["source"] for h in consents["history"]]
    assert sources.count("web_form") == 1 and sources.count("contact_merge") == 1

    memberships = eventually(
        lambda: paris.user("GET", "/api/v1/memberships", params={"contact_id": survivor["id"]}),
        lambda r: r.status_code == 200 and len(r.json()["items"]) == 1,
    )
    assert memberships.json()["items"][0]["status"] == "active"
    left = paris.user("GET", "/api/v1/memberships", params={"contact_id": duplicate["id"]})
    assert left.status_code == 404 or left.json()["items"] == []
    assert paris.user("GET", f"/api/v1/contacts/{duplicate['id']}").status_code == 404
