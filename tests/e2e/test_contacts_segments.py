"""Through the gateway: the full contact with custom fields, PATCH with its version, list
filters and sorting, a segment, its preview and its CSV export, and tenancy."""

from __future__ import annotations

import csv
import io
import uuid

import pytest

pytestmark = pytest.mark.e2e


def test_contacts_segments_and_export_through_the_gateway(federations, admin, dpos):
    paris, lyon = federations["Paris"], federations["Lyon"]
    tag = f"e2e-{uuid.uuid4().hex[:8]}"
    field = f"quartier_{uuid.uuid4().hex[:6]}"

    r = paris.user(
        "POST",
        "/api/v1/contacts/custom-fields",
        json={"name": field, "type": "choice", "choices": ["Bastille", "Roquette"]},
    )
    assert r.status_code == 201, r.text

    def create(**body) -> dict:
        r = paris.user(
            "POST", "/api/v1/contacts", json={"origin": {"kind": "web_form"}, "tags": [tag], **body}
        )
        assert r.status_code == 201, r.text
        return r.json()

    marianne = create(
        given_name="Marianne",
        family_name="Dupont",
        emails=[{"address": f"m.{tag}@example.fr", "primary": True}],
        phones=[{"number": "06 12 34 56 78"}],
        address={"postcode": "75011", "commune": "Paris", "commune_insee": "75111"},
        constituency="75-07",
        custom_fields={field: "roquette"},
    )
    assert marianne["address"]["department"] == "75"
    assert marianne["phones"] == [{"number": "+33612345678", "kind": "mobile"}]
    assert marianne["custom_fields"] == {field: "Roquette"}
    jean = create(given_name="Jean", family_name="Abel", email=f"j.{tag}@example.fr")

    # PATCH with the version read, in the body or as If-Match
    r = paris.user(
        "PATCH",
        f"/api/v1/contacts/{jean['id']}",
        json={"version": 1, "address": {"postcode": "75012"}, "custom_fields": {field: "Bastille"}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.headers["etag"] == '"2"'
    stale = paris.user(
        "PATCH", f"/api/v1/contacts/{jean['id']}", json={"version": 1, "family_name": "X"}
    )
    assert stale.status_code == 409
    # the ETag read through the gateway works as If-Match through it too
    read = paris.user("GET", f"/api/v1/contacts/{jean['id']}")
    assert read.headers["etag"] == '"2"'
    stale = paris.user(
        "PATCH", f"/api/v1/contacts/{jean['id']}", json={"tags": [tag]}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 409, stale.text
    r = paris.user(
        "PATCH",
        f"/api/v1/contacts/{jean['id']}",
        json={"birth_year": 1971},
        headers={"If-Match": read.headers["etag"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3 and r.json()["birth_year"] == 1971

    # list: filters and sorting
    r = paris.user(
        "GET", "/api/v1/contacts", params={"tags_any": tag, "sort": "family_name", "limit": 1}
    )
    assert r.status_code == 200, r.text
    assert [c["family_name"] for c in r.json()["items"]] == ["Abel"]
    r = paris.user(
        "GET",
        "/api/v1/contacts",
        params={"tags_any": tag, "cursor": r.json()["next_cursor"], "sort": "family_name"},
    )
    assert [c["family_name"] for c in r.json()["items"]] == ["Dupont"]
    r = paris.user(
        "GET",
        "/api/v1/contacts",
        params={"tags_any": tag, "department": "75", f"cf.{field}": "Roquette"},
    )
    assert [c["id"] for c in r.json()["items"]] == [marianne["id"]]
    assert lyon.user("GET", "/api/v1/contacts", params={"tags_any": tag}).json()["items"] == []

    # a segment, its preview and its export
    r = paris.user(
        "POST",
        "/api/v1/segments",
        json={
            "name": f"Militants {tag}",
            "filter": {
                "op": "and",
                "of": [
                    {"op": "tags", "match": "all", "tags": [tag]},
                    {"op": "geo", "field": "postcode", "values": ["75011", "75012"]},
                    {"op": "has_email"},
                ],
            },
        },
    )
    assert r.status_code == 201, r.text
    segment = r.json()
    preview = paris.user("GET", f"/api/v1/segments/{segment['id']}/preview", params={"size": 5})
    assert preview.status_code == 200, preview.text
    assert preview.json()["count"] == 2
    assert {c["id"] for c in preview.json()["sample"]} == {marianne["id"], jean["id"]}

    export = paris.user("GET", f"/api/v1/segments/{segment['id']}/export")
    assert export.status_code == 200, export.text
    assert export.headers["content-type"].startswith("text/csv")
    text = export.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(text[1:]))}
    assert set(rows) == {marianne["id"], jean["id"]}
    assert rows[marianne["id"]]["phone"] == "'+33612345678"  # no formula in a spreadsheet
    assert rows[jean["id"]][f"custom.{field}"] == "Bastille"

    # the export trail is the DPO's alone (not even the administrator's)
    assert admin("GET", "/api/v1/contacts/exports").status_code == 403
    audit = dpos["Paris"]("GET", "/api/v1/contacts/exports").json()["items"]
    mine = next(a for a in audit if a["segment_id"] == segment["id"])
    assert (mine["row_count"], mine["status"]) == (2, "completed")
    assert mine["user_email"].startswith("secretary.paris")

    # Lyon sees neither the segment nor its export, and may not export Paris's people
    for path in ("", "/preview", "/export"):
        assert lyon.user("GET", f"/api/v1/segments/{segment['id']}{path}").status_code == 404
    assert (
        lyon.user(
            "POST", "/api/v1/contacts/exports", json={"segment_id": segment["id"]}
        ).status_code
        == 404
    )
    assert (
        lyon.user("PATCH", f"/api/v1/contacts/{jean['id']}", json={"version": 2}).status_code == 404
    )
