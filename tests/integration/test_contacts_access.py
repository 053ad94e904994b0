"""What each role may read of the contacts (issue 9, finding 9), over the real store:
bulk reads beyond the configured thresholds count as exports (refused with 429 for roles
that may not export, recorded in the export trail for the others), and a viewer sees
names, federation and tags but not the contact details, nor may it search or filter on
them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contacts.main import create_app
from contacts.settings import ContactsSettings
from fastapi.testclient import TestClient
from support import seed_federations, signed_headers
from tribune_shared.auth import Role

pytestmark = pytest.mark.integration

ROOT = "/root/"
PARIS = "/root/paris/"
URL = "/api/v1/contacts"
SEGMENTS = "/api/v1/segments"
ORIGIN = {"kind": "petition", "detail": "pétition gare du Nord"}
MAX_CONTACTS = 5
MAX_PAGES = 4


@pytest.fixture
def api(isolated_env, monkeypatch) -> Iterator[tuple[TestClient, ContactsSettings]]:
    """The contacts API with small bulk-read thresholds."""
    monkeypatch.setenv("CONTACTS_BULK_READ_MAX_CONTACTS", str(MAX_CONTACTS))
    monkeypatch.setenv("CONTACTS_BULK_READ_MAX_PAGES", str(MAX_PAGES))
    settings = ContactsSettings()
    with TestClient(create_app(settings)) as client:
        seed_federations(settings, ROOT, PARIS)
        yield client, settings


def as_(settings, role: Role, user_id: str, path: str = PARIS) -> dict[str, str]:
    return signed_headers(settings, path, role, user_id=user_id)


def create_many(client, settings, n: int) -> list[dict]:
    secretary = signed_headers(settings, PARIS, Role.secretary)
    made = []
    for i in range(n):
        r = client.post(
            URL,
            json={
                "given_name": "Ana",
                "family_name": f"Martin{i:02d}",
                "email": f"ana{i}@example.org",
                "phone": f"06 12 34 56 {i:02d}",
                "address": {"lines": ["3 rue de la Roquette"], "postcode": "75011"},
                "birth_year": 1984,
                "tags": ["bénévole"],
                "constituency": "75-07",
                "origin": ORIGIN,
            },
            headers=secretary,
        )
        assert r.status_code == 201, r.text
        made.append(r.json())
    return made


# ---------------------------------------------------------------- field-level view


def test_a_viewer_sees_names_federation_and_tags_but_no_contact_details(api):
    client, settings = api
    [full] = create_many(client, settings, 1)
    viewer = as_(settings, Role.viewer, "viewer-1")

    seen = client.get(f"{URL}/{full['id']}", headers=viewer)
    assert seen.status_code == 200, seen.text
    view = seen.json()
    kept = ("id", "given_name", "family_name", "federation_id", "federation_path", "tags")
    assert {k: view[k] for k in kept} == {k: full[k] for k in kept}
    assert view["constituency"] == "75-07"
    assert (view["email"], view["emails"], view["phone"], view["phones"]) == (None, [], None, [])
    assert (view["address"], view["postcode"], view["birth_year"]) == (None, None, None)
    assert set(view["hidden_fields"]) >= {"emails", "phones", "address", "birth_year"}
    assert "ana0@example.org" not in seen.text and "75011" not in seen.text

    # the same view in a list and in a preview's sample
    [listed] = client.get(URL, headers=viewer).json()["items"]
    assert listed == view
    preview = client.post(
        f"{SEGMENTS}/preview", json={"filter": {"op": "all"}, "size": 5}, headers=viewer
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["sample"] == [view]

    # a role that sees the details gets the whole contact, with no hidden_fields
    for role in (Role.secretary, Role.campaign_manager, Role.treasurer, Role.dpo, Role.admin):
        r = client.get(f"{URL}/{full['id']}", headers=as_(settings, role, f"{role}-1"))
        assert r.json() == full, role


def test_a_viewer_may_not_search_or_filter_on_what_it_does_not_see(api):
    client, settings = api
    create_many(client, settings, 2)
    viewer = as_(settings, Role.viewer, "viewer-2")
    secretary = as_(settings, Role.secretary, "secretary-2")

    # searching by email or phone prefix would reveal them: a viewer matches names only
    for q in ("ana1@", "06 12 34 56 01"):
        assert len(client.get(URL, params={"q": q}, headers=secretary).json()["items"]) == 1
        assert client.get(URL, params={"q": q}, headers=viewer).json()["items"] == []
    assert len(client.get(URL, params={"q": "martin01"}, headers=viewer).json()["items"]) == 1

    for params, field in [
        ({"postcode": "75011"}, "postcode"),
        ({"has_email": "true"}, "has_email"),
        ({"cf.quartier": "x"}, "cf.quartier"),
    ]:
        r = client.get(URL, params=params, headers=viewer)
        assert r.status_code == 403, r.text
        assert r.json()["detail"][0]["field"] == field
    assert client.get(URL, params={"constituency": "75-07"}, headers=viewer).status_code == 200

    postcode = {
        "op": "and",
        "of": [
            {"op": "tags", "match": "any", "tags": ["bénévole"]},
            {"op": "geo", "field": "postcode", "values": ["75011"]},
        ],
    }
    r = client.post(f"{SEGMENTS}/preview", json={"filter": postcode, "size": 0}, headers=viewer)
    assert r.status_code == 403, r.text
    assert r.json()["detail"][0]["field"] == "filter.of.1"
    r = client.post(f"{SEGMENTS}/preview", json={"filter": postcode, "size": 0}, headers=secretary)
    assert r.json()["count"] == 2


# ---------------------------------------------------------------- bulk reads


def test_paging_beyond_the_threshold_is_refused_to_a_role_that_may_not_export(api):
    client, settings = api
    create_many(client, settings, 8)
    viewer = as_(settings, Role.viewer, "viewer-3")

    first = client.get(URL, params={"limit": 3}, headers=viewer)
    assert first.status_code == 200, first.text
    second = client.get(
        URL, params={"limit": 2, "cursor": first.json()["next_cursor"]}, headers=viewer
    )
    assert second.status_code == 200  # 5 contacts: at the threshold, not beyond
    third = client.get(
        URL, params={"limit": 2, "cursor": second.json()["next_cursor"]}, headers=viewer
    )
    assert third.status_code == 429, third.text
    body = third.json()
    assert body["reason"] == "bulk_read_limit" and body["max_contacts"] == MAX_CONTACTS
    assert "export" in body["detail"]
    assert 0 < int(third.headers["Retry-After"]) <= settings.bulk_read_window_seconds + 1
    assert "ana" not in third.text
    # previews' samples and single reads count too; the counter is the user's own
    r = client.post(
        f"{SEGMENTS}/preview", json={"filter": {"op": "all"}, "size": 1}, headers=viewer
    )
    assert r.status_code == 429
    r = client.post(
        f"{SEGMENTS}/preview", json={"filter": {"op": "all"}, "size": 0}, headers=viewer
    )
    assert r.status_code == 200 and r.json()["count"] == 8  # a count shows nobody
    other = as_(settings, Role.viewer, "viewer-4")
    assert client.get(URL, params={"limit": 5}, headers=other).status_code == 200
    one = client.get(URL, params={"limit": 1}, headers=viewer)
    assert one.status_code == 429


def test_many_small_pages_count_as_a_bulk_read_too(api):
    client, settings = api
    [contact] = create_many(client, settings, 1)
    manager = as_(settings, Role.campaign_manager, "manager-1")
    for _ in range(MAX_PAGES):
        r = client.get(URL, params={"limit": 1, "tag": "absent"}, headers=manager)
        assert r.status_code == 200
    assert client.get(URL, params={"limit": 1}, headers=manager).status_code == 429
    reader = as_(settings, Role.treasurer, "treasurer-1")
    for _ in range(MAX_CONTACTS):
        assert client.get(f"{URL}/{contact['id']}", headers=reader).status_code == 200
    assert client.get(f"{URL}/{contact['id']}", headers=reader).status_code == 429


def test_a_bulk_read_by_an_export_role_is_recorded_in_the_export_trail(api):
    client, settings = api
    create_many(client, settings, 8)
    secretary = as_(settings, Role.secretary, "secretary-3")
    dpo = as_(settings, Role.dpo, "dpo-1")

    first = client.get(URL, params={"limit": 4}, headers=secretary)
    assert client.get(f"{URL}/exports", headers=dpo).json()["items"] == []  # below: no entry
    cursor = first.json()["next_cursor"]
    second = client.get(URL, params={"limit": 4, "cursor": cursor}, headers=secretary)
    assert second.status_code == 200  # the role may export: the read goes on...
    [entry] = client.get(f"{URL}/exports", headers=dpo).json()["items"]  # ...and is recorded
    assert entry["kind"] == "bulk_read"
    assert (entry["user_id"], entry["role"]) == ("secretary-3", "secretary")
    assert (entry["row_count"], entry["pages"]) == (8, 2)

    # the one entry of the window is brought up to date each time another limit's worth
    # is read (not on every page: one trail write per limit's worth)
    client.get(URL, params={"limit": 2}, headers=secretary)  # 10 read
    [entry] = client.get(f"{URL}/exports", headers=dpo).json()["items"]
    assert (entry["row_count"], entry["pages"]) == (8, 2)
    client.get(URL, params={"limit": 2}, headers=secretary)  # 12: past 2 x (5 + 1)
    [entry] = client.get(f"{URL}/exports", headers=dpo).json()["items"]
    assert (entry["row_count"], entry["pages"]) == (12, 4)
