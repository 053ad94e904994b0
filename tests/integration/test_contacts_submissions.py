"""Applying queued form submissions on the real store, through the worker's own handler:
one contact per person (even twice in one batch), the update rule against an operator's
contact, a person counted once per form, redelivery changing nothing, the events
(contact-created/updated and form-submission-applied with the person's proof), the back
office's list scoped to the subtree, and erasure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from contacts.main import create_app
from contacts.privacy import erasure_handlers
from contacts.settings import ContactsSettings
from contacts.store import CONTACTS
from contacts.submissions.handlers import submission_handlers
from contacts.submissions.store import (
    COUNTERS,
    FORMS,
    SIGNATURES,
    SUBMISSIONS,
    SubmissionStore,
)
from fastapi.testclient import TestClient
from support import run_with_store, seed_federations, signed_headers
from tribune_shared.auth import Role
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import ErasureRequestedV1, FormSubmittedV1
from tribune_shared.outbox import OUTBOX, unpack_batch
from tribune_shared.store import Store
from tribune_shared.subscriptions import apply_steps
from tribune_shared.vault import vault_for

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
LYON = "/root/lyon/"
FORM = "f" * 32
BOX = {"channel": "email", "purpose": "news", "text_version": "v1", "text_sha256": "ab" * 32}
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def queued(answers: dict[str, Any], *, form_id: str = FORM, at: int = 0, path: str = PARIS):
    """A submission as the public intake stores it (contacts.forms)."""
    received = T0 + timedelta(seconds=at)
    return {
        "_id": uuid.uuid4().hex,
        "form_id": form_id,
        "form_kind": "petition",
        "federation_id": path.strip("/").rsplit("/", 1)[-1],
        "federation_path": path,
        "status": "queued",
        "answers": answers,
        "consents": [BOX],
        "proof": {
            "submitted_at": received.isoformat().replace("+00:00", "Z"),
            "ip": "203.0.113.0/24",
            "user_agent": "Mozilla/5.0 (Android 15; Mobile)",
            "form_id": form_id,
            "page": "fr",
        },
        "form": {
            "kind": "petition",
            "title": "Sauvons les écoles",
            "tags": ["écoles"],
            "reference": "PET-2026",
            "meeting_id": None,
        },
        "received_at": received,
    }


def submitted(doc: dict[str, Any]) -> Envelope:
    return new_envelope(
        FormSubmittedV1(
            submission_id=doc["_id"],
            form_id=doc["form_id"],
            form_kind="petition",
            received_at=doc["received_at"],
        ),
        producer="contacts",
        federation_id=doc["federation_id"],
        federation_path=doc["federation_path"],
    )


def store_docs(settings, *docs: dict[str, Any]) -> None:
    async def work(store: Store):
        await store[SUBMISSIONS].insert_many(list(docs))

    run_with_store(settings, work)


def apply_batch(settings, *envelopes: Envelope) -> None:
    """The handler on one partition batch, in one transaction, as the consumer runs it."""

    async def work(store: Store):
        steps = (submission_handlers(settings, store)["form-submitted"],)
        async with store.transaction() as session:
            await apply_steps(steps, list(envelopes), session)

    run_with_store(settings, work)


def read(settings, collection: str, query: dict | None = None) -> list[dict[str, Any]]:
    async def work(store: Store):
        return await store[collection].find(query or {}).to_list()

    return run_with_store(settings, work)


def events(settings) -> list[Envelope]:
    """Every event in the outbox, opened (personal fields sealed with the vault)."""

    async def work(store: Store):
        out: list[Envelope] = []
        for row in await store[OUTBOX].find({}).sort("seq").to_list():
            batch = unpack_batch(row) if row.get("batch") is not None else None
            for env in batch or [Envelope.model_validate(row["envelope"])]:
                out.append(await vault_for(store).open(env))
        return out

    return run_with_store(settings, work)


def counter(settings, form_id: str = FORM) -> int:
    return run_with_store(settings, lambda store: SubmissionStore(store).signatures(form_id))


@pytest.fixture
def api(isolated_env):
    settings = ContactsSettings()
    with TestClient(create_app(settings)) as client:
        seed_federations(settings, "/root/", PARIS, LYON)

        async def form(store: Store):
            await store[FORMS].insert_one(
                {"_id": FORM, "federation_id": "paris", "federation_path": PARIS}
            )

        run_with_store(settings, form)
        yield client, settings


def test_two_submissions_of_one_new_person_create_one_contact_counted_once(api):
    _client, settings = api
    first = queued({"email": "ana@example.org", "given_name": "Ana"})
    second = queued({"email": "ana@example.org", "phone": "+33612345678"}, at=1)
    store_docs(settings, first, second)
    apply_batch(settings, submitted(first), submitted(second))

    [contact] = read(settings, CONTACTS)
    assert contact["given_name"] == "Ana"
    assert [p["number"] for p in contact["phones"]] == ["+33612345678"]
    assert contact["origin"]["kind"] == "web_form"
    assert contact["origin"]["detail"] == f"form {FORM} (PET-2026)"
    assert contact["tags"] == ["écoles", "pet-2026"]
    assert counter(settings) == 1
    docs = {d["_id"]: d for d in read(settings, SUBMISSIONS)}
    assert (docs[first["_id"]]["created"], docs[first["_id"]]["repeat"]) == (True, False)
    assert (docs[second["_id"]]["created"], docs[second["_id"]]["repeat"]) == (False, True)
    assert {d["status"] for d in docs.values()} == {"applied"}
    assert {d["contact_id"] for d in docs.values()} == {contact["_id"]}

    out = events(settings)
    assert [e.type for e in out] == [
        "contact-created",
        "form-submission-applied",
        "form-submission-applied",
    ]
    created = out[0]
    assert created.data["contact"]["email"] == "ana@example.org"
    applied = out[1]
    assert applied.key == contact["_id"]
    assert applied.data["contact_version"] == 1 and applied.data["created"] is True
    assert applied.data["consents"] == [BOX]
    assert applied.data["proof"]["ip"] == "203.0.113.0/24"
    assert applied.data["proof"]["submission_id"] == first["_id"]
    assert applied.causation_id is not None


def test_a_submission_updates_an_operators_contact_without_overwriting_it(api):
    client, settings = api
    made = client.post(
        "/api/v1/contacts",
        json={
            "given_name": "Jeanne",
            "family_name": "Durand",
            "email": "jeanne@example.org",
            "origin": {"kind": "manual", "detail": "permanence"},
        },
        headers=signed_headers(settings, PARIS),
    )
    assert made.status_code == 201, made.text
    contact_id = made.json()["id"]
    sub = queued(
        {
            "email": "jeanne@example.org",  # the address the operator entered: matched
            "phone": "+33612345678",
            "given_name": "Jeanne-Marie",
            "family_name": "",
            "postcode": "75011",
        }
    )
    other = queued({"email": "jeanne@example.org", "phone": "+33698765432"}, at=1)
    store_docs(settings, sub, other)
    apply_batch(settings, submitted(sub), submitted(other))

    contact = client.get(f"/api/v1/contacts/{contact_id}", headers=signed_headers(settings, PARIS))
    assert contact.status_code == 200
    body = contact.json()
    assert (body["given_name"], body["family_name"]) == ("Jeanne", "Durand")  # kept
    assert body["email"] == "jeanne@example.org"  # the operator's primary stays
    assert [p["number"] for p in body["phones"]] == ["+33612345678", "+33698765432"]  # added
    assert body["postcode"] == "75011"  # was empty: filled
    assert body["origin"]["kind"] == "manual"  # a known person keeps their origin
    assert set(body["tags"]) == {"écoles", "pet-2026"}
    assert body["version"] == 2  # one new version for the whole batch
    assert counter(settings) == 1
    updates = [e for e in events(settings) if e.type == "contact-updated"]
    assert len(updates) == 1 and updates[0].data["contact_version"] == 2
    applied = [e for e in events(settings) if e.type == "form-submission-applied"]
    assert [(e.data["created"], e.data["repeat"]) for e in applied] == [
        (False, False),
        (False, True),
    ]
    assert {e.data["contact_version"] for e in applied} == {2}


def test_redelivery_changes_nothing_and_a_later_batch_counts_the_person_once(api):
    _client, settings = api
    first = queued({"email": "ana@example.org"})
    store_docs(settings, first)
    apply_batch(settings, submitted(first))
    before = (read(settings, CONTACTS), len(events(settings)), counter(settings))

    apply_batch(settings, submitted(first))  # the same event again
    assert (read(settings, CONTACTS), len(events(settings)), counter(settings)) == before

    again = queued({"email": "ana@example.org"}, at=5)  # the person signs again later
    store_docs(settings, again)
    apply_batch(settings, submitted(again))
    assert counter(settings) == 1
    assert len(read(settings, CONTACTS)) == 1
    [doc] = read(settings, SUBMISSIONS, {"_id": again["_id"]})
    assert (doc["created"], doc["repeat"]) == (False, True)
    [count] = read(settings, COUNTERS)
    assert (count["signatures"], count["submissions"]) == (1, 2)


def test_the_list_shows_a_forms_submissions_newest_first_within_the_subtree(api):
    client, settings = api
    subs = [queued({"email": f"p{i}@example.org"}, at=i) for i in range(3)]
    store_docs(settings, *subs)
    apply_batch(settings, *(submitted(s) for s in subs[:2]))  # the third still queued
    url = f"/api/v1/forms/{FORM}/submissions"

    page = client.get(url, params={"limit": 2}, headers=signed_headers(settings, PARIS))
    assert page.status_code == 200, page.text
    body = page.json()
    assert [i["id"] for i in body["items"]] == [subs[2]["_id"], subs[1]["_id"]]
    assert body["items"][0]["status"] == "queued" and body["items"][0]["contact_id"] is None
    assert body["items"][1]["created"] is True and body["items"][1]["consents"] == [BOX]
    assert body["signatures"] == 2
    rest = client.get(
        url, params={"cursor": body["next_cursor"]}, headers=signed_headers(settings, PARIS)
    ).json()
    assert [i["id"] for i in rest["items"]] == [subs[0]["_id"]] and rest["next_cursor"] is None

    applied = client.get(
        url, params={"status": "applied"}, headers=signed_headers(settings, "/root/", Role.dpo)
    ).json()
    assert {i["id"] for i in applied["items"]} == {subs[0]["_id"], subs[1]["_id"]}

    lyon = client.get(url, headers=signed_headers(settings, LYON))
    assert lyon.status_code == 404
    viewer = client.get(url, headers=signed_headers(settings, PARIS, Role.viewer))
    assert viewer.status_code == 403
    bad = client.get(url, params={"cursor": "nope"}, headers=signed_headers(settings, PARIS))
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "cursor"


def test_erasure_deletes_the_persons_submissions_and_signatures_but_keeps_the_count(api):
    _client, settings = api
    sub = queued({"email": "ana@example.org"})
    store_docs(settings, sub)
    apply_batch(settings, submitted(sub))
    [contact] = read(settings, CONTACTS)
    erasure = new_envelope(
        ErasureRequestedV1(contact_id=contact["_id"], request_id="r1", requested_at=T0),
        producer="consent",
        federation_id="paris",
        federation_path=PARIS,
    )

    async def erase(store: Store):
        async with store.transaction() as session:
            await apply_steps((erasure_handlers(store)["erasure-requested"],), [erasure], session)

    run_with_store(settings, erase)
    assert read(settings, SUBMISSIONS) == [] and read(settings, SIGNATURES) == []
    assert counter(settings) == 1


def test_an_rsvp_form_registers_the_person_once_for_its_meeting(api):
    client, settings = api
    starts = datetime.now(UTC) + timedelta(days=7)
    meeting = client.post(
        "/api/v1/meetings",
        json={
            "title": "Réunion publique",
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(hours=2)).isoformat(),
            "capacity": 10,
        },
        headers=signed_headers(settings, PARIS),
    )
    assert meeting.status_code == 201, meeting.text
    meeting_id = meeting.json()["id"]
    subs = [queued({"email": "ana@example.org"}, at=i) for i in range(2)]
    for sub in subs:
        sub["form_kind"] = sub["form"]["kind"] = "event_rsvp"
        sub["form"]["meeting_id"] = meeting_id
    store_docs(settings, *subs)
    apply_batch(settings, *(submitted(s) for s in subs))
    apply_batch(settings, *(submitted(s) for s in subs))  # redelivered

    listed = client.get(
        f"/api/v1/meetings/{meeting_id}/registrations", headers=signed_headers(settings, PARIS)
    )
    assert listed.status_code == 200, listed.text
    [contact] = read(settings, CONTACTS)
    items = listed.json()["items"]
    assert [i["contact_id"] for i in items] == [contact["_id"]]
