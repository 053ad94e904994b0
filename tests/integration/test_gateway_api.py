"""Gateway over the real store: bootstrap, login, the federation tree, users, forwarding
to a real HTTP service with a signed identity, and the person view."""

from __future__ import annotations

import asyncio
import io
import re
import time
from concurrent.futures import ThreadPoolExecutor

import gateway.service as gateway_service_module
import pytest
from fastapi.testclient import TestClient
from gateway.main import create_app
from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from gateway.store import FEDERATIONS, LOGIN_ATTEMPTS, USERS
from pymongo.errors import PyMongoError
from support import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    add_user,
    audit_entries,
    bearer,
    free_port,
    read_collection,
)
from tribune_shared.auth import IDENTITY_HEADER, Role, verify_identity
from tribune_shared.consistency import HEADER as CONSISTENCY_HEADER
from tribune_shared.outbox import OUTBOX
from tribune_shared.store import Store

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- the gateway, its upstream


@pytest.fixture
def gateway_env(gateway_env, monkeypatch, gateway_upstream):
    """Contacts, consent and memberships are the echo server; messaging is down."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("GATEWAY_CONTACTS_URL", gateway_upstream)
    monkeypatch.setenv("GATEWAY_CONSENT_URL", gateway_upstream)
    monkeypatch.setenv("GATEWAY_MEMBERSHIPS_URL", gateway_upstream)
    monkeypatch.setenv("GATEWAY_MESSAGING_URL", dead)
    monkeypatch.setenv("GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECONDS", "2")
    return gateway_env


def login(client: TestClient, email: str, password: str):
    return client.post("/api/v1/auth/token", data={"username": email, "password": password})


def root_of(client: TestClient, headers) -> dict:
    (root,) = [f for f in client.get("/api/v1/federations", headers=headers).json()]
    return root


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_creates_root_and_admin_once_across_two_starts(gateway_env):
    for _ in range(2):
        with TestClient(create_app(GatewaySettings())) as client:
            assert client.get("/health").status_code == 200
    settings = GatewaySettings()
    federations = read_collection(settings, FEDERATIONS)
    assert len(federations) == 1
    root = federations[0]
    assert root["name"] == "National"
    assert root["parent_id"] is None
    assert root["path"] == f"/{root['_id']}/"
    assert len(root["_id"]) == 32
    users = read_collection(settings, USERS)
    assert [(u["email"], u["role"], u["federation_path"]) for u in users] == [
        (ADMIN_EMAIL, "admin", root["path"])
    ]
    assert users[0]["password_hash"].startswith("$argon2id$")
    events = read_collection(settings, OUTBOX)
    assert [e["topic"] for e in events] == ["federation-created"]
    envelope = events[0]["envelope"]
    assert envelope["producer"] == "gateway"
    assert envelope["federation_path"] == root["path"]
    assert envelope["data"] == {
        "federation_id": root["_id"],
        "parent_id": None,
        "name": "National",
        "path": root["path"],
        "version": 1,  # a move bumps it; services apply only newer versions
    }


def test_two_processes_bootstrapping_at_once_create_one_root(gateway_env):
    settings = GatewaySettings()

    async def run():
        stores = [Store(settings), Store(settings)]
        try:
            from gateway.store import INDEXES

            await stores[0].ensure_indexes(INDEXES)
            return await asyncio.gather(*(GatewayService(settings, s).bootstrap() for s in stores))
        finally:
            for s in stores:
                await s.close()

    assert sorted(asyncio.run(run())) == [False, True]
    assert len(read_collection(settings, FEDERATIONS)) == 1
    assert len(read_collection(settings, USERS)) == 1
    assert len(read_collection(settings, OUTBOX)) == 1


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def info(self, event: str, **kw) -> None:
        self.events.append((event, kw))

    warning = info


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_generated_admin_password_is_shown_once_on_the_terminal_never_logged(
    isolated_env, monkeypatch
):
    monkeypatch.delenv("GATEWAY_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("GATEWAY_ADMIN_EMAIL", "Chief@Tribune.Local")
    recorder = RecordingLog()
    monkeypatch.setattr(gateway_service_module, "log", recorder)
    # no terminal (a container, a supervisor: standard error is the log): not generated
    monkeypatch.setattr(gateway_service_module, "terminal", lambda: None)
    with pytest.raises(RuntimeError, match="GATEWAY_ADMIN_PASSWORD"):
        with TestClient(create_app(GatewaySettings())):
            pass
    assert read_collection(GatewaySettings(), USERS) == []

    screen = Terminal()
    monkeypatch.setattr(gateway_service_module, "terminal", lambda: screen)
    for _ in range(2):
        with TestClient(create_app(GatewaySettings())):
            pass
    (password,) = re.findall(r"chief@tribune\.local, password (\S+)", screen.getvalue())
    assert len(password) >= 24
    assert password not in str(recorder.events)
    generated = [kw for e, kw in recorder.events if e == "gateway.admin_password_generated"]
    assert generated == [{"email": "chief@tribune.local", "shown_on": "terminal"}]
    with TestClient(create_app(GatewaySettings())) as client:
        assert login(client, "chief@tribune.local", password).status_code == 200


# ---------------------------------------------------------------- login


def test_login_returns_a_bearer_token_that_opens_me(gateway_api):
    client, settings = gateway_api
    r = login(client, "  ADMIN@tribune.local", ADMIN_PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["email"] == ADMIN_EMAIL
    assert me.json()["role"] == "admin"
    assert me.json()["federation_name"] == "National"
    assert "password_hash" not in me.json()


def test_wrong_password_and_unknown_user_get_the_same_401(gateway_api):
    client, _ = gateway_api
    wrong = login(client, ADMIN_EMAIL, "not-the-password")
    unknown = login(client, "nobody@tribune.local", ADMIN_PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "error": "unauthorized",
            "detail": "incorrect email or password",
        }
    )
    assert wrong.headers["WWW-Authenticate"] == "Bearer"


def test_malformed_login_form_is_422_with_the_field(gateway_api):
    client, _ = gateway_api
    r = client.post("/api/v1/auth/token", data={"username": ADMIN_EMAIL})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "password"
    r = client.post("/api/v1/auth/token", json={"username": ADMIN_EMAIL, "password": "x"})
    assert r.status_code == 422


def test_repeated_failures_lock_the_email_even_for_the_right_password(gateway_env, monkeypatch):
    monkeypatch.setenv("GATEWAY_LOGIN_MAX_ATTEMPTS", "2")
    with TestClient(create_app(GatewaySettings())) as client:
        assert login(client, ADMIN_EMAIL, "wrong-1").status_code == 401
        assert login(client, ADMIN_EMAIL, "wrong-2").status_code == 401
        locked = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert locked.status_code == 429
        assert locked.json()["error"] == "too_many_attempts"
        assert int(locked.headers["Retry-After"]) >= 1
        assert login(client, "other@tribune.local", "x").status_code == 401  # per email


def test_missing_or_bad_token_is_401(gateway_api):
    client, settings = gateway_api
    assert client.get("/api/v1/me").status_code == 401
    r = client.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    # A token for a user that no longer exists (or another secret) is refused.
    from gateway.security import issue_token

    ghost = issue_token("no-such-user", settings.jwt_secret, 60).token
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {ghost}"}).status_code == 401


# ---------------------------------------------------------------- federations and users


def test_child_federation_and_its_user_who_sees_only_their_subtree(gateway_api):
    client, settings = gateway_api
    admin = bearer(client)
    root = root_of(client, admin)

    r = client.post("/api/v1/federations", json={"name": "  Paris "}, headers=admin)
    assert r.status_code == 201, r.text
    paris = r.json()
    assert paris["name"] == "Paris"
    assert paris["parent_id"] == root["id"]
    assert paris["path"] == f"{root['path']}{paris['id']}/"
    lyon = client.post(
        "/api/v1/federations", json={"name": "Lyon", "parent_id": root["id"]}, headers=admin
    ).json()

    created = [
        e["envelope"]
        for e in read_collection(settings, OUTBOX)
        if e["topic"] == "federation-created"
    ]
    assert [e["data"]["path"] for e in created] == [root["path"], paris["path"], lyon["path"]]
    assert created[1]["federation_id"] == paris["id"]

    r = client.post(
        "/api/v1/users",
        json={
            "email": "Sec@Paris.example.org",
            "password": PASSWORD,
            "role": "admin",
            "federation_id": paris["id"],
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["email"] == "sec@paris.example.org"
    assert user["federation_path"] == paris["path"]
    assert "password" not in user and "password_hash" not in user

    paris_admin = bearer(client, "sec@paris.example.org", PASSWORD)
    ix = client.post("/api/v1/federations", json={"name": "Paris 11e"}, headers=paris_admin)
    assert ix.status_code == 201
    assert ix.json()["path"] == f"{paris['path']}{ix.json()['id']}/"

    seen = client.get("/api/v1/federations", headers=paris_admin).json()
    assert [f["id"] for f in seen] == [paris["id"], ix.json()["id"]]
    everything = client.get("/api/v1/federations", headers=admin).json()
    assert {f["id"] for f in everything} == {root["id"], paris["id"], lyon["id"], ix.json()["id"]}


def test_outside_the_subtree_is_404(gateway_api):
    client, _ = gateway_api
    admin = bearer(client)
    root = root_of(client, admin)
    paris = client.post("/api/v1/federations", json={"name": "Paris"}, headers=admin).json()
    lyon = client.post("/api/v1/federations", json={"name": "Lyon"}, headers=admin).json()
    client.post(
        "/api/v1/users",
        json={
            "email": "a@paris.org",
            "password": PASSWORD,
            "role": "admin",
            "federation_id": paris["id"],
        },
        headers=admin,
    )
    paris_admin = bearer(client, "a@paris.org", PASSWORD)
    for parent in (lyon["id"], root["id"], "0" * 32):
        r = client.post(
            "/api/v1/federations", json={"name": "X", "parent_id": parent}, headers=paris_admin
        )
        assert r.status_code == 404, r.text
        assert r.json()["detail"] == [{"field": "parent_id", "reason": "federation not found"}]
        r = client.post(
            "/api/v1/users",
            json={
                "email": "b@lyon.org",
                "password": PASSWORD,
                "role": "viewer",
                "federation_id": parent,
            },
            headers=paris_admin,
        )
        assert r.status_code == 404, r.text
        assert r.json()["detail"][0]["field"] == "federation_id"


def test_non_admins_may_not_create_federations_or_users(gateway_api):
    client, _ = gateway_api
    admin = bearer(client)
    client.post(
        "/api/v1/users",
        json={"email": "sec@tribune.org", "password": PASSWORD, "role": "secretary"},
        headers=admin,
    )
    secretary = bearer(client, "sec@tribune.org", PASSWORD)
    r = client.post("/api/v1/federations", json={"name": "Nice"}, headers=secretary)
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    r = client.post(
        "/api/v1/users",
        json={"email": "x@tribune.org", "password": PASSWORD, "role": "admin"},
        headers=secretary,
    )
    assert r.status_code == 403
    # but they may read their tree and themselves
    assert client.get("/api/v1/federations", headers=secretary).status_code == 200
    assert client.get("/api/v1/me", headers=secretary).json()["role"] == "secretary"


def test_user_refusals_and_validation(gateway_api):
    client, settings = gateway_api
    admin = bearer(client)
    ok = {"email": "dup@tribune.org", "password": PASSWORD, "role": "viewer"}
    assert client.post("/api/v1/users", json=ok, headers=admin).status_code == 201
    r = client.post("/api/v1/users", json={**ok, "email": "DUP@tribune.org"}, headers=admin)
    assert r.status_code == 409
    assert r.json()["detail"] == [
        {"field": "email", "reason": "a user with this email already exists"}
    ]

    def field_of(body):
        r = client.post("/api/v1/users", json=body, headers=admin)
        assert r.status_code == 422, r.text
        return r.json()["detail"][0]["field"], r.json()["detail"][0]["reason"]

    short = "x" * (settings.password_min_length - 1)
    assert field_of({**ok, "email": "new@tribune.org", "password": short}) == (
        "password",
        f"must have at least {settings.password_min_length} characters",
    )
    assert field_of({**ok, "email": "not-an-email"})[0] == "email"
    assert field_of({**ok, "email": "new@tribune.org", "role": "king"})[0] == "role"
    assert field_of({"email": "new@tribune.org", "role": "viewer"})[0] == "password"
    assert (
        field_of({**ok, "email": "new@tribune.org", "federation_id": "../x"})[0] == "federation_id"
    )
    assert len(read_collection(settings, USERS)) == 2  # the admin and dup@: nothing half written


def test_federation_refusals_and_validation(gateway_api):
    client, settings = gateway_api
    admin = bearer(client)
    first = client.post("/api/v1/federations", json={"name": "Paris"}, headers=admin).json()
    r = client.post("/api/v1/federations", json={"name": " paris "}, headers=admin)
    assert r.status_code == 409
    assert r.json()["existing_id"] == first["id"]
    for body, field in (({"name": ""}, "name"), ({}, "name"), ({"name": "   "}, "name")):
        r = client.post("/api/v1/federations", json=body, headers=admin)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["field"] == field
    assert len(read_collection(settings, FEDERATIONS)) == 2
    assert len(read_collection(settings, OUTBOX)) == 2


# ---------------------------------------------------------------- forwarding


def test_forwarded_request_carries_a_signed_identity_with_the_federation_path(gateway_api):
    client, settings = gateway_api
    admin = bearer(client)
    paris = client.post("/api/v1/federations", json={"name": "Paris"}, headers=admin).json()
    client.post(
        "/api/v1/users",
        json={
            "email": "cm@paris.org",
            "password": PASSWORD,
            "role": "campaign_manager",
            "federation_id": paris["id"],
        },
        headers=admin,
    )
    manager = bearer(client, "cm@paris.org", PASSWORD)
    r = client.post(
        "/api/v1/contacts/abc/tags?dry_run=true&x=%C3%A9",
        content=b'{"tag": "volunteer"}',
        headers={**manager, "Content-Type": "application/json", "X-Correlation-ID": "corr-123"},
    )
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/api/v1/contacts/abc/tags"
    assert seen["query"] == "dry_run=true&x=%C3%A9"
    assert seen["body"] == '{"tag": "volunteer"}'
    headers = seen["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["x-correlation-id"] == "corr-123"
    assert "authorization" not in headers  # the client's token stays at the door
    identity = verify_identity(headers[IDENTITY_HEADER.lower()], settings.identity_secret)
    assert identity.email == "cm@paris.org"
    assert identity.role is Role.campaign_manager
    assert identity.federation_id == paris["id"]
    assert identity.federation_path == paris["path"]
    assert r.headers["X-Correlation-ID"] == "corr-123"


def test_upstream_status_and_json_body_are_passed_through(gateway_api):
    client, _ = gateway_api
    admin = bearer(client)
    r = client.get("/api/v1/contacts?status=409", headers=admin)
    assert r.status_code == 409
    assert r.json()["path"] == "/api/v1/contacts"
    r = client.get("/api/v1/contacts/missing", headers=admin)
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": "contact not found"}
    r = client.get("/api/v1/payments/p1", headers=admin)
    assert r.status_code == 200 and r.json()["path"] == "/api/v1/payments/p1"


def test_forwarding_needs_a_token(gateway_api):
    client, _ = gateway_api
    assert client.get("/api/v1/contacts/abc").status_code == 401
    assert client.delete("/api/v1/memberships/m1").status_code == 401


def test_each_route_takes_the_body_it_needs_once_the_caller_is_known(gateway_api):
    """A viewer could send 64 MiB to any forwarded route, and the services parsed it whole."""
    client, settings = gateway_api
    admin = bearer(client)
    viewer = user_of(client, admin, root_of(client, admin)["id"], "vera@tribune.org", "viewer")
    big = b'{"filter": {"op": "all", "pad": "' + b"x" * 1_000_000 + b'"}}'
    as_json = {"Content-Type": "application/json"}
    r = client.post("/api/v1/segments/preview", content=big, headers=as_json)
    assert r.status_code == 401, r.text  # not a chance to stream it first
    r = client.post("/api/v1/segments/preview", content=big, headers={**viewer, **as_json})
    assert r.status_code == 413, r.text
    assert r.json()["limit"] == settings.max_body_bytes
    # the contacts import takes its own, larger limit
    csv = b"nom\n" + b"Dupont\n" * 150_000
    r = client.post(
        "/api/v1/contacts/imports", content=csv, headers={**viewer, "Content-Type": "text/csv"}
    )
    assert r.status_code == 200 and len(r.json()["body"]) == len(csv)
    r = client.get("/api/v1/contacts/c1", headers={**viewer, "X-Note": "a\x00b"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_header"


def test_payment_webhook_is_public_and_forwarded_untouched(gateway_api):
    client, _ = gateway_api
    raw = b'{"id":"evt_1", "amount":  1500}'
    r = client.post(
        "/api/v1/webhooks/payments",
        content=raw,
        headers={
            "Content-Type": "application/json",
            "X-Tribune-Timestamp": "1700000000",
            "X-Tribune-Signature": "v1=abcdef",
            "Authorization": "Bearer whatever",
        },
    )
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["body"] == raw.decode()
    assert seen["headers"]["x-tribune-timestamp"] == "1700000000"
    assert seen["headers"]["x-tribune-signature"] == "v1=abcdef"
    assert IDENTITY_HEADER.lower() not in seen["headers"]
    assert "authorization" not in seen["headers"]


def test_a_down_service_gives_503_with_a_clear_message(gateway_api):
    client, _ = gateway_api
    admin = bearer(client)
    r = client.get("/api/v1/messages", headers=admin)
    assert r.status_code == 503
    assert r.json() == {
        "error": "service_unavailable",
        "detail": "the messaging service is busy or unreachable; try again in 5 s",
        "service": "messaging",
        "retry_after": 5,
    }
    assert r.headers["retry-after"] == "5"  # GATEWAY_UPSTREAM_RETRY_AFTER_SECONDS


# ---------------------------------------------------------------- person view


def test_person_view_degrades_the_parts_whose_service_fails(gateway_api, monkeypatch):
    client, settings = gateway_api
    admin = bearer(client)
    r = client.get("/api/v1/people/c1", headers=admin)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["contact"]["path"] == "/api/v1/contacts/c1"
    assert (
        verify_identity(
            view["contact"]["headers"][IDENTITY_HEADER.lower()], settings.identity_secret
        ).email
        == ADMIN_EMAIL
    )
    assert view["consents"]["path"] == "/api/v1/consents/c1"
    assert view["memberships"]["path"] == "/api/v1/memberships"
    assert view["memberships"]["query"] == "contact_id=c1"
    assert view["messages"] is None  # messaging is down
    assert view["unavailable"] == ["messaging"]


def test_person_view_reports_a_failing_service_and_404_for_an_unknown_contact(
    gateway_env, monkeypatch, gateway_upstream
):
    monkeypatch.setenv("GATEWAY_MESSAGING_URL", gateway_upstream)  # answers 500 on /messages
    with TestClient(create_app(GatewaySettings())) as client:
        admin = bearer(client)
        view = client.get("/api/v1/people/c1", headers=admin).json()
        assert view["unavailable"] == ["messaging"]
        assert view["contact"] is not None
        r = client.get("/api/v1/people/missing", headers=admin)
        assert r.status_code == 404
        assert client.get("/api/v1/people/a.b", headers=admin).status_code == 422
        assert client.get("/api/v1/people/c1").status_code == 401


def test_openapi_lists_the_gateway_and_forwarded_routes(gateway_api):
    client, _ = gateway_api
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/auth/token",
        "/api/v1/me",
        "/api/v1/federations",
        "/api/v1/users",
        "/api/v1/people/{contact_id}",
        # the services' own operations, with their schemas (gateway.openapi)
        "/api/v1/contacts/{contact_id}",
        "/api/v1/consents/{contact_id}",
        "/api/v1/memberships",
        "/api/v1/payments",
        "/api/v1/messages",
        "/api/v1/webhooks/payments",
        # the live figures have no document of their own: their catch-all stays
        "/api/v1/live/{path}",
    ):
        assert path in paths, path
    assert "/api/v1/contacts/{path}" not in paths
    assert paths["/api/v1/webhooks/payments"]["post"].get("security", []) == []


# ---------------------------------------------------------------- access audit


def user_of(client: TestClient, admin, federation_id: str, email: str, role: str) -> dict[str, str]:
    """A new user of the federation, logged in: their Authorization header (``admin`` is
    the national administrator: a DPO takes their password as confirmation)."""
    add_user(client, admin, email, role, federation_id, confirm_password=ADMIN_PASSWORD)
    return bearer(client, email, PASSWORD)


def test_every_access_to_personal_data_is_audited_for_the_dpo_alone(gateway_api):
    client, settings = gateway_api
    admin = bearer(client)
    root = root_of(client, admin)
    paris = client.post("/api/v1/federations", json={"name": "Paris"}, headers=admin).json()
    secretary = user_of(client, admin, paris["id"], "sec@paris.org", "secretary")
    agent = {"User-Agent": "Mozilla/5.0 " + "x" * 300}
    assert client.get("/api/v1/contacts/c42", headers={**secretary, **agent}).status_code == 200
    r = client.patch(
        "/api/v1/contacts/c42", json={"tags": ["a"]}, headers={**secretary, "If-Match": '"1"'}
    )
    assert r.status_code == 200
    assert client.get("/api/v1/contacts?q=dupont&tags_any=x", headers=secretary).status_code == 200
    assert client.post("/api/v1/contacts/exports", json={}, headers=secretary).status_code == 200
    assert client.get("/api/v1/consents/c42?status=404", headers=secretary).status_code == 404

    # the secretary and the administrator may not read it; the DPO may
    assert client.get("/api/v1/audit/access", headers=secretary).status_code == 403
    assert client.get("/api/v1/audit/access", headers=admin).status_code == 403
    national_dpo = user_of(client, admin, root["id"], "dpo@national.org", "dpo")
    r = client.get("/api/v1/audit/access", params={"user_id": "x" * 3}, headers=national_dpo)
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}

    r = client.get("/api/v1/audit/access", headers=national_dpo)
    assert r.status_code == 200, r.text
    entries = [e for e in r.json()["items"] if e["email"] == "sec@paris.org"]
    assert [(e["action"], e["method"], e["path"], e["status"]) for e in entries] == [
        ("viewed", "GET", "/api/v1/consents/c42", 404),
        ("exported", "POST", "/api/v1/contacts/exports", 200),
        ("viewed", "GET", "/api/v1/contacts", 200),
        ("changed", "PATCH", "/api/v1/contacts/c42", 200),
        ("viewed", "GET", "/api/v1/contacts/c42", 200),
    ]
    assert [e["contact_id"] for e in entries] == ["c42", None, None, "c42", "c42"]
    search = entries[2]
    assert search["query_keys"] == ["q", "tags_any"]  # the search terms are not kept
    assert "dupont" not in str(r.json())
    first = entries[-1]
    assert first["role"] == "secretary" and first["federation_path"] == paris["path"]
    assert first["ip"] is None  # the test client has no IP address; real ones are /24s
    assert first["user_agent"].startswith("Mozilla/5.0") and len(first["user_agent"]) <= 64

    # filters and pages
    r = client.get(
        "/api/v1/audit/access", params={"contact_id": "c42", "limit": 2}, headers=national_dpo
    )
    page = r.json()
    assert [e["action"] for e in page["items"]] == ["viewed", "changed"]
    r = client.get(
        "/api/v1/audit/access",
        params={"contact_id": "c42", "limit": 2, "cursor": page["next_cursor"]},
        headers=national_dpo,
    )
    assert [e["action"] for e in r.json()["items"]] == ["viewed"]
    assert r.json()["next_cursor"] is None
    r = client.get("/api/v1/audit/access", params={"action": "exported"}, headers=national_dpo)
    assert [e["path"] for e in r.json()["items"]] == ["/api/v1/contacts/exports"]
    bad = client.get("/api/v1/audit/access", params={"action": "deleted"}, headers=national_dpo)
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "action"

    # a DPO of another federation sees its own subtree's users only
    lyon = client.post("/api/v1/federations", json={"name": "Lyon"}, headers=admin).json()
    lyon_dpo = user_of(client, admin, lyon["id"], "dpo@lyon.org", "dpo")
    r = client.get("/api/v1/audit/access", params={"contact_id": "c42"}, headers=lyon_dpo)
    assert r.json()["items"] == []

    # reading the audit is audited too; nothing in the store can be changed through it
    docs = read_collection(settings, "access_audit", {"email": "dpo@national.org"})
    assert {d["path"] for d in docs} == {"/api/v1/audit/access"}
    assert client.delete("/api/v1/audit/access", headers=national_dpo).status_code == 405


class BrokenCollection:
    """The access audit's collection when the store cannot record anything."""

    async def insert_many(self, *args, **kwargs):
        raise PyMongoError("the store is unreachable")


def test_a_read_whose_entry_cannot_be_recorded_is_refused_a_write_is_answered(
    gateway_api, monkeypatch
):
    client, settings = gateway_api
    admin = bearer(client)
    audit = client.app.state.access_audit
    monkeypatch.setattr(audit.entries, "entries", BrokenCollection())
    for path in ("/api/v1/contacts/c42", "/api/v1/people/c42", "/api/v1/contacts?q=x"):
        r = client.get(path, headers=admin)
        assert r.status_code == 503, (path, r.text)
        assert r.json()["detail"] == "the access audit is unavailable; try again later"
    # a write already happened upstream: its answer is given (the failure is logged)
    r = client.patch("/api/v1/contacts/c42", json={"tags": ["a"]}, headers=admin)
    assert r.status_code == 200
    client.portal.call(audit.writer.drained)  # its entry's batch was tried (and failed)
    monkeypatch.undo()
    assert client.get("/api/v1/contacts/c42", headers=admin).status_code == 200
    docs = read_collection(settings, "access_audit", {"email": ADMIN_EMAIL})
    assert [(d["method"], d["path"]) for d in docs] == [("GET", "/api/v1/contacts/c42")]


def test_concurrent_reads_share_the_audit_inserts_and_each_is_recorded(gateway_api):
    client, settings = gateway_api
    admin = bearer(client)
    audit = client.app.state.access_audit
    batches: list[int] = []
    write = audit.writer.write_batch

    async def counting(docs):
        batches.append(len(docs))
        await write(docs)

    audit.writer.write_batch = counting
    with ThreadPoolExecutor(16) as pool:
        codes = list(
            pool.map(
                lambda n: client.get(f"/api/v1/contacts/c{n}", headers=admin).status_code,
                range(48),
            )
        )
    assert codes == [200] * 48
    assert sum(batches) == 48 and len(batches) < 48
    docs = read_collection(settings, "access_audit", {"email": ADMIN_EMAIL})
    assert sorted(d["contact_id"] for d in docs) == sorted(f"c{n}" for n in range(48))


def test_a_deactivated_user_is_refused_at_once_here_and_within_the_cache_ttl_anyway(
    gateway_env, monkeypatch
):
    monkeypatch.setenv("GATEWAY_USER_CACHE_SECONDS", "0.5")
    settings = GatewaySettings()
    with TestClient(create_app(settings)) as client:
        admin = bearer(client)
        made = [
            client.post(
                "/api/v1/users",
                json={"email": f"u{n}@tribune.org", "password": PASSWORD, "role": "secretary"},
                headers=admin,
            ).json()
            for n in range(2)
        ]
        first, second = (bearer(client, u["email"], PASSWORD) for u in made)
        assert client.get("/api/v1/contacts/c1", headers=first).status_code == 200

        # through this gateway: at once, even within the cache's lifetime
        r = client.patch(f"/api/v1/users/{made[0]['id']}", json={"active": False}, headers=admin)
        assert r.status_code == 200 and r.json()["active"] is False
        assert client.get("/api/v1/contacts/c1", headers=first).status_code == 401

        # a role change too: the next forwarded identity carries the new role
        r = client.patch(f"/api/v1/users/{made[1]['id']}", json={"role": "viewer"}, headers=admin)
        assert r.json()["role"] == "viewer"
        seen = client.get("/api/v1/contacts/c1", headers=second).json()["headers"]
        assert verify_identity(seen[IDENTITY_HEADER.lower()], settings.identity_secret).role == (
            Role.viewer
        )

        # elsewhere (another replica, the store itself): read again within the TTL
        async def deactivate() -> None:
            store = Store(settings)
            try:
                await store[USERS].update_one({"_id": made[1]["id"]}, {"$set": {"active": False}})
            finally:
                await store.close()

        asyncio.run(deactivate())
        deadline = time.monotonic() + 0.5 + 2  # the TTL, and room for a slow machine
        while client.get("/api/v1/contacts/c1", headers=second).status_code == 200:
            assert time.monotonic() < deadline, "still served after the cache's TTL"
            time.sleep(0.05)
        assert client.get("/api/v1/contacts/c1", headers=second).status_code == 401

        # the administrator may neither lock themselves out nor reach another subtree
        me = client.get("/api/v1/me", headers=admin).json()
        r = client.patch(f"/api/v1/users/{me['id']}", json={"active": False}, headers=admin)
        assert r.status_code == 409
        assert client.patch("/api/v1/users/nobody", json={}, headers=admin).status_code == 404


def test_the_gateways_own_write_is_remembered_and_sent_on_for_a_client_that_forgets(gateway_api):
    client, _ = gateway_api
    admin = bearer(client)
    r = client.post("/api/v1/federations", json={"name": "Marseille"}, headers=admin)
    assert r.status_code == 201
    token = r.headers[CONSISTENCY_HEADER]
    assert token.startswith("federation-created.")
    # the client does not send it back; the service still gets it
    seen = client.get("/api/v1/contacts", headers=admin).json()["headers"]
    assert seen[CONSISTENCY_HEADER.lower()] == token


# ---------------------------------------------------------------- the login limiter


def test_parallel_wrong_passwords_on_two_replicas_get_at_most_the_limit_of_401s(
    gateway_env, monkeypatch
):
    monkeypatch.setenv("GATEWAY_LOGIN_MAX_ATTEMPTS", "5")
    settings = GatewaySettings()
    # two gateway replicas over the one store: they share the counters
    with (
        TestClient(create_app(settings)) as first,
        TestClient(create_app(settings)) as second,
    ):

        def attempt(n: int) -> int:
            client = first if n % 2 else second
            return login(client, ADMIN_EMAIL, f"wrong-password-{n}").status_code

        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(attempt, range(300)))
        assert set(codes) <= {401, 429}, sorted(set(codes))
        assert 1 <= codes.count(401) <= settings.login_max_attempts
        assert codes.count(429) == 300 - codes.count(401)
        # the right password waits too, on either replica
        for client in (first, second):
            locked = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
            assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
    # what the counters keep: no email in clear
    counters = read_collection(settings, LOGIN_ATTEMPTS)
    assert counters and all(ADMIN_EMAIL not in str(c) for c in counters)


class Peers:
    """ASGI wrapper: the client's direct address (a socket's, in production) from a
    test-only header, so one test client can call from several networks."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            peer = dict(scope["headers"]).get(b"x-test-peer")
            if peer is not None:
                scope = {**scope, "client": (peer.decode(), 5000)}
        await self.app(scope, receive, send)


def from_peer(address: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "X-Test-Peer": address}


def test_logins_are_limited_per_client_network_too(gateway_env, monkeypatch):
    monkeypatch.setenv("GATEWAY_LOGIN_NETWORK_MAX_ATTEMPTS", "3")
    with TestClient(Peers(create_app(GatewaySettings()))) as client:

        def login_from(address: str, email: str, password: str):
            return client.post(
                "/api/v1/auth/token",
                data={"username": email, "password": password},
                headers=from_peer(address),
            )

        # a success gives its attempt back
        assert login_from("203.0.113.10", ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 200
        for n in range(3):  # three emails, one try each: far from the email limit
            assert login_from("203.0.113.10", f"u{n}@tribune.local", "wrong").status_code == 401
        # the network (/24) is over its limit, whatever the email or the address in it
        r = login_from("203.0.113.99", "fresh@tribune.local", "wrong")
        assert r.status_code == 429 and r.json()["error"] == "too_many_attempts"
        assert login_from("203.0.113.99", ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429
        assert login_from("198.51.100.7", ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 200


def test_an_oversized_username_is_a_422_and_never_counted(gateway_api):
    client, settings = gateway_api
    r = login(client, "a" * 250 + "@tribune.local", "whatever")
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "username"
    r = login(client, ADMIN_EMAIL, "x" * 1025)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "password"
    assert read_collection(settings, LOGIN_ATTEMPTS) == []


# ---------------------------------------------------------------- who may make a DPO


def test_only_a_dpo_or_the_national_admin_with_their_password_may_make_a_dpo(gateway_api):
    client, settings = gateway_api
    national = bearer(client)
    root = root_of(client, national)
    paris = client.post("/api/v1/federations", json={"name": "Paris"}, headers=national).json()
    paris_admin = user_of(client, national, paris["id"], "admin@paris.org", "admin")
    viewer_id = client.post(
        "/api/v1/users",
        json={"email": "v@paris.org", "password": PASSWORD, "role": "viewer"},
        headers=paris_admin,
    ).json()["id"]
    new_dpo = {
        "email": "dpo@paris.org",
        "password": PASSWORD,
        "role": "dpo",
        "federation_id": paris["id"],
    }

    # a federation administrator may not, with or without a confirmation
    for confirm in ({}, {"confirm_password": PASSWORD}):
        r = client.post("/api/v1/users", json={**new_dpo, **confirm}, headers=paris_admin)
        assert r.status_code == 403, r.text
        r = client.patch(
            f"/api/v1/users/{viewer_id}", json={"role": "dpo", **confirm}, headers=paris_admin
        )
        assert r.status_code == 403, r.text

    # the national administrator: only with their own password
    r = client.post("/api/v1/users", json=new_dpo, headers=national)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "confirm_password"
    r = client.post(
        "/api/v1/users", json={**new_dpo, "confirm_password": "not-it-at-all"}, headers=national
    )
    assert r.status_code == 403 and r.json()["detail"][0]["field"] == "confirm_password"
    assert [u for u in read_collection(settings, USERS) if u["role"] == "dpo"] == []
    r = client.post(
        "/api/v1/users", json={**new_dpo, "confirm_password": ADMIN_PASSWORD}, headers=national
    )
    assert r.status_code == 201, r.text
    dpo_id = r.json()["id"]
    dpo = bearer(client, "dpo@paris.org", PASSWORD)

    # a DPO may promote (with their password), and do nothing else with accounts
    r = client.patch(
        f"/api/v1/users/{viewer_id}",
        json={"role": "dpo", "confirm_password": PASSWORD},
        headers=dpo,
    )
    assert r.status_code == 200 and r.json()["role"] == "dpo"
    r = client.patch(f"/api/v1/users/{viewer_id}", json={"active": False}, headers=dpo)
    assert r.status_code == 403
    r = client.post(
        "/api/v1/users",
        json={"email": "x@paris.org", "password": PASSWORD, "role": "admin"},
        headers=dpo,
    )
    assert r.status_code == 403

    # nor may a federation administrator take a DPO's account over
    r = client.post(
        f"/api/v1/users/{dpo_id}/password", json={"new_password": "taken-over-pass"},
        headers=paris_admin,
    )  # fmt: skip
    assert r.status_code == 403
    assert (
        client.patch(f"/api/v1/users/{dpo_id}", json={"active": False}, headers=paris_admin).json()[
            "active"
        ]
        is False
    )  # taking powers away is an administrator's
    r = client.patch(f"/api/v1/users/{dpo_id}", json={"active": True}, headers=paris_admin)
    assert r.status_code == 403  # giving them back is not
    assert login(client, "dpo@paris.org", PASSWORD).status_code == 401

    # every attempt, refused ones included, is in the access audit
    national_dpo = user_of(client, national, root["id"], "dpo@n.org", "dpo")
    entries = client.get(
        "/api/v1/audit/access", params={"limit": 100}, headers=national_dpo
    ).json()["items"]
    account = [
        (e["email"], e["method"], e["status"], e["target_user_id"], e["changes"])
        for e in reversed(entries)
        if e["path"].startswith("/api/v1/users")
    ]
    paris_id = paris["id"]
    assert account == [
        (ADMIN_EMAIL, "POST", 201, account[0][3], {"role": "admin", "federation_id": paris_id}),
        ("admin@paris.org", "POST", 201, viewer_id, {"role": "viewer", "federation_id": paris_id}),
        ("admin@paris.org", "POST", 403, None, {"role": "dpo", "federation_id": paris_id}),
        ("admin@paris.org", "PATCH", 403, viewer_id, {"role": "dpo"}),
        ("admin@paris.org", "POST", 403, None, {"role": "dpo", "federation_id": paris_id}),
        ("admin@paris.org", "PATCH", 403, viewer_id, {"role": "dpo"}),
        (ADMIN_EMAIL, "POST", 422, None, {"role": "dpo", "federation_id": paris_id}),
        (ADMIN_EMAIL, "POST", 403, None, {"role": "dpo", "federation_id": paris_id}),
        (ADMIN_EMAIL, "POST", 201, dpo_id, {"role": "dpo", "federation_id": paris_id}),
        ("dpo@paris.org", "PATCH", 200, viewer_id, {"role": "dpo"}),
        ("dpo@paris.org", "PATCH", 403, viewer_id, {"active": "false"}),
        ("dpo@paris.org", "POST", 403, None, {"role": "admin"}),
        ("admin@paris.org", "POST", 403, dpo_id, {"password": "reset"}),
        ("admin@paris.org", "PATCH", 200, dpo_id, {"active": "false"}),
        ("admin@paris.org", "PATCH", 403, dpo_id, {"active": "true"}),
        (ADMIN_EMAIL, "POST", 201, account[-1][3], {"role": "dpo", "federation_id": root["id"]}),
    ]
    assert all(e["action"] == "changed" for e in entries if e["path"].startswith("/api/v1/users"))
    assert PASSWORD not in str(entries) and ADMIN_PASSWORD not in str(entries)


# ---------------------------------------------------------------- passwords


def test_a_user_changes_their_password_and_an_admin_resets_one(gateway_api):
    client, settings = gateway_api
    admin = bearer(client)
    secretary = user_of(client, admin, root_of(client, admin)["id"], "sec@t.org", "secretary")
    me = client.get("/api/v1/me", headers=secretary).json()
    time.sleep(1.1)  # tokens carry whole seconds: the change comes after this one's second

    r = client.post(
        "/api/v1/me/password",
        json={"current_password": "not-the-password", "new_password": "a-new-long-password"},
        headers=secretary,
    )
    assert r.status_code == 403 and r.json()["detail"][0]["field"] == "current_password"
    r = client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=secretary,
    )
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "new_password"
    r = client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "a-new-long-password"},
        headers=secretary,
    )
    assert r.status_code == 200, r.text
    fresh = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert client.get("/api/v1/me", headers=secretary).status_code == 401  # the old token
    assert client.get("/api/v1/me", headers=fresh).status_code == 200
    assert login(client, "sec@t.org", PASSWORD).status_code == 401
    assert login(client, "sec@t.org", "a-new-long-password").status_code == 200
    time.sleep(1.1)

    # the administrator resets it (forgotten, or the account is compromised)
    r = client.post(
        f"/api/v1/users/{me['id']}/password",
        json={"new_password": "set-by-the-admin-1"},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["id"] == me["id"]
    assert client.get("/api/v1/me", headers=fresh).status_code == 401
    assert login(client, "sec@t.org", "set-by-the-admin-1").status_code == 200
    # not their own (that takes the current password), not outside their subtree
    admin_id = client.get("/api/v1/me", headers=admin).json()["id"]
    r = client.post(
        f"/api/v1/users/{admin_id}/password", json={"new_password": "x" * 20}, headers=admin
    )
    assert r.status_code == 409
    r = client.post("/api/v1/users/nobody/password", json={"new_password": "x" * 20}, headers=admin)
    assert r.status_code == 404
    # a secretary manages no account
    r = client.post(
        f"/api/v1/users/{admin_id}/password",
        json={"new_password": "x" * 20},
        headers=bearer(client, "sec@t.org", "set-by-the-admin-1"),
    )
    assert r.status_code == 403

    docs = audit_entries(settings, {"target_user_id": me["id"]}, count=5)
    assert [(d["method"], d["status"], d["changes"]) for d in docs] == [
        ("POST", 201, {"role": "secretary", "federation_id": me["federation_id"]}),
        ("POST", 403, {"password": "changed"}),
        ("POST", 422, {"password": "changed"}),
        ("POST", 200, {"password": "changed"}),
        ("POST", 200, {"password": "reset"}),
    ]


# ---------------------------------------------------------------- the door


def test_the_gateway_refuses_dot_segments_before_anything_else(gateway_api):
    client, settings = gateway_api
    admin = bearer(client)
    for path in (
        "/api/v1/public/consents/%2e%2e/%2e%2e/%2e%2e/%2e%2e/openapi.json",
        "/api/v1/segments/%2E%2E/contacts/c1",
        "/api/v1/users/%2e%2e/federations",
    ):
        r = client.get(path, headers=admin)
        assert r.status_code == 400 and r.json()["error"] == "invalid_path", path
    assert read_collection(settings, "access_audit", {"path": {"$regex": "segments|openapi"}}) == []


def test_a_huge_or_malformed_audit_cursor_is_a_422_naming_it(gateway_api):
    client, _ = gateway_api
    admin = bearer(client)
    dpo = user_of(client, admin, root_of(client, admin)["id"], "dpo@t.org", "dpo")
    for params in (
        {"cursor": "f" * 10_000},
        {"cursor": "9" * 25 + "x"},
        {"since": "9" * 40},
        {"limit": 10**30},
    ):
        r = client.get("/api/v1/audit/access", params=params, headers=dpo)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["detail"][0]["field"] == next(iter(params))


def test_the_audit_keeps_the_forwarded_client_address_from_a_trusted_proxy_only(
    gateway_env, monkeypatch
):
    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8")
    settings = GatewaySettings()
    with TestClient(Peers(create_app(settings))) as client:
        admin = bearer(client)
        forwarded = {**admin, "X-Forwarded-For": "198.51.100.23"}
        for peer in ("10.2.3.4", "203.0.113.50"):  # a proxy of ours; anybody else
            r = client.get("/api/v1/contacts/c1", headers=from_peer(peer, forwarded))
            assert r.status_code == 200
            seen = r.json()["headers"]["x-tribune-client-ip"]  # consent's proof takes it
            assert seen == ("198.51.100.23" if peer == "10.2.3.4" else "203.0.113.50")
    docs = read_collection(settings, "access_audit", {"path": "/api/v1/contacts/c1"})
    assert [d["ip"] for d in docs] == ["198.51.100.0/24", "203.0.113.0/24"]
