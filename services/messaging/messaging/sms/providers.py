"""Handing SMS to providers over HTTP (httpx): two provider styles, a rate limit per
provider, retries with backoff, and failover from one provider to the next.

- OVH-like: ``POST {base}/sms/{serviceName}/jobs``, a JSON job (receivers, sender, message),
  signed with the X-Ovh-* headers (SHA-1 of application secret, consumer key, method, URL,
  body and timestamp, prefixed ``$1$``); the answer lists the job ``ids`` and the
  ``invalidReceivers``.
- Twilio-like: ``POST {base}/Accounts/{AccountSid}/Messages.json``, form-encoded To, From,
  Body (and StatusCallback), HTTP basic auth (account SID, auth token); the answer is the
  Message resource, whose ``sid`` identifies it; errors carry a numeric ``code``.

``SmsSender`` tries the providers in the configured order. On one provider it retries what
may pass a moment later (5xx, 429, timeouts, connection errors) with exponential backoff;
any other refusal (bad credentials, unknown sender) moves on to the next provider, except a
refusal of the message itself (an invalid number), which no provider would take.

A retry after a read timeout may send the SMS twice: the provider may have taken the first
request and failed only to answer. That is the price of not losing messages when a provider
is slow; the campaign dispatcher counts it in its in-flight window.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from messaging.mailer import DeliveryError
from messaging.settings import MessagingSettings, SmsProviderName
from messaging.sms.segments import Encoding, count_segments, segments_problem
from messaging.throttle import Clock, Sleep, TokenBucket

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
#: Twilio error codes that refuse the recipient, not the account: no other provider helps
#: (21211 invalid To, 21614 not a mobile number, 21610 the person replied STOP)
_TWILIO_RECIPIENT_CODES = frozenset({21211, 21610, 21614})


class SmsDeliveryError(DeliveryError):
    """A provider (or every provider) did not take the SMS.

    ``retryable``: the same request may pass later (5xx, 429, timeout, unreachable).
    ``final``: the message itself is refused (invalid number, too long): no provider, and
    no later try, will take it.
    """

    def __init__(
        self,
        reason: str,
        *,
        provider: str | None = None,
        retryable: bool = False,
        final: bool = False,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.provider = provider
        self.retryable = retryable
        self.final = final
        self.status_code = status_code
        self.retry_after = retry_after


class SmsProvider(Protocol):
    name: str

    async def send(self, to_e164: str, sender_id: str, text: str, message_id: str) -> str:
        """Hand one SMS over; returns the provider's id for it, or raises SmsDeliveryError."""
        ...


@dataclass(frozen=True)
class SentSms:
    provider: str
    provider_message_id: str
    #: requests made, over every provider, before one took it
    attempts: int


# ---------------------------------------------------------------- HTTP errors


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _http_error(provider: str, response: httpx.Response, detail: str) -> SmsDeliveryError:
    status = response.status_code
    retryable = status == 429 or status >= 500
    return SmsDeliveryError(
        f"{provider} answered {status}: {detail}"[:500],
        provider=provider,
        retryable=retryable,
        status_code=status,
        retry_after=_retry_after(response) if retryable else None,
    )


async def _post(
    provider: str, client: httpx.AsyncClient, url: str, **kwargs: Any
) -> httpx.Response:
    try:
        return await client.post(url, **kwargs)
    except httpx.TimeoutException as exc:
        raise SmsDeliveryError(
            f"{provider} timed out ({type(exc).__name__})", provider=provider, retryable=True
        ) from exc
    except httpx.TransportError as exc:
        raise SmsDeliveryError(
            f"{provider} unreachable: {exc or type(exc).__name__}",
            provider=provider,
            retryable=True,
        ) from exc


def _check_number(provider: str, to_e164: str) -> None:
    if not _E164.match(to_e164):
        raise SmsDeliveryError(
            f"{to_e164!r} is not an E.164 phone number", provider=provider, final=True
        )


# ---------------------------------------------------------------- OVH-like


def ovh_signature(
    application_secret: str, consumer_key: str, method: str, url: str, body: str, timestamp: int
) -> str:
    """OVH's request signature: ``$1$`` + hex SHA-1 of the '+'-joined parts."""
    plain = "+".join([application_secret, consumer_key, method, url, body, str(timestamp)])
    return "$1$" + hashlib.sha1(plain.encode()).hexdigest()


@dataclass
class OvhProvider:
    """OVH-like jobs API (one job per message, one receiver)."""

    client: httpx.AsyncClient
    base_url: str
    service_name: str
    application_key: str
    application_secret: str
    consumer_key: str
    clock: Clock = time.time
    name: str = field(default="ovh", init=False)

    async def send(self, to_e164: str, sender_id: str, text: str, message_id: str) -> str:
        _check_number(self.name, to_e164)
        url = f"{self.base_url.rstrip('/')}/sms/{self.service_name}/jobs"
        job = {
            "receivers": [to_e164],
            "sender": sender_id,
            "message": text,
            "charset": "UTF-8",
            "coding": "7bit" if count_segments(text).encoding is Encoding.gsm7 else "8bit",
            # Tribune's templates carry the STOP mention themselves (checked when saved).
            "noStopClause": True,
            "priority": "high",
            "senderForResponse": False,
            "tag": message_id[:64],
        }
        # The signature covers the exact body bytes: serialise once, send those.
        body = json.dumps(job, ensure_ascii=False, separators=(",", ":"))
        timestamp = int(self.clock())
        headers = {
            "Content-Type": "application/json;charset=utf-8",
            "X-Ovh-Application": self.application_key,
            "X-Ovh-Consumer": self.consumer_key,
            "X-Ovh-Timestamp": str(timestamp),
            "X-Ovh-Signature": ovh_signature(
                self.application_secret, self.consumer_key, "POST", url, body, timestamp
            ),
        }
        response = await _post(self.name, self.client, url, content=body.encode(), headers=headers)
        answer = _json(response)
        if response.status_code != 200:
            raise _http_error(self.name, response, str(answer.get("message") or response.text))
        if to_e164 in (answer.get("invalidReceivers") or []):
            raise SmsDeliveryError(
                f"{self.name} refused the number {to_e164} as invalid",
                provider=self.name,
                final=True,
                status_code=200,
            )
        ids = answer.get("ids") or []
        if not ids:
            raise SmsDeliveryError(
                f"{self.name} created no job (answer: {response.text[:200]})",
                provider=self.name,
                status_code=200,
            )
        return str(ids[0])


# ---------------------------------------------------------------- Twilio-like


@dataclass
class TwilioProvider:
    """Twilio-like Messages API (form-encoded, basic auth)."""

    client: httpx.AsyncClient
    base_url: str
    account_sid: str
    auth_token: str
    status_callback_url: str | None = None
    name: str = field(default="twilio", init=False)

    async def send(self, to_e164: str, sender_id: str, text: str, message_id: str) -> str:
        _check_number(self.name, to_e164)
        url = f"{self.base_url.rstrip('/')}/Accounts/{self.account_sid}/Messages.json"
        form = {"To": to_e164, "From": sender_id, "Body": text}
        if self.status_callback_url:
            form["StatusCallback"] = self.status_callback_url
        response = await _post(
            self.name,
            self.client,
            url,
            data=form,
            auth=httpx.BasicAuth(self.account_sid, self.auth_token),
            # Not a Twilio parameter: lets logs on both sides be matched to our message.
            headers={"X-Tribune-Message-Id": message_id},
        )
        answer = _json(response)
        if response.status_code not in (200, 201):
            code = answer.get("code")
            error = _http_error(self.name, response, f"{code} {answer.get('message', '')}".strip())
            if code in _TWILIO_RECIPIENT_CODES:
                error.final = True
            raise error
        sid = answer.get("sid")
        if not isinstance(sid, str) or not sid:
            raise SmsDeliveryError(
                f"{self.name} answered without a message sid", provider=self.name
            )
        return sid


# ---------------------------------------------------------------- the chain


@dataclass
class _Lane:
    provider: SmsProvider
    bucket: TokenBucket


class SmsSender:
    """Sends one SMS through the first provider, in order, that takes it."""

    def __init__(
        self,
        lanes: Sequence[tuple[SmsProvider, TokenBucket]],
        *,
        max_segments: int,
        max_attempts: int,
        backoff_seconds: float,
        backoff_max_seconds: float,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._lanes = [_Lane(p, b) for p, b in lanes]
        self.max_segments = max_segments
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._sleep = sleep

    @property
    def providers(self) -> list[str]:
        return [lane.provider.name for lane in self._lanes]

    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """Wait before retry number ``retry`` (1-based); a provider's Retry-After wins,
        within the configured maximum."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max_seconds)
        return min(self.backoff_seconds * 2 ** (retry - 1), self.backoff_max_seconds)

    async def send(self, to_e164: str, sender_id: str, text: str, message_id: str) -> SentSms:
        if problem := segments_problem(count_segments(text), self.max_segments):
            raise SmsDeliveryError(problem, final=True)
        if not self._lanes:
            raise SmsDeliveryError(
                "no SMS provider is configured (set MESSAGING_SMS_OVH_* or "
                "MESSAGING_SMS_TWILIO_* credentials)",
                final=True,
            )
        attempts = 0
        failures: list[SmsDeliveryError] = []
        for lane in self._lanes:
            for attempt in range(1, self.max_attempts + 1):
                await lane.bucket.acquire()
                attempts += 1
                try:
                    provider_id = await lane.provider.send(to_e164, sender_id, text, message_id)
                    return SentSms(lane.provider.name, provider_id, attempts)
                except SmsDeliveryError as error:
                    if error.final:
                        raise
                    last = error
                    if not error.retryable or attempt == self.max_attempts:
                        break
                    await self._sleep(self.backoff(attempt, error.retry_after))
            failures.append(last)
        raise SmsDeliveryError(
            "no SMS provider took the message: " + "; ".join(f.reason for f in failures),
            retryable=any(f.retryable for f in failures),
            status_code=failures[-1].status_code,
        )


# ---------------------------------------------------------------- wiring


def sms_http_client(settings: MessagingSettings) -> httpx.AsyncClient:
    """The one client every SMS provider shares (pooled connections); close it on shutdown."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.sms_timeout_seconds),
        limits=httpx.Limits(
            max_connections=settings.sms_max_connections,
            max_keepalive_connections=settings.sms_max_connections,
        ),
    )


def build_provider(
    settings: MessagingSettings, name: SmsProviderName, client: httpx.AsyncClient
) -> SmsProvider | None:
    """The adapter for ``name``, or None when its credentials are not set."""
    s = settings
    if name == "ovh":
        if s.sms_ovh_application_secret is None or s.sms_ovh_consumer_key is None:
            return None
        return OvhProvider(
            client,
            s.sms_ovh_base_url,
            s.sms_ovh_service_name,
            s.sms_ovh_application_key,
            s.sms_ovh_application_secret.get_secret_value(),
            s.sms_ovh_consumer_key.get_secret_value(),
        )
    if s.sms_twilio_auth_token is None:
        return None
    return TwilioProvider(
        client,
        s.sms_twilio_base_url,
        s.sms_twilio_account_sid,
        s.sms_twilio_auth_token.get_secret_value(),
        s.sms_twilio_status_callback_url,
    )


def build_sms_sender(
    settings: MessagingSettings,
    client: httpx.AsyncClient,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> SmsSender:
    """The configured providers, in ``sms_provider_order``, each with its own rate limit."""
    lanes: list[tuple[SmsProvider, TokenBucket]] = []
    for name in settings.sms_provider_order:
        provider = build_provider(settings, name, client)
        if provider is None:
            continue
        rate = getattr(settings, f"sms_{name}_rate_per_second")
        burst = getattr(settings, f"sms_{name}_burst")
        lanes.append((provider, TokenBucket(rate, burst, clock=clock, sleep=sleep)))
    return SmsSender(
        lanes,
        max_segments=settings.sms_max_segments,
        max_attempts=settings.sms_max_attempts,
        backoff_seconds=settings.sms_retry_backoff_seconds,
        backoff_max_seconds=settings.sms_retry_backoff_max_seconds,
        sleep=sleep,
    )
