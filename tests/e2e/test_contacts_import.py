"""A CSV import through the gateway, run by the real contacts worker: upload (the body
streamed through the gateway unchanged), progress until done, the rejected rows, the
imported contacts, and another federation's 404."""

from __future__ import annotations

import csv
import io
import uuid

import pytest
from contacts.messy_csv import messy_csv_bytes
from support import eventually

pytestmark = pytest.mark.e2e


def test_a_messy_csv_is_imported_through_the_gateway(federations):
    paris, lyon = federations["Paris"].user, federations["Lyon"].user
    data, expected = messy_csv_bytes(300, encoding="cp1252", delimiter=";", seed=17)
    tag = f"e2e-{uuid.uuid4().hex[:8]}"
    r = paris(
        "POST",
        "/api/v1/contacts/imports",
        files=[
            ("origin_kind", (None, "petition")),
            ("origin_detail", (None, "pétition e2e")),
            ("tag", (None, tag)),
            ("file", ("adhérents.csv", data, "text/csv")),
        ],
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["file"]["bytes"] == len(data)  # the gateway passed the body on unchanged
    assert job["file"]["encoding"] == "cp1252" and job["file"]["name"] == "adhérents.csv"

    def current():
        return paris("GET", f"/api/v1/contacts/imports/{job['id']}").json()

    done = eventually(current, lambda j: j["status"] in ("done", "failed"), timeout=300)
    assert done["status"] == "done", done
    assert done["progress"]["rows_done"] == done["progress"]["total"] == expected.rows
    assert done["counts"]["created"] == expected.created
    assert done["counts"]["merged"] == expected.merged
    assert done["counts"]["rejected"] == expected.rejected

    rejected = paris("GET", f"/api/v1/contacts/imports/{job['id']}/rejected.csv")
    assert rejected.status_code == 200
    assert rejected.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(rejected.text.removeprefix("\ufeff")), delimiter=";"))
    assert rows[0][:3] == ["row", "reason", "Prénom"]
    assert len(rows) - 1 == expected.rejected
    assert all(row[1].startswith("Courriel: not a valid email address") for row in rows[1:])

    listed = paris("GET", "/api/v1/contacts", params={"tag": tag, "limit": 200})
    assert listed.status_code == 200
    page = listed.json()
    assert len(page["items"]) == min(200, expected.created)
    assert all(c["origin"]["detail"] == "pétition e2e" for c in page["items"])

    assert lyon("GET", f"/api/v1/contacts/imports/{job['id']}").status_code == 404
    assert lyon("GET", f"/api/v1/contacts/imports/{job['id']}/rejected.csv").status_code == 404
    assert lyon("GET", "/api/v1/contacts", params={"tag": tag}).json()["items"] == []
