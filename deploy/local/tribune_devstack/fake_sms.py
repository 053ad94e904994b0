"""Fake SMS provider for local runs and tests: a real HTTP server speaking two provider
styles, recording every message, and calling back like a provider does.

Provider APIs (what messaging's adapters call):
  POST /1.0/sms/<service>/jobs                     OVH-like: JSON job, X-Ovh-* headers
  POST /2010-04-01/Accounts/<sid>/Messages.json    Twilio-like: form, HTTP basic auth
Test API:
  GET /health                 {"status": "ok", "messages": <count>}
  GET /messages[?to=<e164>]   messages, oldest first, each with its receipt's fate
  GET /messages/<id>          one message (by the id the provider answered)
  DELETE /messages            forget them all
  GET|POST /control           read / change behaviour: {"fail_rate": 0..1, "status": 500,
                              "delay_ms": 0, "receipt_status": "delivered"|"failed",
                              "receipt_delay_ms": 200}
  POST /inbound               {"from": "+33...", "text": "STOP"}: relayed, signed, to the
                              inbound URL; answers with the relay's status and body

Delivery receipts go, ``receipt_delay_ms`` after each accepted message, to the OVH receipt
URL (JSON) or to the message's StatusCallback, else the Twilio receipt URL (form). Receipts
and inbound relays are signed the Tribune webhook way (X-Tribune-Timestamp, and
X-Tribune-Signature: sha256=HMAC-SHA256(secret, "<timestamp>." + body)).

Standard library only, on purpose: compose runs this file in a plain Python image.
Secrets come from the environment (not the command line, which `ps` shows):
FAKE_SMS_RECEIPT_SECRET, FAKE_SMS_INBOUND_SECRET.

Run: python -m tribune_devstack.fake_sms --port 8026 --ovh-receipt-url URL
         --twilio-receipt-url URL --inbound-url URL
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import re
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from tribune_devstack import fake_http
from tribune_devstack.fake_http import Request, Response

log = logging.getLogger("tribune.fake_sms")

_OVH_JOBS = re.compile(r"^/1\.0/sms/([^/]+)/jobs$")
_TWILIO_MESSAGES = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The Tribune webhook headers for ``body`` (an independent implementation: this file
    plays the provider, outside the platform)."""
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Tribune-Timestamp": str(ts), "X-Tribune-Signature": f"sha256={digest}"}


@dataclass
class Control:
    fail_rate: float = 0.0
    status: int = 500
    delay_ms: int = 0
    receipt_status: str = "delivered"
    receipt_delay_ms: int = 200

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Apply ``changes``; returns the problems (nothing is applied if any)."""
        problems: list[str] = []
        new = asdict(self)
        for key, value in changes.items():
            if key not in new:
                problems.append(f"{key}: unknown setting")
            elif key == "fail_rate" and not (
                isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
            ):
                problems.append("fail_rate: must be a number from 0 to 1")
            elif key == "status" and not (isinstance(value, int) and 400 <= value <= 599):
                problems.append("status: must be an HTTP error status (400-599)")
            elif key in ("delay_ms", "receipt_delay_ms") and not (
                isinstance(value, int) and 0 <= value <= 120_000
            ):
                problems.append(f"{key}: must be milliseconds from 0 to 120000")
            elif key == "receipt_status" and value not in ("delivered", "failed"):
                problems.append("receipt_status: must be delivered or failed")
            else:
                new[key] = value
        if not problems:
            for key, value in new.items():
                setattr(self, key, value)
        return problems


@dataclass
class SmsRecord:
    id: str
    style: str  # ovh | twilio
    received_at: str
    to: str
    sender: str
    text: str
    #: where its receipt goes (None: no callback configured, none is sent)
    callback_url: str | None
    #: what happened to the receipt: pending, then sent (with the HTTP status) or an error
    receipt: dict[str, Any] = field(default_factory=lambda: {"state": "pending"})


@dataclass
class Config:
    ovh_receipt_url: str | None = None
    twilio_receipt_url: str | None = None
    inbound_url: str | None = None
    receipt_secret: str | None = None
    inbound_secret: str | None = None
    max_messages: int = 10_000
    callback_timeout: float = 5.0


class FakeSms:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.control = Control()
        self.messages: deque[SmsRecord] = deque(maxlen=config.max_messages)
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ routing

    async def route(self, req: Request) -> Response:
        if req.path == "/health":
            return 200, {"status": "ok", "messages": len(self.messages)}, {}
        if req.path == "/messages":
            if req.method == "GET":
                to = req.query.get("to", [None])[0]
                found = [asdict(m) for m in self.messages if to is None or m.to == to]
                return 200, found, {}
            if req.method == "DELETE":
                count = len(self.messages)
                self.messages.clear()
                return 200, {"deleted": count}, {}
            return 405, {"error": "use GET or DELETE"}, {}
        if req.path.startswith("/messages/") and req.method == "GET":
            wanted = req.path.removeprefix("/messages/")
            message = next((m for m in self.messages if m.id == wanted), None)
            return (
                (200, asdict(message), {}) if message else (404, {"error": "no such message"}, {})
            )
        if req.path == "/control":
            if req.method == "POST":
                payload = req.json()
                if not isinstance(payload, dict):
                    return 400, {"error": "must be a JSON object"}, {}
                if problems := self.control.update(payload):
                    return 400, {"error": "; ".join(problems)}, {}
            return 200, asdict(self.control), {}
        if req.path == "/inbound" and req.method == "POST":
            return await self.inbound(req)
        if (match := _OVH_JOBS.match(req.path)) and req.method == "POST":
            return await self.provider_call("ovh", req, match.group(1))
        if (match := _TWILIO_MESSAGES.match(req.path)) and req.method == "POST":
            return await self.provider_call("twilio", req, match.group(1))
        return 404, {"error": f"no route {req.method} {req.path}"}, {}

    async def provider_call(self, style: str, req: Request, account: str) -> Response:
        if self.control.delay_ms:
            await asyncio.sleep(self.control.delay_ms / 1000)
        if random.random() < self.control.fail_rate:
            status = self.control.status
            headers = {"Retry-After": "1"} if status == 429 else {}
            if style == "ovh":
                return status, {"class": "Server::Fake", "message": "told to fail"}, headers
            return status, {"code": 20500, "message": "told to fail", "status": status}, headers
        if style == "ovh":
            return self.ovh_job(req)
        return self.twilio_message(req, account)

    # ------------------------------------------------------------ provider styles

    def ovh_job(self, req: Request) -> Response:
        missing = [
            h
            for h in ("X-Ovh-Application", "X-Ovh-Consumer", "X-Ovh-Timestamp", "X-Ovh-Signature")
            if not req.headers.get(h.lower())
        ]
        if missing:
            return 403, {"class": "Client::Forbidden", "message": f"missing {missing}"}, {}
        if not req.headers.get("x-ovh-signature", "").startswith("$1$"):
            return 400, {"class": "Client::BadRequest", "message": "Invalid signature"}, {}
        try:
            job = req.json()
        except ValueError:
            return 400, {"class": "Client::BadRequest", "message": "body is not JSON"}, {}
        receivers = job.get("receivers") if isinstance(job, dict) else None
        message = job.get("message") if isinstance(job, dict) else None
        if not isinstance(receivers, list) or not receivers or not isinstance(message, str):
            return 400, {"class": "Client::BadRequest", "message": "receivers and message"}, {}
        valid = [r for r in receivers if isinstance(r, str) and _E164.match(r)]
        invalid = [r for r in receivers if r not in valid]
        ids = []
        for receiver in valid:
            record = self.record(
                "ovh", str(random.randint(10**8, 10**9 - 1)), receiver, job, message
            )
            ids.append(int(record.id))
        answer = {
            "ids": ids,
            "validReceivers": valid,
            "invalidReceivers": invalid,
            "totalCreditsRemoved": len(valid),
            "tag": job.get("tag"),
        }
        return 200, answer, {}

    def record(self, style: str, msg_id: str, to: str, job: dict[str, Any], text: str) -> SmsRecord:
        sender = str(job.get("sender") or job.get("From") or "")
        callback = (
            self.config.ovh_receipt_url
            if style == "ovh"
            else (job.get("StatusCallback") or self.config.twilio_receipt_url)
        )
        record = SmsRecord(msg_id, style, datetime.now(UTC).isoformat(), to, sender, text, callback)
        self.messages.append(record)
        log.info("%s message %s to %s from %s", style, msg_id, to, sender)
        if callback is None:
            record.receipt = {"state": "not sent: no callback URL"}
        else:
            task = asyncio.get_running_loop().create_task(self.send_receipt(record, callback))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return record

    def twilio_message(self, req: Request, account: str) -> Response:
        auth = req.headers.get("authorization", "")
        user = ""
        if auth.lower().startswith("basic "):
            with contextlib.suppress(ValueError):
                user = base64.b64decode(auth[6:]).decode().partition(":")[0]
        if user != account:
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}, {}
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        to, sender, body = form.get("To", ""), form.get("From", ""), form.get("Body")
        if not sender or body is None:
            return 400, {"code": 21604, "message": "From and Body are required", "status": 400}, {}
        if not _E164.match(to):
            message = f"The 'To' number {to} is not a valid phone number."
            return 400, {"code": 21211, "message": message, "status": 400}, {}
        record = self.record("twilio", "SM" + uuid.uuid4().hex, to, form, body)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        answer = {
            "sid": record.id,
            "account_sid": account,
            "to": to,
            "from": sender,
            "body": body,
            "status": "queued",
            "direction": "outbound-api",
            "date_created": now,
            "date_updated": now,
            "api_version": "2010-04-01",
            "error_code": None,
            "error_message": None,
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{record.id}.json",
        }
        return 201, answer, {}

    # ------------------------------------------------------------ callbacks

    async def send_receipt(self, record: SmsRecord, url: str) -> None:
        await asyncio.sleep(self.control.receipt_delay_ms / 1000)
        delivered = self.control.receipt_status == "delivered"
        if record.style == "ovh":
            body = json.dumps(
                {
                    "id": record.id,
                    "receiver": record.to,
                    "dlr": 1 if delivered else 2,
                    "description": "Delivered" if delivered else "Not delivered",
                    "date": datetime.now(UTC).isoformat(),
                }
            ).encode()
            content_type = "application/json"
        else:
            fields = {
                "MessageSid": record.id,
                "MessageStatus": "delivered" if delivered else "undelivered",
                "To": record.to,
                "From": record.sender,
            }
            if not delivered:
                fields["ErrorCode"] = "30003"  # unreachable destination handset
            body = urlencode(fields).encode()
            content_type = "application/x-www-form-urlencoded"
        status, _ = await self.post(url, body, content_type, self.config.receipt_secret)
        record.receipt = {
            "state": "sent" if isinstance(status, int) else "failed",
            "status": "delivered" if delivered else "failed",
            "http_status": status,
        }

    async def inbound(self, req: Request) -> Response:
        try:
            payload = req.json()
        except ValueError:
            return 400, {"error": "must be a JSON object"}, {}
        if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
            return 400, {"error": "needs from and text"}, {}
        sender = payload.get("from")
        if not isinstance(sender, str) or not _E164.match(sender):
            return 400, {"error": "from: must be an E.164 number"}, {}
        if not self.config.inbound_url:
            return 400, {"error": "no inbound URL configured (--inbound-url)"}, {}
        relay = {
            "from": sender,
            "text": payload["text"],
            "message_id": payload.get("message_id") or "MO" + uuid.uuid4().hex,
        }
        body = json.dumps(relay).encode()
        status, answer = await self.post(
            self.config.inbound_url, body, "application/json", self.config.inbound_secret
        )
        return 200, {"relayed": relay, "status": status, "body": answer}, {}

    async def post(
        self, url: str, body: bytes, content_type: str, secret: str | None
    ) -> tuple[int | str, Any]:
        """POST, signed when a secret is set: (HTTP status, JSON or text), or (error, None)."""
        headers = {"Content-Type": content_type, **(sign(secret, body) if secret else {})}
        status, answer = await fake_http.post(url, body, headers, self.config.callback_timeout)
        log.info("callback %s -> %s", url, status)
        return status, answer

    async def drain(self) -> None:
        """Wait for the receipts still to be sent (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def serve(
    config: Config,
    host: str = "127.0.0.1",
    port: int = 8026,
    stop: asyncio.Event | None = None,
    started: asyncio.Future[FakeSms] | None = None,
) -> None:
    """Run until ``stop`` is set (SIGTERM/SIGINT when run as a program)."""
    fake = FakeSms(config)
    log.info("fake SMS provider on http://%s:%s", host, port)
    await fake_http.serve_until(
        fake.route,
        fake._tasks,
        host,
        port,
        stop or asyncio.Event(),
        listening=(lambda: started.set_result(fake)) if started is not None else None,
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m tribune_devstack.fake_sms", description=__doc__)
    p.add_argument("--host", default=env.get("TRIBUNE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env.get("TRIBUNE_SMS_PORT", "8026")))
    p.add_argument("--ovh-receipt-url", default=env.get("FAKE_SMS_OVH_RECEIPT_URL") or None)
    p.add_argument("--twilio-receipt-url", default=env.get("FAKE_SMS_TWILIO_RECEIPT_URL") or None)
    p.add_argument("--inbound-url", default=env.get("FAKE_SMS_INBOUND_URL") or None)
    p.add_argument(
        "--max-messages",
        type=int,
        default=int(env.get("FAKE_SMS_MAX_MESSAGES", "10000")),
        help="messages kept in memory (oldest dropped first)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = Config(
        ovh_receipt_url=args.ovh_receipt_url,
        twilio_receipt_url=args.twilio_receipt_url,
        inbound_url=args.inbound_url,
        receipt_secret=os.environ.get("FAKE_SMS_RECEIPT_SECRET") or None,
        inbound_secret=os.environ.get("FAKE_SMS_INBOUND_SECRET") or None,
        max_messages=args.max_messages,
    )

    fake_http.run_until_signalled(lambda stop: serve(config, args.host, args.port, stop))


if __name__ == "__main__":
    main()
