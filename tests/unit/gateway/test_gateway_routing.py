"""Which service owns which path, and the settings that point at each service."""

from __future__ import annotations

import pytest
from gateway.routing import ROUTES, resolve, service_url
from gateway.settings import GatewaySettings


@pytest.mark.parametrize(
    ("path", "service", "public"),
    [
        ("/api/v1/contacts", "contacts", False),
        ("/api/v1/contacts/abc/merge", "contacts", False),
        ("/api/v1/consents/abc/grant", "consent", False),
        ("/api/v1/memberships", "memberships", False),
        ("/api/v1/payments/p1", "memberships", False),
        ("/api/v1/messages", "messaging", False),
        ("/api/v1/webhooks/payments", "memberships", True),
        ("/api/v1/webhooks/payments/stripe", "memberships", True),
        ("/api/v1/webhooks/sms", "consent", True),
        ("/api/v1/webhooks/sms-receipts/ovh", "messaging", True),
        ("/api/v1/webhooks/email-events", "messaging", True),
        ("/api/v1/webhooks/email-dsn", "messaging", True),
        ("/api/v1/public/consents/unsubscribe", "consent", True),
        ("/api/v1/public/consents/confirm", "consent", True),
        ("/api/v1/public/t/c/token", "messaging", True),
        ("/api/v1/public/t/o/token.gif", "messaging", True),
    ],
)
def test_paths_resolve_to_their_owner(path, service, public):
    route = resolve(path)
    assert route is not None
    assert (route.service, route.public) == (service, public)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/contactsx",
        "/api/v1/federations",
        "/api/v1/webhooks",
        "/contacts",
        "/api/v2/contacts",
    ],
)
def test_paths_no_service_owns_do_not_resolve(path):
    assert resolve(path) is None


def test_only_the_webhooks_the_consent_pages_and_the_public_forms_are_public():
    assert sorted(r.prefix for r in ROUTES if r.public) == [
        "/api/v1/public/consents",
        "/api/v1/public/forms",
        "/api/v1/public/t",
        "/api/v1/webhooks/email-dsn",
        "/api/v1/webhooks/email-events",
        "/api/v1/webhooks/helloasso",
        "/api/v1/webhooks/payments",
        "/api/v1/webhooks/sms",
        "/api/v1/webhooks/sms-receipts",
        "/api/v1/webhooks/stripe",
    ]
    # the webhooks take POST only; the consent pages are opened (GET) and answered (POST)
    assert {r.prefix: r.methods for r in ROUTES if r.public}["/api/v1/public/consents"] == (
        "GET",
        "POST",
    )
    # tracked links and the open pixel are only ever fetched
    assert {r.prefix: r.methods for r in ROUTES if r.public}["/api/v1/public/t"] == ("GET",)
    # a form's page and definition are read, submissions posted, and a party's site asks
    # the CORS preflight first
    assert {r.prefix: r.methods for r in ROUTES if r.public}["/api/v1/public/forms"] == (
        "GET",
        "POST",
        "OPTIONS",
    )


def test_service_urls_come_from_settings(monkeypatch):
    monkeypatch.setenv("GATEWAY_CONTACTS_URL", "http://contacts.internal:9000/")
    monkeypatch.setenv("GATEWAY_MEMBERSHIPS_URL", "http://members:9003")
    settings = GatewaySettings()
    assert service_url(settings, resolve("/api/v1/contacts/1").service) == (
        "http://contacts.internal:9000"
    )
    assert service_url(settings, resolve("/api/v1/payments").service) == "http://members:9003"
    assert service_url(settings, resolve("/api/v1/webhooks/payments").service) == (
        "http://members:9003"
    )
    assert service_url(settings, "consent") == "http://127.0.0.1:8102"
    assert service_url(settings, "messaging") == "http://127.0.0.1:8104"


def test_settings_defaults_and_secret_refusal(monkeypatch):
    for name in ("GATEWAY_ENVIRONMENT", "GATEWAY_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    # unset means production now (tests/unit/shared/test_settings.py): the published dev
    # secrets are accepted only in development
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")
    settings = GatewaySettings()
    assert (settings.http_port, settings.worker_port) == (8000, 8200)
    assert settings.root_federation_name == "National"
    assert settings.admin_email == "admin@tribune.local"
    monkeypatch.setenv("GATEWAY_ENVIRONMENT", "production")
    monkeypatch.setenv("GATEWAY_IDENTITY_SECRET", "a-strong-identity-secret-0123456789abcdef")
    with pytest.raises(ValueError, match="GATEWAY_JWT_SECRET"):
        GatewaySettings()
    monkeypatch.setenv("GATEWAY_JWT_SECRET", "a-strong-jwt-secret-0123456789abcdef")
    assert GatewaySettings().jwt_secret == "a-strong-jwt-secret-0123456789abcdef"


def test_a_short_admin_password_is_refused_and_empty_means_generate(monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_PASSWORD", "short")
    with pytest.raises(ValueError, match="GATEWAY_ADMIN_PASSWORD"):
        GatewaySettings()
    monkeypatch.setenv("GATEWAY_ADMIN_PASSWORD", "")
    assert GatewaySettings().admin_password is None
