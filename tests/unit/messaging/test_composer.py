"""The email as it leaves Tribune: one-click unsubscribe (RFC 8058) and a token that
only Tribune can produce."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from urllib.parse import parse_qs, urlsplit

import pytest
from messaging.composer import (
    InvalidRecipientAddress,
    InvalidToken,
    UnsubscribeTokens,
    build_email,
    unsubscribe_url,
)
from messaging.domain import Recipient

SECRET = "unit-test-unsubscribe-secret-0123456789"
BASE = "https://tribune.example.org/api/v1/unsubscribe"


def make(recipient: Recipient | None = None, **overrides):
    tokens = UnsubscribeTokens(SECRET)
    link = unsubscribe_url(BASE, tokens.sign("c42", "news"))
    kwargs = {
        "message_id": "m123",
        "mail_from": "Parti Exemple <news@parti.example.org>",
        "recipient": recipient
        or Recipient(
            contact_id="c42",
            federation_id="paris",
            federation_path="/root/paris/",
            email="ana.martin@example.org",
            given_name="Ana",
            family_name="Martin",
        ),
        "subject": "Réunion publique jeudi",
        "text": "Bonjour Ana,\nRendez-vous jeudi à 19h.",
        "unsubscribe_link": link,
        "footer_template": "Se désinscrire : {url}",
        "date": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    }
    kwargs.update(overrides)
    return build_email(**kwargs), link


def reparse(message):
    """What the receiving server sees, after serialisation."""
    return email.message_from_bytes(message.as_bytes(policy=policy.SMTP), policy=policy.default)


def test_email_carries_one_click_unsubscribe_headers():
    sent, link = make()
    received = reparse(sent)
    assert received["List-Unsubscribe"] == f"<{link}>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link.startswith(BASE + "?token=")


def test_the_unsubscribe_token_names_contact_and_purpose_and_verifies():
    sent, _ = make()
    header = reparse(sent)["List-Unsubscribe"].strip("<>")
    token = parse_qs(urlsplit(header).query)["token"][0]
    assert UnsubscribeTokens(SECRET).verify(token) == ("c42", "news")


def test_a_token_signed_with_another_secret_is_refused():
    token = UnsubscribeTokens("another-secret-another-secret-000").sign("c42", "news")
    with pytest.raises(InvalidToken):
        UnsubscribeTokens(SECRET).verify(token)


@pytest.mark.parametrize("mangle", ["swap_purpose", "truncate", "garbage", "no_dot"])
def test_a_tampered_token_is_refused(mangle):
    tokens = UnsubscribeTokens(SECRET)
    genuine = tokens.sign("c42", "news")
    payload, mac = genuine.split(".")
    forged_payload = tokens.sign("c42", "fundraising").split(".")[0]
    token = {
        "swap_purpose": f"{forged_payload}.{mac}",
        "truncate": f"{payload}.{mac[:-3]}",
        "garbage": "!!!.???",
        "no_dot": payload + mac,
    }[mangle]
    with pytest.raises(InvalidToken):
        tokens.verify(token)


def test_headers_identify_sender_recipient_and_message():
    received = reparse(make()[0])
    assert received["From"].addresses[0].addr_spec == "news@parti.example.org"
    assert received["To"].addresses[0].addr_spec == "ana.martin@example.org"
    assert received["To"].addresses[0].display_name == "Ana Martin"
    assert received["Subject"] == "Réunion publique jeudi"
    assert received["Message-ID"] == "<m123@parti.example.org>"
    assert received["X-Tribune-Message-Id"] == "m123"
    assert received["Date"] is not None


def test_body_is_the_text_followed_by_the_unsubscribe_footer():
    sent, link = make()
    body = reparse(sent).get_content().replace("\r\n", "\n")
    assert body.startswith("Bonjour Ana,\nRendez-vous jeudi à 19h.")
    text_end = body.index("19h.")
    assert body.index(f"Se désinscrire : {link}") > text_end


def test_unsubscribe_url_keeps_an_existing_query():
    url = unsubscribe_url("https://x.example/u?lang=fr", "abc.def")
    assert parse_qs(urlsplit(url).query) == {"lang": ["fr"], "token": ["abc.def"]}


@pytest.mark.parametrize("address", ["not-an-address", "two@@example.org", "a@b@c"])
def test_an_unusable_address_is_reported(address):
    bad = Recipient(
        contact_id="c42", federation_id="paris", federation_path="/root/paris/", email=address
    )
    with pytest.raises(InvalidRecipientAddress):
        make(recipient=bad)
