"""Live figures through the gateway (faust, memberships.live): a treasurer's cheque shows
on the federation's dashboard and its parent's, pushed by the Server-Sent Events stream;
a chargeback takes it back; another federation's users get 404."""

from __future__ import annotations

import json
import uuid

import pytest
from support import NewFederation, create_federation, create_member, eventually

pytestmark = pytest.mark.e2e

DONOR = {"natural_person": True, "nationality": "FR", "resides_in_france": True}


Fed = NewFederation
federation = create_federation


def member(admin, fed: Fed) -> str:
    return create_member(admin, fed, given_name="Louise")


def figures(user, fed: Fed) -> dict | None:
    """The federation's figures; None while memberships has not yet heard of it."""
    r = user("GET", "/api/v1/live/memberships", params={"federation_id": fed.id})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()


def stream_frames(http, token: str, fed: Fed) -> list[dict]:
    """The figures one stream pushes through the gateway until it ends (the test stack
    ends a stream after a few seconds)."""
    found = []
    with http.stream(
        "GET",
        "/api/v1/live/memberships/stream",
        params={"federation_id": fed.id},
        headers={"Authorization": f"Bearer {token}"},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "figures":
                found.append(json.loads(line.removeprefix("data: ")))
    return found


def test_a_cheque_shows_live_up_the_tree_and_a_chargeback_takes_it_back(admin, new_user, http):
    region = federation(admin, "Occitanie")
    fed = federation(admin, "Hérault", region.id)
    elsewhere = federation(admin, "Bretagne")
    treasurer = new_user("treasurer", fed)
    regional = new_user("viewer", region)
    stranger = new_user("treasurer", elsewhere)
    contact = member(admin, fed)

    start = eventually(lambda: figures(treasurer, fed), lambda f: f is not None, timeout=60)
    assert start["members_in_good_standing"] == 0 and start["dues_cents"] == 0

    entry = {
        "contact_id": contact,
        "amount_cents": 3000,
        "method": "cheque",
        "purpose": "dues",
        "donor": DONOR,
        "cheque": {"number": "1234567", "bank": "Crédit Agricole", "drawer": "Louise L."},
    }
    key = {"Idempotency-Key": uuid.uuid4().hex}
    r = eventually(
        lambda: treasurer("POST", "/api/v1/payments/manual", json=entry, headers=key),
        lambda r: r.status_code != 404,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    payment_id = r.json()["payment_id"]

    live = eventually(
        lambda: figures(treasurer, fed),
        lambda f: f is not None and f["dues_cents"] == 3000,
        timeout=30,
    )
    assert live["members_in_good_standing"] == 1
    # the parent counts its subtree: a viewer of the region sees it too
    up = eventually(
        lambda: figures(regional, region), lambda f: f is not None and f["dues_cents"] == 3000
    )
    assert up["members_in_good_standing"] == 1
    # another federation's treasurer: not found, on both routes
    assert (
        stranger("GET", "/api/v1/live/memberships", params={"federation_id": fed.id}).status_code
        == 404
    )
    assert (
        stranger(
            "GET", "/api/v1/live/memberships/stream", params={"federation_id": fed.id}
        ).status_code
        == 404
    )

    # the stream through the gateway: the figures at once...
    first = stream_frames(http, treasurer.token, fed)
    assert first and first[0]["dues_cents"] == 3000

    # ...and pushed when they change: the cheque bounced
    r = treasurer(
        "POST",
        f"/api/v1/payments/{payment_id}/refund",
        json={"kind": "chargeback", "reason": "chèque impayé", "reference": "CI-9"},
    )
    assert r.status_code == 200, r.text
    pushed = eventually(
        lambda: stream_frames(http, treasurer.token, fed),
        lambda frames: any(f["dues_cents"] == 0 for f in frames),
        timeout=30,
    )
    last = pushed[-1]
    assert last["members_in_good_standing"] == 0 and last["members_cancelled"] == 1
