"""Consent API over the real store: the ledger, idempotence, tenancy, clear errors."""

from __future__ import annotations

import asyncio

import pytest
from consent.main import create_app
from consent.settings import ConsentSettings
from fastapi.testclient import TestClient
from support import identity_headers, make_identity
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
LYON = "/root/lyon/"


def seed_contact(settings: ConsentSettings, contact_id: str, path: str) -> None:
    async def run():
        store = Store(settings)
        handler = ContactDirectory(store).on_contact_event
        env = new_envelope(
            ContactCreatedV1(contact_id=contact_id, contact_version=1, contact=ContactState()),
            producer="contacts",
            federation_id=path.strip("/").rsplit("/", 1)[-1],
            federation_path=path,
        )
        async with store.transaction() as session:
            await handler(env, session)
        await store.close()

    asyncio.run(run())


def outbox_types(settings: ConsentSettings) -> list[str]:
    async def run():
        store = Store(settings)
        docs = await store[OUTBOX].find({}).sort("seq").to_list()
        await store.close()
        return [d["topic"] for d in docs]

    return asyncio.run(run())


@pytest.fixture
def api(isolated_env):
    settings = ConsentSettings()
    seed_contact(settings, "c-paris", PARIS)
    seed_contact(settings, "c-lyon", LYON)
    with TestClient(create_app(settings)) as client:
        yield client, settings


def headers(settings, path=PARIS, role=Role.campaign_manager):
    return identity_headers(make_identity(path, role), settings.identity_secret)


GRANT = {"channel": "email", "purpose": "news", "source": "web_form", "text_version": "v3"}


def test_grant_then_revoke_is_recorded_with_proof_and_events(api):
    client, settings = api
    # The proof refers to a stored consent text (its version and SHA-256).
    text = {"version": "v3", "title": "Newsletter", "body": "I agree to receive the news."}
    made = client.post(
        "/api/v1/consents/texts", json=text, headers=headers(settings, "/root/", Role.dpo)
    )
    assert made.status_code == 201, made.text
    r = client.post("/api/v1/consents/c-paris/grant", json=GRANT, headers=headers(settings))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "contact_id": "c-paris",
        "channel": "email",
        "purpose": "news",
        "status": "granted",
        "changed": True,
    }
    again = client.post("/api/v1/consents/c-paris/grant", json=GRANT, headers=headers(settings))
    assert again.json()["changed"] is False
    r = client.post("/api/v1/consents/c-paris/revoke", json=GRANT, headers=headers(settings))
    assert r.json()["status"] == "revoked"

    view = client.get("/api/v1/consents/c-paris", headers=headers(settings)).json()
    assert [c["status"] for c in view["consents"]] == ["revoked"]
    assert [h["status"] for h in view["history"]] == ["granted", "revoked"]
    assert view["history"][0]["proof"] == {"text_version": "v3", "text_hash": made.json()["sha256"]}
    # after the text's own consent-text-published (contacts keeps a copy for its forms)
    assert outbox_types(settings) == [
        "consent-text-published",
        "consent-granted",
        "consent-revoked",
    ]


def test_another_federations_contact_is_404_and_nothing_is_written(api):
    client, settings = api
    r = client.post("/api/v1/consents/c-lyon/grant", json=GRANT, headers=headers(settings))
    assert r.status_code == 404
    assert client.get("/api/v1/consents/c-lyon", headers=headers(settings)).status_code == 404
    assert client.get("/api/v1/consents/nobody", headers=headers(settings)).status_code == 404
    # the national level sees both
    national = headers(settings, "/root/")
    assert client.get("/api/v1/consents/c-lyon", headers=national).status_code == 200
    assert outbox_types(settings) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GRANT, "channel": "pigeon"}, "channel"),
        ({**GRANT, "purpose": ""}, "purpose"),
        ({k: v for k, v in GRANT.items() if k != "source"}, "source"),
        ({**GRANT, "purpose": "unknown-purpose"}, "purpose"),
    ],
)
def test_malformed_input_gets_422_with_field_and_reason(api, body, field):
    client, settings = api
    r = client.post("/api/v1/consents/c-paris/grant", json=body, headers=headers(settings))
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail[0]["field"] == field and detail[0]["reason"]
    assert outbox_types(settings) == []


def test_identity_is_required_and_verified(api):
    client, settings = api
    assert client.get("/api/v1/consents/c-paris").status_code == 401
    forged = identity_headers(make_identity(PARIS), "not-the-secret-" * 3)
    assert client.get("/api/v1/consents/c-paris", headers=forged).status_code == 401
    viewer = headers(settings, role=Role.viewer)
    assert (
        client.post("/api/v1/consents/c-paris/grant", json=GRANT, headers=viewer).status_code == 403
    )


def test_consent_rates_count_the_callers_subtree_and_name_nobody(api):
    client, settings = api
    seed_contact(settings, "c-paris-11", "/root/paris/11e/")
    text = {"version": "v3", "title": "Newsletter", "body": "I agree to receive the news."}
    dpo = headers(settings, "/root/", Role.dpo)
    assert client.post("/api/v1/consents/texts", json=text, headers=dpo).status_code == 201
    sms = {**GRANT, "channel": "sms"}
    for contact, path, body in (
        ("c-paris", PARIS, GRANT),
        ("c-paris", PARIS, sms),
        ("c-paris-11", PARIS, GRANT),
        ("c-lyon", LYON, GRANT),
    ):
        r = client.post(
            f"/api/v1/consents/{contact}/grant", json=body, headers=headers(settings, path)
        )
        assert r.status_code == 200, r.text
    r = client.post("/api/v1/consents/c-paris-11/revoke", json=GRANT, headers=headers(settings))
    assert r.status_code == 200, r.text

    r = client.get("/api/v1/consents/rates", headers=headers(settings, PARIS, Role.viewer))

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["people"] == 2  # Paris and its 11e; Lyon's contact is not counted
    by_channel = {(x["channel"], x["purpose"]): x for x in body["rates"]}
    assert by_channel[("email", "news")] | {"rate": None} == {
        "channel": "email",
        "purpose": "news",
        "granted": 1,
        "pending": 0,
        "revoked": 1,
        "rate": None,
    }
    assert by_channel[("email", "news")]["rate"] == 0.5
    assert by_channel[("sms", "news")]["granted"] == 1
    assert "c-paris" not in r.text  # aggregate figures: nobody named
    everyone = client.get("/api/v1/consents/rates", headers=headers(settings, "/root/", Role.admin))
    assert everyone.json()["people"] == 3
    assert (
        client.get(
            "/api/v1/consents/rates",
            params={"federation_id": "lyon"},
            headers=headers(settings, PARIS, Role.viewer),
        ).status_code
        == 404
    )
