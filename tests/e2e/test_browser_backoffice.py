"""The back office (gateway.webapp) in a real browser (Debian's Chromium), as the people
who use it: log in (and fail to), watch the dashboard's figures change live when a
payment webhook arrives, search a person and open their record, and find another
federation's person out of reach. Each main screen passes the WCAG 2.1 AA check and is
saved as a screenshot."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime

import pytest
from browser_support import assert_accessible, screenshot
from playwright.sync_api import Page, expect
from support import NewFederation, create_federation, create_member, eventually, login
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.e2e


def account(admin, role: str, federation_id: str) -> tuple[str, str]:
    """A user of ``role`` in a federation: (email, password) to type in the login form."""
    email = f"{role}.{uuid.uuid4().hex[:8]}@tribune.test"
    password = f"pw-{uuid.uuid4().hex}"
    r = admin(
        "POST",
        "/api/v1/users",
        json={"email": email, "password": password, "role": role, "federation_id": federation_id},
    )
    assert r.status_code == 201, r.text
    return email, password


def log_in(page: Page, base: str, email: str, password: str) -> None:
    page.goto(base + "/app")
    expect(page.get_by_role("heading", name="Connexion")).to_be_visible()
    page.get_by_label("Adresse e-mail").fill(email)
    page.get_by_label("Mot de passe").fill(password)
    page.get_by_role("button", name="Se connecter").click()


def test_a_user_logs_in_on_a_phone_after_a_wrong_password_then_logs_out(stack, admin, phone):
    email, password = stack.admin_credentials
    log_in(phone, stack.gateway_url, email, "not-the-password")
    expect(phone.get_by_role("alert")).to_have_text("Adresse e-mail ou mot de passe incorrect.")
    assert_accessible(phone)
    screenshot(phone, "backoffice-login")

    phone.get_by_label("Mot de passe").fill(password)
    phone.get_by_role("button", name="Se connecter").click()
    expect(phone.get_by_role("heading", name="Tableau de bord", level=1)).to_be_visible()
    expect(phone.get_by_text(f"Connecté·e : {email}")).to_be_visible()

    phone.get_by_role("button", name="Se déconnecter").click()
    expect(phone.get_by_role("status")).to_have_text("Vous êtes déconnecté·e.")
    phone.goto(stack.gateway_url + "/app")  # the session is over: back to the login form
    expect(phone.get_by_role("heading", name="Connexion")).to_be_visible()


def test_the_language_switch_shows_the_app_in_english(stack, phone):
    phone.goto(stack.gateway_url + "/app/login")
    phone.get_by_role("link", name="English").click()
    expect(phone.get_by_role("heading", name="Log in")).to_be_visible()
    expect(phone.locator("html")).to_have_attribute("lang", "en")
    phone.get_by_role("link", name="Français").click()
    expect(phone.get_by_role("heading", name="Connexion")).to_be_visible()


def _figures_known(treasurer_api, fed: NewFederation) -> bool:
    r = treasurer_api("GET", "/api/v1/live/memberships", params={"federation_id": fed.id})
    return r.status_code == 200


def _payment_webhook(http, stack, contact_id: str, amount_cents: int):
    body = json.dumps(
        {
            "provider": "helloasso",
            "provider_payment_id": f"pay-{uuid.uuid4().hex}",
            "contact_id": contact_id,
            "amount_cents": amount_cents,
            "currency": "EUR",
            "method": "card",
            "purpose": "dues",
            "paid_at": datetime.now(UTC).isoformat(),
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        **signature_headers(stack.env["MEMBERSHIPS_WEBHOOK_SECRET"], body),
    }
    return http.post("/api/v1/webhooks/payments", content=body, headers=headers)


def test_the_dashboard_figures_change_live_when_a_payment_webhook_arrives(
    stack, admin, http, laptop
):
    fed = create_federation(admin, "Gironde")
    email, password = account(admin, "treasurer", fed.id)
    contact_id = create_member(admin, fed, given_name="Louise")
    treasurer_api = login(http, email, password)
    eventually(lambda: _figures_known(treasurer_api, fed), timeout=60)

    log_in(laptop, stack.gateway_url, email, password)
    expect(laptop.get_by_role("heading", name="Tableau de bord", level=1)).to_be_visible()
    dues = laptop.locator('[data-figure="dues_cents"]')
    members = laptop.locator('[data-figure="members_in_good_standing"]')
    expect(dues).to_have_text(re.compile(r"^0,00\s€$"))
    expect(members).to_have_text("0")
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-dashboard")
    # a mark only this page load carries: a reload would lose it
    laptop.evaluate("document.body.dataset.loadedOnce = 'yes'")

    r = eventually(
        lambda: _payment_webhook(http, stack, contact_id, 3000),
        lambda r: r.status_code == 201,
        timeout=60,
    )
    assert r.status_code == 201, r.text

    expect(dues).to_have_text(re.compile(r"^30,00\s€$"), timeout=30_000)
    expect(members).to_have_text("1", timeout=30_000)
    assert laptop.evaluate("document.body.dataset.loadedOnce") == "yes", "the page reloaded"
    screenshot(laptop, "backoffice-dashboard-live")


def _contact(user, family_name: str) -> str:
    tag = uuid.uuid4().hex[:8]
    r = user(
        "POST",
        "/api/v1/contacts",
        json={
            "given_name": "Lucie",
            "family_name": family_name,
            "email": f"lucie.{tag}@example.fr",
            "tags": ["bénévole"],
            "origin": {"kind": "event", "detail": "fête de la rose"},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_secretary_finds_and_opens_a_person_but_never_another_federations(
    stack, admin, federations, laptop, phone
):
    paris, lyon = federations["Paris"], federations["Lyon"]
    tag = uuid.uuid4().hex[:6]
    mine = _contact(paris.user, f"Aubrac{tag}")
    theirs = _contact(lyon.user, f"Aubrac{tag}lyon")
    email, password = account(admin, "secretary", paris.id)

    log_in(laptop, stack.gateway_url, email, password)
    laptop.get_by_role("link", name="Contacts").click()
    laptop.get_by_label("Nom, e-mail ou téléphone").fill(f"Aubrac{tag}")
    laptop.get_by_role("button", name="Rechercher").click()
    results = laptop.get_by_role("table")
    expect(results.get_by_role("link", name=f"Lucie Aubrac{tag}", exact=True)).to_be_visible()
    # Lyon's namesake is not among the results
    expect(results.get_by_role("link")).to_have_count(1)
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-contacts")

    results.get_by_role("link", name=f"Lucie Aubrac{tag}", exact=True).click()
    expect(laptop).to_have_url(re.compile(f"/app/people/{mine}$"))
    expect(laptop.get_by_role("heading", name=f"Fiche de Lucie Aubrac{tag}")).to_be_visible()
    expect(laptop.get_by_text("bénévole")).to_be_visible()
    expect(laptop.get_by_role("heading", name="Consentements")).to_be_visible()
    assert_accessible(laptop)
    screenshot(laptop, "backoffice-person")

    # another federation's person, by its id: the page says not found, nothing of them
    answer = laptop.goto(f"{stack.gateway_url}/app/people/{theirs}")
    assert answer is not None and answer.status == 404
    expect(laptop.get_by_role("heading", name="Page introuvable")).to_be_visible()
    expect(laptop.get_by_text(f"Aubrac{tag}lyon")).to_have_count(0)

    # and the person view is usable on a phone too
    log_in(phone, stack.gateway_url, email, password)
    phone.goto(f"{stack.gateway_url}/app/people/{mine}")
    expect(phone.get_by_role("heading", name=f"Fiche de Lucie Aubrac{tag}")).to_be_visible()
    assert_accessible(phone)
    screenshot(phone, "backoffice-person-phone")


def test_the_dashboard_sections_follow_the_live_events_of_the_subtree(stack, admin, laptop):
    fed = create_federation(admin, "Landes")
    email, password = account(admin, "secretary", fed.id)
    log_in(laptop, stack.gateway_url, email, password)
    count = laptop.locator('[data-count="contacts"]')
    expect(count).to_have_text("0")
    laptop.evaluate("document.body.dataset.loadedOnce = 'yes'")

    create_member(admin, fed, given_name="Jeanne")  # contact-created, in Landes

    # the live event stream marks the contacts section, which is fetched again
    expect(count).to_have_text("1", timeout=30_000)
    assert laptop.evaluate("document.body.dataset.loadedOnce") == "yes", "the page reloaded"
