"""Segments and export over the real store: the filter language agrees with the store,
saved segments per federation, preview, CSV export (roles, audit, CSV injection, limit)
and tenancy (another federation's segment is 404 everywhere)."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from contacts.filter_language import compile_filter, dump_filter, evaluate, parse_filter
from contacts.main import create_app
from contacts.segment_service import SegmentsService
from contacts.settings import ContactsSettings
from contacts.store import EXPORTS
from fastapi.testclient import TestClient
from support import (
    run_with_store,
    seed_federations,
    signed_headers,
)
from tribune_shared.auth import Role
from tribune_shared.client_info import CLIENT_IP_HEADER, CLIENT_USER_AGENT_HEADER
from tribune_shared.store import Store

pytestmark = pytest.mark.integration

ROOT = "/root/"
PARIS = "/root/paris/"
P11 = "/root/paris/p11/"
LYON = "/root/lyon/"
CONTACTS = "/api/v1/contacts"
SEGMENTS = "/api/v1/segments"
EXPORT = "/api/v1/contacts/exports"
ORIGIN = {"kind": "petition", "detail": "gare"}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def headers(settings: ContactsSettings, path: str = PARIS, role: Role = Role.secretary):
    return signed_headers(settings, path, role)


def create(client, settings, path=PARIS, **fields) -> dict[str, Any]:
    r = client.post(CONTACTS, json={"origin": ORIGIN, **fields}, headers=headers(settings, path))
    assert r.status_code == 201, r.text
    return r.json()


def new_segment(client, settings, path=PARIS, **body) -> dict[str, Any]:
    body.setdefault("filter", {"op": "all"})
    r = client.post(SEGMENTS, json=body, headers=headers(settings, path))
    assert r.status_code == 201, r.text
    return r.json()


def read_csv(response) -> list[dict[str, str]]:
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")  # Excel reads UTF-8 only with a BOM
    return list(csv.DictReader(io.StringIO(text[1:])))


# ---------------------------------------------------------------- the language on the store


def generated(rng: random.Random, n: int) -> list[dict[str, Any]]:
    paths = [ROOT, PARIS, P11, LYON, "/root/paris2/"]
    docs = []
    for i in range(n):
        doc: dict[str, Any] = {
            "_id": f"g{i:04d}",
            "federation_path": rng.choice(paths),
            "created_at": T0 + timedelta(days=rng.randrange(20)),
            "updated_at": T0 + timedelta(days=rng.randrange(10, 30), milliseconds=rng.randrange(2)),
        }
        if rng.random() < 0.8:
            doc["tags"] = rng.sample(["a", "b", "c"], rng.randrange(0, 4))
        if rng.random() < 0.5:
            doc["email"] = f"p{i}@x.fr"
        if rng.random() < 0.5:
            doc["phone"] = f"+336{i:08d}"
        if rng.random() < 0.7:
            doc["address"] = {"postcode": rng.choice(["75011", "69001"])}
            if rng.random() < 0.6:
                doc["address"]["department"] = rng.choice(["75", "69", "2A"])
        if rng.random() < 0.4:
            doc["constituency"] = rng.choice(["75-01", "69-02"])
        custom: dict[str, Any] = {}
        if rng.random() < 0.7:
            custom["age"] = rng.choice([18, 30, 30.0, 42.5, "30", "x"])
        if rng.random() < 0.5:
            custom["depuis"] = rng.choice(["2018-01-01", "2019-05-01", "2024-12-31"])
        if custom:
            doc["custom_fields"] = custom
        docs.append(doc)
    return docs


def generated_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    if depth < 3 and rng.random() < 0.45:
        op = rng.choice(["and", "or", "not"])
        if op == "not":
            return {"op": "not", "filter": generated_filter(rng, depth + 1)}
        return {
            "op": op,
            "of": [generated_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))],
        }
    kind = rng.randrange(7)
    if kind == 0:
        match = rng.choice(["any", "all", "none"])
        return {"op": "tags", "match": match, "tags": rng.sample(["a", "b", "c", "z"], 2)}
    if kind == 1:
        field = rng.choice(["postcode", "department", "constituency"])
        return {
            "op": "geo",
            "field": field,
            "values": rng.sample(["75011", "69", "2A", "75-01"], 2),
        }
    if kind == 2:
        return {"op": "federation", "federation_id": rng.choice(["paris", "p11", "lyon", "root"])}
    if kind == 3:
        cmp = rng.choice(["eq", "lt", "gt", "in", "exists"])
        node: dict[str, Any] = {"op": "custom", "name": rng.choice(["age", "depuis"]), "cmp": cmp}
        if cmp == "in":
            node["value"] = [30, "2019-05-01"]
        elif cmp != "exists":
            node["value"] = rng.choice([30, 30.0, 42.5, "30", "2019-01-01"])
        return node
    if kind == 4:
        bound = (T0 + timedelta(days=rng.randrange(5, 25))).isoformat()
        return {"op": "date", "field": rng.choice(["created_at", "updated_at"]), "since": bound}
    if kind == 5:
        return {"op": rng.choice(["has_email", "has_phone"]), "value": rng.random() < 0.5}
    return {"op": "all"}


def test_the_store_and_evaluate_agree_on_generated_contacts(isolated_env):
    """The compiled query run by the real store selects exactly what ``evaluate`` selects
    on the same documents, and on their JSON projection (what messaging will hold)."""
    settings = ContactsSettings()
    rng = random.Random(7)
    docs = generated(rng, 200)

    async def scenario(store: Store):
        collection = store["segment_agreement"]
        await collection.insert_many([dict(d) for d in docs])
        checked = 0
        for _ in range(150):
            flt = parse_filter(generated_filter(rng))
            found = {d["_id"] async for d in collection.find(compile_filter(flt), {"_id": 1})}
            expected = {d["_id"] for d in docs if evaluate(flt, d)}
            assert found == expected, dump_filter(flt)
            projected = {
                d["_id"]
                for d in docs
                if evaluate(
                    flt,
                    {
                        **d,
                        "created_at": d["created_at"].isoformat(),
                        "updated_at": d["updated_at"].isoformat(),
                    },
                )
            }
            assert projected == expected
            checked += 0 < len(expected) < len(docs)
        return checked

    assert run_with_store(settings, scenario) > 50


# ---------------------------------------------------------------- segments


def test_segments_are_saved_per_federation_and_previewed(contacts_api):
    client, settings = contacts_api
    create(client, settings, family_name="A", email="a@x.fr", tags=["bénévole"])
    create(client, settings, P11, family_name="B", tags=["bénévole"], address={"postcode": "75011"})
    create(client, settings, family_name="C", tags=["donateur"])
    create(client, settings, LYON, family_name="L", tags=["bénévole"])
    segment = new_segment(
        client,
        settings,
        name="Bénévoles",
        description="  pour le porte-à-porte ",
        filter={"op": "tags", "match": "any", "tags": ["Bénévole"]},
    )
    assert segment["filter"] == {"op": "tags", "match": "any", "tags": ["bénévole"]}
    assert (segment["federation_id"], segment["version"]) == ("paris", 1)
    assert segment["description"] == "pour le porte-à-porte"
    url = f"{SEGMENTS}/{segment['id']}"

    preview = client.get(f"{url}/preview", params={"size": 1}, headers=headers(settings))
    assert preview.status_code == 200, preview.text
    assert preview.json()["count"] == 2  # Lyon's volunteer is not Paris's
    assert len(preview.json()["sample"]) == 1
    assert preview.json()["sample"][0]["tags"] == ["bénévole"]
    # the national level sees Paris's segment; its preview stays in Paris's subtree
    national = client.get(f"{url}/preview", headers=headers(settings, ROOT, Role.viewer))
    assert national.json()["count"] == 2 and len(national.json()["sample"]) == 2
    # an ad-hoc filter previews within the caller's subtree
    adhoc = client.post(
        f"{SEGMENTS}/preview",
        json={"filter": {"op": "tags", "match": "any", "tags": ["bénévole"]}, "size": 0},
        headers=headers(settings, ROOT, Role.viewer),
    )
    assert adhoc.json() == {"count": 3, "sample": []}

    # update: name, filter, optimistic version
    r = client.patch(
        url,
        json={"version": 1, "filter": {"op": "geo", "field": "postcode", "values": ["75011"]}},
        headers=headers(settings),
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    assert client.get(f"{url}/preview", headers=headers(settings)).json()["count"] == 1
    stale = client.patch(url, json={"version": 1, "name": "X"}, headers=headers(settings))
    assert stale.status_code == 409 and stale.json()["current_version"] == 2

    # names are unique per federation, whatever the case; other federations may reuse them
    dup = client.post(
        SEGMENTS, json={"name": "BÉNÉVOLES ", "filter": {"op": "all"}}, headers=headers(settings)
    )
    assert dup.status_code == 409 and dup.json()["detail"][0]["field"] == "name"
    new_segment(client, settings, LYON, name="Bénévoles")
    other = new_segment(client, settings, name="Autre")
    renamed = client.patch(
        f"{SEGMENTS}/{other['id']}", json={"name": "bénévoles"}, headers=headers(settings)
    )
    assert renamed.status_code == 409

    listed = client.get(SEGMENTS, params={"limit": 1}, headers=headers(settings)).json()
    assert len(listed["items"]) == 1 and listed["next_cursor"]
    rest = client.get(
        SEGMENTS, params={"cursor": listed["next_cursor"]}, headers=headers(settings)
    ).json()
    assert {s["name"] for s in listed["items"] + rest["items"]} == {"Bénévoles", "Autre"}

    assert client.delete(url, headers=headers(settings)).status_code == 204
    assert client.get(url, headers=headers(settings)).status_code == 404


def test_another_federations_segment_is_404_everywhere(contacts_api):
    client, settings = contacts_api
    segment = new_segment(client, settings, name="Paris")
    url = f"{SEGMENTS}/{segment['id']}"
    lyon = headers(settings, LYON, Role.admin)
    child = headers(settings, P11, Role.admin)  # a child does not see its parent's segment
    for who in (lyon, child):
        assert client.get(url, headers=who).status_code == 404
        assert client.get(f"{url}/preview", headers=who).status_code == 404
        assert client.get(f"{url}/export", headers=who).status_code == 404
        assert client.patch(url, json={"name": "x"}, headers=who).status_code == 404
        assert client.delete(url, headers=who).status_code == 404
        r = client.post(EXPORT, json={"segment_id": segment["id"]}, headers=who)
        assert r.status_code == 404
        assert client.get(SEGMENTS, headers=who).json()["items"] == []
    unknown = client.get(f"{SEGMENTS}/{'0' * 32}", headers=lyon)
    assert unknown.json() == client.get(url, headers=lyon).json()
    assert client.get(url, headers=headers(settings)).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "x", "filter": {"op": "tags", "match": "any", "tags": []}}, 422, "filter.tags"),
        (
            {"name": "x", "filter": {"op": "or", "of": [{"op": "all"}, {"op": "zz"}]}},
            422,
            "filter.of.1",
        ),
        (
            {"name": "x", "filter": {"op": "custom", "name": "nope", "cmp": "exists"}},
            422,
            "filter.name",
        ),
        (
            {"name": "x", "filter": {"op": "custom", "name": "age", "cmp": "gt", "value": "dix"}},
            422,
            "filter.value",
        ),
        (
            {
                "name": "x",
                "filter": {"op": "not", "filter": {"op": "federation", "federation_id": "lyon"}},
            },
            404,
            "filter.filter.federation_id",
        ),
        ({"name": " ", "filter": {"op": "all"}}, 422, "name"),
        ({"name": "x"}, 422, "filter"),
        ({"name": "x", "filter": {"op": "all"}, "federation_id": "lyon"}, 404, "federation_id"),
        ({"name": "x", "filter": {"op": "all"}, "colour": "red"}, 422, "colour"),
    ],
)
def test_bad_segments_are_refused_with_the_path_of_the_bad_node(contacts_api, body, status, field):
    client, settings = contacts_api
    r = client.post(
        "/api/v1/contacts/custom-fields",
        json={"name": "age", "type": "number"},
        headers=headers(settings),
    )
    assert r.status_code == 201
    r = client.post(SEGMENTS, json=body, headers=headers(settings))
    assert r.status_code == status, r.text
    assert field in {d["field"] for d in r.json()["detail"]}, r.text
    assert client.get(SEGMENTS, headers=headers(settings)).json()["items"] == []


def test_filters_are_bounded_by_the_settings(contacts_api, monkeypatch):
    client, settings = contacts_api
    deep: dict[str, Any] = {"op": "all"}
    for _ in range(settings.segment_max_depth):
        deep = {"op": "not", "filter": deep}
    r = client.post(f"{SEGMENTS}/preview", json={"filter": deep}, headers=headers(settings))
    assert r.status_code == 422
    assert "nested deeper than 10 levels" in r.json()["detail"][0]["reason"]
    r = client.get(f"{SEGMENTS}/{'0' * 32}/preview", params={"size": 51}, headers=headers(settings))
    assert r.status_code in (404, 422)
    r = client.post(
        f"{SEGMENTS}/preview", json={"filter": {"op": "all"}, "size": 51}, headers=headers(settings)
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "size"


def test_a_viewers_big_or_hostile_preview_is_refused_before_it_is_parsed(contacts_api, monkeypatch):
    """Any role may preview. A viewer's 18 MB preview used to be parsed whole (about 19
    times its size in memory) and refused only afterwards."""
    client, settings = contacts_api
    parsed: list[Any] = []
    parse = SegmentsService.parse

    async def recorded(self, identity, raw, *args, **kwargs):
        parsed.append(raw)
        return await parse(self, identity, raw, *args, **kwargs)

    monkeypatch.setattr(SegmentsService, "parse", recorded)
    viewer = {**headers(settings, role=Role.viewer), "Content-Type": "application/json"}
    big = {"filter": {"op": "tags", "match": "any", "tags": ["x" * 1_000_000]}}
    r = client.post(f"{SEGMENTS}/preview", content=json.dumps(big), headers=viewer)
    assert r.status_code == 413, r.text
    assert r.json()["limit"] == settings.max_body_bytes
    assert f"larger than {settings.max_body_bytes} bytes" in r.json()["detail"]
    assert parsed == []
    # within the body limit, a filter beyond its own bounds is a 422 naming the node
    long = {"filter": {"op": "not", "filter": {"op": "tags", "match": "any", "tags": ["x" * 501]}}}
    r = client.post(f"{SEGMENTS}/preview", content=json.dumps(long), headers=viewer)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [
        {"field": "filter.filter.tags.0", "reason": "must be at most 500 characters"}
    ]
    # nested deeper than the JSON reader goes (2,000 levels in 48 KB): a 422 too
    deep = '{"filter": ' + '{"op": "not", "filter": ' * 2_000 + '{"op": "all"}' + "}" * 2_001
    r = client.post(f"{SEGMENTS}/preview", content=deep, headers=viewer)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == "body"


def test_segment_roles(contacts_api):
    client, settings = contacts_api
    for role, status in [(Role.viewer, 403), (Role.treasurer, 403), (Role.campaign_manager, 201)]:
        r = client.post(
            SEGMENTS,
            json={"name": f"s-{role}", "filter": {"op": "all"}},
            headers=headers(settings, role=role),
        )
        assert r.status_code == status, role
    assert client.get(SEGMENTS, headers=headers(settings, role=Role.viewer)).status_code == 200


# ---------------------------------------------------------------- export


def test_export_streams_a_safe_csv_and_records_it(contacts_api):
    client, settings = contacts_api
    client.post(
        "/api/v1/contacts/custom-fields",
        json={"name": "note", "type": "text"},
        headers=headers(settings, ROOT),
    )
    evil = create(
        client,
        settings,
        given_name='=HYPERLINK("http://evil","x")',
        family_name="@SUM(1+1)",
        email="a@x.fr",
        phone="0612345678",
        tags=["-1+2"],
        custom_fields={"note": "+cmd"},
    )
    create(client, settings, P11, family_name='Éloïse; "la"\nMartin', tags=["x"])
    create(client, settings, LYON, family_name="Lyon")
    segment = new_segment(client, settings, name="Tous")

    extra = {CLIENT_IP_HEADER: "203.0.113.77", CLIENT_USER_AGENT_HEADER: "Mozilla/5.0 Test"}
    r = client.get(f"{SEGMENTS}/{segment['id']}/export", headers={**headers(settings), **extra})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="contacts-')
    rows = read_csv(r)
    assert len(rows) == 2  # Paris's subtree only
    first = next(row for row in rows if row["id"] == evil["id"])
    assert first["given_name"] == '\'=HYPERLINK("http://evil","x")'
    assert first["family_name"] == "'@SUM(1+1)"
    assert first["phone"] == "'+33612345678"
    assert first["tags"] == "'-1+2"
    assert first["custom.note"] == "'+cmd"
    second = next(row for row in rows if row["id"] != evil["id"])
    assert second["family_name"] == 'Éloïse; "la" Martin'  # names hold no line break

    # a filter (with ; as delimiter for a French Excel)
    r = client.post(
        EXPORT,
        json={"filter": {"op": "tags", "match": "any", "tags": ["x"]}, "delimiter": ";"},
        headers=headers(settings, role=Role.admin),
    )
    assert r.status_code == 200
    text = r.content.decode("utf-8")[1:]
    assert text.splitlines()[0].startswith("id;federation_id;given_name")
    assert len(list(csv.DictReader(io.StringIO(text), delimiter=";"))) == 1

    audit = client.get(EXPORT, headers=headers(settings, ROOT, Role.dpo))
    assert audit.status_code == 200, audit.text
    newest, oldest = audit.json()["items"]
    assert (newest["row_count"], newest["status"], newest["role"]) == (1, "completed", "admin")
    assert newest["filter"] == {"op": "tags", "match": "any", "tags": ["x"]}
    assert newest["client_ip"] is None
    assert oldest["segment_id"] == segment["id"] and oldest["row_count"] == 2
    assert oldest["filter"] == {"op": "all"} and oldest["expected_rows"] == 2
    assert oldest["client_ip"] == "203.0.113.0/24"  # minimised, as every stored IP
    assert oldest["user_agent"] == "Mozilla/5.0 Test"
    assert oldest["finished_at"] >= oldest["started_at"]
    # Lyon's DPO does not see Paris's exports; other roles do not read the trail
    assert client.get(EXPORT, headers=headers(settings, LYON, Role.dpo)).json()["items"] == []
    assert client.get(EXPORT, headers=headers(settings, PARIS, Role.secretary)).status_code == 403


def test_export_is_only_for_the_roles_allowed(contacts_api, monkeypatch):
    client, settings = contacts_api
    create(client, settings, family_name="A")
    body = {"filter": {"op": "all"}}
    for role, status in [
        (Role.admin, 200),
        (Role.secretary, 200),
        (Role.campaign_manager, 403),
        (Role.viewer, 403),
        (Role.dpo, 403),
    ]:
        assert client.post(EXPORT, json=body, headers=headers(settings, role=role)).status_code == (
            status
        ), role
    monkeypatch.setenv("CONTACTS_EXPORT_ROLES", '["admin", "campaign_manager"]')
    settings2 = ContactsSettings()
    with TestClient(create_app(settings2)) as other:
        h = headers(settings2, role=Role.campaign_manager)
        assert other.post(EXPORT, json=body, headers=h).status_code == 200
        h = headers(settings2, role=Role.secretary)
        assert other.post(EXPORT, json=body, headers=h).status_code == 403


def test_export_refusals_write_no_audit_row(contacts_api, monkeypatch):
    client, settings = contacts_api
    for i in range(3):
        create(client, settings, family_name=f"N{i}")
    for body, status, field in [
        ({}, 422, "filter"),
        ({"filter": {"op": "all"}, "segment_id": "0" * 32}, 422, "filter"),
        ({"filter": {"op": "nope"}}, 422, "filter"),
        ({"segment_id": "0" * 32}, 404, None),
        ({"filter": {"op": "all"}, "delimiter": "|"}, 422, "delimiter"),
    ]:
        r = client.post(EXPORT, json=body, headers=headers(settings))
        assert r.status_code == status, (body, r.text)
        if field:
            assert r.json()["detail"][0]["field"] == field

    monkeypatch.setenv("CONTACTS_EXPORT_MAX_ROWS", "2")
    small = ContactsSettings()
    with TestClient(create_app(small)) as limited:
        r = limited.post(EXPORT, json={"filter": {"op": "all"}}, headers=headers(small))
        assert r.status_code == 409
        assert (r.json()["matching"], r.json()["limit"]) == (3, 2)
        r = limited.post(
            EXPORT,
            json={"filter": {"op": "not", "filter": {"op": "has_email"}}},
            headers=headers(small),
        )
        assert r.status_code == 409

    async def audited(store: Store):
        return await store[EXPORTS].count_documents({})

    assert run_with_store(settings, audited) == 0


def test_a_large_export_streams_in_batches(contacts_api, monkeypatch):
    monkeypatch.setenv("CONTACTS_EXPORT_BATCH_SIZE", "7")
    settings = ContactsSettings()
    with TestClient(create_app(settings)) as client:
        seed_federations(settings, ROOT, PARIS)

        async def seed(store: Store):
            now = datetime.now(UTC)
            await store["contacts"].insert_many(
                [
                    {
                        "_id": f"{i:032x}",
                        "federation_id": "paris",
                        "federation_path": PARIS,
                        "version": 1,
                        "given_name": "",
                        "family_name": f"N{i}",
                        "emails": [],
                        "phones": [],
                        "tags": [],
                        "custom_fields": {},
                        "origin": {"kind": "import", "detail": "", "collected_on": None},
                        "created_at": now,
                        "updated_at": now,
                        "created_by": "u",
                        "search": {"given": "", "family": f"n{i}", "emails": []},
                    }
                    for i in range(100)
                ]
            )

        run_with_store(settings, seed)
        with client.stream(
            "POST", EXPORT, json={"filter": {"op": "all"}}, headers=headers(settings)
        ) as r:
            chunks = [c for c in r.iter_bytes() if c]
        text = b"".join(chunks).decode("utf-8")
        assert len(list(csv.DictReader(io.StringIO(text[1:])))) == 100
        assert len(chunks) >= 100 // 7  # streamed batch by batch, not one body
