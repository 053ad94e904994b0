"""Privacy through the gateway, on the real processes: the DPO's access export gathers
every service's data on a person; an erasure closes with a receipt listing every service,
and afterwards neither any store nor a replay of every topic holds the person's email,
phone or names."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient
from support import eventually, read_all_topics
from tribune_devstack.platform import stack_secrets
from tribune_shared.events import Envelope, decode
from tribune_shared.settings import ServiceSettings
from tribune_shared.vault import KeyVault
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.e2e

SERVICES = ["contacts", "consent", "memberships", "messaging"]


def person(user) -> dict:
    tag = uuid.uuid4().hex[:10]
    digits = f"{int(tag, 16) % 10**8:08d}"
    body = {
        "given_name": f"Prenom{tag}",
        "family_name": f"Nom{tag}",
        "email": f"privacy.{tag}@example.fr",
        "phone": f"06 12 {digits[:2]} {digits[2:4]} {digits[4:6]}",
        "origin": {"kind": "petition", "detail": "petition climat"},
    }
    r = user("POST", "/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    contact = r.json()
    contact["secrets"] = [
        contact["email"],
        contact["phone"],
        body["given_name"],
        body["family_name"],
    ]
    return contact


def consent_and_mail(stack, user, contact_id: str) -> None:
    grant = {"channel": "email", "purpose": "news", "source": "web_form", "reference": "form-7"}
    eventually(
        lambda: user("POST", f"/api/v1/consents/{contact_id}/grant", json=grant),
        lambda r: r.status_code == 200,
    )
    eventually(
        lambda: user(
            "GET", f"/api/v1/messages/reachability/{contact_id}", params={"purpose": "news"}
        ),
        lambda r: r.status_code == 200 and r.json()["reachable"],
    )
    sent = user(
        "POST",
        "/api/v1/messages",
        json={
            "contact_id": contact_id,
            "channel": "email",
            "purpose": "news",
            "subject": "Assemblée générale",
            "text": "Samedi 10h.",
        },
    )
    assert sent.status_code == 201, sent.text


def pay(stack, http, contact_id: str, purpose: str, cents: int) -> None:
    body = json.dumps(
        {
            "provider": "helloasso",
            "provider_payment_id": f"pay-{uuid.uuid4().hex}",
            "contact_id": contact_id,
            "amount_cents": cents,
            "currency": "EUR",
            "method": "card",
            "purpose": purpose,
            "paid_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            # a gift is accepted only with the donor's declaration (French law)
            "donor": {"natural_person": True, "nationality": "FR", "resides_in_france": True},
        }
    ).encode()
    secret = stack.env["MEMBERSHIPS_WEBHOOK_SECRET"]
    headers = {"Content-Type": "application/json", **signature_headers(secret, body)}
    eventually(
        lambda: http.post("/api/v1/webhooks/payments", content=body, headers=headers),
        lambda r: r.status_code == 201 and r.json()["status"] == "recorded",
    )


def request(dpo, kind: str, contact_id: str) -> dict:
    r = dpo("POST", "/api/v1/privacy/requests", json={"kind": kind, "contact_id": contact_id})
    assert r.status_code == 201, r.text
    return r.json()


def test_the_access_export_holds_everything_every_service_has_on_the_person(
    stack, http, federations, dpos
):
    paris = federations["Paris"]
    contact = person(paris.user)
    consent_and_mail(stack, paris.user, contact["id"])
    pay(stack, http, contact["id"], "dues", 3000)
    pay(stack, http, contact["id"], "donation", 2500)
    # both get a tax receipt (issued by memberships' worker from payment-received)
    eventually(
        lambda: dpos["Paris"]("GET", "/api/v1/receipts", params={"contact_id": contact["id"]}),
        lambda r: r.status_code == 200 and len(r.json()["items"]) == 2,
    )

    req = request(dpos["Paris"], "access", contact["id"])
    assert req["status"] == "open" and req["overdue"] is False and req["deadline"]
    path = f"/api/v1/privacy/requests/{req['request_id']}/export"
    # only the DPO, only their subtree
    assert paris.user("GET", path).status_code == 403
    assert dpos["Lyon"]("GET", path).status_code == 404

    r = dpos["Paris"]("GET", path, timeout=120)  # five services answer; slow machines
    assert r.status_code == 200, r.text
    assert "attachment" in r.headers["content-disposition"]
    export = r.json()
    assert export["sources"] == dict.fromkeys(SERVICES, "exported")
    assert export["contact"]["email"] == contact["email"]
    assert export["contact"]["origin"]["kind"] == "petition"
    [granted] = [h for h in export["consents"]["history"] if h["status"] == "granted"]
    assert granted["proof"]["reference"] == "form-7" and granted["recorded_at"]
    assert [c["status"] for c in export["consents"]["current"]] == ["granted"]
    assert [p["amount_cents"] for p in export["payments"]] == [3000]
    assert [d["amount_cents"] for d in export["donations"]] == [2500]
    assert [m["status"] for m in export["memberships"]] == ["active"]
    # what memberships keeps for the tax receipts: the receipts, and the name they carry
    assert sorted(r["amount_cents"] for r in export["tax_receipts"]) == [2500, 3000]
    assert export["identity_for_receipts"]["family_name"] == contact["family_name"]
    assert export["payment_schedules"] == []
    assert [m["subject"] for m in export["messages"]] == ["Assemblée générale"]
    assert export["request"]["status"] == "completed"
    assert export["privacy_requests"][0]["request_id"] == req["request_id"]

    # the export is recorded on the request, which is answered
    listed = dpos["Paris"]("GET", "/api/v1/privacy/requests", params={"kind": "access"}).json()
    [mine] = [i for i in listed["items"] if i["request_id"] == req["request_id"]]
    assert mine["status"] == "completed" and mine["exports"][0]["services"] == SERVICES
    overdue = dpos["Paris"]("GET", "/api/v1/privacy/requests", params={"overdue": "true"}).json()
    assert req["request_id"] not in {i["request_id"] for i in overdue["items"]}

    # the access audit: who touched the person's data, through the gateway (DPO only)
    assert paris.user("GET", "/api/v1/audit/access").status_code == 403
    r = dpos["Paris"]("GET", "/api/v1/audit/access", params={"contact_id": contact["id"]})
    assert r.status_code == 200, r.text
    touched = {(e["role"], e["action"], e["path"]) for e in r.json()["items"]}
    assert ("dpo", "exported", path) in touched
    assert ("secretary", "changed", f"/api/v1/consents/{contact['id']}/grant") in touched
    assert ("secretary", "viewed", f"/api/v1/messages/reachability/{contact['id']}") in touched


def test_erasure_closes_with_a_receipt_and_no_store_nor_topic_replay_brings_the_person_back(
    stack, http, federations, dpos
):
    paris = federations["Paris"]
    erased, kept = person(paris.user), person(paris.user)
    for contact in (erased, kept):
        consent_and_mail(stack, paris.user, contact["id"])
    pay(stack, http, erased["id"], "donation", 4000)

    req = request(dpos["Paris"], "erasure", erased["id"])
    assert req["status"] == "in_progress"
    path = f"/api/v1/privacy/requests/{req['request_id']}"
    done = eventually(
        lambda: dpos["Paris"]("GET", path),
        lambda r: r.status_code == 200 and r.json()["status"] == "completed",
        timeout=60,
    ).json()
    receipt = done["receipt"]
    assert [s["service"] for s in receipt["services"]] == SERVICES
    assert all(s["completed_at"] for s in receipt["services"])
    assert receipt["key_destroyed_at"]
    legal = receipt["kept_for_legal_reasons"]
    [payments] = [x for x in legal if x.startswith("memberships: payments: ")]
    assert payments.startswith("memberships: payments: 1 ") and "political-finance law" in payments
    # its tax receipt, if issued before the erasure, is kept too (tax law)
    assert all(
        x.startswith(("memberships: payments: ", "memberships: receipts: ")) for x in legal
    ), legal

    # gone from every service's view
    assert paris.user("GET", f"/api/v1/contacts/{erased['id']}").status_code == 404
    assert paris.user("GET", f"/api/v1/people/{erased['id']}").status_code == 404
    assert paris.user("GET", f"/api/v1/consents/{erased['id']}").status_code == 404
    r = paris.user(
        "GET", f"/api/v1/messages/reachability/{erased['id']}", params={"purpose": "news"}
    )
    assert r.status_code == 404

    # no store of the platform holds the email, phone or names (the other person's are there)
    dumped = []
    for url in stack.cfg.store_urls.values():  # each service's store and the main one
        client = MongoClient(url, tz_aware=True)
        try:
            for name in client.list_database_names():
                if name.startswith(stack.cfg.database_prefix):
                    for coll in client[name].list_collection_names():
                        dumped += [f"{name}.{coll}: {d!r}" for d in client[name][coll].find({})]
        finally:
            client.close()
    everything = "\n".join(dumped)
    # Tax receipts keep the donor's name and address for their retention period (LPF art.
    # L102 E, memberships README), under a pseudonym: nowhere else.
    receipts = [
        d for d in dumped if d.startswith(f"{stack.cfg.database_prefix}memberships.receipts: ")
    ]
    elsewhere = "\n".join(d for d in dumped if d not in receipts)
    assert [s for s in erased["secrets"] if s in elsewhere] == []
    for doc in receipts:
        if any(s in doc for s in erased["secrets"]):
            assert "pseudonym-" in doc and erased["id"] not in doc
    assert kept["email"] in everything

    # replaying every topic from the beginning with a fresh consumer, and decoding every
    # event with the platform's vault: nothing of the erased person (the kept one: yes)
    raw, decoded = asyncio.run(replay(stack))
    assert [s for s in erased["secrets"] if s in raw] == []
    assert [s for s in kept["secrets"] if s in raw] == []  # never in clear on a topic
    assert [s for s in erased["secrets"] if s in decoded] == []
    assert kept["email"] in decoded


async def replay(stack) -> tuple[str, str]:
    # the platform's own vault settings (its key-encryption key is derived from its secret)
    settings = ServiceSettings(
        mongo_url=stack.cfg.mongo_url,
        database_prefix=stack.cfg.database_prefix,
        identity_secret=stack_secrets(stack.cfg)["identity_secret"],
    )
    vault = KeyVault(settings)
    raw, decoded = [], []
    try:
        topics = await read_all_topics(stack.cfg.kafka_bootstrap, stack.cfg.topic_prefix)
        assert sum(len(r) for r in topics.values()) > 0
        for records in topics.values():
            for record in records:
                raw.append(record.value.decode("utf-8", "replace"))
                try:
                    envelope = await vault.open(Envelope.from_bytes(record.value))
                    decoded.append(json.dumps(decode(envelope).model_dump(mode="json")))
                except Exception as exc:  # checked through its raw bytes
                    decoded.append(repr(exc))
    finally:
        await vault.close()
    return "\n".join(raw), "\n".join(decoded)
