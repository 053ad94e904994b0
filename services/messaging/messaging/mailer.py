"""Handing emails to an SMTP server (aiosmtplib); faked in unit tests."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from messaging.settings import MessagingSettings


class DeliveryError(Exception):
    """The provider did not take the message; ``reason`` is safe to show to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand ``message`` over, or raise DeliveryError."""
        ...


class SmtpMailer:
    """One SMTP session per message (enough for single sends; campaigns will batch)."""

    def __init__(self, settings: MessagingSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
        s = self.settings
        where = f"{s.smtp_host}:{s.smtp_port}"
        try:
            await aiosmtplib.send(
                message,
                hostname=s.smtp_host,
                port=s.smtp_port,
                timeout=s.smtp_timeout_seconds,
                use_tls=s.smtp_use_tls,
                start_tls=s.smtp_start_tls,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            raise DeliveryError(f"SMTP server refused the recipient: {refused}") from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise DeliveryError(f"SMTP server {where} timed out") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP server answered {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP server {where} unreachable: {exc}") from exc
