"""The pages a person reaches from an email, in a real browser (Debian's Chromium) on a
phone: the double opt-in confirmation and the unsubscribe page. Both must be usable and
accessible (axe-core, WCAG 2.1 AA) and do what their button says."""

from __future__ import annotations

import re
import uuid

import pytest
import support
from browser_support import assert_accessible, screenshot
from playwright.sync_api import Page, expect
from support import eventually

pytestmark = pytest.mark.e2e

CONFIRM_LINK = re.compile(r"https?://\S+/api/v1/public/consents/confirm\?token=[\w.-]+")
UNSUBSCRIBE_LINK = re.compile(r"https?://\S+/api/v1/public/consents/unsubscribe\?token=[\w.-]+")


def _contact(user) -> dict:
    tag = uuid.uuid4().hex[:8]
    r = user(
        "POST",
        "/api/v1/contacts",
        json={
            "given_name": "Olympe",
            "family_name": f"de Gouges-{tag}",
            "email": f"olympe.{tag}@example.fr",
            "origin": {"kind": "web_form", "detail": "lettre d'information"},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def _statuses(user, contact_id: str) -> dict[tuple[str, str], str]:
    r = user("GET", f"/api/v1/consents/{contact_id}")
    assert r.status_code == 200, r.text
    return {(c["channel"], c["purpose"]): c["status"] for c in r.json()["consents"]}


def test_a_person_confirms_by_the_emailed_link_then_unsubscribes_on_a_phone(
    stack, federations, phone: Page
):
    paris = federations["Paris"]
    version = f"browser-{uuid.uuid4().hex[:6]}"
    text = {
        "version": version,
        "title": "Actualités",
        "body": "J'accepte de recevoir les actualités.",
    }
    assert paris.user("POST", "/api/v1/consents/texts", json=text).status_code == 201
    contact = _contact(paris.user)
    body = {
        "channel": "email",
        "purpose": "news",
        "source": "web_form",
        "double_opt_in": True,
        "text_version": version,
    }
    r = eventually(
        lambda: paris.user("POST", f"/api/v1/consents/{contact['id']}/grant", json=body),
        lambda r: r.status_code != 404,  # consent learns the contact from contact-created
    )
    assert r.status_code == 200, r.text

    [mail] = eventually(lambda: support.mails_to(stack.smtp_http_url, contact["email"]))
    phone.goto(CONFIRM_LINK.search(mail["text"]).group(0))
    expect(phone.get_by_text(text["body"])).to_be_visible()
    assert_accessible(phone)
    screenshot(phone, "consent-confirm")
    phone.get_by_role("button", name="Yes, I confirm").click()
    expect(
        phone.get_by_role("heading", name="Thank you, your consent is confirmed")
    ).to_be_visible()
    assert _statuses(paris.user, contact["id"]) == {("email", "news"): "granted"}

    # the first newsletter carries the unsubscribe link; the person follows it
    eventually(
        lambda: paris.user(
            "POST",
            "/api/v1/messages",
            json={
                "contact_id": contact["id"],
                "channel": "email",
                "purpose": "news",
                "subject": "Lettre de la fédération",
                "text": "Réunion publique jeudi.",
            },
        ),
        lambda r: r.status_code == 201,  # messaging learns the grant from consent-granted
    )
    letter = eventually(
        lambda: [
            m
            for m in support.mails_to(stack.smtp_http_url, contact["email"])
            if UNSUBSCRIBE_LINK.search(m["text"])
        ]
    )[0]
    phone.goto(UNSUBSCRIBE_LINK.search(letter["text"]).group(0))
    assert_accessible(phone)
    screenshot(phone, "consent-unsubscribe")
    phone.get_by_role("button", name=re.compile("Stop emails")).click()
    expect(phone.get_by_role("heading", name=re.compile("You are unsubscribed"))).to_be_visible()
    assert _statuses(paris.user, contact["id"]) == {("email", "news"): "revoked"}
