"""The back office's duplicates review and segment editing (gateway.webapp.duplicates_api,
the segment page of gateway.webapp.screens_api) in a real browser (Debian's Chromium), on
the whole platform: a secretary imports a CSV whose row is a likely duplicate of a known
person, compares both records, merges them choosing a field, lands on the person kept and
the other one is gone (another federation's secretary cannot open the pair); a campaign
manager creates a segment from the screen (its size previewed first, a refusal shown at
its field with what was typed kept), narrows its filter and sees its size change, is told
when someone else changed it meanwhile, then deletes it. Each new screen passes the WCAG
2.1 AA check and is saved as a screenshot."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from browser_support import assert_accessible, screenshot, signed_in
from playwright.sync_api import expect
from support import create_contact

pytestmark = pytest.mark.e2e

Api = Callable[..., httpx.Response]


def federation(admin, name: str) -> str:
    """A federation of its own under the root: its duplicates are this test's alone."""
    r = admin("POST", "/api/v1/federations", json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def account(stack, admin, http, role: str, federation_id: str) -> tuple[str, str, Api]:
    """A user of ``role``: (email, password) to type in the login form, and their API."""
    email = f"{role}.{uuid.uuid4().hex[:8]}@tribune.test"
    password = f"pw-{uuid.uuid4().hex}"
    body = {"email": email, "password": password, "role": role, "federation_id": federation_id}
    r = admin("POST", "/api/v1/users", json=body)
    assert r.status_code == 201, r.text
    r = http.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def call(method: str, path: str, **kw: Any) -> httpx.Response:
        return http.request(method, path, headers=headers, **kw)

    return email, password, call


# ---------------------------------------------------------------- duplicates review


def test_a_secretary_merges_an_imported_likely_duplicate_choosing_a_field(
    stack, admin, http, laptop
):
    tag = uuid.uuid4().hex[:8]
    fed = federation(admin, f"Brest {tag}")
    email, password, secretary = account(stack, admin, http, "secretary", fed)
    family = f"Kerbrat{tag}"
    known = f"camille.{tag}@example.fr"
    existing = create_contact(secretary, "Camille", family, known, postcode="29200")
    imported_email = f"c.kerbrat.{tag}@example.fr"
    data = f"prénom,nom,email,code postal\r\nCamile,{family},{imported_email},29200\r\n".encode()

    signed_in(laptop, stack.gateway_url, email, password)
    laptop.get_by_role("link", name="Imports", exact=True).click()
    laptop.get_by_label("Fichier CSV").set_input_files(
        {"name": f"brest-{tag}.csv", "mimeType": "text/csv", "buffer": data}
    )
    laptop.get_by_label("Origine des données").select_option("event")
    laptop.get_by_label("Provenance précise").fill("fête de la rose 2026")
    laptop.get_by_role("button", name="Importer").click()
    expect(laptop.get_by_text("État : Terminé")).to_be_visible(timeout=120_000)
    expect(laptop.locator('[data-count="created"]')).to_have_text("1")  # not the same email

    # from the import to the likely duplicates of its federation
    laptop.get_by_role("link", name="Examiner les doublons probables de la fédération").click()
    expect(laptop.get_by_role("heading", name="Doublons à examiner", level=1)).to_be_visible()
    pair = laptop.get_by_role("row").filter(has_text=imported_email)
    expect(pair).to_have_count(1)
    expect(pair).to_contain_text(known)
    expect(pair).to_contain_text("même code postal (29200)")
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-duplicates")

    pair.get_by_role("link", name=re.compile("Comparer")).click()
    expect(laptop.get_by_role("heading", name="Comparer deux fiches", level=1)).to_be_visible()
    query = parse_qs(urlparse(laptop.url).query)
    if query["survivor"] == [existing]:
        imported = query["merged"][0]
    else:  # the known person's record is the one to keep
        imported = query["survivor"][0]
        laptop.get_by_role("link", name=f"Conserver plutôt la fiche de Camille {family}").click()
    given = laptop.locator('tr[data-field="given_name"]')
    expect(given.locator('[data-side="survivor"]')).to_have_text("Camille")
    expect(given.locator('[data-side="merged"]')).to_have_text("Camile")
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-duplicate-review")

    # the imported spelling of the given name wins; the emails default to both
    laptop.get_by_role("group", name="Prénom").get_by_label("Fiche supprimée").check()
    laptop.get_by_role("button", name="Fusionner les deux fiches").click()

    expect(laptop).to_have_url(re.compile(rf"/app/people/{existing}\?done=merged$"))
    expect(laptop.get_by_text("Fiches fusionnées : voici la fiche conservée.")).to_be_visible()
    expect(laptop.get_by_role("heading", level=1)).to_contain_text(f"Camile {family}")
    expect(laptop.get_by_role("main")).to_contain_text(imported_email)  # both addresses kept
    expect(laptop.get_by_role("main")).to_contain_text(known)
    assert secretary("GET", f"/api/v1/contacts/{imported}").status_code == 404
    assert secretary("GET", f"/api/v1/contacts/{existing}").json()["given_name"] == "Camile"
    answer = laptop.goto(f"{stack.gateway_url}/app/people/{imported}")
    assert answer is not None and answer.status == 404

    # the pair is gone from the list and the merge is in the log
    laptop.goto(f"{stack.gateway_url}/app/duplicates?federation_id={fed}")
    expect(laptop.get_by_role("row").filter(has_text=imported_email)).to_have_count(0)
    log = laptop.get_by_role("region", name="Dernières fusions")
    expect(log.locator(f'a[href="/app/people/{existing}"]')).to_have_count(1)

    # a secretary of another federation: the pair is out of their subtree, a 404 page
    other_email, other_password, other = account(
        stack, admin, http, "secretary", federation(admin, f"Lorient {tag}")
    )
    stranger = create_contact(other, "Camille", family, f"autre.{tag}@example.fr", postcode="29200")
    signed_in(laptop, stack.gateway_url, other_email, other_password)
    answer = laptop.goto(
        f"{stack.gateway_url}/app/duplicates/review?survivor={stranger}&merged={existing}"
    )
    assert answer is not None and answer.status == 404
    expect(laptop.get_by_role("heading", name="Page introuvable")).to_be_visible()


# ---------------------------------------------------------------- segment editing


def test_a_campaign_manager_creates_a_segment_narrows_it_then_deletes_it(
    stack, admin, http, laptop
):
    tag = uuid.uuid4().hex[:8]
    fed = federation(admin, f"Quimper {tag}")
    _, _, secretary = account(stack, admin, http, "secretary", fed)
    email, password, manager = account(stack, admin, http, "campaign_manager", fed)
    label = f"tract-{tag}"
    create_contact(secretary, "Anna", f"Tract{tag}", f"anna.{tag}@example.fr", postcode="29000",
            tags=[label])  # fmt: skip
    create_contact(secretary, "Bruno", f"Tract{tag}", f"bruno.{tag}@example.fr", postcode="29200",
            tags=[label])  # fmt: skip

    # created from the segments list: its size previewed, a blank name refused at its
    # field with the filter typed kept, then made
    signed_in(laptop, stack.gateway_url, email, password)
    laptop.get_by_role("link", name="Segments", exact=True).first.click()
    laptop.get_by_role("link", name="Nouveau segment").click()
    expect(laptop.get_by_role("heading", name="Nouveau segment", level=1)).to_be_visible()
    assert_accessible(laptop)
    laptop.get_by_label("Étiquettes", exact=True).fill(label)
    laptop.get_by_role("button", name="Voir combien de contacts").click()
    expect(laptop.locator('[data-size="new"]')).to_have_text("2")
    expect(laptop.get_by_label("Étiquettes", exact=True)).to_have_value(label)
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-segment-new")
    laptop.get_by_label("Nom", exact=True).fill("   ")  # passes the browser's "required"
    laptop.get_by_role("button", name="Créer le segment").click()
    expect(laptop.locator("#name-error")).to_contain_text("must not be blank")
    expect(laptop.get_by_label("Nom", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(laptop.get_by_label("Étiquettes", exact=True)).to_have_value(label)
    assert_accessible(laptop)
    laptop.get_by_label("Nom", exact=True).fill(f"Tract {tag}")
    laptop.get_by_label("Description").fill("distribution de tracts")
    laptop.get_by_role("button", name="Créer le segment").click()
    expect(laptop).to_have_url(re.compile(r"/app/segments/[0-9a-f]{32}\?done=segment_created$"))
    expect(laptop.get_by_role("status")).to_have_text("Segment créé.")
    segment_id = urlparse(laptop.url).path.rsplit("/", 1)[1]
    made = manager("GET", f"/api/v1/segments/{segment_id}").json()
    assert made["filter"] == {"op": "tags", "match": "any", "tags": [label]}
    assert made["name"] == f"Tract {tag}" and made["version"] == 1
    assert made["description"] == "distribution de tracts"

    expect(laptop.get_by_role("heading", name=f"Tract {tag}", level=1)).to_be_visible()
    expect(laptop.locator("[data-size]")).to_have_text("2")
    expect(laptop.get_by_label("Étiquettes", exact=True)).to_have_value(label)
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-segment-edit")

    # narrowed to one postcode: one person left
    laptop.get_by_label("Zone géographique").select_option("postcode")
    laptop.get_by_label("Valeurs de la zone").fill("29200")
    laptop.get_by_role("button", name="Enregistrer le segment").click()
    expect(laptop.get_by_role("status")).to_have_text("Modification enregistrée.")
    expect(laptop.locator("[data-size]")).to_have_text("1")
    saved = manager("GET", f"/api/v1/segments/{segment_id}").json()
    assert saved["version"] == 2
    assert {"op": "geo", "field": "postcode", "values": ["29200"]} in saved["filter"]["of"]

    # someone else changes it while the page is open: told, shown as it is now
    changed = manager(
        "PATCH", f"/api/v1/segments/{segment_id}", json={"description": "revu", "version": 2}
    )
    assert changed.status_code == 200, changed.text
    laptop.get_by_label("Nom", exact=True).fill(f"Tract {tag} bis")
    laptop.get_by_role("button", name="Enregistrer le segment").click()
    expect(laptop.get_by_role("alert")).to_contain_text("modifié par quelqu'un d'autre")
    expect(laptop.get_by_label("Description")).to_have_value("revu")
    expect(laptop.get_by_label("Nom", exact=True)).to_have_value(f"Tract {tag}")
    assert manager("GET", f"/api/v1/segments/{segment_id}").json()["name"] == f"Tract {tag}"
    assert_accessible(laptop)

    # deleting takes the confirmation, which the server checks too
    laptop.evaluate("document.getElementById('confirm-delete').removeAttribute('required')")
    laptop.get_by_role("button", name="Supprimer", exact=True).click()
    expect(laptop.get_by_text("Cochez la case pour confirmer la suppression.")).to_be_visible()
    assert manager("GET", f"/api/v1/segments/{segment_id}").status_code == 200
    laptop.get_by_label(re.compile("Je confirme la suppression définitive")).check()
    laptop.get_by_role("button", name="Supprimer", exact=True).click()
    expect(laptop).to_have_url(re.compile(r"/app/segments\?done=deleted$"))
    expect(laptop.get_by_role("status")).to_have_text("Segment supprimé.")
    expect(laptop.get_by_role("link", name=f"Tract {tag}")).to_have_count(0)
    assert manager("GET", f"/api/v1/segments/{segment_id}").status_code == 404
