"""API keys over the real store and a real upstream: created by an administrator (the
secret shown once, stored hashed), used as X-API-Key or a Bearer token, forwarded as the
signed identity they act as, limited to their routes, revoked, last use recorded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from gateway.api_keys.store import API_KEYS
from support import PASSWORD, add_federation, add_user, audit_entries, bearer, read_collection
from tribune_shared.auth import verify_identity
from tribune_shared.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_env(gateway_env, monkeypatch, gateway_upstream):
    """Every service the gateway forwards to is the echo server."""
    for service in ("CONTACTS", "CONSENT", "MEMBERSHIPS", "MESSAGING"):
        monkeypatch.setenv(f"GATEWAY_{service}_URL", gateway_upstream)
    return gateway_env


@pytest.fixture
def paris(gateway_api):
    client, settings = gateway_api
    national = bearer(client)
    paris = add_federation(client, national, "Paris")
    add_user(client, national, "boss@paris.test", "admin", paris["id"])
    return client, settings, national, bearer(client, "boss@paris.test", PASSWORD), paris


def make_key(client: TestClient, admin, **body):
    r = client.post(
        "/api/v1/api-keys", json={"name": "CRM sync", "role": "secretary", **body}, headers=admin
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_a_key_is_shown_once_stored_hashed_and_forwarded_as_its_identity(paris):
    client, settings, _, admin, fed = paris
    made = make_key(client, admin)
    secret = made["secret"]
    assert secret.startswith(f"trk_{made['prefix']}_")
    assert made["federation_id"] == fed["id"] and made["routes"] == []
    (stored,) = read_collection(settings, API_KEYS)
    assert secret not in str(stored) and len(stored["hash"]) == 64
    listed = client.get("/api/v1/api-keys", headers=admin).json()["items"]
    assert [k["id"] for k in listed] == [made["id"]] and "secret" not in listed[0]
    for headers in ({"X-API-Key": secret}, {"Authorization": f"Bearer {secret}"}):
        r = client.get("/api/v1/contacts", headers=headers)
        assert r.status_code == 200, r.text
        sent = r.json()
        assert sent["authorization"] is None and sent["api_key"] is None  # never passed on
        identity = verify_identity(sent["identity"], settings.identity_secret)
        assert identity.role.value == "secretary"
        assert identity.federation_id == fed["id"] and identity.federation_path == fed["path"]
        assert identity.user_id == f"apikey-{made['id']}"
    # its calls are in the access audit under the key
    assert audit_entries(settings, {"user_id": f"apikey-{made['id']}"})


def test_a_key_reaches_its_routes_only_and_never_the_gateways_administration(paris):
    client, _, _, admin, _ = paris
    key = {"X-API-Key": make_key(client, admin, routes=["/api/v1/contacts"])["secret"]}
    assert client.get("/api/v1/contacts/c1", headers=key).status_code == 200
    assert client.get("/api/v1/payments", headers=key).status_code == 403
    assert client.get("/api/v1/contactsX", headers=key).status_code in (403, 404)
    wide = {"X-API-Key": make_key(client, admin, role="admin")["secret"]}
    assert client.get("/api/v1/payments", headers=wide).status_code == 200
    for method, path in (
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/api-keys"),
        ("GET", "/api/v1/api-keys"),
        ("GET", "/api/v1/federations"),
    ):
        assert client.request(method, path, headers=wide).status_code == 403, path


def test_a_key_is_made_within_the_callers_subtree_and_role(paris):
    client, _, national, admin, _ = paris
    r = client.post("/api/v1/api-keys", json={"name": "x", "role": "dpo"}, headers=national)
    assert r.status_code == 403
    me = client.get("/api/v1/me", headers=national).json()
    r = client.post(
        "/api/v1/api-keys",
        json={"name": "x", "role": "viewer", "federation_id": me["federation_id"]},
        headers=admin,
    )
    assert r.status_code == 404 and r.json()["detail"][0]["field"] == "federation_id"
    r = client.post(
        "/api/v1/api-keys",
        json={"name": "x", "role": "viewer", "routes": ["/api/v1/webhooks/payments"]},
        headers=admin,
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "routes"
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = client.post(
        "/api/v1/api-keys", json={"name": "x", "role": "viewer", "expires_at": past}, headers=admin
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "expires_at"
    secretary_key = make_key(client, admin)
    r = client.post(
        "/api/v1/api-keys",
        json={"name": "x", "role": "viewer"},
        headers={"X-API-Key": secretary_key["secret"]},
    )
    assert r.status_code == 403
    # the national administrator sees the Paris key; Paris's administrator not a national one
    national_key = make_key(client, national)
    ids = {k["id"] for k in client.get("/api/v1/api-keys", headers=admin).json()["items"]}
    assert secretary_key["id"] in ids and national_key["id"] not in ids
    assert (
        client.post(f"/api/v1/api-keys/{national_key['id']}/revoke", headers=admin).status_code
        == 404
    )


def test_a_revoked_or_unknown_key_is_refused_and_the_revocation_audited(paris):
    client, settings, _, admin, _ = paris
    made = make_key(client, admin)
    key = {"X-API-Key": made["secret"]}
    assert client.get("/api/v1/contacts", headers=key).status_code == 200
    r = client.post(f"/api/v1/api-keys/{made['id']}/revoke", headers=admin)
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert client.get("/api/v1/contacts", headers=key).status_code == 401
    assert (
        client.get("/api/v1/contacts", headers={"X-API-Key": made["secret"] + "x"}).status_code
        == 401
    )
    assert client.get("/api/v1/contacts", headers={"X-API-Key": "trk_nothing"}).status_code == 401
    assert audit_entries(settings, {"changes.api_key": made["id"], "changes.action": "revoked"})
    assert audit_entries(settings, {"changes.action": "created", "status": 201})


def test_last_used_is_recorded_without_a_write_per_request(paris, monkeypatch):
    client, _, _, admin, _ = paris
    app_keys = client.app.state.api_keys
    writes = []
    original = app_keys.data.mark_used

    async def counted(used):
        writes.append(dict(used))
        await original(used)

    monkeypatch.setattr(app_keys.data, "mark_used", counted)
    made = make_key(client, admin)
    assert made["last_used_at"] is None
    for _ in range(20):
        assert (
            client.get("/api/v1/contacts", headers={"X-API-Key": made["secret"]}).status_code == 200
        )
    assert len(writes) <= 1  # once per flush interval (60 s), not once per request
    (listed,) = [
        k
        for k in client.get("/api/v1/api-keys", headers=admin).json()["items"]
        if k["id"] == made["id"]
    ]
    assert listed["last_used_at"] is not None


def test_an_expired_key_is_refused(paris):
    client, settings, _, admin, _ = paris
    made = make_key(client, admin)

    async def expire():
        store = Store(settings)
        try:
            await store[API_KEYS].update_one(
                {"_id": made["id"]},
                {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
            )
        finally:
            await store.close()

    asyncio.run(expire())
    assert client.get("/api/v1/contacts", headers={"X-API-Key": made["secret"]}).status_code == 401
