"""The walking-skeleton flow through the gateway, refusals included."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import support
from support import eventually
from tribune_shared.webhooks import signature_headers

pytestmark = pytest.mark.e2e

SERVICES = ("gateway", "contacts", "consent", "memberships", "messaging")


def new_contact(user, **over) -> dict:
    tag = uuid.uuid4().hex[:8]
    body = {
        "given_name": "Marianne",
        "family_name": f"Dupont-{tag}",
        "email": f"Marianne.{tag}@Example.FR",
        "phone": f"06 12 {int(tag[:4], 16) % 100:02d} {int(tag[4:], 16) % 100:02d} 78",
        "origin": {"kind": "web_form", "detail": "petition climat"},
        **over,
    }
    r = user("POST", "/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def send_mail(user, contact_id: str, subject: str) -> httpx.Response:
    return user(
        "POST",
        "/api/v1/messages",
        json={
            "contact_id": contact_id,
            "channel": "email",
            "purpose": "news",
            "subject": subject,
            "text": "Réunion publique jeudi à 19h.",
        },
    )


def reachable(user, contact_id: str) -> dict:
    r = user("GET", f"/api/v1/messages/reachability/{contact_id}", params={"purpose": "news"})
    return r.json() if r.status_code == 200 else {}


def wait_reachable(user, contact_id: str, expected: bool) -> dict:
    """Wait until messaging's own view (built from consent events) says ``expected``."""
    return eventually(lambda: reachable(user, contact_id), lambda v: v.get("reachable") is expected)


def mails_to(stack, address: str) -> list[dict]:
    return support.mails_to(stack.smtp_http_url, address)


def ensure_consent_text(user, version: str = "v1") -> None:
    """A grant's proof refers to a stored consent text (its version and SHA-256)."""
    text = {"version": version, "title": "Actualités", "body": "J'accepte de recevoir les news."}
    r = user("POST", "/api/v1/consents/texts", json=text)
    assert r.status_code in (201, 409), r.text


def test_every_process_is_alive_ready_and_exposes_metrics(stack):
    for svc in SERVICES:
        for base in (stack.url(svc), stack.worker_url(svc)):
            assert httpx.get(f"{base}/health").status_code == 200
            ready = httpx.get(f"{base}/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"store": True, "kafka": True}
            assert "tribune_" in httpx.get(f"{base}/metrics").text


def test_openapi_docs_are_served_by_the_gateway(http):
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    assert "/api/v1/auth/token" in paths
    assert any(p.startswith("/api/v1/contacts") for p in paths)


def test_contact_created_is_normalised_and_scoped(federations):
    paris, lyon = federations["Paris"], federations["Lyon"]
    contact = new_contact(paris.user)
    assert contact["email"] == contact["email"].split("@")[0] + "@example.fr"
    assert contact["phone"].startswith("+336")
    assert contact["origin"]["kind"] == "web_form"

    assert paris.user("GET", f"/api/v1/contacts/{contact['id']}").status_code == 200
    # another federation's contact is 404, in reads and in the person view
    assert lyon.user("GET", f"/api/v1/contacts/{contact['id']}").status_code == 404
    assert lyon.user("GET", f"/api/v1/people/{contact['id']}").status_code == 404
    listed = lyon.user("GET", "/api/v1/contacts").json()["items"]
    assert contact["id"] not in {c["id"] for c in listed}


def test_mail_reaches_the_sink_only_with_consent(stack, federations):
    paris = federations["Paris"]
    contact = new_contact(paris.user)
    address = contact["email"]

    # no consent: refused with a reason, nothing sent
    view = wait_reachable(paris.user, contact["id"], False)
    assert "consent" in view["reason"]
    refused = send_mail(paris.user, contact["id"], "Sans consentement")
    assert refused.status_code == 409, refused.text
    assert "consent" in json.dumps(refused.json()).lower()
    assert mails_to(stack, address) == []

    ensure_consent_text(paris.user)
    grant = {"channel": "email", "purpose": "news", "source": "web_form", "text_version": "v1"}
    eventually(
        lambda: paris.user("POST", f"/api/v1/consents/{contact['id']}/grant", json=grant),
        lambda r: r.status_code == 200,
    )
    wait_reachable(paris.user, contact["id"], True)
    sent = send_mail(paris.user, contact["id"], "Bienvenue")
    assert sent.status_code == 201, sent.text
    assert sent.json()["status"] == "sent"
    [mail] = eventually(lambda: mails_to(stack, address))
    assert mail["subject"] == "Bienvenue"
    headers = {k.lower(): v for k, v in mail["headers"]}
    assert "list-unsubscribe" in headers
    assert headers["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"

    # revoked: refused again, even though it was granted before
    revoked = paris.user("POST", f"/api/v1/consents/{contact['id']}/revoke", json=grant)
    assert revoked.status_code == 200
    view = wait_reachable(paris.user, contact["id"], False)
    assert "revoked" in view["reason"]
    again = send_mail(paris.user, contact["id"], "Après retrait")
    assert again.status_code == 409
    assert [m["subject"] for m in mails_to(stack, address)] == ["Bienvenue"]


def signed_webhook(http, stack, payload: dict, secret: str | None = None) -> httpx.Response:
    body = json.dumps(payload).encode()
    secret = secret or stack.env["MEMBERSHIPS_WEBHOOK_SECRET"]
    headers = {"Content-Type": "application/json", **signature_headers(secret, body)}
    return http.post("/api/v1/webhooks/payments", content=body, headers=headers)


def test_payment_webhook_is_recorded_once_and_activates_the_membership(stack, http, federations):
    paris = federations["Paris"]
    contact = new_contact(paris.user)
    payment = {
        "provider": "helloasso",
        "provider_payment_id": f"pay-{uuid.uuid4().hex}",
        "contact_id": contact["id"],
        "amount_cents": 3000,
        "currency": "EUR",
        "method": "card",
        "purpose": "dues",
        "paid_at": datetime.now(UTC).isoformat(),
    }
    # a forged signature is refused and records nothing
    forged = signed_webhook(http, stack, payment, secret="not-the-webhook-secret-" * 2)
    assert forged.status_code == 401

    first = eventually(lambda: signed_webhook(http, stack, payment), lambda r: r.status_code == 201)
    # the provider retries: same payment, recorded once
    for _ in range(2):
        again = signed_webhook(http, stack, payment)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "duplicate"
    payments = paris.user("GET", "/api/v1/payments", params={"contact_id": contact["id"]})
    assert payments.status_code == 200
    assert len(payments.json()["items"]) == 1
    assert payments.json()["items"][0]["payment_id"] == first.json()["payment_id"]
    memberships = paris.user("GET", "/api/v1/memberships", params={"contact_id": contact["id"]})
    [membership] = memberships.json()["items"]
    assert membership["status"] == "active"
    assert membership["in_good_standing"] is True

    # malformed webhook body (validly signed): 422 with the field
    bad = signed_webhook(http, stack, {**payment, "amount_cents": -5, "provider_payment_id": "x"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "amount_cents"


def test_person_view_aggregates_every_service(stack, http, federations):
    paris = federations["Paris"]
    contact = new_contact(paris.user)
    ensure_consent_text(paris.user)
    grant = {"channel": "email", "purpose": "news", "source": "event", "text_version": "v1"}
    eventually(
        lambda: paris.user("POST", f"/api/v1/consents/{contact['id']}/grant", json=grant),
        lambda r: r.status_code == 200,
    )
    wait_reachable(paris.user, contact["id"], True)
    assert send_mail(paris.user, contact["id"], "Vue personne").status_code == 201
    view = paris.user("GET", f"/api/v1/people/{contact['id']}")
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["contact"]["id"] == contact["id"]
    assert body["consents"]["consents"][0]["status"] == "granted"
    assert len(body["messages"]["items"]) == 1
    assert body["memberships"]["items"] == []
    assert body["unavailable"] == []


def test_correlation_id_travels_from_http_into_the_consumers_logs(stack, federations):
    paris = federations["Paris"]
    correlation = f"e2e-{uuid.uuid4().hex}"
    contact = None
    r = paris.user(
        "POST",
        "/api/v1/contacts",
        json={
            "family_name": "Corrélation",
            "email": f"corr.{uuid.uuid4().hex[:8]}@example.fr",
            "origin": {"kind": "event"},
        },
        headers={"X-Correlation-ID": correlation},
    )
    assert r.status_code == 201
    assert r.headers["X-Correlation-ID"] == correlation
    contact = r.json()

    def consumer_lines() -> list[dict]:
        lines = stack.log_path("consent-worker").read_text().splitlines()
        return [json.loads(x) for x in lines if correlation in x and "events.handled" in x]

    # one log line per consumer batch, naming the correlations it carried
    [line] = eventually(consumer_lines, timeout=20)
    assert correlation in line["correlation_ids"]
    assert line["topic"].endswith("contact-created")
    assert contact["id"]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "POST",
            "/api/v1/contacts",
            {"email": "not-an-email", "origin": {"kind": "event"}},
            "email",
        ),
        (
            "POST",
            "/api/v1/contacts",
            {"family_name": "X", "origin": {"kind": "nope"}},
            "origin.kind",
        ),
        ("POST", "/api/v1/contacts", {"family_name": "X"}, "origin"),
        ("POST", "/api/v1/federations", {"name": ""}, "name"),
        ("POST", "/api/v1/users", {"email": "x@y.fr", "password": "p"}, "role"),
        ("POST", "/api/v1/messages", {"contact_id": "c", "channel": "email"}, "purpose"),
        (
            "POST",
            "/api/v1/consents/abc/grant",
            {"channel": "fax", "purpose": "news", "source": "s"},
            "channel",
        ),
    ],
)
def test_malformed_input_gets_422_with_field_and_reason(admin, method, path, body, field):
    r = admin(method, path, json=body)
    assert r.status_code == 422, r.text
    fields = {d["field"]: d["reason"] for d in r.json()["detail"]}
    assert fields.get(field)


def test_login_refusals(http):
    r = http.post("/api/v1/auth/token", data={"username": "admin@tribune.local", "password": "no"})
    assert r.status_code == 401
    assert http.get("/api/v1/contacts").status_code == 401
    assert (
        http.get("/api/v1/contacts", headers={"Authorization": "Bearer forged"}).status_code == 401
    )
