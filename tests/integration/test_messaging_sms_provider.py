"""messaging's SMS adapters against the real fake SMS provider process (the one `make up`
runs): each style is sent, read back, and its delivery receipt arrives signed and verifies;
the provider can be told to fail or slow down; an inbound reply is relayed, signed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from messaging.settings import MessagingSettings
from messaging.sms.providers import SmsDeliveryError, build_sms_sender, sms_http_client
from messaging.sms.receipts import ReceiptStatus, parse_receipt
from tribune_devstack.stack import find_free_ports
from tribune_shared.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidSignature,
    verify_signature,
)

pytestmark = pytest.mark.integration

RECEIPT_SECRET = "fake-sms-receipt-secret-0123456789abcdef"
INBOUND_SECRET = "fake-sms-inbound-secret-0123456789abcdef"
CREDENTIAL = "fake-sms-credential-0123456789abcdef0123"


@dataclass(frozen=True)
class Callback:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """The platform's side of the callbacks: keeps every POST, answers 200."""

    def __init__(self) -> None:
        self.calls: list[Callback] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.calls.append(Callback(self.path, dict(self.headers), body))
                answer = json.dumps({"status": "ok"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, path: str, about: str, timeout: float = 10) -> Callback:
        """The callback on ``path`` whose body mentions ``about`` (a message id, a number)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [c for c in self.calls if c.path == path and about.encode() in c.body]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no callback on {path} within {timeout}s: {self.calls}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def fake_sms(receiver: Receiver) -> Iterator[str]:
    """A real fake provider process (python -m tribune_devstack.fake_sms), called back by
    the receiver."""
    (port,) = find_free_ports(1)
    env = {
        **os.environ,
        "FAKE_SMS_RECEIPT_SECRET": RECEIPT_SECRET,
        "FAKE_SMS_INBOUND_SECRET": INBOUND_SECRET,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tribune_devstack.fake_sms",
            "--port",
            str(port),
            "--ovh-receipt-url",
            f"{receiver.url}/receipts/ovh",
            "--twilio-receipt-url",
            f"{receiver.url}/receipts/twilio",
            "--inbound-url",
            f"{receiver.url}/inbound",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"fake SMS provider did not start: {stderr}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def normal_behaviour(fake_sms: str) -> Iterator[None]:
    yield
    reset = {"fail_rate": 0, "delay_ms": 0, "status": 500, "receipt_status": "delivered"}
    httpx.post(f"{fake_sms}/control", json=reset).raise_for_status()


def settings(fake_sms: str, receiver: Receiver, order: list[str], **extra) -> MessagingSettings:
    return MessagingSettings(
        sms_provider_order=order,
        sms_ovh_base_url=f"{fake_sms}/1.0",
        sms_twilio_base_url=f"{fake_sms}/2010-04-01",
        sms_ovh_application_secret=CREDENTIAL,
        sms_ovh_consumer_key=CREDENTIAL,
        sms_twilio_auth_token=CREDENTIAL,
        sms_twilio_status_callback_url=f"{receiver.url}/status-callback",
        sms_retry_backoff_seconds=0.01,
        **extra,
    )


def verify(provider, callback: Callback):
    return parse_receipt(
        provider,
        callback.body,
        callback.headers.get(TIMESTAMP_HEADER),
        callback.headers.get(SIGNATURE_HEADER),
        secret=RECEIPT_SECRET,
        now=time.time(),
        tolerance_seconds=60,
    )


async def call(method: str, url: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.request(method, url, **kwargs)


async def send(cfg: MessagingSettings, to: str, text: str):
    async with sms_http_client(cfg) as client:
        return await build_sms_sender(cfg, client).send(to, cfg.sms_sender_id, text, "msg-1")


async def test_ovh_style_send_is_recorded_and_its_receipt_verifies(fake_sms, receiver) -> None:
    to = "+33611000001"
    sent = await send(settings(fake_sms, receiver, ["ovh"]), to, "Réunion ce soir. STOP 36180")
    assert sent.provider == "ovh" and sent.attempts == 1
    (recorded,) = (await call("GET", f"{fake_sms}/messages", params={"to": to})).json()
    assert recorded["id"] == sent.provider_message_id and recorded["style"] == "ovh"
    assert recorded["sender"] == "Tribune" and recorded["text"] == "Réunion ce soir. STOP 36180"
    receipt = verify("ovh", receiver.wait_for("/receipts/ovh", sent.provider_message_id))
    assert receipt is not None and receipt.status is ReceiptStatus.delivered
    assert receipt.provider_message_id == sent.provider_message_id


async def test_twilio_style_receipt_goes_to_the_status_callback(fake_sms, receiver) -> None:
    to = "+33611000002"
    sent = await send(settings(fake_sms, receiver, ["twilio"]), to, "Bonjour 👋")
    assert sent.provider == "twilio" and sent.provider_message_id.startswith("SM")
    (recorded,) = (await call("GET", f"{fake_sms}/messages", params={"to": to})).json()
    assert recorded["style"] == "twilio" and recorded["text"] == "Bonjour 👋"
    callback = receiver.wait_for("/status-callback", sent.provider_message_id)
    receipt = verify("twilio", callback)
    assert receipt is not None and receipt.status is ReceiptStatus.delivered
    assert receipt.provider_message_id == sent.provider_message_id
    # the signature covers the exact body: one byte more and it does not verify
    tampered = Callback(callback.path, callback.headers, callback.body + b"&x=1")
    with pytest.raises(InvalidSignature, match="does not match"):
        verify("twilio", tampered)


async def test_told_to_fail_the_sender_retries_then_fails_over(fake_sms, receiver) -> None:
    (
        await call("POST", f"{fake_sms}/control", json={"fail_rate": 1, "status": 503})
    ).raise_for_status()
    cfg = settings(fake_sms, receiver, ["ovh", "twilio"], sms_max_attempts=2)
    with pytest.raises(SmsDeliveryError) as caught:
        await send(cfg, "+33611000003", "x")
    assert caught.value.retryable and "ovh answered 503" in caught.value.reason
    assert "twilio answered 503" in caught.value.reason
    assert (await call("GET", f"{fake_sms}/messages", params={"to": "+33611000003"})).json() == []

    # it recovers; a failed delivery comes back as a failed receipt
    control = {"fail_rate": 0, "receipt_status": "failed"}
    (await call("POST", f"{fake_sms}/control", json=control)).raise_for_status()
    sent = await send(cfg, "+33611000003", "x")
    receipt = verify("ovh", receiver.wait_for("/receipts/ovh", sent.provider_message_id))
    assert receipt is not None and receipt.provider_message_id == sent.provider_message_id
    assert receipt.status is ReceiptStatus.failed


async def test_told_to_slow_down_the_sender_times_out(fake_sms, receiver) -> None:
    (await call("POST", f"{fake_sms}/control", json={"delay_ms": 1500})).raise_for_status()
    cfg = settings(fake_sms, receiver, ["twilio"], sms_timeout_seconds=0.3, sms_max_attempts=1)
    with pytest.raises(SmsDeliveryError) as caught:
        await send(cfg, "+33611000004", "x")
    assert caught.value.retryable and "timed out" in caught.value.reason


def test_control_refuses_bad_values(fake_sms) -> None:
    answer = httpx.post(f"{fake_sms}/control", json={"fail_rate": 2, "colour": "red"})
    assert answer.status_code == 400
    assert "fail_rate" in answer.json()["error"] and "colour" in answer.json()["error"]
    assert httpx.get(f"{fake_sms}/control").json()["fail_rate"] == 0  # nothing applied


def test_an_inbound_reply_is_relayed_signed(fake_sms, receiver) -> None:
    answer = httpx.post(f"{fake_sms}/inbound", json={"from": "+33611000005", "text": "STOP"})
    assert answer.status_code == 200 and answer.json()["status"] == 200
    callback = receiver.wait_for("/inbound", "+33611000005")
    verify_signature(
        INBOUND_SECRET,
        callback.headers.get(TIMESTAMP_HEADER),
        callback.headers.get(SIGNATURE_HEADER),
        callback.body,
        now=time.time(),
        tolerance_seconds=60,
    )
    relayed = json.loads(callback.body)
    assert relayed["from"] == "+33611000005" and relayed["text"] == "STOP"
    assert relayed["message_id"]
