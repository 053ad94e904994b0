"""The public side of consent over the real store: the double opt-in confirmation page,
the unsubscribe page and RFC 8058 one-click, the SMS STOP webhook, the suppression list
(as salted hashes only) and erasure. A forged, altered or expired link changes nothing."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from consent.handlers import contact_handlers, contact_merge_handlers, suppression_handlers
from consent.main import create_app
from consent.privacy_handlers import privacy_handlers
from consent.privacy_service import PrivacyService
from consent.service import CONFIRM_PURPOSE, ConsentService
from consent.settings import ConsentSettings
from consent.store import ConsentStore
from fastapi.testclient import TestClient
from support import deliver, identity_headers, make_identity, run_with_store
from tribune_shared.auth import Role
from tribune_shared.client_info import CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import (
    ContactCreatedV1,
    ContactMergedV1,
    ContactState,
    ErasureRequestedV1,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.suppression import email_hash, phone_hash
from tribune_shared.tokens import SignedTokens, TokenError, UnsubscribeTokens
from tribune_shared.vault import vault_for
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
LYON = "/root/lyon/"
EMAIL = "Ana.Martin@Example.org"
PHONE = "+33612345678"
PERSON = {CLIENT_IP_HEADER: "2001:db8:85a3:8d3::7348", CLIENT_USER_AGENT_HEADER: "Thunderbird/128"}
CONFIRM = "/api/v1/public/consents/confirm"
UNSUBSCRIBE = "/api/v1/public/consents/unsubscribe"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def handle(settings, *envelopes: Envelope) -> None:
    async def work(store):
        subscriptions = (
            Subscriptions("consent")
            .add(
                contact_handlers(
                    ConsentStore(store), ContactDirectory(store), settings.suppression_salt
                )
            )
            .add(suppression_handlers(ConsentService(settings, store)))
        )
        await deliver(store, subscriptions, *envelopes)

    run_with_store(settings, work)


def contact_created(contact_id, path=PARIS, email=EMAIL, phone=PHONE) -> Envelope:
    return new_envelope(
        ContactCreatedV1(
            contact_id=contact_id,
            contact_version=1,
            contact=ContactState(given_name="Ana", email=email, phone=phone),
        ),
        producer="contacts",
        federation_id=path.strip("/").rsplit("/", 1)[-1],
        federation_path=path,
    )


def outbox(settings) -> list[Envelope]:
    async def work(store):
        docs = await store[OUTBOX].find({}).sort("seq").to_list()
        return [Envelope.model_validate(d["envelope"]) for d in docs]

    return run_with_store(settings, work)


@pytest.fixture
def api(isolated_env):
    settings = ConsentSettings()
    handle(settings, contact_created("ana"))
    with TestClient(create_app(settings)) as client:
        yield client, settings


def staff(settings, path=PARIS, role=Role.secretary):
    return identity_headers(make_identity(path, role), settings.identity_secret)


def grant(client, settings, contact_id="ana", path=PARIS, **body):
    payload = {"channel": "email", "purpose": "news", "source": "web_form", **body}
    r = client.post(
        f"/api/v1/consents/{contact_id}/grant", json=payload, headers=staff(settings, path)
    )
    assert r.status_code == 200, r.text
    return r.json()


def state(client, settings, contact_id="ana") -> dict:
    view = client.get(f"/api/v1/consents/{contact_id}", headers=staff(settings, "/root/"))
    assert view.status_code == 200, view.text
    return view.json()


def statuses(client, settings, contact_id="ana") -> dict[tuple[str, str], str]:
    return {
        (c["channel"], c["purpose"]): c["status"]
        for c in state(client, settings, contact_id)["consents"]
    }


def confirm_token(settings) -> str:
    [event] = [e for e in outbox(settings) if e.type == "consent-confirmation-requested"]
    return parse_qs(urlsplit(event.data["confirm_url"]).query)["token"][0]


# ---------------------------------------------------------------- double opt-in


def test_opening_the_confirmation_link_shows_the_text_and_posting_confirms(api):
    client, settings = api
    text = {"version": "v1", "title": "Actualités", "body": "J'accepte les actualités."}
    assert client.post("/api/v1/consents/texts", json=text, headers=staff(settings)).is_success
    assert grant(client, settings, double_opt_in=True, text_version="v1")["status"] == "pending"
    token = confirm_token(settings)
    before = len(outbox(settings))

    page = client.get(CONFIRM, params={"token": token})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Yes, I confirm" in page.text and "J&#x27;accepte les actualités." in page.text
    assert statuses(client, settings) == {("email", "news"): "pending"}  # opening changes nothing

    done = client.post(CONFIRM, params={"token": token}, headers={**FORM, **PERSON})
    assert done.status_code == 200, done.text
    assert "confirmed" in done.text
    view = state(client, settings)
    assert [c["status"] for c in view["consents"]] == ["granted"]
    entry = view["history"][-1]
    assert (entry["actor"], entry["actor_kind"], entry["source"]) == (
        "person",
        "person",
        "web_form",
    )
    proof = entry["proof"]
    assert proof["double_opt_in"] == "confirmed" and proof["text_version"] == "v1"
    assert proof["confirmed_ip"] == "2001:db8:85a3::/48"
    assert proof["confirmed_user_agent"] == "Thunderbird/128"
    assert proof["requested_at"] < proof["confirmed_at"]
    [granted] = outbox(settings)[before:]
    assert granted.type == "consent-granted"
    assert granted.data["actor_kind"] == "person"
    assert granted.data["text_hash"] == proof["text_hash"]

    # the link again: already confirmed, nothing new
    again = client.post(CONFIRM, params={"token": token}, headers=FORM)
    assert again.status_code == 200 and "Already confirmed" in again.text
    assert len(outbox(settings)) == before + 1


def forged_tokens(settings, token: str) -> dict[str, str]:
    payload, mac = token.split(".")
    flip = "A" if payload[10] != "A" else "B"
    expired = SignedTokens(
        settings.unsubscribe_secret, CONFIRM_PURPOSE, clock=lambda: time.time() - 8 * 86400
    )
    data = SignedTokens(settings.unsubscribe_secret, CONFIRM_PURPOSE).verify(token).data
    return {
        "another_secret": SignedTokens("not-the-secret-0123456789abcdefgh", CONFIRM_PURPOSE).sign(
            data
        ),
        "altered": f"{payload[:10]}{flip}{payload[11:]}.{mac}",
        "truncated": f"{payload}.{mac[:-4]}",
        "expired": expired.sign(data, ttl_seconds=86400),
        "unsubscribe_token": UnsubscribeTokens(settings.unsubscribe_secret).sign("ana", "news"),
    }


@pytest.mark.parametrize(
    ("kind", "status_code", "says"),
    [
        ("another_secret", 400, "not valid"),
        ("altered", 400, "not valid"),
        ("truncated", 400, "not valid"),
        ("expired", 410, "expired"),
        ("unsubscribe_token", 400, "not valid"),
    ],
)
def test_a_forged_altered_or_expired_confirmation_gets_a_clear_page_and_changes_nothing(
    api, kind, status_code, says
):
    client, settings = api
    grant(client, settings, double_opt_in=True)
    bad = forged_tokens(settings, confirm_token(settings))[kind]
    before = outbox(settings)

    for r in (
        client.get(CONFIRM, params={"token": bad}),
        client.post(CONFIRM, params={"token": bad}, headers=FORM),
        client.post(CONFIRM, content=f"token={bad}", headers=FORM),
    ):
        assert r.status_code == status_code, r.text
        assert says in r.text and "Nothing was changed" in r.text
    assert statuses(client, settings) == {("email", "news"): "pending"}
    assert outbox(settings) == before


def test_a_link_without_token_or_of_a_withdrawn_request_changes_nothing(api):
    client, settings = api
    assert client.get(CONFIRM).status_code == 400
    assert client.post(CONFIRM, headers=FORM).status_code == 400
    grant(client, settings, double_opt_in=True)
    token = confirm_token(settings)
    body = {"channel": "email", "purpose": "news", "source": "call"}
    assert client.post("/api/v1/consents/ana/revoke", json=body, headers=staff(settings)).is_success
    before = outbox(settings)

    assert client.get(CONFIRM, params={"token": token}).status_code == 409
    r = client.post(CONFIRM, params={"token": token}, headers=FORM)
    assert r.status_code == 409 and "no longer valid" in r.text
    assert statuses(client, settings) == {("email", "news"): "revoked"}
    assert outbox(settings) == before


# ---------------------------------------------------------------- unsubscribe


def unsubscribe_token(settings, contact_id="ana", purpose="news") -> str:
    return UnsubscribeTokens(settings.unsubscribe_secret).sign(contact_id, purpose)


def test_the_unsubscribe_page_offers_a_choice_and_withdraws_one_purpose(api):
    client, settings = api
    grant(client, settings)
    grant(client, settings, purpose="fundraising")
    token = unsubscribe_token(settings)
    before = len(outbox(settings))

    page = client.get(UNSUBSCRIBE, params={"token": token})
    assert page.status_code == 200
    assert "news" in page.text and 'value="all"' in page.text
    assert len(outbox(settings)) == before

    r = client.post(UNSUBSCRIBE, params={"token": token}, data={"scope": "purpose"}, headers=PERSON)
    assert r.status_code == 200 and "unsubscribed" in r.text
    assert statuses(client, settings) == {
        ("email", "fundraising"): "granted",
        ("email", "news"): "revoked",
    }
    [revoked] = outbox(settings)[before:]
    assert revoked.type == "consent-revoked"
    assert revoked.data["source"] == "unsubscribe_link"
    assert revoked.data["actor_kind"] == "person"
    entry = state(client, settings)["history"][-1]
    assert entry["proof"]["ip"] == "2001:db8:85a3::/48"

    # idempotent: the same click again records nothing
    client.post(UNSUBSCRIBE, params={"token": token}, data={"scope": "purpose"})
    assert len(outbox(settings)) == before + 1


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_unsubscribe_as_rfc8058_defines_it(api, encoding):
    client, settings = api
    grant(client, settings)
    token = unsubscribe_token(settings)
    if encoding == "urlencoded":
        r = client.post(
            UNSUBSCRIBE,
            params={"token": token},
            content="List-Unsubscribe=One-Click",
            headers=FORM,
        )
    else:
        r = client.post(
            UNSUBSCRIBE,
            params={"token": token},
            files={"List-Unsubscribe": (None, "One-Click")},
        )
    assert r.status_code == 200, r.text
    assert statuses(client, settings) == {("email", "news"): "revoked"}
    [event] = [e for e in outbox(settings) if e.type == "consent-revoked"]
    assert event.data["source"] == "one_click"


def test_unsubscribing_from_everything_suppresses_the_addresses_as_hashes_only(api):
    client, settings = api
    grant(client, settings)
    grant(client, settings, channel="sms")
    grant(client, settings, purpose="tracking")
    r = client.post(
        UNSUBSCRIBE, params={"token": unsubscribe_token(settings)}, data={"scope": "all"}
    )
    assert r.status_code == 200 and "everything" in r.text

    current = statuses(client, settings)
    assert len(current) == 4 * len(settings.purposes) + 1
    assert set(current.values()) == {"revoked"}
    events = outbox(settings)
    suppressed = [e for e in events if e.type == "suppression-added"]
    assert {(e.data["kind"], e.key) for e in suppressed} == {
        ("email", email_hash(EMAIL, settings.suppression_salt)),
        ("phone", phone_hash(PHONE, settings.suppression_salt)),
    }
    assert all(e.data["reason"] == "objection" for e in suppressed)
    dump = json.dumps([e.model_dump(mode="json") for e in events]).lower()
    assert EMAIL.lower() not in dump and PHONE not in dump  # never in clear
    assert state(client, settings)["suppressed"] is True

    # from now on, no consent can be granted to this person...
    body = {"channel": "email", "purpose": "news", "source": "web_form"}
    r = client.post("/api/v1/consents/ana/grant", json=body, headers=staff(settings))
    assert r.status_code == 409 and r.json()["rule"] == "suppressed"
    # ...nor to anyone created again with the same address
    handle(settings, contact_created("ana-again", LYON, email=EMAIL.upper(), phone=None))
    r = client.post("/api/v1/consents/ana-again/grant", json=body, headers=staff(settings, LYON))
    assert r.status_code == 409 and r.json()["rule"] == "suppressed"

    # the DPO sees it in the audit log (the person acted, from a minimised address)
    audit = client.get(
        "/api/v1/consents/audit",
        params={"contact_id": "ana"},
        headers=staff(settings, "/root/", Role.dpo),
    ).json()["items"]
    actions = [(a["action"], a["actor"]) for a in audit]
    assert ("suppression_added", "person") in actions
    assert ("consent_changed", "person") in actions


def test_consent_keeps_no_address_in_clear(api):
    client, settings = api
    grant(client, settings, channel="sms")
    assert sms(client, settings, {"from": PHONE, "text": "STOP"}).json()["contacts"] == 1
    r = client.post(
        UNSUBSCRIBE, params={"token": unsubscribe_token(settings)}, data={"scope": "all"}
    )
    assert r.status_code == 200

    async def scan(store):
        found = []
        for name in await store.db.list_collection_names():
            async for doc in store[name].find({}):
                text = json.dumps(doc, default=str).lower()
                if EMAIL.lower() in text or PHONE in text:
                    found.append(name)
        return found

    assert run_with_store(settings, scan) == []


@pytest.mark.parametrize("kind", ["another_secret", "altered", "confirmation_token"])
def test_a_forged_unsubscribe_link_changes_nothing(api, kind):
    client, settings = api
    grant(client, settings)
    token = unsubscribe_token(settings)
    payload, mac = token.split(".")
    bad = {
        "another_secret": UnsubscribeTokens("not-the-secret-0123456789abcdefgh").sign(
            "ana", "news"
        ),
        "altered": f"{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{mac}",
        "confirmation_token": SignedTokens(settings.unsubscribe_secret, CONFIRM_PURPOSE).sign(
            {"c": "ana", "p": "news"}
        ),
    }[kind]
    before = outbox(settings)
    assert client.get(UNSUBSCRIBE, params={"token": bad}).status_code == 400
    for body in ({"scope": "all"}, {"List-Unsubscribe": "One-Click"}):
        r = client.post(UNSUBSCRIBE, params={"token": bad}, data=body)
        assert r.status_code == 400 and "Nothing was changed" in r.text
    assert statuses(client, settings) == {("email", "news"): "granted"}
    assert outbox(settings) == before


def test_an_unsubscribe_post_without_a_choice_is_refused(api):
    client, settings = api
    grant(client, settings)
    r = client.post(UNSUBSCRIBE, params={"token": unsubscribe_token(settings)}, data={"x": "y"})
    assert r.status_code == 422
    r = client.post(
        UNSUBSCRIBE,
        params={"token": unsubscribe_token(settings)},
        content=b"x" * 10_000,
        headers=FORM,
    )
    assert r.status_code == 413
    assert statuses(client, settings) == {("email", "news"): "granted"}


def test_the_link_of_an_erased_person_changes_nothing(api):
    client, settings = api
    token = unsubscribe_token(settings, contact_id="nobody")
    r = client.post(UNSUBSCRIBE, params={"token": token}, data={"scope": "all"})
    assert r.status_code == 200 and "no data about you" in r.text
    assert outbox(settings) == []


# ---------------------------------------------------------------- SMS STOP


def sms(client, settings, payload: dict, secret: str | None = None, **headers):
    body = json.dumps(payload).encode()
    signed = signature_headers(secret or settings.webhook_secret, body)
    return client.post(
        "/api/v1/webhooks/sms",
        content=body,
        headers={"Content-Type": "application/json", **signed, **headers},
    )


def test_stop_withdraws_every_sms_consent_of_every_contact_with_that_number(api):
    client, settings = api
    handle(settings, contact_created("ana-lyon", LYON, email="other@example.org"))
    grant(client, settings, channel="sms")
    grant(client, settings, channel="sms", purpose="fundraising")
    grant(client, settings)  # email is not concerned
    grant(client, settings, "ana-lyon", LYON, channel="sms")

    r = sms(client, settings, {"from": PHONE, "text": "STOP", "message_id": "sms-1"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "stopped",
        "contacts": 2,
        "revoked": 2 * len(settings.purposes),
    }
    ana = statuses(client, settings)
    assert ana[("email", "news")] == "granted"
    assert {v for (ch, _), v in ana.items() if ch == "sms"} == {"revoked"}
    assert statuses(client, settings, "ana-lyon")[("sms", "news")] == "revoked"
    revoked = [e for e in outbox(settings) if e.type == "consent-revoked"]
    assert {e.data["source"] for e in revoked} == {"sms_stop"}
    assert {e.data["actor_kind"] for e in revoked} == {"person"}
    entry = state(client, settings)["history"][-1]
    assert entry["proof"] == {"sms_message_id": "sms-1"}

    # the provider retries: nothing more
    again = sms(client, settings, {"from": PHONE, "text": "STOP", "message_id": "sms-1"})
    assert again.json()["revoked"] == 0


def test_other_sms_and_unknown_numbers_change_nothing(api):
    client, settings = api
    grant(client, settings, channel="sms")
    assert sms(client, settings, {"from": PHONE, "text": "Merci !"}).json()["status"] == "ignored"
    r = sms(client, settings, {"from": "+33700000000", "text": "STOP"})
    assert r.json() == {"status": "stopped", "contacts": 0, "revoked": 0}
    assert statuses(client, settings) == {("sms", "news"): "granted"}


def test_an_unsigned_forged_or_stale_stop_is_refused_and_changes_nothing(api):
    client, settings = api
    grant(client, settings, channel="sms")
    payload = {"from": PHONE, "text": "STOP"}
    body = json.dumps(payload).encode()
    assert (
        client.post(
            "/api/v1/webhooks/sms", content=body, headers={"Content-Type": "application/json"}
        )
    ).status_code == 401
    assert (
        sms(client, settings, payload, secret="not-the-secret-0123456789abcdef").status_code == 401
    )
    stale = signature_headers(settings.webhook_secret, body, timestamp=int(time.time()) - 3600)
    r = client.post("/api/v1/webhooks/sms", content=body, headers=stale)
    assert r.status_code == 401 and "tolerance" in r.json()["detail"]
    assert statuses(client, settings) == {("sms", "news"): "granted"}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"from": "0612345678", "text": "STOP"}, "from"),
        ({"from": PHONE}, "text"),
        ({"text": "STOP"}, "from"),
        ({"from": PHONE, "text": "x" * 2000}, "text"),
    ],
)
def test_a_malformed_signed_sms_is_422_with_the_field(api, payload, field):
    client, settings = api
    r = sms(client, settings, payload)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field


# ---------------------------------------------------------------- erasure


def test_an_erased_person_joins_the_suppression_list_and_their_hashes_are_forgotten(api):
    client, settings = api
    erasure = new_envelope(
        ErasureRequestedV1(request_id="r1", contact_id="ana", requested_at=utcnow()),
        producer="consent",
        federation_id="paris",
        federation_path=PARIS,
    )
    handle(settings, erasure)
    handle(settings, erasure)  # a redelivery adds nothing

    suppressed = [e for e in outbox(settings) if e.type == "suppression-added"]
    assert len(suppressed) == 2
    assert {e.data["reason"] for e in suppressed} == {"erasure"}
    assert all(e.causation_id == erasure.event_id for e in suppressed)

    async def hashes(store):
        return await ConsentStore(store).hashes_of(["ana"])

    assert run_with_store(settings, hashes) == {"email": [], "phone": []}
    # a new contact with the erased person's address is refused any consent
    handle(settings, contact_created("ana-back", PARIS, phone=None))
    body = {"channel": "email", "purpose": "news", "source": "import"}
    r = client.post("/api/v1/consents/ana-back/grant", json=body, headers=staff(settings))
    assert r.status_code == 409 and r.json()["rule"] == "suppressed"


# ---------------------------------------------------------------- merged contacts

BOB_EMAIL = "bob.martin@example.org"
BOB_PHONE = "+33698765432"


def handle_all(settings, *envelopes: Envelope) -> None:
    """Consent's worker handlers: contacts, merges, suppression then privacy on erasure."""

    async def work(store):
        consent, privacy = ConsentService(settings, store), PrivacyService(settings, store)
        subscriptions = (
            Subscriptions("consent")
            .add(
                contact_handlers(
                    ConsentStore(store), ContactDirectory(store), settings.suppression_salt
                )
            )
            .add(contact_merge_handlers(consent, privacy))
            .add(suppression_handlers(consent))
            .add(privacy_handlers(privacy), also=True)
        )
        await deliver(store, subscriptions, *envelopes)

    run_with_store(settings, work)


def merged(merged_id: str, survivor_id: str, path: str = PARIS) -> Envelope:
    event = ContactMergedV1(
        merged_contact_id=merged_id,
        surviving_contact_id=survivor_id,
        contact_version=2,
        merged_by="u-secretary",
    )
    return new_envelope(
        event,
        producer="contacts",
        federation_id=path.strip("/").rsplit("/", 1)[-1],
        federation_path=path,
    )


def erased(contact_id: str, path: str = PARIS) -> Envelope:
    event = ErasureRequestedV1(
        request_id=f"r-{contact_id}", contact_id=contact_id, requested_at=utcnow()
    )
    return new_envelope(
        event,
        producer="consent",
        federation_id=path.strip("/").rsplit("/", 1)[-1],
        federation_path=path,
    )


def vault_key(settings, contact_id: str) -> bytes | None:
    async def work(store):
        return await vault_for(store).key_for(contact_id, create=True)

    return run_with_store(settings, work)


def test_an_unsubscribe_link_sent_to_a_merged_contact_revokes_the_survivors_consent(api):
    client, settings = api
    handle(settings, contact_created("bob", email=BOB_EMAIL, phone=BOB_PHONE))
    grant(client, settings)  # ana: email/news
    link = unsubscribe_token(settings, contact_id="bob")  # in an email bob got before the merge
    handle_all(settings, merged("bob", "ana"))
    before = len(outbox(settings))

    r = client.post(UNSUBSCRIBE, params={"token": link}, data={"scope": "purpose"}, headers=PERSON)
    assert r.status_code == 200, r.text
    assert "no data about you" not in r.text
    assert "You will receive no more emails about “news”" in r.text
    assert statuses(client, settings) == {("email", "news"): "revoked"}
    [revoked] = outbox(settings)[before:]
    assert (revoked.type, revoked.key, revoked.data["source"]) == (
        "consent-revoked",
        "ana",
        "unsubscribe_link",
    )
    assert state(client, settings)["history"][-1]["proof"]["link_contact_id"] == "bob"

    # Chains of merges: ana merged into carl since; bob's link reaches carl.
    handle(settings, contact_created("carl", email="carl@example.org", phone=None))
    grant(client, settings, "carl", purpose="fundraising")
    handle_all(settings, merged("ana", "carl"))
    r = client.post(
        UNSUBSCRIBE,
        params={"token": unsubscribe_token(settings, "bob", "fundraising")},
        data={"List-Unsubscribe": "One-Click"},
    )
    assert r.status_code == 200 and "no data about you" not in r.text
    assert statuses(client, settings, "carl")[("email", "fundraising")] == "revoked"


def test_after_a_merge_stop_from_the_merged_contacts_phone_reaches_the_survivor(api):
    client, settings = api
    handle(settings, contact_created("bob", email=BOB_EMAIL, phone=BOB_PHONE))
    grant(client, settings, channel="sms")  # ana, on her own phone
    handle_all(settings, merged("bob", "ana"))  # the survivor kept only her own phone

    r = sms(client, settings, {"from": BOB_PHONE, "text": "STOP", "message_id": "sms-9"})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "stopped", "contacts": 1, "revoked": len(settings.purposes)}
    assert {v for (ch, _), v in statuses(client, settings).items() if ch == "sms"} == {"revoked"}


def test_erasing_a_merged_person_covers_every_address_and_key_they_ever_had(api):
    client, settings = api
    handle(settings, contact_created("bob", email=BOB_EMAIL, phone=BOB_PHONE))
    assert vault_key(settings, "bob") is not None  # bob's events were sealed with it
    handle_all(settings, merged("bob", "ana"), erased("ana"))

    suppressed = {
        (e.data["kind"], e.key) for e in outbox(settings) if e.type == "suppression-added"
    }
    salt = settings.suppression_salt
    assert {("email", email_hash(BOB_EMAIL, salt)), ("phone", phone_hash(BOB_PHONE, salt))} <= (
        suppressed
    )
    assert vault_key(settings, "bob") is None and vault_key(settings, "ana") is None

    async def hashes(store):
        return await ConsentStore(store).hashes_of(["ana", "bob"])

    assert run_with_store(settings, hashes) == {"email": [], "phone": []}
    before = outbox(settings)
    r = client.post(
        UNSUBSCRIBE, params={"token": unsubscribe_token(settings, "bob")}, data={"scope": "all"}
    )
    assert r.status_code == 200 and "no data about you" in r.text
    assert outbox(settings) == before


def test_a_merge_seen_after_the_survivors_erasure_erases_the_merged_contact_too(api):
    client, settings = api
    handle(settings, contact_created("bob", email=BOB_EMAIL, phone=BOB_PHONE))
    grant(client, settings, "bob")
    assert vault_key(settings, "bob") is not None
    handle_all(settings, erased("ana"), merged("bob", "ana"))

    assert vault_key(settings, "bob") is None  # the same person: their key goes too
    suppressed = {e.key for e in outbox(settings) if e.type == "suppression-added"}
    assert email_hash(BOB_EMAIL, settings.suppression_salt) in suppressed
    assert client.get("/api/v1/consents/bob", headers=staff(settings)).status_code == 404
    assert client.get("/api/v1/consents/ana", headers=staff(settings)).status_code == 404


def test_links_signed_before_a_secret_rotation_keep_working_and_unknown_ones_do_not(
    isolated_env, monkeypatch
):
    old = isolated_env["TRIBUNE_UNSUBSCRIBE_SECRET"]
    monkeypatch.setenv("TRIBUNE_UNSUBSCRIBE_SECRET", "the-rotated-unsubscribe-secret-0123456789")
    monkeypatch.setenv("CONSENT_UNSUBSCRIBE_PREVIOUS_SECRETS", json.dumps([old]))
    settings = ConsentSettings()
    handle(settings, contact_created("ana"))
    with TestClient(create_app(settings)) as client:
        grant(client, settings)
        grant(client, settings, purpose="fundraising")
        unknown = UnsubscribeTokens("a-secret-nobody-configured-0123456789").sign("ana", "news")
        r = client.post(UNSUBSCRIBE, params={"token": unknown}, data={"scope": "all"})
        assert r.status_code == 400 and "Nothing was changed" in r.text

        sent_before_rotation = UnsubscribeTokens(old).sign("ana", "news")
        assert client.get(UNSUBSCRIBE, params={"token": sent_before_rotation}).status_code == 200
        r = client.post(
            UNSUBSCRIBE, params={"token": sent_before_rotation}, data={"scope": "purpose"}
        )
        assert r.status_code == 200 and "no more emails about" in r.text
        assert statuses(client, settings) == {
            ("email", "fundraising"): "granted",
            ("email", "news"): "revoked",
        }
        # links signed now use the new secret only
        fresh = UnsubscribeTokens(settings.unsubscribe_secret).sign("ana", "fundraising")
        with pytest.raises(TokenError):
            UnsubscribeTokens(old).verify(fresh)
