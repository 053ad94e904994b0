"""A federation moved through the gateway on the real platform: its contacts, consents
and payments follow it (every service re-paths what it holds, from federation-updated):
seen from the new parent, no longer from the old one."""

from __future__ import annotations

import uuid

import pytest
from support import create_federation, create_member, eventually

pytestmark = pytest.mark.e2e

DONOR = {"natural_person": True, "nationality": "FR", "resides_in_france": True}


def test_a_moved_federations_data_is_seen_from_its_new_parent_only(admin, new_user) -> None:
    a = create_federation(admin, "A")
    c = create_federation(admin, "C")
    b = create_federation(admin, "B", a.id)
    of_a, of_c, of_b = (new_user("secretary", f) for f in (a, c, b))

    contact = create_member(admin, b)
    grant = {"channel": "email", "purpose": "news", "source": "web_form"}
    r = eventually(
        lambda: admin("POST", f"/api/v1/consents/{contact}/grant", json=grant),
        lambda r: r.status_code != 404,
        timeout=60,
    )
    assert r.status_code in (200, 201), r.text
    entry = {
        "contact_id": contact,
        "amount_cents": 2500,
        "method": "cheque",
        "purpose": "dues",
        "donor": DONOR,
        "cheque": {"number": uuid.uuid4().hex[:7], "bank": "Banque du Déplacement"},
    }
    key = {"Idempotency-Key": uuid.uuid4().hex}
    r = eventually(
        lambda: admin("POST", "/api/v1/payments/manual", json=entry, headers=key),
        lambda r: r.status_code != 404,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    payment = r.json()["payment_id"]

    reads = (
        f"/api/v1/contacts/{contact}",
        f"/api/v1/consents/{contact}",
        f"/api/v1/payments/{payment}",
    )

    def seen(user) -> list[int]:
        return [user("GET", path).status_code for path in reads]

    assert seen(of_a) == [200, 200, 200]
    assert seen(of_c) == [404, 404, 404]

    r = admin("PATCH", f"/api/v1/federations/{b.id}", json={"parent_id": c.id})
    assert r.status_code == 200, r.text
    assert r.json()["path"] == f"{c.path}{b.id}/"

    # the services re-path in the background: soon C sees all of it, A none of it
    assert eventually(lambda: seen(of_c), lambda s: s == [200, 200, 200], timeout=60)
    assert eventually(lambda: seen(of_a), lambda s: s == [404, 404, 404], timeout=60)
    # B's own users still see their federation's data, under its new path
    assert seen(of_b) == [200, 200, 200]
    me = of_b("GET", "/api/v1/me").json()
    assert me["federation_path"] == f"{c.path}{b.id}/"
    assert admin("GET", f"/api/v1/federations/{b.id}").json()["parent_id"] == c.id
    # a later write lands under the new path
    later = create_member(admin, b)
    assert of_c("GET", f"/api/v1/contacts/{later}").status_code == 200
    assert of_a("GET", f"/api/v1/contacts/{later}").status_code == 404
