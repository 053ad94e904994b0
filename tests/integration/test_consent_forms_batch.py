"""Consent's form handler in batches over the real store: a partition batch of
form-submission-applied events (a viral petition's drain) gives exactly the state the same
events applied one by one give (entries, current states, double opt-in requests, events,
audit), a redelivered batch changes nothing, and a batch naming a person consent does not
know yet is awaited as a whole (the consumer splits it) with nothing written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from consent.domain import text_sha256
from consent.forms.handlers import form_handlers
from consent.forms.service import FormConsents
from consent.handlers import contact_handlers
from consent.main import create_app
from consent.service import ConsentService
from consent.settings import ConsentSettings
from consent.store import AUDIT, CURRENT, LEDGER, TEXTS, ConsentStore
from fastapi.testclient import TestClient
from support import deliver, identity_headers, make_identity, run_with_store
from tribune_shared.auth import Role
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import ContactCreatedV1, ContactState, FormSubmissionAppliedV1
from tribune_shared.outbox import OUTBOX
from tribune_shared.subscriptions import Awaiting, Subscriptions, apply_steps
from tribune_shared.suppression import email_hash

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
BODY = "J'accepte de recevoir les actualités de la fédération."
SHA = text_sha256(BODY)


def person(contact_id: str, email: str) -> Envelope:
    return new_envelope(
        ContactCreatedV1(
            contact_id=contact_id,
            contact_version=1,
            contact=ContactState(given_name=contact_id.title(), email=email),
        ),
        producer="contacts",
        federation_id="paris",
        federation_path=PARIS,
    )


def applied(contact_id: str, submission_id: str, *boxes: tuple[str, str, str]) -> Envelope:
    """(channel, purpose, sha) per ticked box."""
    return new_envelope(
        FormSubmissionAppliedV1(
            submission_id=submission_id,
            form_id="f1",
            form_kind="petition",
            contact_id=contact_id,
            contact_version=1,
            created=True,
            consents=[
                {"channel": ch, "purpose": p, "text_version": "v1", "text_sha256": sha}
                for ch, p, sha in boxes
            ],
            proof={
                "submitted_at": "2026-12-03T08:59:59Z",
                "ip": f"198.51.100.0/24 {submission_id}",
                "user_agent": "Mozilla/5.0",
                "form_id": "f1",
                "page": "fr",
            },
            submitted_at=datetime(2026, 12, 3, 8, 59, 59, tzinfo=UTC),
        ),
        producer="contacts",
        federation_id="paris",
        federation_path=PARIS,
    )


#: a petition's burst in little: a person signing twice (the second sees the first's
#: pending request), boxes whose text or purpose does not hold, a suppressed address, an
#: erased person, a person without any box
BURST = [
    applied("ana", "s1", ("email", "news", SHA), ("sms", "news", SHA)),
    applied("bob", "s2", ("email", "news", SHA), ("sms", "news", "0" * 64)),
    applied("ana", "s3", ("email", "news", SHA), ("sms", "news", SHA)),
    applied("cleo", "s4", ("email", "news", SHA)),  # suppressed
    applied("dan", "s5", ("email", "news", SHA)),  # erased
    applied("eve", "s6", ("sms", "no-such-purpose", SHA), ("sms", "news", SHA)),
    applied("eve", "s7"),
]


def consumer(store) -> Subscriptions:
    settings = ConsentSettings()
    return (
        Subscriptions("consent")
        .add(
            contact_handlers(
                ConsentStore(store), ContactDirectory(store), settings.suppression_salt
            )
        )
        .add(form_handlers(ConsentService(settings, store)))
    )


@pytest.fixture
def settings(isolated_env) -> ConsentSettings:
    settings = ConsentSettings()
    people = [person(name, f"{name}@example.org") for name in ("ana", "bob", "cleo", "dan", "eve")]

    async def setup(store):
        await deliver(store, consumer(store), *people)
        async with store.transaction() as session:
            await ContactDirectory(store).forget("dan", session)
            hashed = email_hash("cleo@example.org", settings.suppression_salt)
            await ConsentStore(store).add_suppressions(
                [(hashed, "email")], "complaint", datetime.now(UTC), session
            )

    run_with_store(settings, setup)
    headers = identity_headers(make_identity(PARIS, Role.secretary), settings.identity_secret)
    with TestClient(create_app(settings)) as client:
        text = {"version": "v1", "title": "Actualités", "body": BODY}
        r = client.post("/api/v1/consents/texts", json=text, headers=headers)
        assert r.status_code == 201, r.text
    return settings


def state(settings: ConsentSettings) -> dict[str, Any]:
    """What the events wrote, without what differs by nature between two runs (ids,
    times, the signed confirmation links' expiry)."""

    async def read(store):
        ledger = await store[LEDGER].find({}, {"_id": 0, "recorded_at": 0}).to_list()
        current = await store[CURRENT].find({}, {"updated_at": 0}).to_list()
        for doc in current:
            if "pending" in doc:
                doc["pending"] = {
                    k: v for k, v in doc["pending"].items() if k in ("request_id", "proof")
                }
        events = []
        for row in await store[OUTBOX].find({"topic": {"$in": list(RECORDED)}}).to_list():
            data = row["envelope"]["data"]
            events.append(
                (
                    row["envelope"]["type"],
                    row["envelope"]["key"],
                    *sorted((k, str(v)) for k, v in data.items() if k in STABLE),
                )
            )
        audit = [
            (d["action"], d["contact_id"], d["ip"], json.dumps(d["detail"], sort_keys=True))
            for d in await store[AUDIT].find({"action": {"$in": list(AUDITED)}}).to_list()
        ]
        used = await store[TEXTS].find({}, {"_id": 0, "version": 1, "used": 1}).to_list()
        return {
            "ledger": sorted(json.dumps(d, sort_keys=True, default=str) for d in ledger),
            "current": sorted(json.dumps(d, sort_keys=True, default=str) for d in current),
            "events": sorted(events),
            "audit": sorted(audit),
            "texts": used,
        }

    return run_with_store(settings, read)


STABLE = ("contact_id", "channel", "purpose", "source", "request_id", "text_version")
RECORDED = ("consent-granted", "consent-revoked", "consent-confirmation-requested")
AUDITED = ("consent_changed", "form_consent_refused")


def forget_writes(settings: ConsentSettings) -> None:
    async def wipe(store):
        for name in (LEDGER, CURRENT):
            await store[name].delete_many({})
        await store[OUTBOX].delete_many({"topic": {"$in": list(RECORDED)}})
        await store[AUDIT].delete_many({"action": {"$in": list(AUDITED)}})
        await store[TEXTS].update_many(
            {}, {"$set": {"used": False}, "$unset": {"first_used_at": ""}}
        )

    run_with_store(settings, wipe)


def in_one_batch(settings: ConsentSettings, envelopes: list[Envelope]) -> None:
    """As the consumer applies a partition batch: one transaction, the batch handler once."""

    async def work(store):
        steps = consumer(store).steps("form-submission-applied")
        async with store.transaction() as session:
            await apply_steps(steps, envelopes, session)

    run_with_store(settings, work)


def test_a_batch_gives_the_state_the_events_one_by_one_give(settings):
    async def one_by_one(store):
        await deliver(store, consumer(store), *BURST)

    run_with_store(settings, one_by_one)
    alone = state(settings)
    forget_writes(settings)
    in_one_batch(settings, BURST)
    batched = state(settings)

    assert batched == alone
    # and what a person would notice: ana asked once to confirm, bob's and eve's good
    # boxes recorded, the suppressed and the erased person untouched
    requests = [e for e in batched["events"] if e[0] == "consent-confirmation-requested"]
    assert sorted(e[1] for e in requests) == ["ana", "bob"]
    granted = [e[1] for e in batched["events"] if e[0] == "consent-granted"]
    assert sorted(granted) == ["ana", "eve"]
    refused = [a for a in batched["audit"] if a[0] == "form_consent_refused"]
    assert sorted(a[1] for a in refused) == ["bob", "eve"]
    assert not [e for e in batched["ledger"] if '"cleo"' in e or '"dan"' in e]
    assert batched["texts"] == [{"version": "v1", "used": True}]


def test_a_redelivered_batch_changes_nothing(settings):
    in_one_batch(settings, BURST)
    before = state(settings)

    async def again(store):
        # the handler itself, past the consumer's processed-ids check: the ledger says
        # which boxes each submission already produced
        forms = FormConsents(ConsentService(ConsentSettings(), store))
        async with store.transaction() as session:
            return await forms.apply_many(BURST, session)

    assert run_with_store(settings, again) == 0
    assert state(settings) == before


def test_a_batch_naming_a_person_not_known_yet_is_awaited_and_writes_nothing(settings):
    with pytest.raises(Awaiting):
        in_one_batch(settings, [BURST[0], applied("zoe", "s9", ("sms", "news", SHA))])
    assert state(settings)["ledger"] == []
