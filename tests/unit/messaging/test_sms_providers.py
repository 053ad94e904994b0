"""The SMS adapters against httpx.MockTransport: the requests each provider style gets,
retries with backoff, failover to the second provider, and the per-provider rate limit
(on a fake clock)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest
from messaging.settings import MessagingSettings
from messaging.sms.providers import (
    OvhProvider,
    SmsDeliveryError,
    SmsSender,
    TokenBucket,
    TwilioProvider,
    build_sms_sender,
)

TO = "+33612345678"
Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """Monotonic time that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def ovh(handler: Handler) -> OvhProvider:
    return OvhProvider(
        client(handler),
        "https://eu.api.example/1.0",
        "sms-ab123-1",
        "app-key",
        "app-secret",
        "consumer-key",
        clock=lambda: 1_700_000_000,
    )


def twilio(handler: Handler, callback: str | None = None) -> TwilioProvider:
    return TwilioProvider(
        client(handler), "https://api.example/2010-04-01", "AC123", "token", callback
    )


def ovh_ok(request: httpx.Request) -> httpx.Response:
    job = json.loads(request.content)
    return httpx.Response(
        200,
        json={
            "ids": [4242],
            "validReceivers": job["receivers"],
            "invalidReceivers": [],
            "totalCreditsRemoved": 1,
        },
    )


def twilio_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, json={"sid": "SM" + "a" * 32, "status": "queued"})


def sender(
    *providers: object, clock: FakeClock, rate: float = 100, burst: int = 100, attempts: int = 3
) -> SmsSender:
    return SmsSender(
        [(p, TokenBucket(rate, burst, clock=clock, sleep=clock.sleep)) for p in providers],  # type: ignore[misc]
        max_segments=3,
        max_attempts=attempts,
        backoff_seconds=0.5,
        backoff_max_seconds=4,
        sleep=clock.sleep,
    )


# ---------------------------------------------------------------- request shapes


async def test_ovh_posts_a_signed_json_job() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ovh_ok(request)

    provider_id = await ovh(handler).send(TO, "Tribune", "Réunion à 19h", "msg-1")
    assert provider_id == "4242"
    (request,) = seen
    url = "https://eu.api.example/1.0/sms/sms-ab123-1/jobs"
    assert request.method == "POST" and str(request.url) == url
    job = json.loads(request.content)
    assert job["receivers"] == [TO] and job["sender"] == "Tribune"
    assert job["message"] == "Réunion à 19h" and job["coding"] == "7bit"
    assert job["noStopClause"] is True and job["tag"] == "msg-1"
    h = request.headers
    assert h["X-Ovh-Application"] == "app-key" and h["X-Ovh-Consumer"] == "consumer-key"
    assert h["X-Ovh-Timestamp"] == "1700000000"
    # OVH's rule, recomputed from what went over the wire
    plain = f"app-secret+consumer-key+POST+{url}+{request.content.decode()}+1700000000"
    assert h["X-Ovh-Signature"] == "$1$" + hashlib.sha1(plain.encode()).hexdigest()


async def test_ovh_sends_ucs2_text_as_8bit() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return ovh_ok(request)

    await ovh(handler).send(TO, "Tribune", "Merci 👍", "m")
    assert seen[0]["coding"] == "8bit" and seen[0]["message"] == "Merci 👍"


async def test_ovh_invalid_receiver_is_final() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ids": [], "invalidReceivers": [TO]})

    with pytest.raises(SmsDeliveryError) as caught:
        await ovh(handler).send(TO, "Tribune", "x", "m")
    assert caught.value.final and "invalid" in caught.value.reason


async def test_twilio_posts_a_form_with_basic_auth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return twilio_ok(request)

    callback = "https://tribune.example/api/v1/webhooks/sms-receipts/twilio"
    sid = await twilio(handler, callback).send(TO, "Tribune", "Bonjour & à bientôt", "msg-2")
    assert sid == "SM" + "a" * 32
    (request,) = seen
    assert str(request.url) == "https://api.example/2010-04-01/Accounts/AC123/Messages.json"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert form == {
        "To": TO,
        "From": "Tribune",
        "Body": "Bonjour & à bientôt",
        "StatusCallback": callback,
    }
    auth = base64.b64decode(request.headers["Authorization"].removeprefix("Basic ")).decode()
    assert auth == "AC123:token"


async def test_twilio_without_callback_sends_none() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content.decode())
        return twilio_ok(request)

    await twilio(handler).send(TO, "Tribune", "x", "m")
    assert "StatusCallback" not in parse_qs(seen[0])


async def test_twilio_invalid_number_error_is_final_but_auth_error_is_not() -> None:
    def invalid(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"code": 21211, "message": "not a valid phone number"})

    def unauthorised(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"code": 20003, "message": "Authenticate"})

    with pytest.raises(SmsDeliveryError) as caught:
        await twilio(invalid).send(TO, "Tribune", "x", "m")
    assert caught.value.final and "21211" in caught.value.reason
    with pytest.raises(SmsDeliveryError) as caught:
        await twilio(unauthorised).send(TO, "Tribune", "x", "m")
    error = caught.value
    assert not error.final and not error.retryable and error.status_code == 401


async def test_a_number_that_is_not_e164_never_leaves() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    with pytest.raises(SmsDeliveryError) as caught:
        await twilio(handler).send("0612345678", "Tribune", "x", "m")
    assert caught.value.final and "E.164" in caught.value.reason


# ---------------------------------------------------------------- retries and failover


async def test_5xx_is_retried_with_exponential_backoff() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return ovh_ok(request) if len(calls) == 3 else httpx.Response(503, json={"message": "busy"})

    sent = await sender(ovh(handler), clock=clock).send(TO, "Tribune", "x", "m")
    assert (sent.provider, sent.provider_message_id, sent.attempts) == ("ovh", "4242", 3)
    assert clock.sleeps == [0.5, 1.0]


async def test_429_waits_for_retry_after_within_the_maximum() -> None:
    clock = FakeClock()
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(429, headers={"Retry-After": "30"}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or twilio_ok(request)

    sent = await sender(twilio(handler), clock=clock).send(TO, "Tribune", "x", "m")
    assert sent.attempts == 3 and clock.sleeps == [2.0, 4.0]  # 30 s capped at 4


async def test_timeouts_are_retried() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        if len(calls) == 2:
            raise httpx.ConnectError("refused", request=request)
        return twilio_ok(request)

    sent = await sender(twilio(handler), clock=clock).send(TO, "Tribune", "x", "m")
    assert sent.attempts == 3


async def test_failover_to_the_second_provider_after_retries() -> None:
    clock = FakeClock()
    ovh_calls: list[int] = []

    def down(request: httpx.Request) -> httpx.Response:
        ovh_calls.append(1)
        return httpx.Response(502, json={"message": "bad gateway"})

    sent = await sender(ovh(down), twilio(twilio_ok), clock=clock).send(TO, "T", "x", "m")
    assert len(ovh_calls) == 3  # every attempt on the first, then the second
    assert (sent.provider, sent.attempts) == ("twilio", 4)


async def test_a_refusal_moves_to_the_next_provider_without_retrying() -> None:
    clock = FakeClock()
    ovh_calls: list[int] = []

    def forbidden(request: httpx.Request) -> httpx.Response:
        ovh_calls.append(1)
        return httpx.Response(403, json={"message": "This call has not been granted"})

    sent = await sender(ovh(forbidden), twilio(twilio_ok), clock=clock).send(TO, "T", "x", "m")
    assert len(ovh_calls) == 1 and sent.provider == "twilio" and clock.sleeps == []


async def test_a_final_refusal_does_not_fail_over() -> None:
    clock = FakeClock()

    def invalid(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ids": [], "invalidReceivers": [TO]})

    def unexpected(request: httpx.Request) -> httpx.Response:
        raise AssertionError("the second provider must not be asked")

    with pytest.raises(SmsDeliveryError) as caught:
        await sender(ovh(invalid), twilio(unexpected), clock=clock).send(TO, "T", "x", "m")
    assert caught.value.final and caught.value.provider == "ovh"


async def test_when_every_provider_fails_the_error_names_each() -> None:
    clock = FakeClock()

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"message": "oops", "code": 1})

    with pytest.raises(SmsDeliveryError) as caught:
        await sender(ovh(down), twilio(down), clock=clock, attempts=2).send(TO, "T", "x", "m")
    error = caught.value
    assert error.reason.startswith("no SMS provider took the message: ovh answered 500")
    assert "twilio answered 500" in error.reason
    assert error.retryable and not error.final  # worth trying again later


async def test_too_many_segments_is_refused_before_any_request() -> None:
    def unexpected(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    with pytest.raises(SmsDeliveryError) as caught:
        await sender(ovh(unexpected), clock=FakeClock()).send(TO, "T", "a" * 460, "m")
    assert caught.value.final and "more than the maximum of 3" in caught.value.reason


# ---------------------------------------------------------------- rate limit


async def test_token_bucket_spends_the_burst_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 3, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(7):
        await bucket.acquire()
    # 3 at once, then 4 more at 2 per second
    assert clock.now - start == pytest.approx(2.0)
    assert bucket.wait_time() == pytest.approx(0.5)
    clock.now += 10  # idle: the bucket refills up to the burst, not beyond
    assert bucket.wait_time() == 0
    for _ in range(3):
        await bucket.acquire()
    assert bucket.wait_time() == pytest.approx(0.5)


async def test_each_provider_has_its_own_rate() -> None:
    clock = FakeClock()
    s = sender(ovh(ovh_ok), clock=clock, rate=5, burst=1)
    start = clock.now
    for i in range(6):
        await s.send(TO, "T", "x", f"m{i}")
    assert clock.now - start == pytest.approx(1.0)  # 1 at once, then 5 at 5 per second


# ---------------------------------------------------------------- wiring from settings


def test_build_sms_sender_keeps_the_configured_providers_in_order() -> None:
    settings = MessagingSettings(
        sms_provider_order=["twilio", "ovh"],
        sms_twilio_auth_token="t" * 40,
        sms_ovh_application_secret="s" * 40,
        sms_ovh_consumer_key="c" * 40,
    )
    assert build_sms_sender(settings, client(twilio_ok)).providers == ["twilio", "ovh"]
    only_twilio = MessagingSettings(sms_twilio_auth_token="t" * 40)
    assert build_sms_sender(only_twilio, client(twilio_ok)).providers == ["twilio"]


async def test_no_configured_provider_is_a_clear_final_error() -> None:
    s = build_sms_sender(MessagingSettings(), client(twilio_ok))
    assert s.providers == []
    with pytest.raises(SmsDeliveryError) as caught:
        await s.send(TO, "Tribune", "x", "m")
    assert caught.value.final and "no SMS provider is configured" in caught.value.reason
