"""Consent API over the real store: consent texts (immutable once used), proof with the
text's hash and a minimised origin, double opt-in requests, tracking consent, the
suppression refusal and the DPO's audit log."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from consent.handlers import contact_handlers, contact_merge_handlers
from consent.main import create_app
from consent.privacy_service import PrivacyService
from consent.service import CONFIRM_PATH, CONFIRM_PURPOSE, ConsentService
from consent.settings import ConsentSettings
from consent.store import ConsentStore
from fastapi.testclient import TestClient
from pymongo.errors import ServerSelectionTimeoutError
from support import deliver, identity_headers, make_identity, run_with_store
from tribune_shared.auth import Role
from tribune_shared.client_info import CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactMergedV1, ContactState
from tribune_shared.outbox import OUTBOX
from tribune_shared.tokens import SignedTokens

pytestmark = pytest.mark.integration

ROOT = "/root/"
PARIS = "/root/paris/"
LYON = "/root/lyon/"
ORIGIN = {CLIENT_IP_HEADER: "203.0.113.77", CLIENT_USER_AGENT_HEADER: "Firefox/128.0 " * 12}


def seed_contact(settings, contact_id, path, email=None, phone=None) -> None:
    async def work(store):
        handlers = contact_handlers(
            ConsentStore(store), ContactDirectory(store), settings.suppression_salt
        )
        env = new_envelope(
            ContactCreatedV1(
                contact_id=contact_id,
                contact_version=1,
                contact=ContactState(email=email, phone=phone),
            ),
            producer="contacts",
            federation_id=path.strip("/").rsplit("/", 1)[-1],
            federation_path=path,
        )
        await deliver(store, handlers, env)

    run_with_store(settings, work)


def outbox(settings) -> list[Envelope]:
    async def work(store):
        docs = await store[OUTBOX].find({}).sort("seq").to_list()
        return [Envelope.model_validate(d["envelope"]) for d in docs]

    return run_with_store(settings, work)


@pytest.fixture
def api(isolated_env):
    settings = ConsentSettings()
    seed_contact(settings, "ana", PARIS, email="ana@example.org", phone="+33612345678")
    seed_contact(settings, "leo", LYON, email="leo@example.org")
    with TestClient(create_app(settings)) as client:
        yield client, settings


def headers(settings, path=PARIS, role=Role.secretary, **extra):
    identity = make_identity(path, role, user_id=f"{role.value}-{path.strip('/')}")
    return {**identity_headers(identity, settings.identity_secret), **extra}


TEXT = {
    "version": "2026-01",
    "title": "Newsletter",
    "body": "J'accepte de recevoir les actualités de la fédération.",
}


def grant(client, settings, contact_id="ana", path=PARIS, **body):
    payload = {"channel": "email", "purpose": "news", "source": "web_form", **body}
    return client.post(
        f"/api/v1/consents/{contact_id}/grant", json=payload, headers=headers(settings, path)
    )


# ---------------------------------------------------------------- consent texts


def test_a_text_is_stored_with_its_hash_and_visible_below_its_federation(api):
    client, settings = api
    r = client.post("/api/v1/consents/texts", json=TEXT, headers=headers(settings, ROOT))
    assert r.status_code == 201, r.text
    text = r.json()
    assert text["sha256"] == hashlib.sha256(TEXT["body"].encode()).hexdigest()
    assert (text["federation_id"], text["used"], text["language"]) == ("root", False, "fr")

    # Paris (below root) sees and may use it; it is the national text
    paris = client.get("/api/v1/consents/texts", headers=headers(settings, PARIS)).json()
    assert [t["id"] for t in paris["items"]] == [text["id"]]
    r = client.get(f"/api/v1/consents/texts/{text['id']}", headers=headers(settings, LYON))
    assert r.status_code == 200
    # but only root may change it
    r = client.put(
        f"/api/v1/consents/texts/{text['id']}",
        json={"title": "x"},
        headers=headers(settings, PARIS),
    )
    assert r.status_code == 404

    # a Paris text is invisible to Lyon
    mine = client.post(
        "/api/v1/consents/texts", json={**TEXT, "version": "p1"}, headers=headers(settings)
    ).json()
    assert (
        client.get(f"/api/v1/consents/texts/{mine['id']}", headers=headers(settings, LYON))
    ).status_code == 404

    again = client.post("/api/v1/consents/texts", json=TEXT, headers=headers(settings, ROOT))
    assert again.status_code == 409
    assert again.json()["existing_id"] == text["id"]


def test_a_text_changes_until_used_as_proof_then_is_immutable(api):
    client, settings = api
    text = client.post("/api/v1/consents/texts", json=TEXT, headers=headers(settings)).json()
    r = client.put(
        f"/api/v1/consents/texts/{text['id']}",
        json={"body": "Nouvelle version du texte."},
        headers=headers(settings),
    )
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(b"Nouvelle version du texte.").hexdigest()

    assert grant(client, settings, text_version=TEXT["version"]).status_code == 200
    used = client.get(f"/api/v1/consents/texts/{text['id']}", headers=headers(settings)).json()
    assert used["used"] is True and used["first_used_at"]

    for method in ("put", "delete"):
        kwargs = {"json": {"body": "Changed after the fact"}} if method == "put" else {}
        r = getattr(client, method)(
            f"/api/v1/consents/texts/{text['id']}", headers=headers(settings), **kwargs
        )
        assert r.status_code == 409, r.text
        assert r.json()["rule"] == "text_used"
    same = client.get(f"/api/v1/consents/texts/{text['id']}", headers=headers(settings)).json()
    assert same["sha256"] == used["sha256"]

    other = client.post(
        "/api/v1/consents/texts", json={**TEXT, "version": "unused"}, headers=headers(settings)
    ).json()
    r = client.delete(f"/api/v1/consents/texts/{other['id']}", headers=headers(settings))
    assert r.status_code == 204
    assert (
        client.get(f"/api/v1/consents/texts/{other['id']}", headers=headers(settings))
    ).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**TEXT, "version": "v 1"}, "version"),
        ({**TEXT, "body": ""}, "body"),
        ({**TEXT, "body": "   "}, "body"),
        ({**TEXT, "language": "french"}, "language"),
        ({**TEXT, "extra": 1}, "extra"),
        ({k: v for k, v in TEXT.items() if k != "title"}, "title"),
    ],
)
def test_malformed_texts_are_422_with_the_field(api, body, field):
    client, settings = api
    r = client.post("/api/v1/consents/texts", json=body, headers=headers(settings))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field
    assert client.get("/api/v1/consents/texts", headers=headers(settings)).json()["items"] == []


def test_only_secretaries_dpos_and_admins_write_texts(api):
    client, settings = api
    manager = headers(settings, role=Role.campaign_manager)
    assert client.post("/api/v1/consents/texts", json=TEXT, headers=manager).status_code == 403


# ---------------------------------------------------------------- proof


def test_the_proof_holds_the_text_hash_the_reference_and_a_minimised_origin(api):
    client, settings = api
    text = client.post("/api/v1/consents/texts", json=TEXT, headers=headers(settings)).json()
    r = client.post(
        "/api/v1/consents/ana/grant",
        json={
            "channel": "email",
            "purpose": "news",
            "source": "web_form",
            "text_version": TEXT["version"],
            "reference": "petition-climat-2026",
        },
        headers=headers(settings, **ORIGIN),
    )
    assert r.status_code == 200, r.text
    view = client.get("/api/v1/consents/ana", headers=headers(settings)).json()
    [entry] = view["history"]
    assert entry["proof"] == {
        "text_version": "2026-01",
        "text_hash": text["sha256"],
        "reference": "petition-climat-2026",
        "ip": "203.0.113.0/24",
        "user_agent": ("Firefox/128.0 " * 12)[:64].rstrip(),
    }
    assert (entry["actor"], entry["actor_kind"]) == ("secretary-root/paris", "user")

    # the text's own consent-text-published (for contacts' forms) aside
    [event] = [e for e in outbox(settings) if e.type != "consent-text-published"]
    assert event.type == "consent-granted"
    assert event.data["text_hash"] == text["sha256"]
    assert event.data["actor_kind"] == "user"
    assert "203.0.113" not in event.model_dump_json()  # the origin stays in consent


def test_an_unknown_text_version_refuses_a_grant_but_never_an_objection(api):
    client, settings = api
    r = grant(client, settings, text_version="nope")
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "text_version"
    assert outbox(settings) == []

    body = {"channel": "email", "purpose": "news", "source": "letter", "text_version": "nope"}
    r = client.post("/api/v1/consents/ana/revoke", json=body, headers=headers(settings))
    assert r.status_code == 200 and r.json()["changed"] is True
    [entry] = client.get("/api/v1/consents/ana", headers=headers(settings)).json()["history"]
    assert entry["proof"]["text_version"] == "nope" and "text_hash" not in entry["proof"]


def test_the_tracking_consent_is_an_email_purpose(api):
    client, settings = api
    assert grant(client, settings, purpose="tracking").json()["status"] == "granted"
    r = grant(client, settings, purpose="tracking", channel="sms")
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "channel"


# ---------------------------------------------------------------- double opt-in


def test_a_double_opt_in_grant_is_pending_and_asks_messaging_to_send_the_link(api):
    client, settings = api
    r = grant(client, settings, double_opt_in=True)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending" and r.json()["changed"] is True
    again = grant(client, settings, double_opt_in=True)
    assert again.json() == {**r.json(), "changed": False}  # no second email

    [event] = outbox(settings)
    assert event.type == "consent-confirmation-requested"
    assert event.key == "ana" and event.federation_path == PARIS
    url = event.data["confirm_url"]
    assert url.startswith(settings.public_base_url + CONFIRM_PATH + "?token=")
    token = parse_qs(urlsplit(url).query)["token"][0]
    claims = SignedTokens(settings.unsubscribe_secret, CONFIRM_PURPOSE).verify(token)
    assert claims.data["c"] == "ana" and claims.data["r"] == event.data["request_id"]
    expires = datetime.fromisoformat(event.data["expires_at"])
    assert int(expires.timestamp()) == claims.expires_at
    assert claims.expires_at - time.time() == pytest.approx(
        settings.confirmation_ttl_seconds, abs=60
    )

    view = client.get("/api/v1/consents/ana", headers=headers(settings)).json()
    [current] = view["consents"]
    assert current["status"] == "pending" and current["confirmation_expires_at"]
    assert view["history"][0]["proof"]["request_id"] == event.data["request_id"]


def test_double_opt_in_is_for_email_grants_only(api):
    client, settings = api
    r = grant(client, settings, channel="sms", double_opt_in=True)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "channel"
    body = {"channel": "email", "purpose": "news", "source": "x", "double_opt_in": True}
    r = client.post("/api/v1/consents/ana/revoke", json=body, headers=headers(settings))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "double_opt_in"
    assert outbox(settings) == []


# ---------------------------------------------------------------- suppression


def test_no_consent_can_be_granted_to_a_suppressed_person(api):
    client, settings = api

    async def suppress(store):
        async with store.transaction() as session:
            return await ConsentService(settings, store).suppress_contact(
                session, "ana", federation_id="paris", federation_path=PARIS, reason="objection"
            )

    added = run_with_store(settings, suppress)
    assert len(added) == 2  # the email and the phone
    r = grant(client, settings)
    assert r.status_code == 409
    assert r.json()["rule"] == "suppressed"
    r = grant(client, settings, double_opt_in=True)
    assert r.status_code == 409
    # an objection is still recorded
    body = {"channel": "sms", "purpose": "news", "source": "letter"}
    assert client.post(
        "/api/v1/consents/ana/revoke", json=body, headers=headers(settings)
    ).is_success
    view = client.get("/api/v1/consents/ana", headers=headers(settings)).json()
    assert view["suppressed"] is True
    types = [e.type for e in outbox(settings)]
    assert types == ["suppression-added", "suppression-added", "consent-revoked"]
    # Lyon's contact is not concerned
    assert grant(client, settings, "leo", LYON).status_code == 200


# ---------------------------------------------------------------- audit log


def test_the_dpo_reads_who_viewed_and_changed_consents_from_where(api):
    client, settings = api
    assert grant(client, settings).status_code == 200
    assert client.get(
        "/api/v1/consents/ana", headers=headers(settings, role=Role.campaign_manager, **ORIGIN)
    ).is_success
    assert grant(client, settings, "leo", LYON).status_code == 200

    dpo = headers(settings, PARIS, Role.dpo)
    r = client.get("/api/v1/consents/audit", params={"contact_id": "ana"}, headers=dpo)
    assert r.status_code == 200, r.text
    viewed, changed = r.json()["items"]  # newest first
    assert viewed["action"] == "consent_viewed"
    assert (viewed["actor"], viewed["role"]) == ("campaign_manager-root/paris", "campaign_manager")
    assert viewed["ip"] == "203.0.113.0/24" and len(viewed["user_agent"]) <= 64
    assert changed["action"] == "consent_changed"
    assert changed["detail"]["changes"] == [
        {"channel": "email", "purpose": "news", "status": "granted"}
    ]
    # Paris's DPO never sees Lyon's entries; the national DPO sees both
    everything = client.get("/api/v1/consents/audit", headers=dpo).json()["items"]
    assert {e["contact_id"] for e in everything} == {"ana"}
    national = client.get("/api/v1/consents/audit", headers=headers(settings, ROOT, Role.dpo))
    assert {e["contact_id"] for e in national.json()["items"]} == {"ana", "leo"}

    # filter by action, and page with the cursor
    r = client.get(
        "/api/v1/consents/audit", params={"action": "consent_changed"}, headers=dpo
    ).json()
    assert [e["action"] for e in r["items"]] == ["consent_changed"]
    first = client.get("/api/v1/consents/audit", params={"limit": 1}, headers=dpo).json()
    assert first["next_cursor"]
    second = client.get(
        "/api/v1/consents/audit", params={"limit": 1, "cursor": first["next_cursor"]}, headers=dpo
    ).json()
    assert [first["items"][0]["id"], second["items"][0]["id"]] == [viewed["id"], changed["id"]]
    assert second["next_cursor"] is None


@pytest.mark.parametrize("role", [Role.admin, Role.secretary, Role.campaign_manager])
def test_the_audit_log_is_the_dpos_alone(api, role):
    client, settings = api
    r = client.get("/api/v1/consents/audit", headers=headers(settings, ROOT, role))
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "garbage"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 100_000}, "limit"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "yesterday"}, "since"),
        ({"contact_id": "../x"}, "contact_id"),
    ],
)
def test_malformed_audit_queries_are_422(api, params, field):
    client, settings = api
    r = client.get(
        "/api/v1/consents/audit", params=params, headers=headers(settings, role=Role.dpo)
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field


# ---------------------------------------------------------------- merged duplicates


def bob_merged_into_ana() -> Envelope:
    return new_envelope(
        ContactMergedV1(
            merged_contact_id="bob", surviving_contact_id="ana", contact_version=2, merged_by="u1"
        ),
        producer="contacts",
        federation_id="paris",
        federation_path=PARIS,
    )


def deliver_merge(settings, merged: Envelope) -> None:
    """Consent's contact-merged handler applies ``merged`` (as its worker would)."""

    async def work(store):
        handler = contact_merge_handlers(
            ConsentService(settings, store), PrivacyService(settings, store)
        )["contact-merged"]
        async with store.transaction() as session:
            await handler(merged, session)

    run_with_store(settings, work)


def test_a_merged_duplicate_s_consents_follow_the_survivor_once(api):
    client, settings = api
    seed_contact(settings, "bob", PARIS, email="bob@example.org")
    assert grant(client, settings, "bob").status_code == 200  # email/news: ana has none
    r = client.post(
        "/api/v1/consents/ana/revoke",
        json={"channel": "sms", "purpose": "news", "source": "call"},
        headers=headers(settings),
    )
    assert r.status_code == 200
    assert grant(client, settings, "bob", channel="sms").status_code == 200  # later: wins
    before = len(outbox(settings))
    merged = bob_merged_into_ana()

    def deliver() -> None:
        deliver_merge(settings, merged)

    deliver()
    view = client.get("/api/v1/consents/ana", headers=headers(settings)).json()
    current = {(c["channel"], c["purpose"]): c["status"] for c in view["consents"]}
    assert current == {("email", "news"): "granted", ("sms", "news"): "granted"}
    carried = [h for h in view["history"] if h["source"] == "contact_merge"]
    assert len(carried) == 2 and all(h["actor"] == "u1" for h in carried)
    assert all(h["proof"]["merged_contact_id"] == "bob" for h in carried)
    # bob's own entries are part of ana's history now, bob has no consents any more
    assert [h["source"] for h in view["history"]].count("web_form") == 2
    assert client.get("/api/v1/consents/bob", headers=headers(settings)).status_code == 404
    published = [(e.type, e.key) for e in outbox(settings)[before:]]
    assert published == [("consent-granted", "ana"), ("consent-granted", "ana")]

    deliver()  # a replay (another consumer group, a restore) changes nothing
    assert len(outbox(settings)) == before + 2
    again = client.get("/api/v1/consents/ana", headers=headers(settings)).json()
    assert len(again["history"]) == len(view["history"])


def test_the_view_of_a_survivor_counts_the_addresses_of_the_contacts_merged_into_it(api):
    client, settings = api
    seed_contact(settings, "bob", PARIS, email="bob@example.org")

    async def suppress_bob(store):
        async with store.transaction() as session:
            return await ConsentService(settings, store).suppress_contact(
                session, "bob", federation_id="paris", federation_path=PARIS, reason="objection"
            )

    assert len(run_with_store(settings, suppress_bob)) == 1
    view = client.get("/api/v1/consents/ana", headers=headers(settings)).json()
    assert view["suppressed"] is False  # bob's address, not ana's yet
    deliver_merge(settings, bob_merged_into_ana())
    view = client.get("/api/v1/consents/ana", headers=headers(settings)).json()
    assert view["suppressed"] is True


def test_a_view_whose_audit_entry_cannot_be_written_is_refused(api, monkeypatch):
    client, settings = api
    assert grant(client, settings).status_code == 200
    manager = headers(settings, role=Role.campaign_manager, **ORIGIN)
    service = client.app.state.consent_service

    async def unreachable(docs, session):
        raise ServerSelectionTimeoutError("the store is unreachable")

    monkeypatch.setattr(service.consents, "add_audits", unreachable)
    r = client.get("/api/v1/consents/ana", headers=manager)
    assert r.status_code == 503, r.text
    assert "news" not in r.text  # nothing of the person's consents
    monkeypatch.undo()
    assert client.get("/api/v1/consents/ana", headers=manager).status_code == 200
    dpo = headers(settings, PARIS, Role.dpo)
    items = client.get(
        "/api/v1/consents/audit", params={"action": "consent_viewed"}, headers=dpo
    ).json()["items"]
    assert len(items) == 1  # the answered view, not the refused one
