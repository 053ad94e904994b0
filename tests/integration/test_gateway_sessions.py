"""Gateway sessions over the real store: refresh tokens rotate, work once, are revoked by
logout, deactivation and password changes, and a replayed one ends its session."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from gateway.main import create_app
from gateway.sessions.store import REFRESH_TOKENS, SESSIONS
from gateway.settings import GatewaySettings
from support import PASSWORD, add_user, audit_entries, read_collection
from support import gateway_tokens as login

pytestmark = pytest.mark.integration


def refresh(client: TestClient, token: str):
    return client.post(
        "/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": token}
    )


def auth(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def new_user(client: TestClient, admin: dict, email: str) -> str:
    return add_user(client, auth(admin), email)["id"]


def test_login_opens_a_session_whose_refresh_token_rotates_and_is_stored_hashed(gateway_api):
    client, settings = gateway_api
    first = login(client)
    assert first["refresh_token"].startswith("trt_")
    assert first["refresh_expires_in"] == settings.refresh_token_ttl_seconds
    r = refresh(client, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert client.get("/api/v1/me", headers=auth(second)).status_code == 200
    # the store never holds a token itself, only its hash
    stored = read_collection(settings, REFRESH_TOKENS)
    assert len(stored) == 2
    for doc in stored:
        assert doc["_id"] not in (first["refresh_token"], second["refresh_token"])
        assert len(doc["_id"]) == 64
    (session,) = read_collection(settings, SESSIONS)
    assert session["refreshes"] == 1 and session["revoked_at"] is None


def test_a_retired_refresh_token_presented_again_revokes_the_whole_session_and_is_audited(
    gateway_api,
):
    client, settings = gateway_api
    first = login(client)
    second = refresh(client, first["refresh_token"]).json()
    replay = refresh(client, first["refresh_token"])  # the thief (or the owner) replays
    assert replay.status_code == 401
    assert replay.json()["detail"][0]["field"] == "refresh_token"
    # the legitimate holder's newer token and access token die with the session
    assert refresh(client, second["refresh_token"]).status_code == 401
    assert client.get("/api/v1/me", headers=auth(second)).status_code == 401
    (session,) = read_collection(settings, SESSIONS)
    assert session["revoked_reason"] == "refresh_token_reused"
    entries = audit_entries(settings, {"changes.session": "refresh_token_reused"})
    assert len(entries) == 1
    assert entries[0]["status"] == 401
    assert entries[0]["target_user_id"] == session["user_id"]
    # another session of the same user is untouched
    other = login(client)
    assert refresh(client, other["refresh_token"]).status_code == 200


def test_unknown_malformed_or_missing_refresh_tokens(gateway_api):
    client, _ = gateway_api
    assert refresh(client, "trt_" + "x" * 43).status_code == 401
    assert refresh(client, "not-a-refresh-token").status_code == 401
    r = client.post("/api/v1/auth/token", data={"grant_type": "refresh_token"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "refresh_token"
    r = client.post("/api/v1/auth/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 422


def test_logout_ends_the_session_its_access_and_refresh_tokens(gateway_api):
    client, settings = gateway_api
    tokens = login(client)
    kept = login(client)  # another device
    r = client.post("/api/v1/auth/logout", headers=auth(tokens))
    assert r.status_code == 200, r.text
    assert r.json() == {"revoked_sessions": 1}
    assert client.get("/api/v1/me", headers=auth(tokens)).status_code == 401
    assert refresh(client, tokens["refresh_token"]).status_code == 401
    assert client.get("/api/v1/me", headers=auth(kept)).status_code == 200
    assert refresh(client, kept["refresh_token"]).status_code == 200
    assert client.post("/api/v1/auth/logout").status_code == 401
    # a device logged out by its refresh token, from another session of the same user
    phone = login(client)
    r = client.post(
        "/api/v1/auth/logout", json={"refresh_token": phone["refresh_token"]}, headers=auth(kept)
    )
    assert r.json() == {"revoked_sessions": 1}
    assert refresh(client, phone["refresh_token"]).status_code == 401
    assert client.get("/api/v1/me", headers=auth(kept)).status_code == 200
    # never somebody else's session
    r = client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": "trt_" + "y" * 43},
        headers=auth(kept),
    )
    assert r.status_code == 401
    assert audit_entries(settings, {"changes.session": "logout"})


def test_deactivating_a_user_ends_their_sessions_and_reactivation_does_not_revive_them(gateway_api):
    client, _ = gateway_api
    admin = login(client)
    user_id = new_user(client, admin, "volunteer@tribune.local")
    theirs = login(client, "volunteer@tribune.local", PASSWORD)
    r = client.patch(f"/api/v1/users/{user_id}", json={"active": False}, headers=auth(admin))
    assert r.status_code == 200, r.text
    assert refresh(client, theirs["refresh_token"]).status_code == 401
    r = client.patch(f"/api/v1/users/{user_id}", json={"active": True}, headers=auth(admin))
    assert r.status_code == 200, r.text
    assert refresh(client, theirs["refresh_token"]).status_code == 401
    assert client.get("/api/v1/me", headers=auth(theirs)).status_code == 401
    assert login(client, "volunteer@tribune.local", PASSWORD)["refresh_token"]


def test_a_deactivated_user_cannot_log_in_or_refresh(gateway_api):
    client, _ = gateway_api
    admin = login(client)
    user_id = new_user(client, admin, "gone@tribune.local")
    theirs = login(client, "gone@tribune.local", PASSWORD)
    client.patch(f"/api/v1/users/{user_id}", json={"active": False}, headers=auth(admin))
    r = client.post(
        "/api/v1/auth/token", data={"username": "gone@tribune.local", "password": PASSWORD}
    )
    assert r.status_code == 401
    assert refresh(client, theirs["refresh_token"]).status_code == 401


def test_a_password_reset_ends_the_users_sessions(gateway_api):
    client, _ = gateway_api
    admin = login(client)
    user_id = new_user(client, admin, "reset@tribune.local")
    theirs = login(client, "reset@tribune.local", PASSWORD)
    r = client.post(
        f"/api/v1/users/{user_id}/password",
        json={"new_password": "another-long-password"},
        headers=auth(admin),
    )
    assert r.status_code == 200, r.text
    assert refresh(client, theirs["refresh_token"]).status_code == 401
    assert client.get("/api/v1/me", headers=auth(theirs)).status_code == 401


def test_changing_ones_own_password_ends_every_other_session_and_opens_a_new_one(gateway_api):
    client, _ = gateway_api
    admin = login(client)
    user_id = new_user(client, admin, "mine@tribune.local")
    laptop = login(client, "mine@tribune.local", PASSWORD)
    phone = login(client, "mine@tribune.local", PASSWORD)
    r = client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "my-new-long-password"},
        headers=auth(laptop),
    )
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert fresh["refresh_token"]
    assert refresh(client, phone["refresh_token"]).status_code == 401
    assert refresh(client, laptop["refresh_token"]).status_code == 401
    assert client.get("/api/v1/me", headers=auth(fresh)).json()["id"] == user_id
    assert refresh(client, fresh["refresh_token"]).status_code == 200


def test_a_session_ended_on_another_replica_stops_its_access_tokens_within_the_cache_time(
    gateway_env, monkeypatch
):
    monkeypatch.setenv("GATEWAY_USER_CACHE_SECONDS", "0")
    with (
        TestClient(create_app(GatewaySettings())) as one,
        TestClient(create_app(GatewaySettings())) as two,
    ):
        tokens = login(one)
        assert two.get("/api/v1/me", headers=auth(tokens)).status_code == 200
        assert one.post("/api/v1/auth/logout", headers=auth(tokens)).status_code == 200
        assert two.get("/api/v1/me", headers=auth(tokens)).status_code == 401
        assert refresh(two, tokens["refresh_token"]).status_code == 401
