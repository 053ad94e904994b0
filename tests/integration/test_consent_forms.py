"""The consent side of public forms over the real store: the boxes a person ticked
(form-submission-applied) become consents with their own proof; email through the
existing double opt-in (one confirmation request, the link grants it), other channels at
once; a text the page showed that is not consent's is not recorded; redelivery changes
nothing; a person consent has not seen yet is awaited."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from consent.domain import text_sha256
from consent.forms.handlers import form_handlers
from consent.handlers import contact_handlers
from consent.main import create_app
from consent.service import ConsentService
from consent.settings import ConsentSettings
from consent.store import AUDIT, ConsentStore
from fastapi.testclient import TestClient
from support import deliver, identity_headers, make_identity, run_with_store
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import (
    ContactCreatedV1,
    ContactState,
    FormSubmissionAppliedV1,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.subscriptions import Awaiting, Subscriptions

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
BODY = "J'accepte de recevoir les actualités de la fédération."
CONFIRM = "/api/v1/public/consents/confirm"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def staff(settings, path=PARIS, role=Role.secretary):
    return identity_headers(make_identity(path, role), settings.identity_secret)


def handle(settings, *envelopes: Envelope) -> None:
    async def work(store):
        subscriptions = (
            Subscriptions("consent")
            .add(
                contact_handlers(
                    ConsentStore(store), ContactDirectory(store), settings.suppression_salt
                )
            )
            .add(form_handlers(ConsentService(settings, store)))
        )
        await deliver(store, subscriptions, *envelopes)

    run_with_store(settings, work)


def contact_created(contact_id: str = "ana") -> Envelope:
    return new_envelope(
        ContactCreatedV1(
            contact_id=contact_id,
            contact_version=1,
            contact=ContactState(given_name="Ana", email="ana@example.org", phone="+33612345678"),
        ),
        producer="contacts",
        federation_id="paris",
        federation_path=PARIS,
    )


def applied(*boxes: tuple[str, str], contact_id: str = "ana", submission_id: str = "s1"):
    return new_envelope(
        FormSubmissionAppliedV1(
            submission_id=submission_id,
            form_id="f1",
            form_kind="petition",
            contact_id=contact_id,
            contact_version=1,
            created=True,
            consents=[
                {"channel": ch, "purpose": "news", "text_version": "v1", "text_sha256": sha}
                for ch, sha in boxes
            ],
            proof={
                "submitted_at": "2026-12-03T08:59:59Z",
                "ip": "203.0.113.0/24",
                "user_agent": "Mozilla/5.0 (Android 15; Mobile)",
                "form_id": "f1",
                "page": "fr",
            },
            submitted_at=utcnow(),
        ),
        producer="contacts",
        federation_id="paris",
        federation_path=PARIS,
    )


def outbox(settings) -> list[Envelope]:
    async def work(store):
        docs = await store[OUTBOX].find({}).sort("seq").to_list()
        return [Envelope.model_validate(d["envelope"]) for d in docs]

    return run_with_store(settings, work)


def view(client, settings, contact_id: str = "ana") -> dict:
    r = client.get(f"/api/v1/consents/{contact_id}", headers=staff(settings, "/root/"))
    assert r.status_code == 200, r.text
    return r.json()


def statuses(client, settings) -> dict[tuple[str, str], str]:
    return {(c["channel"], c["purpose"]): c["status"] for c in view(client, settings)["consents"]}


@pytest.fixture
def api(isolated_env):
    settings = ConsentSettings()
    handle(settings, contact_created())
    with TestClient(create_app(settings)) as client:
        text = {"version": "v1", "title": "Actualités", "body": BODY}
        r = client.post("/api/v1/consents/texts", json=text, headers=staff(settings))
        assert r.status_code == 201, r.text
        yield client, settings


def test_an_email_box_is_one_pending_consent_with_the_persons_proof_and_the_link_grants_it(api):
    client, settings = api
    sha = text_sha256(BODY)
    handle(settings, applied(("email", sha), ("sms", sha)))

    assert statuses(client, settings) == {("email", "news"): "pending", ("sms", "news"): "granted"}
    history = view(client, settings)["history"]
    assert {(e["actor"], e["actor_kind"], e["source"]) for e in history} == {
        ("person", "person", "web_form")
    }
    proof = next(e["proof"] for e in history if e["channel"] == "email")
    assert proof["text_version"] == "v1" and proof["text_hash"] == sha
    assert proof["ip"] == "203.0.113.0/24"
    assert proof["user_agent"] == "Mozilla/5.0 (Android 15; Mobile)"
    assert (proof["form_id"], proof["submission_id"]) == ("f1", "s1")
    assert proof["submitted_at"] == "2026-12-03T08:59:59Z"
    sent = outbox(settings)
    requests = [e for e in sent if e.type == "consent-confirmation-requested"]
    assert len(requests) == 1
    assert [e.data["channel"] for e in sent if e.type == "consent-granted"] == ["sms"]

    token = parse_qs(urlsplit(requests[0].data["confirm_url"]).query)["token"][0]
    done = client.post(CONFIRM, params={"token": token}, headers=FORM)
    assert done.status_code == 200 and "confirmed" in done.text
    assert statuses(client, settings)[("email", "news")] == "granted"
    confirmed = view(client, settings)["history"][-1]["proof"]
    assert confirmed["double_opt_in"] == "confirmed" and confirmed["submission_id"] == "s1"


def test_redelivery_and_a_second_signature_record_nothing_and_send_no_second_email(api):
    client, settings = api
    sha = text_sha256(BODY)
    handle(settings, applied(("email", sha), ("sms", sha)))
    before = (view(client, settings)["history"], len(outbox(settings)))

    handle(settings, applied(("email", sha), ("sms", sha)))  # the same event again
    handle(settings, applied(("email", sha), submission_id="s2"))  # the person signs again
    assert (view(client, settings)["history"], len(outbox(settings))) == before


def test_a_box_whose_text_is_not_consents_is_not_recorded_and_the_dpo_sees_why(api):
    client, settings = api
    handle(settings, applied(("email", "0" * 64), ("sms", text_sha256(BODY + " "))))
    assert statuses(client, settings) == {}
    recorded = ("consent-granted", "consent-confirmation-requested")
    assert not [e for e in outbox(settings) if e.type in recorded]

    async def audit(store):
        return await store[AUDIT].find({"action": "form_consent_refused"}).to_list()

    [entry] = run_with_store(settings, audit)
    assert entry["actor_kind"] == "person" and entry["contact_id"] == "ana"
    assert {b["channel"] for b in entry["detail"]["boxes"]} == {"email", "sms"}


def test_a_person_consent_has_not_seen_yet_is_awaited(api):
    _client, settings = api
    with pytest.raises(Awaiting):
        handle(settings, applied(("sms", text_sha256(BODY)), contact_id="bob"))
    handle(settings, contact_created("bob"))
    handle(settings, applied(("sms", text_sha256(BODY)), contact_id="bob"))

    async def current(store):
        return await ConsentStore(store).current_all("bob")

    [doc] = run_with_store(settings, current)
    assert (doc["channel"], doc["status"]) == ("sms", "granted")
