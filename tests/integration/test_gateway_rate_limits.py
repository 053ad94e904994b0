"""Rate limits over the real store (per user, per API key, shared by two replicas), and
the security headers and CORS of every answer."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from gateway.main import create_app
from gateway.rate_limits.store import RATE_LIMITS
from gateway.settings import GatewaySettings
from support import ADMIN_PASSWORD, bearer, read_collection

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_env(gateway_env, monkeypatch):
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_USER_REQUESTS", "6")
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_API_KEY_REQUESTS", "3")
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_WINDOW_SECONDS", "3600")
    monkeypatch.setenv("GATEWAY_RATE_LIMIT_SYNC_SHARE", "0.01")  # a sync every request
    monkeypatch.setenv("GATEWAY_CORS_ALLOWED_ORIGINS", "https://app.example.org")
    monkeypatch.setenv("GATEWAY_HSTS_SECONDS", "31536000")
    return gateway_env


@pytest.fixture
def api(gateway_api) -> TestClient:
    client, _ = gateway_api
    return client


def settled(client: TestClient) -> None:
    """Waits until the replica's counts reached the store (syncs run in the background)."""
    limiter = client.app.state.rate_limiter
    deadline = time.monotonic() + 10
    while any(c.syncing for c in limiter.counters.values()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_user_past_the_limit_gets_429_with_retry_after_on_every_replica(gateway_env):
    with (
        TestClient(create_app(GatewaySettings())) as one,
        TestClient(create_app(GatewaySettings())) as two,
    ):
        headers = bearer(one)
        statuses = []
        for replica in (one, two) * 5:
            statuses.append(replica.get("/api/v1/me", headers=headers).status_code)
            settled(replica)
        assert statuses.count(200) in (6, 7)  # the limit, give or take one replica's budget
        assert set(statuses) == {200, 429}
        refused = two.get("/api/v1/me", headers=headers)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
        assert one.get("/api/v1/me", headers=headers).status_code == 429

    docs = read_collection(GatewaySettings(), RATE_LIMITS)
    assert len(docs) == 1 and docs[0]["count"] >= 6 and docs[0]["expires_at"]


def test_an_api_key_has_its_own_limit(api):
    admin = bearer(api)
    r = api.post("/api/v1/api-keys", json={"name": "sync", "role": "viewer"}, headers=admin)
    key = {"X-API-Key": r.json()["secret"]}
    codes = []
    for _ in range(5):
        codes.append(api.get("/api/v1/people/c1", headers=key).status_code)
        settled(api)
    assert codes.count(429) == 2 and 429 not in codes[:3]
    # the administrator's own budget is not the key's
    assert api.get("/api/v1/me", headers=admin).status_code == 200


def test_every_answer_carries_the_security_headers(api):
    for answer in (
        api.get("/health"),
        api.get("/api/v1/me"),  # 401
        api.get("/api/v1/../openapi.json"),  # refused at the door
    ):
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert (
            answer.headers["Content-Security-Policy"]
            == "default-src 'none'; frame-ancestors 'none'"
        )
        assert answer.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    docs = api.get("/docs")  # an HTML page loading its scripts: not the API's policy
    assert docs.status_code == 200 and "default-src 'none'" not in docs.headers.get(
        "Content-Security-Policy", ""
    )


def test_cors_answers_the_allowed_origins_only_and_not_the_public_routes(api):
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    ok = api.options("/api/v1/contacts", headers={"Origin": "https://app.example.org", **preflight})
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
    assert "authorization" in ok.headers["Access-Control-Allow-Headers"].lower()
    other = api.options("/api/v1/contacts", headers={"Origin": "https://evil.example", **preflight})
    assert "Access-Control-Allow-Origin" not in other.headers
    read = api.get("/api/v1/me", headers={"Origin": "https://app.example.org"})
    assert read.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
    assert "Retry-After" in read.headers["Access-Control-Expose-Headers"]
    public = api.options(
        "/api/v1/public/forms/f1", headers={"Origin": "https://app.example.org", **preflight}
    )
    assert "Access-Control-Allow-Origin" not in public.headers  # contacts answers those


def test_cors_is_off_by_default_and_a_wildcard_is_refused(isolated_env, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_PASSWORD", ADMIN_PASSWORD)
    with TestClient(create_app(GatewaySettings())) as client:
        r = client.get("/api/v1/me", headers={"Origin": "https://app.example.org"})
        assert "Access-Control-Allow-Origin" not in r.headers
        assert "Strict-Transport-Security" not in r.headers
    monkeypatch.setenv("GATEWAY_CORS_ALLOWED_ORIGINS", "*")
    with pytest.raises(ValueError):
        GatewaySettings()
