"""Building the email itself (pure): headers, unsubscribe link and its signed token.

Every email carries a one-click unsubscribe (RFC 8058): ``List-Unsubscribe`` with an
HTTPS link holding a token that names the contact and the purpose, signed with HMAC so
the receiving endpoint can trust it without a lookup, plus ``List-Unsubscribe-Post``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from messaging.domain import Recipient

MESSAGE_ID_HEADER = "X-Tribune-Message-Id"
_TOKEN_CONTEXT = b"tribune-unsubscribe-v1:"


class InvalidToken(Exception):
    pass


class InvalidRecipientAddress(Exception):
    pass


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsubscribeTokens:
    """``base64url("contact_id:purpose") "." base64url(HMAC-SHA256)``; URL-safe, no expiry
    (an unsubscribe link must keep working for as long as the email exists)."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _TOKEN_CONTEXT + payload, hashlib.sha256).digest()

    def sign(self, contact_id: str, purpose: str) -> str:
        if ":" in contact_id:
            raise ValueError("contact_id may not contain ':'")
        payload = f"{contact_id}:{purpose}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str) -> tuple[str, str]:
        """(contact_id, purpose) of a genuine token; InvalidToken otherwise."""
        try:
            encoded_payload, encoded_mac = token.split(".")
            payload = _unb64(encoded_payload)
            mac = _unb64(encoded_mac)
        except (ValueError, binascii.Error) as exc:
            raise InvalidToken("malformed token") from exc
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidToken("bad signature")
        contact_id, sep, purpose = payload.decode("utf-8", "replace").partition(":")
        if not sep or not contact_id or not purpose:
            raise InvalidToken("malformed token")
        return contact_id, purpose


def unsubscribe_url(base_url: str, token: str) -> str:
    """``base_url`` with ``token=...`` added to whatever query it already has."""
    parts = urlsplit(base_url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def sender_domain(mail_from: str) -> str:
    return parseaddr(mail_from)[1].rpartition("@")[2] or "tribune.localhost"


def build_email(
    *,
    message_id: str,
    mail_from: str,
    recipient: Recipient,
    subject: str,
    text: str,
    unsubscribe_link: str,
    footer_template: str,
    date: datetime,
) -> EmailMessage:
    """The email as it will be handed to the SMTP server."""
    if not recipient.email:
        raise InvalidRecipientAddress("contact has no email address")
    try:
        to = Address(display_name=recipient.display_name, addr_spec=recipient.email)
    except (ValueError, IndexError, HeaderParseError) as exc:  # the parser raises any
        raise InvalidRecipientAddress(f"invalid email address: {exc}") from exc
    footer = footer_template.replace("{url}", unsubscribe_link)
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = f"<{message_id}@{sender_domain(mail_from)}>"
    message[MESSAGE_ID_HEADER] = message_id
    message["List-Unsubscribe"] = f"<{unsubscribe_link}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # "-- " is the standard signature separator: mail clients show the footer apart.
    message.set_content(f"{text.rstrip()}\n\n-- \n{footer}\n")
    return message
