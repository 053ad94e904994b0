"""Handing emails to an SMTP server (aiosmtplib); faked in unit tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import aiosmtplib

from messaging.composer import OutgoingEmail
from messaging.settings import MessagingSettings
from messaging.throttle import TokenBucket


class DeliveryError(Exception):
    """The provider did not take the message; ``reason`` is safe to show to the caller.
    ``retryable``: the provider could not be reached or answered "later" (4xx, timeout):
    another provider, or a later try, may take it; otherwise the message itself was
    refused."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Mailer(Protocol):
    async def send(self, message: OutgoingEmail) -> None:
        """Hand ``message`` over, or raise DeliveryError."""
        ...


def _delivery_error(exc: Exception, where: str) -> DeliveryError:
    """What an aiosmtplib failure means for the message (the reason shown and logged)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        temporary = all(400 <= r.code < 500 for r in exc.recipients)
        return DeliveryError(f"SMTP server refused the recipient: {refused}", retryable=temporary)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return DeliveryError(f"SMTP server {where} timed out", retryable=True)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(
            f"SMTP server answered {exc.code} {exc.message}", retryable=400 <= exc.code < 500
        )
    return DeliveryError(f"SMTP server {where} unreachable: {exc}", retryable=True)


@dataclass(frozen=True)
class SmtpTarget:
    """One SMTP relay: where, how (TLS), as whom, how fast."""

    host: str
    port: int
    timeout: float
    use_tls: bool = False
    start_tls: bool | None = None
    username: str | None = None
    password: str | None = None
    rate_per_second: float = 0  # 0: as fast as it takes them

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def primary(cls, s: MessagingSettings) -> SmtpTarget:
        return cls(
            s.smtp_host,
            s.smtp_port,
            s.smtp_timeout_seconds,
            s.smtp_use_tls,
            s.smtp_start_tls,
            s.smtp_username,
            s.smtp_password.get_secret_value() if s.smtp_password else None,
            s.smtp_rate_per_second,
        )

    @classmethod
    def fallback(cls, s: MessagingSettings) -> SmtpTarget | None:
        if not s.smtp_fallback_host:
            return None
        return cls(
            s.smtp_fallback_host,
            s.smtp_fallback_port,
            s.smtp_timeout_seconds,
            s.smtp_fallback_use_tls,
            s.smtp_fallback_start_tls,
            s.smtp_fallback_username,
            s.smtp_fallback_password.get_secret_value() if s.smtp_fallback_password else None,
            s.smtp_fallback_rate_per_second,
        )

    def client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            username=self.username,
            password=self.password,
        )


async def _transmit(client: aiosmtplib.SMTP, message: OutgoingEmail) -> None:
    """One message over an open session: the composer's bytes as they are (no copy,
    parse or flattening of a message object on the way)."""
    await client.sendmail(
        message.sender,
        [message.recipient],
        message.data,
        mail_options=["SMTPUTF8"] if message.utf8 else None,
    )


class SmtpMailer:
    """One SMTP session per message: the API's single sends, one at a time (the worker
    sends through a ``FailoverMailer``'s pooled sessions)."""

    def __init__(self, settings: MessagingSettings) -> None:
        self.target = SmtpTarget.primary(settings)

    async def send(self, message: OutgoingEmail) -> None:
        try:
            async with self.target.client() as client:
                await _transmit(client, message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _delivery_error(exc, self.target.where) from exc


class SmtpPool:
    """Campaign sending to one relay: up to ``pool_size`` SMTP sessions kept open and
    reused message after message (a session's greeting, TLS and login cost once, not per
    mail), at most ``target.rate_per_second`` messages per second. A session the server
    dropped is replaced once; a refusal of the message itself is the message's failure,
    and the session goes on."""

    def __init__(self, target: SmtpTarget, pool_size: int) -> None:
        self.target = target
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(pool_size)
        rate = target.rate_per_second
        self._bucket = TokenBucket(rate, max(1, int(rate))) if rate > 0 else None

    async def _session(self) -> aiosmtplib.SMTP:
        try:
            return self._idle.get_nowait()
        except asyncio.QueueEmpty:
            client = self.target.client()
            await client.connect()
            return client

    async def send(self, message: OutgoingEmail) -> None:
        if self._bucket is not None:
            await self._bucket.acquire()
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            for attempt in (1, 2):
                try:
                    client = await self._session()
                    await _transmit(client, message)
                    self._idle.put_nowait(client)
                    return
                except aiosmtplib.SMTPResponseException as exc:
                    # the server answered about this message: the session is fine
                    if client is not None and client.is_connected:
                        await self._reset(client)
                    raise _delivery_error(exc, self.target.where) from exc
                except (aiosmtplib.SMTPException, OSError) as exc:
                    if client is not None:
                        client.close()
                    client = None
                    if attempt == 2:
                        raise _delivery_error(exc, self.target.where) from exc

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


class FailoverMailer:
    """Campaign sending: the primary relay's pool, then the fallback's when the primary
    cannot take a message now (unreachable, timed out, 4xx). A message the primary
    refused for good (5xx: a bad address) is not offered to the fallback."""

    def __init__(self, pools: list[SmtpPool]) -> None:
        self.pools = pools

    @classmethod
    def from_settings(cls, settings: MessagingSettings) -> FailoverMailer:
        targets = [SmtpTarget.primary(settings), SmtpTarget.fallback(settings)]
        return cls([SmtpPool(t, settings.smtp_pool_size) for t in targets if t is not None])

    async def send(self, message: OutgoingEmail) -> None:
        for i, pool in enumerate(self.pools):
            try:
                await pool.send(message)
                return
            except DeliveryError as exc:
                if not exc.retryable or i == len(self.pools) - 1:
                    raise

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()
