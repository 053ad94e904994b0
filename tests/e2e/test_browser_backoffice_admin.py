"""The back office's work screens (gateway.webapp.screens_api) in a real browser (Debian's
Chromium), as the people who use them, on the whole platform: a secretary imports a CSV
and reads its rejected rows and the duplicates to review; the DPO follows an erasure to
its receipt; the national administrator creates, renames and moves a federation and
changes a user's role; a campaign manager resumes a paused campaign and watches its
figures reach the end without reloading, and reads the segments' sizes. On each screen
another federation's object is the 404 page; each passes the WCAG 2.1 AA check and is
saved as a screenshot."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from browser_support import assert_accessible, screenshot, signed_in
from playwright.sync_api import Page, expect
from support import create_contact, eventually

pytestmark = pytest.mark.e2e

Api = Callable[..., httpx.Response]


def account(stack, admin, role: str, federation_id: str) -> tuple[str, str]:
    """A user of ``role`` in a federation: (email, password) to type in the login form."""
    email = f"{role}.{uuid.uuid4().hex[:8]}@tribune.test"
    password = f"pw-{uuid.uuid4().hex}"
    body = {
        "email": email,
        "password": password,
        "role": role,
        "federation_id": federation_id,
        "confirm_password": stack.admin_credentials[1],  # asked for a DPO only
    }
    r = admin("POST", "/api/v1/users", json=body)
    assert r.status_code == 201, r.text
    return email, password


def api_of(http: httpx.Client, email: str, password: str) -> Api:
    r = http.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def call(method: str, path: str, **kw: Any) -> httpx.Response:
        return http.request(method, path, headers=headers, **kw)

    return call


def not_found(page: Page, url: str) -> None:
    answer = page.goto(url)
    assert answer is not None and answer.status == 404, url
    expect(page.get_by_role("heading", name="Page introuvable")).to_be_visible()


# ---------------------------------------------------------------- CSV import


def test_a_secretary_imports_a_csv_and_reads_its_rejected_rows_and_duplicates(
    stack, admin, federations, laptop
):
    paris, lyon = federations["Paris"], federations["Lyon"]
    tag = uuid.uuid4().hex[:8]
    known = f"deja.{tag}@example.fr"
    existing = create_contact(paris.user, "Déjà", f"Connu{tag}", known)
    data = (
        "prénom,nom,email\r\n"
        f"Anna,Import{tag},anna.{tag}@example.fr\r\n"
        f"Bruno,Import{tag},pas-une-adresse\r\n"
        f"Déjà,Connu{tag},{known}\r\n"
        f"Chloé,Import{tag},chloe.{tag}@example.fr\r\n"
    ).encode()
    email, password = account(stack, admin, "secretary", paris.id)

    signed_in(laptop, stack.gateway_url, email, password)
    laptop.get_by_role("link", name="Imports", exact=True).click()
    expect(laptop.get_by_role("heading", name="Imports CSV", level=1)).to_be_visible()
    assert_accessible(laptop)
    laptop.get_by_label("Fichier CSV").set_input_files(
        {"name": f"fete-{tag}.csv", "mimeType": "text/csv", "buffer": data}
    )
    laptop.get_by_label("Origine des données").select_option("event")
    laptop.get_by_label("Provenance précise").fill("fête de la rose 2026")
    laptop.get_by_label("Doublons").select_option("flag")
    laptop.get_by_role("button", name="Importer").click()

    expect(laptop).to_have_url(re.compile(r"/app/imports/[0-9a-f]{32}$"))
    job_id = laptop.url.rsplit("/", 1)[1]
    expect(laptop.get_by_role("heading", name=f"Import de fete-{tag}.csv")).to_be_visible()
    # followed without reloading while it runs (or already done when the page came)
    expect(laptop.get_by_text("État : Terminé")).to_be_visible(timeout=120_000)
    expect(laptop.locator('[data-count="created"]')).to_have_text("2")

    rejected = laptop.get_by_role("table").nth(0)
    expect(rejected.get_by_role("row")).to_have_count(2)  # the header and Bruno's line
    line = rejected.get_by_role("row").nth(1)
    expect(line.get_by_role("cell").nth(0)).to_have_text("3")
    expect(line.get_by_role("cell").nth(1)).to_contain_text("email")
    expect(line).to_contain_text("pas-une-adresse")

    flagged = laptop.get_by_role("table").nth(1)
    expect(flagged.get_by_role("row")).to_have_count(2)
    expect(flagged.get_by_role("row").nth(1).get_by_role("cell").nth(0)).to_have_text("4")
    expect(flagged.get_by_role("link", name=re.compile("Ouvrir la fiche"))).to_have_attribute(
        "href", f"/app/people/{existing}"
    )
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-import")

    # the whole rejected file, downloaded through the page
    with laptop.expect_download() as download:
        laptop.get_by_role("link", name="Télécharger les lignes rejetées (CSV)").click()
    assert "pas-une-adresse" in download.value.path().read_text(encoding="utf-8-sig")

    # the list shows it; a Lyon secretary reaches none of it
    laptop.get_by_role("link", name="Retour aux imports").click()
    expect(laptop.get_by_role("link", name=f"fete-{tag}.csv")).to_be_visible()
    lyon_email, lyon_password = account(stack, admin, "secretary", lyon.id)
    signed_in(laptop, stack.gateway_url, lyon_email, lyon_password)
    not_found(laptop, f"{stack.gateway_url}/app/imports/{job_id}")
    not_found(laptop, f"{stack.gateway_url}/app/imports/{job_id}/rejected.csv")
    laptop.goto(f"{stack.gateway_url}/app/imports")
    expect(laptop.get_by_role("link", name=f"fete-{tag}.csv")).to_have_count(0)


def test_a_treasurer_is_told_the_import_screen_is_not_for_their_role(
    stack, admin, federations, laptop
):
    email, password = account(stack, admin, "treasurer", federations["Paris"].id)
    signed_in(laptop, stack.gateway_url, email, password)
    expect(laptop.get_by_role("link", name="Imports", exact=True)).to_have_count(0)
    answer = laptop.goto(f"{stack.gateway_url}/app/imports")
    assert answer is not None and answer.status == 403
    expect(laptop.get_by_role("heading", name="Accès refusé")).to_be_visible()


# ---------------------------------------------------------------- privacy requests


def test_the_dpo_follows_an_erasure_to_the_receipt_listing_each_service(
    stack, admin, http, federations, dpos, laptop
):
    paris = federations["Paris"]
    tag = uuid.uuid4().hex[:8]
    person = create_contact(paris.user, "Effacée", f"Oubli{tag}", f"oubli.{tag}@example.fr")
    theirs = create_contact(
        federations["Lyon"].user, "Lyonnaise", f"Oubli{tag}", f"lyon.{tag}@example.fr"
    )
    # consent learns of a new contact from its events: a request waits for that
    lyon_request = eventually(
        lambda: dpos["Lyon"](
            "POST", "/api/v1/privacy/requests", json={"kind": "access", "contact_id": theirs}
        ),
        lambda r: r.status_code == 201,
        timeout=60,
    )
    email, password = account(stack, admin, "dpo", paris.id)
    dpo = api_of(http, email, password)
    r = eventually(
        lambda: dpo(
            "POST", "/api/v1/privacy/requests", json={"kind": "erasure", "contact_id": person}
        ),
        lambda r: r.status_code == 201,
        timeout=60,
    )
    request_id = r.json()["request_id"]

    signed_in(laptop, stack.gateway_url, email, password)
    laptop.get_by_role("link", name="Demandes RGPD").click()
    expect(laptop.get_by_role("heading", name="Demandes d'accès et d'effacement")).to_be_visible()
    laptop.get_by_label("Type").select_option("erasure")
    laptop.get_by_role("button", name="Filtrer").click()
    link = laptop.locator(f'a[href="/app/privacy/{request_id}"]')
    expect(link).to_be_visible()
    row = laptop.get_by_role("row").filter(has=link)
    expect(row).to_contain_text("Effacement")
    expect(
        laptop.locator(f'a[href="/app/privacy/{lyon_request.json()["request_id"]}"]')
    ).to_have_count(0)
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-privacy")

    eventually(
        lambda: dpo("GET", f"/api/v1/privacy/requests/{request_id}").json()["status"],
        lambda status: status == "completed",
        timeout=90,
    )
    link.click()
    expect(laptop.get_by_role("heading", name="Demande d'effacement")).to_be_visible()
    expect(laptop.get_by_role("heading", name="Attestation d'effacement")).to_be_visible()
    receipt = laptop.get_by_role("table")
    for service in ("contacts", "consent", "memberships", "messaging"):
        expect(receipt.get_by_role("cell", name=service, exact=True)).to_be_visible()
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-privacy-receipt")

    not_found(laptop, f"{stack.gateway_url}/app/privacy/{lyon_request.json()['request_id']}")


# ---------------------------------------------------------------- users and federations


def test_the_national_administrator_shapes_the_tree_and_changes_a_users_role(
    stack, admin, http, federations, laptop
):
    tag = uuid.uuid4().hex[:6]
    region = admin("POST", "/api/v1/federations", json={"name": f"Bretagne {tag}"}).json()
    email, password = stack.admin_credentials
    signed_in(laptop, stack.gateway_url, email, password)

    laptop.get_by_role("link", name="Fédérations").click()
    laptop.get_by_label("Nom", exact=True).fill(f"Finistère {tag}")
    laptop.get_by_role("button", name="Créer la fédération").click()
    expect(laptop.get_by_role("status")).to_have_text("Créé.")
    laptop.get_by_role("link", name=f"Finistère {tag}").click()
    laptop.get_by_label("Nouveau nom").fill(f"Finistère (29) {tag}")
    laptop.get_by_role("button", name="Renommer").click()
    expect(laptop.get_by_role("heading", name=f"Finistère (29) {tag}", level=1)).to_be_visible()
    laptop.get_by_label("Placer sous").select_option(region["id"])
    laptop.get_by_role("button", name="Déplacer").click()
    expect(laptop.get_by_role("status")).to_have_text("Modification enregistrée.")
    federation_id = laptop.url.split("/app/federations/", 1)[1].split("?", 1)[0]
    moved = admin("GET", f"/api/v1/federations/{federation_id}").json()
    assert moved["parent_id"] == region["id"] and moved["name"] == f"Finistère (29) {tag}"
    laptop.get_by_role("link", name="Retour aux fédérations").click()
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-federations")

    user_email, user_password = account(stack, admin, "viewer", federation_id)
    laptop.get_by_role("link", name="Utilisateurs").click()
    laptop.get_by_label("Adresse e-mail (partie)").fill(user_email.split("@")[0])
    laptop.get_by_role("button", name="Filtrer").click()
    laptop.get_by_role("link", name=user_email).click()
    laptop.get_by_label("Nouveau rôle").select_option("secretary")
    laptop.get_by_role("button", name="Changer le rôle").click()
    expect(laptop.get_by_role("status")).to_have_text("Modification enregistrée.")
    expect(laptop.locator("[data-role]")).to_have_text("Secrétaire")
    laptop.get_by_role("button", name="Désactiver le compte").click()
    expect(laptop.locator("[data-active]")).to_have_text("Désactivé")
    refused = http.post(
        "/api/v1/auth/token", data={"username": user_email, "password": user_password}
    )
    assert refused.status_code in (401, 403)  # the account is closed at once
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-user")

    # an administrator of Paris reaches neither Lyon nor its users
    paris_admin, paris_password = account(stack, admin, "admin", federations["Paris"].id)
    lyon_secretary = admin(
        "GET", "/api/v1/users", params={"role": "secretary", "q": "secretary.lyon"}
    ).json()["items"][0]
    signed_in(laptop, stack.gateway_url, paris_admin, paris_password)
    not_found(laptop, f"{stack.gateway_url}/app/federations/{federations['Lyon'].id}")
    not_found(laptop, f"{stack.gateway_url}/app/users/{lyon_secretary['id']}")


# ---------------------------------------------------------------- segments and campaigns

PURPOSE = "campaigns"
HTML = (
    "<p>Bonjour {{ contact.given_name | default('à vous') }},</p>"
    "<p>{{ origin }} {{ sender }}</p>"
    '<p><a href="{{ unsubscribe_url }}">Se désinscrire</a></p>'
)


def draft_campaign(manager: Api, name: str, tag: str) -> tuple[str, str]:
    """A draft email campaign named ``name`` to the people tagged ``tag`` (its segment
    and template made for it): (campaign id, segment id)."""
    segment = manager(
        "POST",
        "/api/v1/segments",
        json={"name": name, "filter": {"op": "tags", "match": "any", "tags": [tag]}},
    )
    assert segment.status_code == 201, segment.text
    template = manager(
        "POST",
        "/api/v1/templates",
        json={"name": name, "channel": "email", "subject": "Tract", "html": HTML},
    )
    assert template.status_code == 201, template.text
    made = manager(
        "POST",
        "/api/v1/campaigns",
        json={
            "name": name,
            "channel": "email",
            "purpose": PURPOSE,
            "template_id": template.json()["template"]["template_id"],
            "segment_id": segment.json()["id"],
        },
    )
    assert made.status_code == 201, made.text
    return made.json()["id"], segment.json()["id"]


def _reachable(manager: Api, contact_id: str) -> bool:
    r = manager("GET", f"/api/v1/messages/reachability/{contact_id}", params={"purpose": PURPOSE})
    return r.status_code == 200 and r.json()["reachable"]


def test_a_campaign_manager_resumes_a_campaign_and_watches_it_finish_live(
    stack, admin, http, federations, laptop
):
    paris = federations["Paris"]
    secretary = paris.user
    tag = uuid.uuid4().hex[:6]
    email, password = account(stack, admin, "campaign_manager", paris.id)
    manager = api_of(http, email, password)
    version = f"bo-{tag}"
    text = {"version": version, "title": "Campagnes", "body": "J'accepte vos campagnes."}
    assert secretary("POST", "/api/v1/consents/texts", json=text).status_code == 201
    people = [
        create_contact(secretary, f"Camille{i}", f"Tract-{tag}", f"camille{i}.{tag}@example.fr",
                tags=[f"tract-{tag}"])
        for i in range(2)
    ]  # fmt: skip
    grant = {"channel": "email", "purpose": PURPOSE, "source": "petition", "text_version": version}
    for person in people:
        eventually(
            lambda p=person: secretary("POST", f"/api/v1/consents/{p}/grant", json=grant),
            lambda r: r.status_code == 200,
        )
    for person in people:
        eventually(lambda p=person: _reachable(manager, p), timeout=60)
    campaign_id, segment_id = draft_campaign(manager, f"Tract {tag}", f"tract-{tag}")
    assert manager("POST", f"/api/v1/campaigns/{campaign_id}/launch").status_code == 200
    paused = manager("POST", f"/api/v1/campaigns/{campaign_id}/pause")
    assert paused.status_code == 200, paused.text

    signed_in(laptop, stack.gateway_url, email, password)
    laptop.get_by_role("link", name="Segments", exact=True).click()
    row = laptop.get_by_role("row").filter(has_text=f"Tract {tag}")
    expect(row.locator("[data-size]")).to_have_text("2")
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-segments")
    row.get_by_role("link", name=f"Tract {tag}").click()
    expect(laptop.get_by_role("heading", name=f"Tract {tag}", level=1)).to_be_visible()
    expect(laptop.locator("[data-size]")).to_have_text("2")

    laptop.get_by_role("link", name="Campagnes", exact=True).click()
    row = laptop.locator(f'tr[data-campaign="{campaign_id}"]')
    expect(row).to_contain_text("En pause")
    row.get_by_role("button", name=re.compile("Reprendre")).click()
    expect(laptop.get_by_role("status")).to_have_text("Campagne relancée.")
    # a mark only this page load carries: a reload would lose it
    laptop.evaluate("document.body.dataset.loadedOnce = 'yes'")
    row = laptop.locator(f'tr[data-campaign="{campaign_id}"]')
    expect(row).to_contain_text("Terminée", timeout=90_000)
    expect(row.locator('[data-figure="sent"]')).to_have_text("2")
    assert laptop.evaluate("document.body.dataset.loadedOnce") == "yes", "the page reloaded"
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-campaigns")

    # a Lyon secretary (who may read Lyon's campaigns) reaches neither
    lyon_email, lyon_password = account(stack, admin, "secretary", federations["Lyon"].id)
    signed_in(laptop, stack.gateway_url, lyon_email, lyon_password)
    not_found(laptop, f"{stack.gateway_url}/app/campaigns/{campaign_id}")
    not_found(laptop, f"{stack.gateway_url}/app/segments/{segment_id}")


def test_a_campaign_manager_launches_a_draft_only_once_the_box_is_ticked(
    stack, admin, http, federations, laptop
):
    paris = federations["Paris"]
    tag = uuid.uuid4().hex[:6]
    email, password = account(stack, admin, "campaign_manager", paris.id)
    manager = api_of(http, email, password)
    campaign_id, _ = draft_campaign(manager, f"Lancement {tag}", tag)  # a tag nobody has

    signed_in(laptop, stack.gateway_url, email, password)
    laptop.goto(f"{stack.gateway_url}/app/campaigns/{campaign_id}")
    launch = laptop.get_by_role("button", name="Lancer la campagne")
    expect(launch).to_be_visible()
    assert_accessible(laptop)
    # the server refuses an unticked box too (the browser's own check taken away)
    laptop.evaluate("document.getElementById('confirm-launch').removeAttribute('required')")
    launch.click()
    expect(laptop.get_by_text("Cochez la case pour confirmer le lancement.")).to_be_visible()
    assert manager("GET", f"/api/v1/campaigns/{campaign_id}").json()["status"] == "draft"

    laptop.get_by_label("Je confirme l'envoi de cette campagne à toute son audience.").check()
    laptop.get_by_role("button", name="Lancer la campagne").click()
    expect(laptop.get_by_role("status")).to_have_text("Campagne lancée.")
    assert manager("GET", f"/api/v1/campaigns/{campaign_id}").json()["status"] != "draft"
