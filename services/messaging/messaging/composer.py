"""Building the email itself (pure): headers, unsubscribe link and its signed token.

Every email carries a one-click unsubscribe (RFC 8058): ``List-Unsubscribe`` with an
HTTPS link holding a token that names the contact and the purpose, signed with HMAC so
the receiving endpoint can trust it without a lookup, plus ``List-Unsubscribe-Post``.
The token is the kernel's (``tribune_shared.tokens.UnsubscribeTokens``): consent serves
the link's page and verifies it with the same secret.
"""

from __future__ import annotations

from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tribune_shared.tokens import TokenError as InvalidToken
from tribune_shared.tokens import UnsubscribeTokens

from messaging.domain import Recipient

__all__ = [
    "MESSAGE_ID_HEADER",
    "InvalidRecipientAddress",
    "InvalidToken",
    "UnsubscribeTokens",
    "build_campaign_email",
    "build_email",
    "build_transactional_email",
    "sender_domain",
    "unsubscribe_url",
]

MESSAGE_ID_HEADER = "X-Tribune-Message-Id"


class InvalidRecipientAddress(Exception):
    pass


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
    footer = footer_template.replace("{url}", unsubscribe_link)
    message = _addressed(message_id, mail_from, recipient, subject, date)
    message["List-Unsubscribe"] = f"<{unsubscribe_link}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # "-- " is the standard signature separator: mail clients show the footer apart.
    message.set_content(f"{text.rstrip()}\n\n-- \n{footer}\n")
    return message


def build_campaign_email(
    *,
    message_id: str,
    mail_from: str,
    recipient: Recipient,
    subject: str,
    text: str,
    html: str | None,
    unsubscribe_link: str,
    date: datetime,
    campaign_id: str,
) -> EmailMessage:
    """A campaign's email: the rendered template's parts (plain text, and HTML as the
    alternative), with one-click unsubscribe headers (RFC 8058). The template itself
    carries the visible unsubscribe link (checked when it is saved)."""
    message = _addressed(message_id, mail_from, recipient, subject, date)
    message["List-Unsubscribe"] = f"<{unsubscribe_link}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # lets mailbox providers' feedback loops name the campaign without personal data
    message["Feedback-ID"] = f"{campaign_id}:tribune"
    message.set_content(text if text.endswith("\n") else text + "\n")
    if html:
        message.add_alternative(html, subtype="html")
    return message


def _addressed(
    message_id: str, mail_from: str, recipient: Recipient, subject: str, date: datetime
) -> EmailMessage:
    if not recipient.email:
        raise InvalidRecipientAddress("contact has no email address")
    try:
        to = Address(display_name=recipient.display_name, addr_spec=recipient.email)
    except (ValueError, IndexError, HeaderParseError) as exc:  # the parser raises any
        raise InvalidRecipientAddress(f"invalid email address: {exc}") from exc
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = f"<{message_id}@{sender_domain(mail_from)}>"
    message[MESSAGE_ID_HEADER] = message_id
    return message


def build_transactional_email(
    *,
    message_id: str,
    mail_from: str,
    recipient: Recipient,
    subject: str,
    text: str,
    date: datetime,
) -> EmailMessage:
    """A transactional email (e.g. a double opt-in confirmation): no unsubscribe, since it
    is sent once at the person's request and is no marketing."""
    message = _addressed(message_id, mail_from, recipient, subject, date)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(f"{text.rstrip()}\n")
    return message
