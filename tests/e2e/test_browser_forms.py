"""A petition, as a stranger signs it: in Debian's Chromium on a phone, through the gateway,
on the real platform. The federation publishes it; the person fills it in (the page's own
script computes its anti-robot proof of work), confirms their email address by the link
they receive, and then counts on the petition's live counter and appears in the
federation's list with a consent whose proof is their own. Another federation sees none
of it."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest
import support
from browser_support import assert_accessible, screenshot
from playwright.sync_api import Page, expect
from support import eventually

pytestmark = pytest.mark.e2e

CONFIRM_LINK = re.compile(r"https?://\S+/api/v1/public/consents/confirm\?token=[\w.-]+")
#: the intake refuses a form sent sooner than this after its page (ContactsSettings)
MIN_FILL_SECONDS = 3


def _petition(user, *, pow_bits: int | None) -> tuple[dict, dict]:
    version = f"petition-{uuid.uuid4().hex[:6]}"
    text = {
        "version": version,
        "title": "Nouvelles de la pétition",
        "body": "J'accepte que la fédération m'écrive par email au sujet de cette pétition.",
    }
    made = user("POST", "/api/v1/consents/texts", json=text)
    assert made.status_code == 201, made.text
    form = {
        "kind": "petition",
        "title": "Sauvons la ligne de bus 42",
        "intro": "Signez pour que la ligne 42 continue de desservir nos villages.",
        "thank_you": "Merci pour votre signature !",
        "fields": [
            {"name": "given_name", "required": True},
            {"name": "family_name", "required": True},
            {"name": "email", "required": True},
        ],
        "consents": [{"channel": "email", "purpose": "news", "text_version": version}],
        "goal": 500,
        "tags": ["bus-42"],
        "reference": "petition-bus-42",
    }
    if pow_bits:
        form["proof_of_work_bits"] = pow_bits
    # contacts learns the consent text from consent-text-published: 422 until it has
    created = eventually(
        lambda: user("POST", "/api/v1/forms", json=form), lambda r: r.status_code != 422
    )
    assert created.status_code == 201, created.text
    return created.json(), made.json()


def _counter(stack, form_id: str) -> int:
    r = httpx.get(f"{stack.gateway_url}/api/v1/public/forms/{form_id}/counter", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["signatures"]


def test_a_stranger_signs_a_petition_on_a_phone_and_confirms_by_email(
    stack, federations, phone: Page
):
    paris, lyon = federations["Paris"], federations["Lyon"]
    form, text = _petition(paris.user, pow_bits=8)
    page_url = f"{stack.gateway_url}/api/v1/public/forms/{form['id']}"
    tag = uuid.uuid4().hex[:8]
    email = f"camille.{tag}@example.org"

    phone.goto(page_url)
    expect(phone.get_by_role("heading", name="Sauvons la ligne de bus 42")).to_be_visible()
    box = phone.get_by_role("checkbox")
    expect(box).not_to_be_checked()  # never pre-ticked
    expect(phone.get_by_text(text["body"])).to_be_visible()  # the exact text shown
    assert_accessible(phone)
    screenshot(phone, "form-petition")
    started = time.monotonic()

    phone.get_by_label("Prénom").fill("Camille")
    phone.get_by_label("Nom", exact=True).fill(f"Desmoulins-{tag}")
    phone.get_by_label("Adresse email").fill(email)
    box.check()
    # a person takes a few seconds; a bot that posts at once is refused
    time.sleep(max(0.0, MIN_FILL_SECONDS + 0.5 - (time.monotonic() - started)))
    phone.get_by_role("button", name="Signer la pétition").click()
    expect(phone.get_by_role("heading", name="Merci !")).to_be_visible(timeout=30_000)
    assert_accessible(phone)
    screenshot(phone, "form-thanks")

    # the confirmation email (double opt-in) arrives; the person confirms from the phone
    [mail] = eventually(lambda: support.mails_to(stack.smtp_http_url, email), timeout=60)
    phone.goto(CONFIRM_LINK.search(mail["text"]).group(0))
    expect(phone.get_by_text(text["body"])).to_be_visible()
    phone.get_by_role("button", name="Yes, I confirm").click()
    expect(
        phone.get_by_role("heading", name="Thank you, your consent is confirmed")
    ).to_be_visible()

    # the live counter counts them, on the page too
    assert eventually(lambda: _counter(stack, form["id"]), lambda n: n == 1) == 1
    phone.goto(page_url)
    expect(phone.locator(".tf-counter")).to_contain_text("1")

    # the federation's list shows them, created by this submission, with the box ticked
    listed = eventually(
        lambda: paris.user("GET", f"/api/v1/forms/{form['id']}/submissions").json(),
        lambda page: page.get("items") and page["items"][0]["status"] == "applied",
    )
    [item] = listed["items"]
    assert item["created"] is True and listed["signatures"] == 1
    contact_id = item["contact_id"]
    person = paris.user("GET", f"/api/v1/contacts/{contact_id}").json()
    assert person["email"] == email
    assert person["origin"]["kind"] == "web_form"
    assert "bus-42" in person["tags"]

    # their consent is granted with their own proof: the form, the text's hash, the
    # minimised address and the browser they used, confirmed by themselves
    consents = paris.user("GET", f"/api/v1/consents/{contact_id}").json()
    assert [(c["channel"], c["purpose"], c["status"]) for c in consents["consents"]] == [
        ("email", "news", "granted")
    ]
    proof = consents["history"][-1]["proof"]
    assert proof["form_id"] == form["id"]
    assert proof["text_hash"] == text["sha256"]
    assert proof["double_opt_in"] == "confirmed"
    assert proof["ip"] == "127.0.0.0/24"
    assert proof["user_agent"].startswith("Mozilla/5.0")  # the browser (kept short)

    # another federation reaches none of it: not the form, not its list, not the person
    assert lyon.user("GET", f"/api/v1/forms/{form['id']}").status_code == 404
    assert lyon.user("GET", f"/api/v1/forms/{form['id']}/submissions").status_code == 404
    assert lyon.user("GET", f"/api/v1/contacts/{contact_id}").status_code == 404


def test_a_page_posted_at_once_is_refused_with_a_message_and_nothing_is_stored(
    stack, federations, phone: Page
):
    paris = federations["Paris"]
    form, _ = _petition(paris.user, pow_bits=None)
    phone.goto(f"{stack.gateway_url}/api/v1/public/forms/{form['id']}")
    phone.get_by_label("Prénom").fill("Robot")
    phone.get_by_label("Nom", exact=True).fill("Pressé")
    phone.get_by_label("Adresse email").fill(f"robot.{uuid.uuid4().hex[:8]}@example.org")
    phone.get_by_role("button", name="Signer la pétition").click()  # well under 3 s
    alert = phone.get_by_role("alert")
    expect(alert).to_be_visible()
    assert_accessible(phone)
    screenshot(phone, "form-refused")
    # the person's values are kept for the next try
    expect(phone.get_by_label("Prénom")).to_have_value("Robot")
    page = paris.user("GET", f"/api/v1/forms/{form['id']}/submissions").json()
    assert page["items"] == [] and page["signatures"] == 0
