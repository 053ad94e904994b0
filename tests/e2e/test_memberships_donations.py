"""Donations within the law through the gateway, on the real processes: a treasurer's
payment page asks before capturing the money, and a second gift of 5,000 EUR from the
same person in one year is refused with the reason (by the pre-capture check, and, when a
provider captured it anyway, flagged for refund by the signed webhook); a campaign
account takes its own ceiling."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import eventually
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.e2e

DONOR = {"natural_person": True, "nationality": "FR", "resides_in_france": True}


@pytest.fixture(scope="module")
def treasurer(new_user, federations):
    return new_user("treasurer", federations["Paris"])


def new_contact(federations) -> str:
    tag = uuid.uuid4().hex[:10]
    body = {
        "given_name": f"Donatrice{tag}",
        "family_name": "Legale",
        "email": f"donor.{tag}@example.fr",
        "origin": {"kind": "event", "detail": "meeting"},
    }
    r = federations["Paris"].user("POST", "/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def gift(stack, http, contact_id: str, cents: int, **changes: Any) -> dict[str, Any]:
    """A provider's captured gift through the gateway's signed payment webhook."""
    payload = {
        "provider": "helloasso",
        "provider_payment_id": f"pay-{uuid.uuid4().hex}",
        "contact_id": contact_id,
        "amount_cents": cents,
        "currency": "EUR",
        "method": "card",
        "purpose": "donation",
        "paid_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "donor": DONOR,
        **changes,
    }
    body = json.dumps(payload).encode()
    secret = stack.env["MEMBERSHIPS_WEBHOOK_SECRET"]
    headers = {"Content-Type": "application/json", **signature_headers(secret, body)}
    # retried while memberships has not yet heard of the contact (404)
    r = eventually(
        lambda: http.post("/api/v1/webhooks/payments", content=body, headers=headers),
        lambda r: r.status_code in (200, 201),
        timeout=60,
    )
    return r.json()


def ask(treasurer, contact_id: str, cents: int, **changes: Any) -> dict[str, Any]:
    body = {
        "contact_id": contact_id,
        "amount_cents": cents,
        "method": "card",
        "donor": DONOR,
        **changes,
    }
    r = eventually(
        lambda: treasurer("POST", "/api/v1/donations/check", json=body),
        lambda r: r.status_code == 200,
        timeout=60,
    )
    return r.json()


def test_a_second_5000_eur_gift_is_refused_with_the_reason(stack, http, federations, treasurer):
    contact = new_contact(federations)

    before = ask(treasurer, contact, 500_000)
    assert before["accepted"] is True
    assert before["party"]["remaining_cents"] == 750_000
    first = gift(stack, http, contact, 500_000)
    assert first["status"] == "recorded"

    # The payment page asks before capturing the second gift: refused, with the reason.
    second = ask(treasurer, contact, 500_000)
    assert second["accepted"] is False
    [refusal] = second["refusals"]
    assert refusal["rule"] == "yearly_ceiling"
    assert "7,500.00 EUR" in refusal["reason"] and "2,500.00 EUR remain" in refusal["reason"]
    assert second["party"]["remaining_cents"] == 250_000

    # A provider that captured it anyway: recorded once, flagged for refund, with the reason.
    captured = gift(stack, http, contact, 500_000)
    assert captured["status"] == "flagged_for_refund"
    assert "Yearly ceiling" in captured["refusal"]
    assert captured["membership_id"] is None

    # What remains may still be given.
    assert ask(treasurer, contact, 250_000)["accepted"] is True
    assert gift(stack, http, contact, 250_000)["status"] == "recorded"
    assert ask(treasurer, contact, 1)["party"]["remaining_cents"] == 0


def test_a_campaign_account_has_its_own_ceiling_and_period(stack, http, federations, treasurer):
    contact = new_contact(federations)
    today = datetime.now(UTC).date()
    r = treasurer(
        "POST",
        "/api/v1/donations/elections",
        json={
            "name": f"Législatives {uuid.uuid4().hex[:6]}",
            "starts_on": (today - timedelta(days=90)).isoformat(),
            "ends_on": (today + timedelta(days=30)).isoformat(),
            "candidate": {"name": "Camille Martin"},
            "financial_agent": {"kind": "association", "name": "AFE Camille Martin"},
        },
    )
    assert r.status_code == 201, r.text
    election = r.json()
    assert election["federation_id"] == federations["Paris"].id
    listed = treasurer("GET", "/api/v1/donations/elections").json()["items"]
    assert election["election_id"] in {e["election_id"] for e in listed}
    # another federation's secretary does not manage elections
    assert (
        federations["Lyon"].user("GET", f"/api/v1/donations/elections/{election['election_id']}")
    ).status_code == 403

    eid = election["election_id"]
    assert gift(stack, http, contact, 460_000, election_id=eid)["status"] == "recorded"
    over = gift(stack, http, contact, 100, election_id=eid)
    assert over["status"] == "flagged_for_refund"
    assert "Campaign ceiling" in over["refusal"]
    # the party's own ceiling is untouched by the campaign gift
    answer = ask(treasurer, contact, 750_000)
    assert answer["accepted"] is True and answer["party"]["given_cents"] == 0
