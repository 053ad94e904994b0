"""Handing emails to an SMTP server (aiosmtplib); faked in unit tests."""

from __future__ import annotations

import asyncio
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


def _delivery_error(exc: Exception, where: str) -> DeliveryError:
    """What an aiosmtplib failure means for the message (the reason shown and logged)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        return DeliveryError(f"SMTP server refused the recipient: {refused}")
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return DeliveryError(f"SMTP server {where} timed out")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(f"SMTP server answered {exc.code} {exc.message}")
    return DeliveryError(f"SMTP server {where} unreachable: {exc}")


def _client(settings: MessagingSettings) -> aiosmtplib.SMTP:
    s = settings
    return aiosmtplib.SMTP(
        hostname=s.smtp_host,
        port=s.smtp_port,
        timeout=s.smtp_timeout_seconds,
        use_tls=s.smtp_use_tls,
        start_tls=s.smtp_start_tls,
        username=s.smtp_username,
        password=s.smtp_password.get_secret_value() if s.smtp_password else None,
    )


class SmtpMailer:
    """One SMTP session per message: single sends and confirmations, which are rare."""

    def __init__(self, settings: MessagingSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
        s = self.settings
        try:
            async with _client(s) as client:
                await client.send_message(message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _delivery_error(exc, f"{s.smtp_host}:{s.smtp_port}") from exc


class SmtpPool:
    """Campaign sending: up to ``smtp_pool_size`` SMTP sessions kept open and reused for
    message after message (a session's greeting, TLS and login cost once, not per mail).
    A session the server dropped is replaced once; a refusal of the message itself is the
    message's failure, and the session goes on."""

    def __init__(self, settings: MessagingSettings) -> None:
        self.settings = settings
        self.where = f"{settings.smtp_host}:{settings.smtp_port}"
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.smtp_pool_size)

    async def _session(self) -> aiosmtplib.SMTP:
        try:
            return self._idle.get_nowait()
        except asyncio.QueueEmpty:
            client = _client(self.settings)
            await client.connect()
            return client

    async def send(self, message: EmailMessage) -> None:
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            for attempt in (1, 2):
                try:
                    client = await self._session()
                    await client.send_message(message)
                    self._idle.put_nowait(client)
                    return
                except aiosmtplib.SMTPResponseException as exc:
                    # the server answered about this message: the session is fine
                    if client is not None and client.is_connected:
                        await self._reset(client)
                    raise _delivery_error(exc, self.where) from exc
                except (aiosmtplib.SMTPException, OSError) as exc:
                    if client is not None:
                        client.close()
                    client = None
                    if attempt == 2:
                        raise _delivery_error(exc, self.where) from exc

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        try:
            await client.rset()
            self._idle.put_nowait(client)
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
