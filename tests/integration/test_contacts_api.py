"""Contacts API over the real store: normalisation, duplicates, tenancy, pagination,
search, clear errors, and the contact-created event written with the contact."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from contacts.domain import ContactFields
from contacts.main import create_app
from contacts.service import ContactsService
from contacts.settings import ContactsSettings
from contacts.store import CONTACTS, INDEXES, ContactStore
from fastapi.testclient import TestClient
from support import identity_headers, make_identity, run_with_store, seed_federations
from tribune_shared.auth import Role
from tribune_shared.errors import Conflict
from tribune_shared.events import Envelope, decode
from tribune_shared.events.contracts import (
    ContactCreatedV1,
    DataOrigin,
    OriginKind,
)
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.vault import vault_for

pytestmark = pytest.mark.integration

ROOT = "/root/"
PARIS = "/root/paris/"
LYON = "/root/lyon/"
URL = "/api/v1/contacts"
ORIGIN = {"kind": "petition", "detail": "pétition gare du Nord", "collected_on": "2026-01-15"}


# ---------------------------------------------------------------- helpers


def outbox(settings: ContactsSettings) -> list[dict[str, Any]]:
    async def read(store: Store):
        return await store[OUTBOX].find({}).sort("seq").to_list()

    return run_with_store(settings, read)


def open_envelope(settings: ContactsSettings, envelope: Envelope) -> Envelope:
    """The envelope with its sealed personal fields opened (the person's key lives)."""

    async def open_(store: Store):
        return await vault_for(store).open(envelope)

    return run_with_store(settings, open_)


def contact_count(settings: ContactsSettings) -> int:
    async def count(store: Store):
        return await store[CONTACTS].count_documents({})

    return run_with_store(settings, count)


def headers(settings: ContactsSettings, path: str = PARIS, role: Role = Role.secretary):
    return identity_headers(make_identity(path, role), settings.identity_secret)


def body(**fields: Any) -> dict[str, Any]:
    return {"origin": ORIGIN, **fields}


@pytest.fixture
def api(isolated_env):
    settings = ContactsSettings()
    with TestClient(create_app(settings)) as client:
        yield client, settings


def create(client, settings, path=PARIS, **fields):
    return client.post(URL, json=body(**fields), headers=headers(settings, path))


# ---------------------------------------------------------------- create and read


def test_create_normalises_stores_and_emits_exactly_one_event(api):
    client, settings = api
    r = create(
        client,
        settings,
        given_name="  Éloïse ",
        family_name=" Martin",
        email="Eloise.Martin@EXAMPLE.org",
        phone="06 12 34 56 78",
        postcode="75010",
        tags=["Bénévole", "bénévole ", "tractage"],
    )
    assert r.status_code == 201, r.text
    contact = r.json()
    assert len(contact["id"]) == 32 and int(contact["id"], 16) >= 0
    assert {k: contact[k] for k in ("given_name", "family_name", "email", "phone")} == {
        "given_name": "Éloïse",
        "family_name": "Martin",
        "email": "Eloise.Martin@example.org",
        "phone": "+33612345678",
    }
    assert contact["postcode"] == "75010"
    assert contact["tags"] == ["bénévole", "tractage"]
    assert contact["origin"] == ORIGIN
    assert (contact["federation_id"], contact["federation_path"]) == ("paris", PARIS)
    assert contact["version"] == 1
    assert contact["created_at"] == contact["updated_at"]
    assert contact["created_by"]

    # another role that sees contact details reads it back whole (a viewer does not:
    # tests/integration/test_contacts_access.py)
    got = client.get(f"{URL}/{contact['id']}", headers=headers(settings, role=Role.treasurer))
    assert got.status_code == 200
    assert got.json() == contact

    events = outbox(settings)
    assert len(events) == 1
    assert events[0]["topic"] == "contact-created" and events[0]["published_at"] is None
    envelope = Envelope.model_validate(events[0]["envelope"])
    assert envelope.key == contact["id"]
    assert (envelope.federation_id, envelope.federation_path) == ("paris", PARIS)
    assert envelope.producer == "contacts"
    # personal fields never sit in clear in the outbox (tribune_shared.vault)
    assert envelope.sealed is not None and "contact.email" in envelope.sealed.fields
    assert "Eloise" not in envelope.model_dump_json()
    event = decode(open_envelope(settings, envelope))
    assert isinstance(event, ContactCreatedV1)
    assert event.contact_id == contact["id"] and event.contact_version == 1
    assert event.contact.email == "Eloise.Martin@example.org"
    assert event.contact.phone == "+33612345678"
    assert event.contact.tags == ["bénévole", "tractage"]
    assert event.contact.origin == DataOrigin.model_validate(ORIGIN)


def test_optional_fields_may_be_absent(api):
    client, settings = api
    r = create(client, settings, family_name="Dupont")
    assert r.status_code == 201, r.text
    c = r.json()
    assert (c["email"], c["phone"], c["postcode"], c["tags"]) == (None, None, None, [])
    # the unique indexes cover only present values: many contacts without email/phone
    assert create(client, settings, family_name="Dupont").status_code == 201
    assert create(client, settings, family_name="Durand", email="").status_code == 201
    assert contact_count(settings) == 3


# ---------------------------------------------------------------- duplicates


def test_duplicate_email_in_a_federation_is_409_but_allowed_in_another(api):
    client, settings = api
    first = create(client, settings, family_name="Martin", email="jean@example.org").json()
    again = create(client, settings, family_name="Autre", email="  jean@EXAMPLE.ORG ")
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "conflict"
    assert again.json()["existing_id"] == first["id"]
    assert "email" in again.json()["detail"]

    lyon = create(client, settings, LYON, family_name="Martin", email="jean@example.org")
    assert lyon.status_code == 201, lyon.text

    assert contact_count(settings) == 2
    assert [e["envelope"]["key"] for e in outbox(settings)] == [first["id"], lyon.json()["id"]]


def test_duplicate_phone_in_any_french_format_is_409_but_allowed_in_another(api):
    client, settings = api
    first = create(client, settings, family_name="Martin", phone="06 12 34 56 78").json()
    for typed in ["+33 6 12 34 56 78", "0033 6 12 34 56 78", "0612345678"]:
        r = create(client, settings, family_name="Autre", phone=typed)
        assert r.status_code == 409, (typed, r.text)
        assert r.json()["existing_id"] == first["id"]
        assert "phone" in r.json()["detail"]
    assert create(client, settings, LYON, phone="06 12 34 56 78").status_code == 201
    assert len(outbox(settings)) == 2


def test_concurrent_creates_of_one_email_make_one_contact(isolated_env):
    settings = ContactsSettings()
    identity = make_identity(PARIS, Role.secretary)
    origin = DataOrigin(kind=OriginKind.manual)

    async def race(store: Store):
        await store.ensure_indexes(INDEXES)
        svc = ContactsService(settings, store)
        raw = ContactFields(family_name="Race", email="race@example.org")
        return await asyncio.gather(
            *(svc.create(identity, raw, origin) for _ in range(6)), return_exceptions=True
        )

    results = run_with_store(settings, race)
    created = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(created) == 1, results
    assert refused and all(isinstance(r, Conflict) for r in refused), refused
    assert {r.extra["existing_id"] for r in refused} == {created[0].id}
    assert contact_count(settings) == 1
    assert len(outbox(settings)) == 1


def test_unique_index_catches_a_duplicate_the_check_missed(isolated_env, monkeypatch):
    """The race window: another create commits between our check and our insert."""
    settings = ContactsSettings()
    identity = make_identity(PARIS, Role.secretary)
    origin = DataOrigin(kind=OriginKind.manual)
    real_check = ContactStore.find_duplicate

    async def check_sees_nothing_in_the_transaction(self, fid, email, phone, session=None):
        if session is not None:
            return None
        return await real_check(self, fid, email, phone, session)

    async def scenario(store: Store):
        await store.ensure_indexes(INDEXES)
        svc = ContactsService(settings, store)
        first = await svc.create(identity, ContactFields(phone="0612345678"), origin)
        monkeypatch.setattr(ContactStore, "find_duplicate", check_sees_nothing_in_the_transaction)
        with pytest.raises(Conflict) as caught:
            await svc.create(identity, ContactFields(phone="+33 6 12 34 56 78"), origin)
        return first, caught.value

    first, conflict = run_with_store(settings, scenario)
    assert conflict.extra == {"existing_id": first.id, "conflicting_field": "phone"}
    assert contact_count(settings) == 1
    assert len(outbox(settings)) == 1


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        (body(family_name="Martin", email="jean@"), "email", "not a valid email"),
        (body(family_name="Martin", phone="06 12 34"), "phone", "not a valid phone number"),
        (body(family_name="Martin", phone="appelez-moi"), "phone", "not a phone number"),
        (body(family_name="Martin", postcode="7501"), "postcode", "5 digits"),
        (body(family_name="Martin", tags=["ok", " "]), "tags", "must not be empty"),
        (body(family_name="x" * 101), "family_name", "at most 100"),
        ({"family_name": "Martin"}, "origin", "Field required"),
        ({"family_name": "Martin", "origin": {"kind": "rumour"}}, "origin.kind", "Input should"),
        (
            {"family_name": "Martin", "origin": {**ORIGIN, "collected_on": "2999-01-01"}},
            "origin.collected_on",
            "future",
        ),
        ({}, "origin", "Field required"),
        (body(), "contact", "at least one of email, phone or family_name"),
        (body(given_name="Jean", email=" ", phone=""), "contact", "at least one of"),
        (body(family_name="Martin", mail="jean@example.org"), "mail", "Extra inputs"),
        (body(family_name="Martin", tags="bénévole"), "tags", "valid list"),
    ],
)
def test_bad_input_is_422_with_field_and_reason_and_writes_nothing(api, payload, field, reason):
    client, settings = api
    r = client.post(URL, json=payload, headers=headers(settings))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    problem = {d["field"]: d["reason"] for d in r.json()["detail"]}
    assert field in problem, problem
    assert reason in problem[field]
    assert contact_count(settings) == 0
    assert outbox(settings) == []


def test_empty_request_body_is_422(api):
    client, settings = api
    r = client.post(URL, headers=headers(settings))
    assert r.status_code == 422
    assert r.json()["detail"][0]["reason"]
    assert outbox(settings) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "a b c d e f"}, "q"),
        ({"tag": "  "}, "tag"),
    ],
)
def test_bad_list_query_is_422_with_field(api, query, field):
    client, settings = api
    r = client.get(URL, params=query, headers=headers(settings))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field
    assert r.json()["detail"][0]["reason"]


def test_malformed_contact_id_is_422(api):
    client, settings = api
    r = client.get(f"{URL}/not-a-contact-id", headers=headers(settings))
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "contact_id"


# ---------------------------------------------------------------- tenancy and roles


def test_a_sibling_federations_contact_is_404(api):
    client, settings = api
    paris = create(client, settings, family_name="Martin", email="p@example.org").json()
    lyon_reader = headers(settings, LYON, Role.admin)
    r = client.get(f"{URL}/{paris['id']}", headers=lyon_reader)
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    unknown = client.get(f"{URL}/{'0' * 32}", headers=lyon_reader)
    assert unknown.json() == r.json()  # no difference between "elsewhere" and "nowhere"
    assert client.get(URL, headers=lyon_reader).json() == {"items": [], "next_cursor": None}
    # the national level sees it
    national = headers(settings, ROOT, Role.viewer)
    assert client.get(f"{URL}/{paris['id']}", headers=national).status_code == 200
    assert [c["id"] for c in client.get(URL, headers=national).json()["items"]] == [paris["id"]]


def test_create_in_a_federation_of_the_subtree(api):
    client, settings = api
    seed_federations(settings, PARIS, LYON)
    r = create(client, settings, ROOT, family_name="Martin", federation_id="paris")
    assert r.status_code == 201, r.text
    assert (r.json()["federation_id"], r.json()["federation_path"]) == ("paris", PARIS)
    assert outbox(settings)[0]["envelope"]["federation_path"] == PARIS
    paris_reader = headers(settings, PARIS, Role.viewer)
    assert client.get(f"{URL}/{r.json()['id']}", headers=paris_reader).status_code == 200

    # a sibling or an unknown federation is 404, and nothing is written
    for target in ["lyon", "marseille"]:
        r = create(client, settings, PARIS, family_name="Martin", federation_id=target)
        assert r.status_code == 404, r.text
        assert r.json()["detail"][0]["field"] == "federation_id"
    assert contact_count(settings) == 1
    assert len(outbox(settings)) == 1


def test_roles(api):
    client, settings = api
    for role in (Role.viewer, Role.campaign_manager, Role.treasurer, Role.dpo):
        r = client.post(URL, json=body(family_name="X"), headers=headers(settings, role=role))
        assert r.status_code == 403, role
    for role in (Role.secretary, Role.admin):
        r = client.post(URL, json=body(family_name="X"), headers=headers(settings, role=role))
        assert r.status_code == 201, role
    assert len(client.get(URL, headers=headers(settings, role=Role.viewer)).json()["items"]) == 2
    assert client.get(URL).status_code == 401
    assert client.post(URL, json=body(family_name="X")).status_code == 401
    assert client.get(URL, headers={"X-Tribune-Identity": "forged"}).status_code == 401
    assert len(outbox(settings)) == 2


# ---------------------------------------------------------------- list, pages, search


def test_pages_cover_the_subtree_once_in_id_order(api):
    client, settings = api
    ids = sorted(create(client, settings, family_name=f"Nom{i}").json()["id"] for i in range(5))
    create(client, settings, LYON, family_name="Ailleurs")
    seen, cursor, sizes = [], None, []
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(URL, params=params, headers=headers(settings)).json()
        sizes.append(len(page["items"]))
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [2, 2, 1]
    assert seen == ids
    # default page size
    page = client.get(URL, headers=headers(settings)).json()
    assert len(page["items"]) == 5 and page["next_cursor"] is None
    # an exact fit has no next page
    page = client.get(URL, params={"limit": 5}, headers=headers(settings)).json()
    assert page["next_cursor"] is None


def test_search_by_name_email_phone_prefix_and_tag(api):
    client, settings = api

    def make(**fields):
        return create(client, settings, **fields).json()["id"]

    eloise = make(given_name="Éloïse", family_name="Martin", email="eloise@example.org")
    jean = make(given_name="Jean", family_name="Dupont", phone="06 12 34 56 78", tags=["Tractage"])
    marie = make(given_name="Marie", family_name="Dupond", email="m.d@exemple.fr")
    other = make(family_name="Autre", phone="07 81 23 45 67", tags=["tractage"])
    create(client, settings, LYON, family_name="Dupont")  # not in the caller's subtree

    def search(**params) -> set[str]:
        r = client.get(URL, params=params, headers=headers(settings))
        assert r.status_code == 200, r.text
        return {c["id"] for c in r.json()["items"]}

    assert search(q="dupon") == {jean, marie}
    assert search(q="DUPONT") == {jean}
    assert search(q="elo") == {eloise}  # accents and case do not matter
    assert search(q="jean dup") == {jean}
    assert search(q="mar") == {eloise, marie}  # family or given name
    assert search(q="m.d@") == {marie}
    assert search(q="06 12") == {jean}
    assert search(q="+336") == {jean}
    assert search(q="0033 7") == {other}
    assert search(q=".*") == set()  # regex characters are literal
    assert search(q="artin") == set()  # prefix, not substring
    assert search(tag="TRACTAGE ") == {jean, other}
    assert search(tag="tractage", q="dup") == {jean}
    assert search(tag="absent") == set()
