"""Consent flows end to end, through the gateway, on the real processes: double opt-in
by email, one-click unsubscribe from a received mail, SMS STOP, and the suppression of a
person created again after objecting to everything."""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import support
from support import eventually
from support import mail_header as header
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.e2e

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CONFIRM_LINK = re.compile(r"https?://\S+/api/v1/public/consents/confirm\?token=[\w.-]+")


def public_get(url: str, **kw) -> httpx.Response:
    """What a person's browser or mail client does: no login (a loaded machine may be slow)."""
    return httpx.get(url, timeout=30, **kw)


def public_post(url: str, **kw) -> httpx.Response:
    return httpx.post(url, timeout=30, **kw)


def new_contact(user, **over) -> dict:
    tag = uuid.uuid4().hex[:8]
    body = {
        "given_name": "Louise",
        "family_name": f"Michel-{tag}",
        "email": f"louise.{tag}@example.fr",
        "origin": {"kind": "web_form", "detail": "formulaire d'adhésion"},
        **over,
    }
    r = user("POST", "/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def mobile() -> str:
    return "+33612" + "".join(random.choices("0123456789", k=6))  # an assigned mobile range


def change(user, contact_id: str, action: str, **body) -> httpx.Response:
    payload = {"channel": "email", "purpose": "news", "source": "web_form", **body}
    # consent learns about the contact from contact-created: retry until it does
    return eventually(
        lambda: user("POST", f"/api/v1/consents/{contact_id}/{action}", json=payload),
        lambda r: r.status_code != 404,
    )


def consents(user, contact_id: str) -> dict:
    r = user("GET", f"/api/v1/consents/{contact_id}")
    assert r.status_code == 200, r.text
    return r.json()


def statuses(user, contact_id: str) -> dict[tuple[str, str], str]:
    return {
        (c["channel"], c["purpose"]): c["status"] for c in consents(user, contact_id)["consents"]
    }


def reachability(user, contact_id: str) -> dict:
    r = user("GET", f"/api/v1/messages/reachability/{contact_id}", params={"purpose": "news"})
    return r.json() if r.status_code == 200 else {}


def wait_reachable(user, contact_id: str, expected: bool) -> dict:
    return eventually(
        lambda: reachability(user, contact_id), lambda v: v.get("reachable") is expected
    )


def send(user, contact_id: str, subject: str) -> httpx.Response:
    return user(
        "POST",
        "/api/v1/messages",
        json={
            "contact_id": contact_id,
            "channel": "email",
            "purpose": "news",
            "subject": subject,
            "text": "Assemblée générale samedi.",
        },
    )


def mails_to(stack, address: str) -> list[dict]:
    return support.mails_to(stack.smtp_http_url, address)


def test_double_opt_in_mail_confirms_and_a_forged_link_changes_nothing(stack, federations):
    paris = federations["Paris"]
    text = {"version": f"e2e-{uuid.uuid4().hex[:6]}", "title": "Actualités", "body": "J'accepte."}
    made = paris.user("POST", "/api/v1/consents/texts", json=text)
    assert made.status_code == 201, made.text
    contact = new_contact(paris.user)
    r = change(paris.user, contact["id"], "grant", double_opt_in=True, text_version=text["version"])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending"

    # the confirmation mail arrives (sent by messaging), with the link to the public page
    [mail] = eventually(lambda: mails_to(stack, contact["email"]))
    link = CONFIRM_LINK.search(mail["text"]).group(0)
    assert link.startswith(stack.gateway_url)
    assert not any(k.lower() == "list-unsubscribe" for k, _ in mail["headers"])
    wait_reachable(paris.user, contact["id"], False)  # pending is no consent

    # a forged (re-signed elsewhere) or altered link gets a clear page and changes nothing
    token = parse_qs(urlsplit(link).query)["token"][0]
    payload, mac = token.split(".")
    altered = f"{payload[:-3]}{'A' if payload[-3] != 'A' else 'B'}{payload[-2:]}.{mac}"
    for bad in (altered, f"{payload}.{'A' * len(mac)}"):
        page = public_get(link.replace(token, bad))
        assert page.status_code == 400 and "not valid" in page.text
        posted = public_post(link.replace(token, bad), headers=FORM)
        assert posted.status_code == 400 and "Nothing was changed" in posted.text
    assert statuses(paris.user, contact["id"]) == {("email", "news"): "pending"}

    # opening the genuine link shows the text; the button confirms
    page = public_get(link)
    assert page.status_code == 200 and "Yes, I confirm" in page.text
    assert "no-referrer" == page.headers["referrer-policy"]
    done = public_post(link, headers={**FORM, "User-Agent": "E2E-Mail-Client/1.0"})
    assert done.status_code == 200 and "confirmed" in done.text
    view = consents(paris.user, contact["id"])
    assert [c["status"] for c in view["consents"]] == ["granted"]
    proof = view["history"][-1]["proof"]
    assert proof["double_opt_in"] == "confirmed"
    assert proof["text_hash"] == made.json()["sha256"]
    assert proof["confirmed_ip"] == "127.0.0.0/24"  # minimised by consent, passed by the gateway
    assert proof["confirmed_user_agent"] == "E2E-Mail-Client/1.0"
    wait_reachable(paris.user, contact["id"], True)
    assert send(paris.user, contact["id"], "Bienvenue").status_code == 201


def test_one_click_unsubscribe_from_the_list_unsubscribe_header(stack, federations):
    paris = federations["Paris"]
    contact = new_contact(paris.user)
    assert change(paris.user, contact["id"], "grant").status_code == 200
    wait_reachable(paris.user, contact["id"], True)
    assert send(paris.user, contact["id"], "Lettre d'information").status_code == 201
    [mail] = eventually(lambda: mails_to(stack, contact["email"]))
    assert header(mail, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    url = header(mail, "List-Unsubscribe").strip()[1:-1]
    assert url.startswith(f"{stack.gateway_url}/api/v1/public/consents/unsubscribe?token=")

    # what a mail client does (RFC 8058): POST the body to the URL, no login
    r = public_post(url, content="List-Unsubscribe=One-Click", headers=FORM)
    assert r.status_code == 200, r.text
    assert statuses(paris.user, contact["id"]) == {("email", "news"): "revoked"}
    last = consents(paris.user, contact["id"])["history"][-1]
    assert (last["source"], last["actor"]) == ("one_click", "person")

    view = wait_reachable(paris.user, contact["id"], False)
    assert "revoked" in view["reason"]
    refused = send(paris.user, contact["id"], "Après désinscription")
    assert refused.status_code == 409
    assert [m["subject"] for m in mails_to(stack, contact["email"])] == ["Lettre d'information"]


def test_sms_stop_withdraws_sms_consents(stack, http, federations):
    paris = federations["Paris"]
    phone = mobile()
    contact = new_contact(paris.user, phone=phone)
    for purpose in ("news", "campaigns"):
        r = change(paris.user, contact["id"], "grant", channel="sms", purpose=purpose)
        assert r.status_code == 200, r.text
    body = json.dumps({"from": phone, "text": "STOP", "message_id": uuid.uuid4().hex}).encode()

    forged = signature_headers("not-the-sms-provider-secret-0123456789", body)
    r = http.post(
        "/api/v1/webhooks/sms", content=body, headers={"Content-Type": "application/json", **forged}
    )
    assert r.status_code == 401
    assert set(statuses(paris.user, contact["id"]).values()) == {"granted"}

    signed = signature_headers(stack.env["CONSENT_WEBHOOK_SECRET"], body)
    r = http.post(
        "/api/v1/webhooks/sms", content=body, headers={"Content-Type": "application/json", **signed}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "stopped" and r.json()["contacts"] == 1
    current = statuses(paris.user, contact["id"])
    assert current[("sms", "news")] == current[("sms", "campaigns")] == "revoked"
    assert consents(paris.user, contact["id"])["history"][-1]["source"] == "sms_stop"


def test_a_person_who_objected_to_everything_is_flagged_when_created_again(
    stack, admin, federations
):
    paris, lyon = federations["Paris"], federations["Lyon"]
    phone = mobile()
    contact = new_contact(paris.user, phone=phone)
    assert change(paris.user, contact["id"], "grant").status_code == 200
    wait_reachable(paris.user, contact["id"], True)
    assert send(paris.user, contact["id"], "Dernière lettre").status_code == 201
    [mail] = eventually(lambda: mails_to(stack, contact["email"]))
    url = header(mail, "List-Unsubscribe").strip()[1:-1]

    # the unsubscribe page offers a choice; "everything" suppresses the addresses
    page = public_get(url)
    assert page.status_code == 200 and 'value="all"' in page.text
    r = public_post(url, data={"scope": "all"})
    assert r.status_code == 200 and "everything" in r.text
    assert consents(paris.user, contact["id"])["suppressed"] is True

    # messaging learns it (suppression-added): nothing is sent to the address any more
    view = wait_reachable(paris.user, contact["id"], False)
    assert view["reason"]
    assert send(paris.user, contact["id"], "Encore ?").status_code == 409

    # created again (elsewhere, by someone else): kept but flagged, and never consented
    def created_again() -> dict:
        for user, fields in (
            (admin, {"email": contact["email"].upper()}),
            (lyon.user, {"email": contact["email"]}),
            (admin, {"phone": phone}),
            (lyon.user, {"phone": phone}),
        ):
            again = new_contact(user, **fields)
            if again["suppressed"]:
                return again
            time.sleep(1)  # contacts has not read suppression-added yet
        raise AssertionError("a contact created with a suppressed address was not flagged")

    again = created_again()
    r = change(admin, again["id"], "grant")
    assert r.status_code == 409, r.text
    assert r.json()["rule"] == "suppressed"
