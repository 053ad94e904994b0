"""The full contact over the real store: emails, phones, address, areas, custom fields
defined per federation, PATCH with optimistic concurrency (contact-updated in the same
transaction), and the list's filters, sorting and stable cursors."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from contacts.settings import ContactsSettings
from contacts.store import CONTACTS
from support import (
    run_with_store,
    signed_headers,
)
from tribune_shared.auth import Role
from tribune_shared.events import Envelope, decode
from tribune_shared.events.contracts import ContactCreatedV1, ContactUpdatedV1
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store
from tribune_shared.vault import vault_for

pytestmark = pytest.mark.integration

ROOT = "/root/"
PARIS = "/root/paris/"
P11 = "/root/paris/p11/"
LYON = "/root/lyon/"
URL = "/api/v1/contacts"
FIELDS = "/api/v1/contacts/custom-fields"
ORIGIN = {"kind": "web_form", "detail": "pétition", "collected_on": "2026-01-15"}


def events(settings: ContactsSettings) -> list[Envelope]:
    """The outbox's envelopes, opened (personal fields are sealed with the person's key)."""

    async def read(store: Store):
        vault = vault_for(store)
        rows = await store[OUTBOX].find({}).sort("seq").to_list()
        return [await vault.open(Envelope.model_validate(r["envelope"])) for r in rows]

    return run_with_store(settings, read)


def headers(settings: ContactsSettings, path: str = PARIS, role: Role = Role.secretary):
    return signed_headers(settings, path, role)


def create(client, settings, path=PARIS, **fields) -> dict[str, Any]:
    r = client.post(URL, json={"origin": ORIGIN, **fields}, headers=headers(settings, path))
    assert r.status_code == 201, r.text
    return r.json()


def define(client, settings, path=PARIS, **body) -> dict[str, Any]:
    r = client.post(FIELDS, json=body, headers=headers(settings, path))
    assert r.status_code == 201, r.text
    return r.json()


def patch(client, settings, contact: dict, path=PARIS, **body):
    body.setdefault("version", contact["version"])
    return client.patch(f"{URL}/{contact['id']}", json=body, headers=headers(settings, path))


# ---------------------------------------------------------------- the full contact


def test_a_full_contact_is_stored_returned_and_announced(contacts_api):
    client, settings = contacts_api
    define(client, settings, ROOT, name="adhesion", type="date")
    define(
        client, settings, PARIS, name="quartier", type="choice", choices=["Bastille", "Roquette"]
    )
    r = client.post(
        URL,
        json={
            "given_name": "Marianne",
            "family_name": "Dupont",
            "emails": [
                {"address": "m.dupont@Mairie.FR"},
                {"address": "marianne@Example.org", "primary": True},
            ],
            "phones": [{"number": "06 12 34 56 78"}, {"number": "01 42 76 40 40"}],
            "address": {
                "lines": ["12 rue de la Roquette", ""],
                "postcode": "75011",
                "commune": "Paris",
                "commune_insee": "75111",
            },
            "constituency": "75-07",
            "polling_station": "0701",
            "birth_year": 1984,
            "tags": ["Militante"],
            "custom_fields": {"quartier": "roquette", "adhesion": "14/03/2019"},
            "origin": ORIGIN,
        },
        headers=headers(settings),
    )
    assert r.status_code == 201, r.text
    contact = r.json()
    assert r.headers["etag"] == '"1"'
    assert contact["emails"] == [
        {"address": "m.dupont@mairie.fr", "primary": False},
        {"address": "marianne@example.org", "primary": True},
    ]
    assert (contact["email"], contact["phone"], contact["postcode"]) == (
        "marianne@example.org",
        "+33612345678",
        "75011",
    )
    assert contact["phones"] == [
        {"number": "+33612345678", "kind": "mobile"},
        {"number": "+33142764040", "kind": "landline"},
    ]
    assert contact["address"] == {
        "lines": ["12 rue de la Roquette"],
        "postcode": "75011",
        "commune": "Paris",
        "commune_insee": "75111",
        "department": "75",
    }
    assert (contact["constituency"], contact["polling_station"], contact["birth_year"]) == (
        "75-07",
        "0701",
        1984,
    )
    assert contact["custom_fields"] == {"quartier": "Roquette", "adhesion": "2019-03-14"}
    got = client.get(f"{URL}/{contact['id']}", headers=headers(settings, role=Role.treasurer))
    assert got.json() == contact and got.headers["etag"] == '"1"'

    [envelope] = events(settings)
    event = decode(envelope)
    assert isinstance(event, ContactCreatedV1)
    assert event.contact.address is not None and event.contact.address.department == "75"
    assert [p.kind for p in event.contact.phones] == ["mobile", "landline"]
    assert event.contact.custom_fields == {"quartier": "Roquette", "adhesion": "2019-03-14"}
    assert event.contact.created_at is not None


def test_every_email_and_phone_is_unique_in_a_federation(contacts_api):
    client, settings = contacts_api
    first = create(
        client,
        settings,
        family_name="A",
        emails=[{"address": "a@x.fr"}, {"address": "second@x.fr"}],
        phones=[{"number": "0612345678"}, {"number": "0142764040"}],
    )
    for body, field in [
        ({"email": "second@x.fr"}, "email"),
        ({"emails": [{"address": "new@x.fr"}, {"address": "SECOND@X.FR".lower()}]}, "email"),
        ({"phone": "+33 1 42 76 40 40"}, "phone"),
    ]:
        r = client.post(
            URL, json={"origin": ORIGIN, "family_name": "B", **body}, headers=headers(settings)
        )
        assert r.status_code == 409, (body, r.text)
        assert (r.json()["existing_id"], r.json()["conflicting_field"]) == (first["id"], field)
    # the same person may be in another federation
    create(client, settings, LYON, family_name="A", email="second@x.fr")


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ({"emails": [{"address": "bad"}]}, "emails.0.address", "not a valid email"),
        ({"email": "a@x.fr", "emails": []}, "email", "either email or emails"),
        ({"emails": [{"address": "a@x.fr", "primary": 1}]}, "emails.0.primary", "boolean"),
        ({"phones": [{"number": "06"}]}, "phones.0.number", "not a valid phone number"),
        ({"phones": [{"number": "0612345678", "kind": "fax"}]}, "phones.0.kind", "Extra inputs"),
        ({"address": {"commune_insee": "7511"}}, "address.commune_insee", "INSEE"),
        ({"address": {"department": "20"}}, "address.department", "department"),
        (
            {"address": {"commune_insee": "69123", "department": "75"}},
            "address.department",
            "does not match",
        ),
        ({"birth_year": 1850}, "birth_year", "between 1900"),
        ({"birth_year": "old"}, "birth_year", "valid integer"),
        ({"custom_fields": {"nope": 1}}, "custom_fields.nope", "unknown custom field"),
    ],
)
def test_bad_full_contact_is_422_and_writes_nothing(contacts_api, payload, field, reason):
    client, settings = contacts_api
    r = client.post(
        URL, json={"origin": ORIGIN, "family_name": "Dupont", **payload}, headers=headers(settings)
    )
    assert r.status_code == 422, r.text
    problem = {d["field"]: d["reason"] for d in r.json()["detail"]}
    assert field in problem, problem
    assert reason in problem[field]
    assert events(settings) == []


# ---------------------------------------------------------------- custom fields


def test_custom_fields_per_federation_seen_by_children(contacts_api):
    client, settings = contacts_api
    national = define(client, settings, ROOT, name="adhesion", type="date", label="Adhésion")
    paris = define(
        client, settings, PARIS, name="mandat", type="choice", choices=["Maire"], required=True
    )
    define(client, settings, LYON, name="cotisation", type="number")
    assert national["label"] == "Adhésion" and paris["required"] is True

    def names(path: str) -> set[str]:
        r = client.get(FIELDS, headers=headers(settings, path, Role.viewer))
        assert r.status_code == 200
        return {d["name"] for d in r.json()["items"]}

    assert names(P11) == {"adhesion", "mandat"}  # its ancestors'
    assert names(LYON) == {"adhesion", "cotisation"}
    assert names(ROOT) == {"adhesion", "mandat", "cotisation"}  # its subtree's too

    # a contact of Paris 11 must give Paris's required field, may give the national one,
    # and may not use Lyon's
    r = client.post(
        URL,
        json={"origin": ORIGIN, "family_name": "X", "custom_fields": {"cotisation": 3}},
        headers=headers(settings, P11),
    )
    assert r.status_code == 422
    assert {d["field"]: d["reason"] for d in r.json()["detail"]} == {
        "custom_fields.cotisation": "unknown custom field",
        "custom_fields.mandat": "required",
    }
    ok = create(
        client,
        settings,
        P11,
        family_name="X",
        custom_fields={"mandat": "maire", "adhesion": "2020-01-31"},
    )
    assert ok["custom_fields"] == {"mandat": "Maire", "adhesion": "2020-01-31"}
    # Lyon's contacts are not asked for Paris's required field
    create(client, settings, LYON, family_name="Y", custom_fields={"cotisation": "12,5"})


def test_custom_field_definition_rules(contacts_api):
    client, settings = contacts_api
    define(client, settings, PARIS, name="quartier", type="text")
    for path, body, status, field in [
        (P11, {"name": "quartier", "type": "text"}, 409, None),  # an ancestor has it
        (ROOT, {"name": "quartier", "type": "number"}, 409, None),  # a descendant has it
        (PARIS, {"name": "Quartier 2", "type": "text"}, 422, "name"),
        (PARIS, {"name": "c", "type": "choice"}, 422, "choices"),
        (PARIS, {"name": "c", "type": "text", "choices": ["a"]}, 422, "choices"),
        (PARIS, {"name": "c", "type": "colour"}, 422, "type"),
        (PARIS, {"name": "c", "type": "text", "federation_id": "lyon"}, 404, "federation_id"),
    ]:
        r = client.post(FIELDS, json=body, headers=headers(settings, path))
        assert r.status_code == status, (body, r.text)
        if field:
            assert r.json()["detail"][0]["field"] == field
    # the same name on another branch is another field
    define(client, settings, LYON, name="quartier", type="choice", choices=["Croix-Rousse"])
    # roles
    r = client.post(
        FIELDS, json={"name": "z", "type": "text"}, headers=headers(settings, role=Role.viewer)
    )
    assert r.status_code == 403


def test_a_custom_field_is_deleted_only_when_no_contact_holds_a_value(contacts_api):
    client, settings = contacts_api
    field = define(client, settings, PARIS, name="quartier", type="text")
    contact = create(client, settings, P11, family_name="X", custom_fields={"quartier": "Est"})
    url = f"{FIELDS}/{field['id']}"
    assert client.delete(url, headers=headers(settings, LYON)).status_code == 404
    assert client.delete(url, headers=headers(settings, P11)).status_code == 404  # a parent's
    refused = client.delete(url, headers=headers(settings))
    assert refused.status_code == 409 and refused.json()["contacts"] == 1
    assert (
        patch(client, settings, contact, P11, custom_fields={"quartier": None}).status_code == 200
    )
    assert client.delete(url, headers=headers(settings)).status_code == 204
    assert client.get(FIELDS, headers=headers(settings)).json()["items"] == []


# ---------------------------------------------------------------- PATCH


def test_patch_changes_only_what_is_given_and_announces_it(contacts_api):
    client, settings = contacts_api
    define(client, settings, PARIS, name="quartier", type="text")
    contact = create(
        client,
        settings,
        given_name="Jean",
        family_name="Dupont",
        email="jean@x.fr",
        tags=["a"],
        custom_fields={"quartier": "Est"},
    )
    r = client.patch(
        f"{URL}/{contact['id']}",
        json={
            "family_name": "Dupond",
            "phones": [{"number": "07 81 23 45 67"}],
            "address": {"postcode": "75011"},
            "custom_fields": {"quartier": None},
        },
        headers={**headers(settings), "If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert r.headers["etag"] == '"2"'
    assert updated["version"] == 2
    assert (updated["given_name"], updated["family_name"]) == ("Jean", "Dupond")
    assert (updated["email"], updated["phone"], updated["postcode"]) == (
        "jean@x.fr",
        "+33781234567",
        "75011",
    )
    assert updated["address"]["department"] == "75"
    assert updated["tags"] == ["a"] and updated["custom_fields"] == {}
    assert updated["created_at"] == contact["created_at"]
    assert updated["updated_at"] > contact["updated_at"]
    assert updated["updated_by"]
    assert client.get(f"{URL}/{contact['id']}", headers=headers(settings)).json() == updated

    created, changed = events(settings)
    assert created.type == "contact-created" and changed.type == "contact-updated"
    event = decode(changed)
    assert isinstance(event, ContactUpdatedV1)
    assert event.contact_version == 2 and event.contact_id == contact["id"]
    assert event.contact.family_name == "Dupond" and event.contact.phone == "+33781234567"
    assert event.contact.email == "jean@x.fr"  # full state, not only what changed
    assert sorted(event.changed_fields) == sorted(
        ["family_name", "phone", "phones", "postcode", "address", "custom_fields.quartier"]
    )

    # the same change again changes nothing: no new version, no event
    again = patch(client, settings, updated, family_name="Dupond")
    assert again.status_code == 200 and again.json()["version"] == 2
    assert len(events(settings)) == 2


def test_a_stale_version_is_409_and_changes_nothing(contacts_api):
    client, settings = contacts_api
    contact = create(client, settings, family_name="Dupont")
    assert patch(client, settings, contact, family_name="Un").status_code == 200
    stale = patch(client, settings, contact, family_name="Deux")  # still says version 1
    assert stale.status_code == 409, stale.text
    assert stale.json()["current_version"] == 2
    r = client.patch(
        f"{URL}/{contact['id']}",
        json={"family_name": "Deux"},
        headers={**headers(settings), "If-Match": 'W/"1"'},
    )
    assert r.status_code == 409
    stored = client.get(f"{URL}/{contact['id']}", headers=headers(settings)).json()
    assert (stored["family_name"], stored["version"]) == ("Un", 2)
    assert len(events(settings)) == 2


def test_concurrent_patches_of_one_version_make_one_change(contacts_api):
    client, settings = contacts_api
    contact = create(client, settings, family_name="Dupont")

    async def race():
        import httpx

        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await asyncio.gather(
                *(
                    http.patch(
                        f"{URL}/{contact['id']}",
                        json={"version": 1, "family_name": f"Nom{i}"},
                        headers=headers(settings),
                    )
                    for i in range(5)
                )
            )

    results = client.portal.call(race)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 409, 409, 409, 409], [r.text for r in results]
    assert client.get(f"{URL}/{contact['id']}", headers=headers(settings)).json()["version"] == 2
    assert [e.type for e in events(settings)] == ["contact-created", "contact-updated"]


def test_patch_refuses_duplicates_bad_values_and_other_federations(contacts_api):
    client, settings = contacts_api
    taken = create(client, settings, family_name="A", email="taken@x.fr", phone="0612345678")
    contact = create(client, settings, family_name="B", email="mine@x.fr")
    dup = patch(client, settings, contact, emails=[{"address": "TAKEN@x.fr".lower()}])
    assert dup.status_code == 409 and dup.json()["existing_id"] == taken["id"]
    dup = patch(client, settings, contact, phones=[{"number": "+33612345678"}])
    assert dup.status_code == 409 and dup.json()["conflicting_field"] == "phone"
    # its own values are no duplicate
    own = patch(client, settings, contact, emails=[{"address": "mine@x.fr"}], tags=["x"])
    assert own.status_code == 200, own.text
    contact = own.json()
    for body, field in [
        ({"emails": [{"address": "nope"}]}, "emails.0.address"),
        ({"family_name": "", "emails": []}, "contact"),
        ({"birth_year": 3000}, "birth_year"),
        ({"custom_fields": {"nope": "x"}}, "custom_fields.nope"),
        ({"origin": ORIGIN}, "origin"),
        ({"federation_id": None}, "federation_id"),
        ({"version": 0}, "version"),
    ]:
        r = patch(client, settings, contact, **body)
        assert r.status_code == 422, (body, r.text)
        assert field in {d["field"] for d in r.json()["detail"]}, r.text
    no_version = client.patch(
        f"{URL}/{contact['id']}", json={"family_name": "C"}, headers=headers(settings)
    )
    assert no_version.status_code == 422 and no_version.json()["detail"][0]["field"] == "version"
    disagree = client.patch(
        f"{URL}/{contact['id']}",
        json={"family_name": "C", "version": 2},
        headers={**headers(settings), "If-Match": '"3"'},
    )
    assert disagree.status_code == 422
    # another federation's contact is 404, a viewer may not change it
    assert patch(client, settings, contact, LYON, family_name="C").status_code == 404
    r = client.patch(
        f"{URL}/{contact['id']}",
        json={"version": 2, "family_name": "C"},
        headers=headers(settings, role=Role.viewer),
    )
    assert r.status_code == 403
    assert client.get(f"{URL}/{contact['id']}", headers=headers(settings)).json() == contact


def test_patch_moves_a_contact_within_the_subtree(contacts_api):
    client, settings = contacts_api
    contact = create(client, settings, ROOT, family_name="Dupont", email="d@x.fr")
    create(client, settings, LYON, family_name="Autre", email="d@x.fr")
    # Lyon already has d@x.fr: moving there is a duplicate
    r = patch(client, settings, contact, ROOT, federation_id="lyon")
    assert r.status_code == 409
    r = patch(client, settings, contact, ROOT, federation_id="p11")
    assert r.status_code == 200, r.text
    moved = r.json()
    assert (moved["federation_id"], moved["federation_path"]) == ("p11", P11)
    assert events(settings)[-1].federation_path == P11
    assert decode(events(settings)[-1]).changed_fields == ["federation_id"]
    # Paris 11 sees it now; Paris may not move it to Lyon (outside its subtree)
    assert client.get(f"{URL}/{contact['id']}", headers=headers(settings, P11)).status_code == 200
    r = patch(client, settings, moved, PARIS, federation_id="lyon")
    assert r.status_code == 404 and r.json()["detail"][0]["field"] == "federation_id"


# ---------------------------------------------------------------- list: filters, sorting


def ids(client, settings, path=PARIS, **params) -> list[str]:
    r = client.get(URL, params=params, headers=headers(settings, path))
    assert r.status_code == 200, r.text
    return [c["id"] for c in r.json()["items"]]


def test_list_filters(contacts_api):
    client, settings = contacts_api
    define(client, settings, PARIS, name="quartier", type="text")
    define(client, settings, PARIS, name="cotisation", type="number")
    a = create(
        client,
        settings,
        family_name="A",
        email="a@x.fr",
        tags=["a", "b"],
        address={"postcode": "75011", "commune_insee": "75111"},
        constituency="75-07",
        polling_station="0701",
        custom_fields={"quartier": "Roquette", "cotisation": 30},
    )["id"]
    b = create(
        client,
        settings,
        P11,
        family_name="B",
        phone="0612345678",
        tags=["b"],
        address={"postcode": "75012"},
        custom_fields={"cotisation": 30.5},
    )["id"]
    c = create(client, settings, family_name="C", address={"postcode": "69001"})["id"]
    create(client, settings, LYON, family_name="L", tags=["a"], address={"postcode": "69001"})

    def found(**params) -> set[str]:
        return set(ids(client, settings, **params))

    assert found(tags_any=["a", "B"]) == {a, b}
    assert found(tags_all=["a", "b"]) == {a}
    assert found(tags_none=["a"]) == {b, c}
    assert found(tag="b", tags_none=["a"]) == {b}
    assert found(postcode=["75011", "75012"]) == {a, b}
    assert found(department=["75"]) == {a, b}
    assert found(department="69") == {c}  # Lyon's contact is outside the subtree
    assert found(commune_insee="75111") == {a}
    assert found(constituency="75-07") == {a}
    assert found(polling_station="0701") == {a}
    assert found(federation_id="p11") == {b}
    assert found(federation_id="paris") == {a, b, c}
    assert found(has_email=True) == {a}
    assert found(has_phone=True, has_email=False) == {b}
    assert found(**{"cf.quartier": "Roquette"}) == {a}
    assert found(**{"cf.cotisation": "30,5"}) == {b}
    assert found(**{"cf.cotisation": "30"}) == {a}
    assert found(q="b") == {b}

    later = client.get(f"{URL}/{c}", headers=headers(settings)).json()["updated_at"]
    assert found(updated_since=later) == {c}

    for params, field in [
        ({"federation_id": "lyon"}, "federation_id"),
        ({"federation_id": "nowhere"}, "federation_id"),
    ]:
        r = client.get(URL, params=params, headers=headers(settings))
        assert r.status_code == 404 and r.json()["detail"][0]["field"] == field
    for params, field in [
        ({"tags_any": " "}, "tags_any"),
        ({"department": " "}, "department"),
        ({"cf.nope": "1"}, "cf.nope"),
        ({"cf.cotisation": "beaucoup"}, "cf.cotisation"),
        ({"updated_since": "hier"}, "updated_since"),
        ({"has_email": "peut-être"}, "has_email"),
        ({"sort": "email"}, "sort"),
    ]:
        r = client.get(URL, params=params, headers=headers(settings))
        assert r.status_code == 422, (params, r.text)
        assert r.json()["detail"][0]["field"] == field


def test_sorted_pages_are_stable_and_cover_everything_once(contacts_api):
    client, settings = contacts_api
    names = ["Émile", "dupont", "Zola", "durand", "Dupont", "Ader", "Étienne"]
    created = [create(client, settings, family_name=n) for n in names]
    # make updated_at differ from created_at order
    for contact in created[::2]:
        assert patch(client, settings, contact, tags=["x"]).status_code == 200

    def walk(sort: str, limit: int) -> list[dict]:
        seen, cursor = [], None
        while True:
            params = {"sort": sort, "limit": limit, **({"cursor": cursor} if cursor else {})}
            page = client.get(URL, params=params, headers=headers(settings)).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    by_name = walk("family_name", 2)

    def folded(name: str) -> str:
        return name.lower().replace("é", "e")

    assert [folded(c["family_name"]) for c in by_name] == sorted(folded(n) for n in names)
    # ties (dupont / Dupont) are broken by id, both directions
    ties = [c["id"] for c in by_name if c["family_name"].lower() == "dupont"]
    assert ties == sorted(ties)
    reverse = walk("-family_name", 3)
    assert [c["id"] for c in reverse] == [c["id"] for c in by_name][::-1]
    for sort in ("created_at", "-created_at", "updated_at", "-updated_at", "id", "-id"):
        items = walk(sort, 2)
        key = sort.removeprefix("-")
        # times compared as times: "…:53Z" (a whole second) comes before "…:53.025Z"
        values = [
            (c["id"] if key == "id" else datetime.fromisoformat(c[key]), c["id"]) for c in items
        ]
        assert values == sorted(values, reverse=sort.startswith("-")), sort
        assert len(items) == len(names)
    # a cursor of one order is refused in another
    page = client.get(
        URL, params={"sort": "created_at", "limit": 1}, headers=headers(settings)
    ).json()
    r = client.get(
        URL,
        params={"sort": "updated_at", "cursor": page["next_cursor"]},
        headers=headers(settings),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "cursor"


def test_a_page_is_stable_while_contacts_are_added(contacts_api):
    """The cursor holds the sort key and the id: contacts created meanwhile before the
    cursor do not shift the next page."""
    client, settings = contacts_api
    for n in ["B", "D", "F"]:
        create(client, settings, family_name=n)
    first = client.get(
        URL, params={"sort": "family_name", "limit": 2}, headers=headers(settings)
    ).json()
    assert [c["family_name"] for c in first["items"]] == ["B", "D"]
    create(client, settings, family_name="A")
    create(client, settings, family_name="C")
    rest = client.get(
        URL,
        params={"sort": "family_name", "limit": 10, "cursor": first["next_cursor"]},
        headers=headers(settings),
    ).json()
    assert [c["family_name"] for c in rest["items"]] == ["F"]


def test_list_is_scoped_to_the_caller(contacts_api):
    client, settings = contacts_api
    create(client, settings, LYON, family_name="L", tags=["a"])
    assert ids(client, settings, PARIS, tags_any="a") == []
    assert len(ids(client, settings, ROOT, tags_any="a")) == 1


def test_updated_since_uses_the_stored_time(contacts_api):
    client, settings = contacts_api
    contact = create(client, settings, family_name="A")

    async def age(store: Store):
        stored = await store[CONTACTS].find_one({"_id": contact["id"]})
        await store[CONTACTS].update_one(
            {"_id": contact["id"]},
            {"$set": {"updated_at": stored["updated_at"] - timedelta(days=2)}},
        )

    run_with_store(settings, age)
    assert ids(client, settings, updated_since="2000-01-01T00:00:00Z") == [contact["id"]]
    assert ids(client, settings, updated_since=contact["updated_at"]) == []
