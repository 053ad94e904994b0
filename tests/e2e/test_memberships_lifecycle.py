"""End-to-end through the gateway: the memberships worker's sweep records a membership
whose period ended as in grace, and one past its grace as lapsed (messaging learns it from
the event); a secretary downloads the roll as CSV, cancels a membership and sees the
counts."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from support import eventually
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.e2e

PURPOSE = "news"


def new_contact(user, family_name: str) -> dict:
    tag = uuid.uuid4().hex[:8]
    body = {
        "given_name": "Louise",
        "family_name": f"{family_name}-{tag}",
        "email": f"louise.{tag}@example.org",
        "origin": {"kind": "membership", "detail": "adhésion"},
    }
    r = user("POST", "/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def pay_dues(http, stack, contact_id: str, days_ago: int) -> str:
    """Dues on a rolling year (365 days, 30 grace days) paid ``days_ago`` days ago, through
    the signed payment webhook; the membership id."""
    payment = {
        "provider": "helloasso",
        "provider_payment_id": f"pay-{uuid.uuid4().hex}",
        "contact_id": contact_id,
        "amount_cents": 3000,
        "currency": "EUR",
        "method": "card",
        "purpose": "dues",
        "plan": "rolling-year",
        "paid_at": (datetime.now(UTC) - timedelta(days=days_ago)).isoformat(),
    }
    body = json.dumps(payment).encode()
    secret = stack.env["MEMBERSHIPS_WEBHOOK_SECRET"]
    headers = {"Content-Type": "application/json", **signature_headers(secret, body)}
    r = eventually(  # memberships learns the contact from contact-created
        lambda: http.post("/api/v1/webhooks/payments", content=body, headers=headers),
        lambda r: r.status_code == 201,
    )
    return r.json()["membership_id"]


def test_the_sweep_records_grace_and_lapse_and_the_roll_downloads(stack, http, admin, federations):
    paris = federations["Paris"]
    secretary = paris.user
    in_grace = new_contact(secretary, "Grace")  # period ended 16 days ago: 14 grace days left
    gone = new_contact(secretary, "Lapsed")  # grace ended 25 days ago
    current = new_contact(secretary, "Current")
    grace_id = pay_dues(http, stack, in_grace["id"], 380)
    gone_id = pay_dues(http, stack, gone["id"], 420)
    pay_dues(http, stack, current["id"], 10)

    # the DPO's access export shows the membership as recorded, with its history
    email, password = f"dpo.{uuid.uuid4().hex[:6]}@tribune.test", f"pw-{uuid.uuid4().hex}"
    r = admin(
        "POST",
        "/api/v1/users",
        json={
            "email": email,
            "password": password,
            "role": "dpo",
            "federation_id": paris.id,
            # granting the DPO role takes the granting admin's password
            "confirm_password": stack.admin_credentials[1],
        },
    )
    assert r.status_code == 201, r.text
    r = http.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    dpo_token = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def recorded(contact_id: str) -> dict:
        r = http.get(f"/api/v1/memberships/privacy/{contact_id}", headers=dpo_token)
        assert r.status_code == 200, r.text
        [membership] = r.json()["memberships"]
        return membership

    swept = eventually(lambda: recorded(gone["id"]), lambda m: m["status"] == "lapsed")
    assert [h["status"] for h in swept["history"]] == ["pending", "active", "grace", "lapsed"]
    held = eventually(lambda: recorded(in_grace["id"]), lambda m: m["status"] == "grace")
    assert [h["status"] for h in held["history"]][-1] == "grace"

    # what the secretary sees for each person today
    def status(contact_id: str) -> dict:
        r = secretary("GET", "/api/v1/memberships", params={"contact_id": contact_id})
        assert r.status_code == 200, r.text
        return r.json()["items"][0]

    assert status(in_grace["id"])["status"] == "grace"
    assert status(in_grace["id"])["in_good_standing"] is True
    assert status(gone["id"])["status"] == "lapsed"
    assert status(gone["id"])["in_good_standing"] is False

    # messaging learned the lapse from the sweep's membership-lapsed
    eventually(
        lambda: secretary(
            "GET", f"/api/v1/messages/reachability/{gone['id']}", params={"purpose": PURPOSE}
        ).json(),
        lambda v: v.get("standing") == "lapsed",
    )

    # the roll (today) as CSV: the members in good standing, grace included, by name
    r = secretary("GET", "/api/v1/memberships/roll.csv", params={"federation_id": paris.id})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = {row["contact_id"]: row for row in csv.DictReader(io.StringIO(r.text.lstrip("\ufeff")))}
    assert in_grace["id"] in rows and current["id"] in rows and gone["id"] not in rows
    assert rows[in_grace["id"]]["state"] == "grace"
    assert rows[in_grace["id"]]["membership_id"] == grace_id
    assert rows[current["id"]]["family_name"] == current["family_name"]

    # a day in the past: the lapsed member was on the roll then
    long_ago = (datetime.now(UTC) - timedelta(days=300)).date().isoformat()
    r = secretary("GET", "/api/v1/memberships/roll", params={"on": long_ago, "limit": 200})
    assert r.status_code == 200, r.text
    assert gone["id"] in {i["contact_id"] for i in r.json()["items"]}

    # cancel: the member leaves; the counts follow
    before = secretary("GET", "/api/v1/memberships/counts").json()
    r = secretary("POST", f"/api/v1/memberships/{grace_id}/cancel", json={"reason": "démission"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    again = secretary("POST", f"/api/v1/memberships/{grace_id}/cancel", json={"reason": "x"})
    assert again.status_code == 409
    assert (
        secretary("POST", f"/api/v1/memberships/{gone_id}/cancel", json={"reason": "x"}).status_code
        == 409
    )  # lapsed: final
    after = secretary("GET", "/api/v1/memberships/counts").json()
    assert after["grace"] == before["grace"] - 1
    assert after["in_good_standing"] == before["in_good_standing"] - 1
    assert after["cancelled"] == before["cancelled"] + 1

    # Lyon's secretary sees none of it
    lyon = federations["Lyon"].user
    assert (
        lyon("GET", "/api/v1/memberships/roll", params={"federation_id": paris.id}).status_code
        == 404
    )
    assert (
        lyon("POST", f"/api/v1/memberships/{gone_id}/cancel", json={"reason": "x"}).status_code
        == 404
    )
