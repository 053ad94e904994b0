"""The email as it leaves Tribune: one-click unsubscribe (RFC 8058) and a token that
only Tribune can produce."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from messaging.composer import (
    InvalidRecipientAddress,
    InvalidToken,
    UnsubscribeTokens,
    build_campaign_email,
    build_email,
    unsubscribe_url,
)
from messaging.domain import Recipient
from support import on_the_wire

SECRET = "unit-test-unsubscribe-secret-0123456789"
BASE = "https://tribune.example.org/api/v1/unsubscribe"


def person(email: str | None, given_name: str = "", family_name: str = "") -> Recipient:
    """Contact c42 of the Paris federation, as messaging projects it."""
    return Recipient(
        contact_id="c42",
        federation_id="paris",
        federation_path="/root/paris/",
        email=email,
        given_name=given_name,
        family_name=family_name,
    )


def make(recipient: Recipient | None = None, **overrides):
    tokens = UnsubscribeTokens(SECRET)
    link = unsubscribe_url(BASE, tokens.sign("c42", "news"))
    kwargs = {
        "message_id": "m123",
        "mail_from": "Parti Exemple <news@parti.example.org>",
        "recipient": recipient or person("ana.martin@example.org", "Ana", "Martin"),
        "subject": "Réunion publique jeudi",
        "text": "Bonjour Ana,\nRendez-vous jeudi à 19h.",
        "unsubscribe_link": link,
        "footer_template": "Se désinscrire : {url}",
        "date": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    }
    kwargs.update(overrides)
    return build_email(**kwargs), link


def test_email_carries_one_click_unsubscribe_headers():
    sent, link = make()
    received = on_the_wire(sent)
    assert received["List-Unsubscribe"] == f"<{link}>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link.startswith(BASE + "?token=")


def test_the_unsubscribe_token_names_contact_and_purpose_and_verifies():
    sent, _ = make()
    header = on_the_wire(sent)["List-Unsubscribe"].strip("<>")
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
    received = on_the_wire(make()[0])
    assert received["From"].addresses[0].addr_spec == "news@parti.example.org"
    assert received["To"].addresses[0].addr_spec == "ana.martin@example.org"
    assert received["To"].addresses[0].display_name == "Ana Martin"
    assert received["Subject"] == "Réunion publique jeudi"
    assert received["Message-ID"] == "<m123@parti.example.org>"
    assert received["X-Tribune-Message-Id"] == "m123"
    assert received["Date"] is not None


def test_body_is_the_text_followed_by_the_unsubscribe_footer():
    sent, link = make()
    body = on_the_wire(sent).get_content().replace("\r\n", "\n")
    assert body.startswith("Bonjour Ana,\nRendez-vous jeudi à 19h.")
    text_end = body.index("19h.")
    assert body.index(f"Se désinscrire : {link}") > text_end


def test_unsubscribe_url_keeps_an_existing_query():
    url = unsubscribe_url("https://x.example/u?lang=fr", "abc.def")
    assert parse_qs(urlsplit(url).query) == {"lang": ["fr"], "token": ["abc.def"]}


@pytest.mark.parametrize("address", ["not-an-address", "two@@example.org", "a@b@c"])
def test_an_unusable_address_is_reported(address):
    bad = person(address)
    with pytest.raises(InvalidRecipientAddress):
        make(recipient=bad)


# ---------------------------------------------------------------- campaign emails


def campaign_email(recipient: Recipient | None = None, **overrides):
    kwargs = {
        "message_id": "m9",
        "mail_from": "Fédération de Paris <news@parti.example.org>",
        "recipient": recipient or person("zoe.lefevre@example.org", "Zoé", "Lefèvre"),
        "subject": "Réunion publique jeudi à 19 h",
        "text": "Bonjour Zoé,\nRendez-vous jeudi.\n" + "é" * 1200,
        "html": "<p>Bonjour Zoé,</p><p>Rendez-vous jeudi.</p>",
        "unsubscribe_link": "https://tribune.example.org/u?token=abc.def",
        "date": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        "campaign_id": "camp-1",
    }
    kwargs.update(overrides)
    return build_campaign_email(**kwargs)


def test_a_campaign_email_names_sender_and_recipient_in_any_script():
    received = on_the_wire(campaign_email())
    sender, to = received["From"].addresses[0], received["To"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == (
        "Fédération de Paris",
        "news@parti.example.org",
    )
    assert (to.display_name, to.addr_spec) == ("Zoé Lefèvre", "zoe.lefevre@example.org")
    assert received["Subject"] == "Réunion publique jeudi à 19 h"
    assert received["Message-ID"] == "<m9@parti.example.org>"
    assert received["X-Tribune-Message-Id"] == "m9"
    assert received["Date"].datetime == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert received["List-Unsubscribe"] == "<https://tribune.example.org/u?token=abc.def>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received["Feedback-ID"] == "camp-1:tribune"


def test_a_campaign_email_carries_text_and_html_alternatives_unchanged():
    received = on_the_wire(campaign_email())
    assert received.get_content_type() == "multipart/alternative"
    text = received.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = received.get_body(("html",)).get_content().replace("\r\n", "\n")
    # a line longer than SMTP allows (998 bytes) arrives whole, in UTF-8
    assert text == "Bonjour Zoé,\nRendez-vous jeudi.\n" + "é" * 1200 + "\n"
    assert html == "<p>Bonjour Zoé,</p><p>Rendez-vous jeudi.</p>\n"
    raw = campaign_email().data
    assert max(len(line) for line in raw.splitlines()) <= 998


def test_a_campaign_email_without_html_is_plain_text():
    received = on_the_wire(campaign_email(html=None))
    assert received.get_content_type() == "text/plain"
    assert received.get_content().startswith("Bonjour Zoé,")


@pytest.mark.parametrize("address", [None, "not-an-address", "two@@example.org"])
def test_a_campaign_email_to_an_unusable_address_is_refused(address):
    bad = person(address)
    with pytest.raises(InvalidRecipientAddress):
        campaign_email(recipient=bad)


def test_a_long_subject_in_any_script_arrives_whole():
    subject = "Réunion publique de la fédération, jeudi à 19 h, salle Léo-Lagrange " * 3
    assert on_the_wire(campaign_email(subject=subject))["Subject"] == subject


def test_a_long_ascii_subject_is_folded_and_arrives_whole():
    subject = "Public meeting of the federation on Thursday at seven, Leo Lagrange hall " * 3
    sent = campaign_email(subject=subject)
    assert on_the_wire(sent)["Subject"] == subject
    assert max(len(line) for line in sent.data.split(b"\r\n\r\n")[0].splitlines()) <= 78


def test_a_long_unsubscribe_link_stays_on_one_header_line():
    link = "https://tribune.example.org/u?token=" + "a" * 300
    sent = campaign_email(unsubscribe_link=link)
    assert f"List-Unsubscribe: <{link}>\r\n".encode() in sent.data
    assert on_the_wire(sent)["List-Unsubscribe"] == f"<{link}>"


def test_a_line_break_in_a_subject_is_refused():
    """A rendered subject cannot smuggle in another header."""
    with pytest.raises(ValueError, match="line breaks"):
        campaign_email(subject="Hello\r\nBcc: everyone@example.org")


def test_a_line_break_in_a_name_makes_the_recipient_unusable():
    with pytest.raises(InvalidRecipientAddress):
        campaign_email(recipient=person("zoe@example.org", "Zoé\nBcc: x@example.org"))


def test_a_name_with_specials_is_quoted():
    sent = campaign_email(recipient=person("ana@example.org", "Martin, Ana", "(Paris)"))
    to = on_the_wire(sent)["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == ("Martin, Ana (Paris)", "ana@example.org")


def test_an_address_outside_ascii_asks_for_smtputf8():
    sent = campaign_email(recipient=person("zoe@exemplé.fr", "Zoé"))
    assert sent.utf8 and sent.recipient == "zoe@exemplé.fr"
    assert on_the_wire(sent)["To"].addresses[0].addr_spec == "zoe@exemplé.fr"
    assert not campaign_email().utf8


def test_ascii_text_goes_as_it_is_and_accents_as_quoted_printable():
    plain = on_the_wire(campaign_email(text="Hello all\n", html=None))
    assert plain["Content-Transfer-Encoding"] == "7bit"
    accented = on_the_wire(campaign_email(html=None))
    assert accented["Content-Transfer-Encoding"] == "quoted-printable"
    assert accented.get_content().startswith("Bonjour Zoé,")


def test_the_envelope_names_the_bare_addresses():
    sent = campaign_email()
    assert (sent.sender, sent.recipient) == ("news@parti.example.org", "zoe.lefevre@example.org")


def test_an_unbroken_header_value_longer_than_smtp_allows_is_refused():
    with pytest.raises(ValueError, match="longer than SMTP"):
        campaign_email(unsubscribe_link="https://tribune.example.org/u?token=" + "a" * 1000)
