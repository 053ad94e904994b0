"""Fake payment providers for local runs and tests: a real HTTP server playing a
Stripe-style and a HelloAsso-style provider. A test (or a developer) asks it for a payment;
it "captures" it and notifies Tribune's webhook the way the real provider does, signed
with the shared secret, retried with backoff until Tribune answers 2xx.

Stripe-style (events as https://docs.stripe.com/api/events describes them; header
``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``, fresh for each
attempt):
  POST /stripe/checkout    {"contact_id", "amount_cents", "purpose": "dues"|"donation",
                           "currency": "eur", "plan", "rate", "elected_official",
                           "election_id", "donor": {"natural_person", "nationality",
                           "resides_in_france"}, "method": "card"|"sepa_debit",
                           "events": [...], "metadata": {...}}
                           -> payment_intent.succeeded then checkout.session.completed
                           (``events`` picks which); answers the session, payment intent
                           and charge ids
  POST /stripe/refunds     {"payment_intent", "amount_cents"?, "reason"?} -> charge.refunded
  POST /stripe/disputes    {"payment_intent", "reason"?, "close": "lost"|"won"?}
                           -> charge.dispute.created (then charge.dispute.closed)
HelloAsso-style (notifications as https://dev.helloasso.com/docs/les-notifications shows
them; header ``x-ha-signature: <hex HMAC-SHA256(signatureKey, body)>``):
  POST /helloasso/checkout {"contact_id", "amount_cents", "purpose", ..., "means": "Card"}
                           -> an Order notification, then a Payment notification
  POST /helloasso/refunds  {"payment_id"} -> Payment notification, state Refunded
  POST /helloasso/disputes {"payment_id"} -> Payment notification, state Contested
Test API:
  GET /health                       {"status": "ok", "notifications": <count>}
  GET /notifications[?provider=&type=&contact_id=]  what was sent, oldest first: body,
                                    state (pending, delivered, failed) and every attempt
  GET /notifications/<id>           one of them
  POST /notifications/<id>/resend   deliver it again, once, now (a provider's replay);
                                    answers Tribune's status and body
  DELETE /notifications             forget them all

The Tribune metadata keys (``tribune_contact_id``, ``tribune_purpose``...) are the ones
memberships reads (memberships.providers.domain.PaymentMetadata); Stripe metadata values
are strings, so booleans travel as "true"/"false".

Standard library only, on purpose (like fake_sms.py). Secrets come from the environment:
FAKE_PAYMENTS_STRIPE_SECRET, FAKE_PAYMENTS_HELLOASSO_KEY.

Run: python -m tribune_devstack.fake_payments --port 8027 --stripe-webhook-url URL
         --helloasso-webhook-url URL
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import os
import random
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tribune_devstack import fake_http
from tribune_devstack.fake_http import Request, Response

log = logging.getLogger("tribune.fake_payments")


def stripe_signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The Stripe-Signature header for ``body`` (an independent implementation: this file
    plays the provider, outside the platform)."""
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def helloasso_signature(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Config:
    stripe_webhook_url: str | None = None
    helloasso_webhook_url: str | None = None
    stripe_secret: str | None = None
    helloasso_key: str | None = None
    #: attempts of one notification before it is given up (failed)
    max_attempts: int = 10
    #: first retry delay; doubled each attempt, up to retry_max_ms (with jitter)
    retry_base_ms: int = 200
    retry_max_ms: int = 5_000
    callback_timeout: float = 10.0
    max_notifications: int = 10_000


@dataclass
class Notification:
    id: str
    provider: str  # stripe | helloasso
    type: str  # Stripe event type, or "<eventType>" / "Payment.<state>" for HelloAsso
    url: str | None
    body: dict[str, Any]
    contact_id: str | None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    #: pending, delivered (Tribune answered 2xx), failed (gave up), or not sent (no URL)
    state: str = "pending"
    attempts: list[dict[str, Any]] = field(default_factory=list)
    answer: Any = None


class BadRequest(Exception):
    pass


def _text(payload: dict[str, Any], key: str, default: str | None = None) -> str:
    value = payload.get(key, default)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key}: a non-empty string is required")
    return value


def _amount(payload: dict[str, Any], key: str = "amount_cents") -> int:
    value = payload.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadRequest(f"{key}: a positive integer (cents) is required")
    return value


def _flag(value: Any) -> str:
    return "true" if value else "false"


def tribune_metadata(payload: dict[str, Any]) -> dict[str, Any]:
    """The Tribune keys a checkout carries (strings, as Stripe keeps them)."""
    meta: dict[str, Any] = {
        "tribune_contact_id": _text(payload, "contact_id"),
        "tribune_purpose": _text(payload, "purpose"),
    }
    for key in ("plan", "rate", "election_id"):
        if payload.get(key) is not None:
            meta[f"tribune_{key}"] = str(payload[key])
    if payload.get("elected_official"):
        meta["tribune_elected_official"] = "true"
    donor = payload.get("donor")
    if isinstance(donor, dict):
        meta["tribune_donor_natural_person"] = _flag(donor.get("natural_person"))
        if donor.get("nationality"):
            meta["tribune_donor_nationality"] = str(donor["nationality"])
        meta["tribune_donor_resides_in_france"] = _flag(donor.get("resides_in_france"))
    extra = payload.get("metadata")
    if isinstance(extra, dict):  # a test may add or spoil keys on purpose
        meta.update(extra)
    return meta


class FakePayments:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.notifications: deque[Notification] = deque(maxlen=config.max_notifications)
        self.stripe: dict[str, dict[str, Any]] = {}  # payment intent id -> its state
        self.helloasso: dict[str, dict[str, Any]] = {}  # payment id -> its state
        self._ids = itertools.count(int(time.time()) % 1_000_000 * 10)
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ routing

    async def route(self, method: str, path: str, query: dict[str, list[str]], body: Any):
        if path == "/health":
            return 200, {"status": "ok", "notifications": len(self.notifications)}
        if path == "/notifications":
            if method == "GET":
                return 200, [asdict(n) for n in self.notifications if _wanted(n, query)]
            if method == "DELETE":
                count = len(self.notifications)
                self.notifications.clear()
                return 200, {"deleted": count}
            return 405, {"error": "use GET or DELETE"}
        if path.startswith("/notifications/"):
            rest = path.removeprefix("/notifications/")
            wanted, _, action = rest.partition("/")
            found = next((n for n in self.notifications if n.id == wanted), None)
            if found is None:
                return 404, {"error": "no such notification"}
            if method == "GET" and not action:
                return 200, asdict(found)
            if method == "POST" and action == "resend":
                status, answer = await self.attempt(found)
                return 200, {"status": status, "body": answer}
            return 405, {"error": "GET /notifications/<id> or POST .../resend"}
        if method != "POST":
            return 405, {"error": "use POST"}
        if not isinstance(body, dict):
            return 400, {"error": "the body must be a JSON object"}
        handlers = {
            "/stripe/checkout": self.stripe_checkout,
            "/stripe/refunds": self.stripe_refund,
            "/stripe/disputes": self.stripe_dispute,
            "/helloasso/checkout": self.helloasso_checkout,
            "/helloasso/refunds": self.helloasso_refund,
            "/helloasso/disputes": self.helloasso_dispute,
        }
        handler = handlers.get(path)
        if handler is None:
            return 404, {"error": f"no route {method} {path}"}
        try:
            return handler(body)
        except BadRequest as exc:
            return 400, {"error": str(exc)}

    # ------------------------------------------------------------ Stripe-style

    def _stripe_event(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
            "data": {"object": obj},
        }

    def stripe_checkout(self, payload: dict[str, Any]) -> tuple[int, Any]:
        amount = _amount(payload)
        metadata = tribune_metadata(payload)
        currency = str(payload.get("currency") or "eur").lower()
        method = str(payload.get("method") or "card")
        events = payload.get("events") or ["payment_intent.succeeded", "checkout.session.completed"]
        known = {"payment_intent.succeeded", "checkout.session.completed"}
        if not isinstance(events, list) or not set(events) <= known:
            raise BadRequest(f"events: a list among {sorted(known)}")
        tag = uuid.uuid4().hex[:24]
        pi, cs, ch = f"pi_{tag}", f"cs_test_{tag}", f"ch_{tag}"
        now = int(time.time())
        charge = {
            "id": ch,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": 0,
            "currency": currency,
            "payment_intent": pi,
            "paid": True,
            "refunded": False,
            "created": now,
            "metadata": metadata,
            "payment_method_details": {"type": method},
            "refunds": {"object": "list", "data": []},
        }
        intent = {
            "id": pi,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount,
            "currency": currency,
            "created": now,
            "status": "succeeded",
            "payment_method_types": [method],
            "latest_charge": ch,
            "metadata": metadata,
        }
        session = {
            "id": cs,
            "object": "checkout.session",
            "mode": "payment",
            "status": "complete",
            "payment_status": "paid",
            "payment_intent": pi,
            "amount_total": amount,
            "amount_subtotal": amount,
            "currency": currency,
            "payment_method_types": [method],
            "created": now,
            "metadata": metadata,
        }
        self.stripe[pi] = {"intent": intent, "charge": charge, "session": session}
        contact = metadata.get("tribune_contact_id")
        objects = {"payment_intent.succeeded": intent, "checkout.session.completed": session}
        sent = [self._stripe_event(t, objects[t]) for t in events]
        self.send("stripe", [(e["id"], e["type"], e) for e in sent], contact)
        answer = {"id": cs, "payment_intent": pi, "charge": ch, "events": [e["id"] for e in sent]}
        return 201, answer

    def _stripe_payment(self, payload: dict[str, Any]) -> dict[str, Any]:
        pi = _text(payload, "payment_intent")
        if pi not in self.stripe:
            raise BadRequest(f"payment_intent: no such payment intent {pi!r}")
        return self.stripe[pi]

    def stripe_refund(self, payload: dict[str, Any]) -> tuple[int, Any]:
        payment = self._stripe_payment(payload)
        charge = payment["charge"]
        left = charge["amount"] - charge["amount_refunded"]
        if left == 0:
            return 409, {"error": "the charge is already fully refunded"}
        amount = _amount(payload) if "amount_cents" in payload else left
        if amount > left:
            return 409, {"error": f"only {left} cents are left to refund"}
        refund = {
            "id": f"re_{uuid.uuid4().hex[:24]}",
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "payment_intent": charge["payment_intent"],
            "currency": charge["currency"],
            "reason": payload.get("reason") or "requested_by_customer",
            "status": "succeeded",
            "created": int(time.time()),
        }
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        charge["refunds"]["data"].insert(0, refund)  # newest first, as Stripe lists them
        event = self._stripe_event("charge.refunded", json.loads(json.dumps(charge)))
        self.send("stripe", [(event["id"], event["type"], event)], _contact(charge))
        return 201, {"id": refund["id"], "event": event["id"]}

    def stripe_dispute(self, payload: dict[str, Any]) -> tuple[int, Any]:
        payment = self._stripe_payment(payload)
        charge = payment["charge"]
        close = payload.get("close")
        if close not in (None, "lost", "won"):
            raise BadRequest("close: lost, won or absent")
        dispute = {
            "id": f"dp_{uuid.uuid4().hex[:24]}",
            "object": "dispute",
            "amount": charge["amount"],
            "charge": charge["id"],
            "payment_intent": charge["payment_intent"],
            "currency": charge["currency"],
            "reason": payload.get("reason") or "fraudulent",
            "status": "needs_response",
            "created": int(time.time()),
        }
        events = [self._stripe_event("charge.dispute.created", dict(dispute))]
        if close:
            events.append(self._stripe_event("charge.dispute.closed", {**dispute, "status": close}))
        self.send("stripe", [(e["id"], e["type"], e) for e in events], _contact(charge))
        return 201, {"id": dispute["id"], "events": [e["id"] for e in events]}

    # ------------------------------------------------------------ HelloAsso-style

    def _payment_body(self, state: dict[str, Any]) -> dict[str, Any]:
        return {
            "order": state["order"],
            "payer": state["payer"],
            "items": [
                {
                    "shareAmount": state["amount"],
                    "shareItemAmount": state["amount"],
                    "id": state["order"]["id"],
                    "amount": state["amount"],
                    "type": "Payment",
                    "state": "Processed",
                    "name": "Tribune",
                }
            ],
            "cashOutState": "Transfered",
            "id": state["id"],
            "amount": state["amount"],
            "date": state["date"],
            "paymentMeans": state["means"],
            "installmentNumber": 1,
            "state": state["state"],
            "meta": {"createdAt": state["date"], "updatedAt": datetime.now(UTC).isoformat()},
            "refundOperations": state["refunds"],
        }

    def helloasso_checkout(self, payload: dict[str, Any]) -> tuple[int, Any]:
        amount = _amount(payload)
        metadata = tribune_metadata(payload)
        means = str(payload.get("means") or "Card")
        order_id, payment_id, intent_id = next(self._ids), next(self._ids), next(self._ids)
        date = datetime.now(UTC).astimezone().isoformat()
        order = {
            "id": order_id,
            "date": date,
            "formSlug": "default",
            "formType": "Checkout",
            "organizationName": "Tribune",
            "organizationSlug": "tribune",
            "organizationType": "Association1901",
            "organizationIsUnderColucheLaw": False,
            "formName": "Checkout",
            "meta": {"createdAt": date, "updatedAt": date},
            "isAnonymous": False,
            "isAmountHidden": False,
        }
        state = {
            "id": payment_id,
            "amount": amount,
            "date": date,
            "means": means,
            "state": "Authorized",
            "refunds": [],
            "order": order,
            "payer": {"email": "payer@example.org", "country": "FRA"},
            "metadata": metadata,
            "checkout_intent_id": intent_id,
        }
        self.helloasso[str(payment_id)] = state
        payment = self._payment_body(state)
        order_body = {
            **{k: v for k, v in order.items()},
            "payer": state["payer"],
            "items": payment["items"],
            "payments": [{k: v for k, v in payment.items() if k not in ("order", "payer")}],
            "amount": {"total": amount, "vat": 0, "discount": 0},
            "checkoutIntentId": intent_id,
        }
        self.send(
            "helloasso",
            [
                (
                    f"ha-{uuid.uuid4().hex[:16]}",
                    "Order",
                    self._helloasso("Order", order_body, state),
                ),
                (
                    f"ha-{uuid.uuid4().hex[:16]}",
                    "Payment.Authorized",
                    self._helloasso("Payment", payment, state),
                ),
            ],
            metadata.get("tribune_contact_id"),
        )
        answer = {"checkout_intent_id": intent_id, "order_id": order_id, "payment_id": payment_id}
        return 201, answer

    def _helloasso(self, event_type: str, data: dict[str, Any], state: dict[str, Any]) -> dict:
        return {"data": data, "eventType": event_type, "metadata": state["metadata"]}

    def _helloasso_payment(self, payload: dict[str, Any]) -> dict[str, Any]:
        payment_id = str(payload.get("payment_id"))
        if payment_id not in self.helloasso:
            raise BadRequest(f"payment_id: no such payment {payment_id!r}")
        return self.helloasso[payment_id]

    def _helloasso_change(self, payload: dict[str, Any], new_state: str) -> tuple[int, Any]:
        state = self._helloasso_payment(payload)
        if state["state"] != "Authorized":
            return 409, {"error": f"the payment is {state['state']}"}
        state["state"] = new_state
        if new_state == "Refunded":
            operation = {"id": next(self._ids), "amount": state["amount"], "status": "Processed"}
            state["refunds"].append(operation)
        body = self._helloasso("Payment", self._payment_body(state), state)
        notification_id = f"ha-{uuid.uuid4().hex[:16]}"
        contact = state["metadata"].get("tribune_contact_id")
        self.send("helloasso", [(notification_id, f"Payment.{new_state}", body)], contact)
        return 201, {"payment_id": state["id"], "state": new_state, "notification": notification_id}

    def helloasso_refund(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return self._helloasso_change(payload, "Refunded")

    def helloasso_dispute(self, payload: dict[str, Any]) -> tuple[int, Any]:
        return self._helloasso_change(payload, "Contested")

    # ------------------------------------------------------------ delivery

    def send(
        self, provider: str, items: list[tuple[str, str, dict[str, Any]]], contact: Any
    ) -> None:
        """Record the notifications, then deliver them in order in the background."""
        url = (
            self.config.stripe_webhook_url
            if provider == "stripe"
            else self.config.helloasso_webhook_url
        )
        records = []
        for notification_id, kind, body in items:
            record = Notification(
                notification_id,
                provider,
                kind,
                url,
                body,
                contact if isinstance(contact, str) else None,
            )
            if url is None:
                record.state = "not sent: no webhook URL"
            self.notifications.append(record)
            records.append(record)
        if url is not None:
            task = asyncio.get_running_loop().create_task(self.deliver_all(records))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def deliver_all(self, records: list[Notification]) -> None:
        for record in records:
            await self.deliver(record)

    async def deliver(self, record: Notification) -> None:
        """Until Tribune answers 2xx, with exponential backoff (and jitter), as providers
        retry; given up after ``max_attempts``."""
        for attempt in range(self.config.max_attempts):
            status, _ = await self.attempt(record)
            if isinstance(status, int) and 200 <= status < 300:
                record.state = "delivered"
                return
            delay = min(self.config.retry_base_ms * 2**attempt, self.config.retry_max_ms)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2) / 1000)
        record.state = "failed"

    async def attempt(self, record: Notification) -> tuple[int | str, Any]:
        """One POST of the notification, signed now."""
        if record.url is None:
            return "no webhook URL", None
        body = json.dumps(record.body).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"fake-{record.provider}"}
        if record.provider == "stripe" and self.config.stripe_secret:
            headers["Stripe-Signature"] = stripe_signature(self.config.stripe_secret, body)
        if record.provider == "helloasso" and self.config.helloasso_key:
            headers["x-ha-signature"] = helloasso_signature(self.config.helloasso_key, body)
        status, answer = await fake_http.post(
            record.url, body, headers, self.config.callback_timeout
        )
        record.attempts.append({"at": datetime.now(UTC).isoformat(), "status": status})
        record.answer = answer
        log.info("%s %s %s -> %s", record.provider, record.type, record.id, status)
        return status, answer

    async def drain(self) -> None:
        """Wait for the deliveries still running (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------ HTTP

    async def on_request(self, req: Request) -> Response:
        status, payload = await self.route(req.method, req.path, req.query, req.json())
        return status, payload, {}


def _contact(charge: dict[str, Any]) -> str | None:
    value = charge.get("metadata", {}).get("tribune_contact_id")
    return value if isinstance(value, str) else None


def _wanted(n: Notification, query: dict[str, list[str]]) -> bool:
    for key, attr in (("provider", n.provider), ("type", n.type), ("contact_id", n.contact_id)):
        if key in query and query[key][0] != attr:
            return False
    return True


async def serve(
    config: Config,
    host: str = "127.0.0.1",
    port: int = 8027,
    stop: asyncio.Event | None = None,
    started: asyncio.Future[FakePayments] | None = None,
) -> None:
    """Run until ``stop`` is set (SIGTERM/SIGINT when run as a program)."""
    fake = FakePayments(config)
    log.info("fake payment providers on http://%s:%s", host, port)
    await fake_http.serve_until(
        fake.on_request,
        fake._tasks,
        host,
        port,
        stop or asyncio.Event(),
        listening=(lambda: started.set_result(fake)) if started is not None else None,
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(
        prog="python -m tribune_devstack.fake_payments", description=__doc__
    )
    p.add_argument("--host", default=env.get("TRIBUNE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env.get("TRIBUNE_PAYMENTS_PORT", "8027")))
    p.add_argument("--stripe-webhook-url", default=env.get("FAKE_PAYMENTS_STRIPE_URL") or None)
    p.add_argument(
        "--helloasso-webhook-url", default=env.get("FAKE_PAYMENTS_HELLOASSO_URL") or None
    )
    p.add_argument("--max-attempts", type=int, default=10, help="deliveries before giving up")
    p.add_argument("--retry-base-ms", type=int, default=200, help="first retry delay (doubled)")
    p.add_argument("--retry-max-ms", type=int, default=5000, help="longest retry delay")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = Config(
        stripe_webhook_url=args.stripe_webhook_url,
        helloasso_webhook_url=args.helloasso_webhook_url,
        stripe_secret=os.environ.get("FAKE_PAYMENTS_STRIPE_SECRET") or None,
        helloasso_key=os.environ.get("FAKE_PAYMENTS_HELLOASSO_KEY") or None,
        max_attempts=args.max_attempts,
        retry_base_ms=args.retry_base_ms,
        retry_max_ms=args.retry_max_ms,
    )

    fake_http.run_until_signalled(lambda stop: serve(config, args.host, args.port, stop))


if __name__ == "__main__":
    main()
