"""Forwarding and read-your-writes at the gateway, against a fake upstream service (a real
HTTP server on the loopback): the consistency token goes to the service on every call,
comes back to the client, and is remembered per user for clients that do not send it."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from gateway.api import forwarding_router
from gateway.api import router as gateway_router
from gateway.consistency import RememberTokens, UserTokens
from gateway.dispatch import FastForward
from gateway.main import install_door
from gateway.proxy import Proxy
from gateway.settings import GatewaySettings
from starlette.middleware import Middleware
from support import make_identity
from tribune_shared.app import install_common
from tribune_shared.auth import Identity, Role
from tribune_shared.consistency import APPLIED_HEADER, HEADER, Written, parse, render
from tribune_shared.errors import Unauthorized

# ---------------------------------------------------------------- the fake service

upstream_app = FastAPI()
SEEN: list[dict[str, str]] = []  # the headers of every call the service received


def now_ms() -> int:
    return int(time.time() * 1000)


@upstream_app.api_route("/{path:path}", methods=["GET", "POST", "PATCH"])
async def service(request: Request, path: str) -> JSONResponse:
    """A write answers with a token naming the event it committed (merged with the one it
    received, as the kernel's middleware does); a read echoes the token it received. Both
    confirm they applied what they received, as a service that checked it does (a service
    whose consumer is behind answers 503 and confirms nothing)."""
    SEEN.append(
        {**request.headers, "x-path": request.url.path, "x-raw-path": request.scope["raw_path"]}
    )
    received = parse(request.headers.get(HEADER))
    headers = {}
    if received:
        headers[APPLIED_HEADER] = ",".join(e.event_id for e in received)
    if request.method != "GET":
        event_id = (await request.body()).decode() or "e0"
        received = [Written(now_ms(), "contact-created", event_id), *received]
    if received:
        headers[HEADER] = render(received)
    if path.endswith("/busy"):  # as a service whose consumer is behind answers
        return JSONResponse({"error": "not_yet_consistent"}, 503)
    if path.endswith("/unchecked"):  # a success that did not need to check the token
        headers.pop(APPLIED_HEADER, None)
    if path.startswith("api/v1/messages"):
        return JSONResponse({"items": []}, headers=headers)
    return JSONResponse({"path": "/" + path}, headers=headers)


@contextmanager
def serving(app: FastAPI, **config: Any) -> Iterator[int]:
    """``app`` on a real HTTP server on the loopback (uvicorn, as in production): its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # as tribune_shared.app.serve runs it: uvicorn believes no forwarded header itself
    config = {"proxy_headers": False, **config}
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serving(upstream_app) as port:
        yield f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- the gateway under test

ALICE = make_identity("/root/paris/", Role.secretary, user_id="alice")
BOB = make_identity("/root/paris/", Role.secretary, user_id="bob")


class Users:
    """Access token -> identity (the token check is tested elsewhere)."""

    async def identity_for_token(self, token: str) -> Identity:
        found = {"alice-token": ALICE, "bob-token": BOB}.get(token)
        if found is None:
            raise Unauthorized("invalid or expired token")
        return found


class Audit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, int]] = []
        self.ips: list[str | None] = []

    async def record(self, identity, method, path, query, status, ip, agent, **_) -> str:
        self.entries.append((identity.user_id, f"{method} {path}", status))
        self.ips.append(ip)
        return "id"


def gateway(upstream: str, fast: bool, **more: Any) -> FastAPI:
    settings = GatewaySettings(
        contacts_url=upstream, consent_url=upstream, memberships_url=upstream,
        messaging_url=upstream, **more,
    )  # fmt: skip
    tokens = UserTokens.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.proxy.close()

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings
    app.state.proxy = Proxy(settings, tokens=tokens)
    app.state.access_audit = Audit()
    app.state.gateway_service = Users()
    install_common(app, "gateway")
    app.include_router(gateway_router)
    app.include_router(forwarding_router())
    if fast:
        app.user_middleware.append(Middleware(FastForward, own_routes=gateway_router.routes))
    app.add_middleware(RememberTokens, tokens=tokens)
    install_door(app, settings)  # as gateway.main does
    return app


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-routes"])
def client(request, upstream) -> Iterator[TestClient]:
    SEEN.clear()
    with TestClient(gateway(upstream, fast=request.param)) as c:
        yield c


def as_user(name: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}-token", **headers}


def ids(token: str | None) -> list[str]:
    return sorted(e.event_id for e in parse(token))


def test_the_token_travels_both_ways_and_is_remembered_per_user(client):
    r = client.get("/api/v1/contacts/c1", headers=as_user("alice"))
    assert r.status_code == 200 and r.json() == {"path": "/api/v1/contacts/c1"}
    assert HEADER.lower() not in SEEN[-1] and HEADER not in r.headers

    # a write: the service's token comes back to the client
    r = client.post("/api/v1/contacts", content=b"e1", headers=as_user("alice"))
    assert ids(r.headers[HEADER]) == ["e1"]

    # the client does not send it back: the gateway does, for this user only
    client.get("/api/v1/memberships", headers=as_user("bob"))
    assert HEADER.lower() not in SEEN[-1]
    assert client.get("/api/v1/messages/busy", headers=as_user("alice")).status_code == 503
    assert ids(SEEN[-1][HEADER.lower()]) == ["e1"]
    client.get("/api/v1/messages/busy", headers=as_user("alice"))
    assert ids(SEEN[-1][HEADER.lower()]) == ["e1"]  # a 503: maybe not applied yet
    client.get("/api/v1/contacts/unchecked", headers=as_user("alice"))
    assert ids(SEEN[-1][HEADER.lower()]) == ["e1"]
    client.get("/api/v1/contacts/c1", headers=as_user("alice"))
    assert ids(SEEN[-1][HEADER.lower()]) == ["e1"]  # it did not confirm: still sent
    # contacts confirmed it applied e1, so its next calls need not name it any more
    client.get("/api/v1/contacts/c1", headers=as_user("alice"))
    assert HEADER.lower() not in SEEN[-1]

    # a token the client sends is merged with the remembered one, and remembered too
    mine = render([Written(now_ms(), "consent-granted", "e2")])
    client.get("/api/v1/consents/c1", headers=as_user("alice", **{HEADER: mine}))
    assert ids(SEEN[-1][HEADER.lower()]) == ["e1", "e2"]
    r = client.get("/api/v1/memberships", headers=as_user("alice"))
    assert ids(SEEN[-1][HEADER.lower()]) == ["e1", "e2"]
    assert ids(r.headers[HEADER]) == ["e1", "e2"]

    # the person view's internal calls carry it (what each service has not answered
    # yet), and its answer names it
    SEEN.clear()
    r = client.get("/api/v1/people/c1", headers=as_user("alice"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "contact": {"path": "/api/v1/contacts/c1"},
        "consents": {"path": "/api/v1/consents/c1"},
        "memberships": {"path": "/api/v1/memberships"},
        "messages": {"items": []},
        "unavailable": [],
    }
    sent = {h["x-path"]: ids(h.get(HEADER.lower())) for h in SEEN}
    assert sent == {
        "/api/v1/contacts/c1": ["e2"],
        "/api/v1/consents/c1": [],
        "/api/v1/memberships": [],
        "/api/v1/messages": ["e1", "e2"],
    }
    assert ids(r.headers[HEADER]) == ["e1", "e2"]


def test_old_entries_are_forgotten_and_a_bad_token_is_a_422(client):
    old = render([Written(now_ms() - 3_600_000, "contact-created", "old")])
    client.get("/api/v1/contacts/c1", headers=as_user("alice", **{HEADER: old}))
    assert HEADER.lower() not in SEEN[-1]  # past the horizon (600 s by default)
    r = client.get("/api/v1/contacts/c1", headers=as_user("alice", **{HEADER: "not a token"}))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == HEADER


def test_forwarding_keeps_the_request_and_the_answer_and_audits_it(client):
    r = client.patch(
        "/api/v1/contacts/c9?x=%C3%A9&y=1",
        content=b"e9",
        headers=as_user("alice", **{"If-Match": '"3"', "Content-Type": "text/plain"}),
    )
    assert r.status_code == 200 and r.json() == {"path": "/api/v1/contacts/c9"}
    seen = SEEN[-1]
    assert (seen["if-match"], seen["content-type"]) == ('"3"', "text/plain")
    assert "authorization" not in seen and "x-tribune-identity" in seen
    assert client.app.state.access_audit.entries[-1] == (
        "alice",
        "PATCH /api/v1/contacts/c9",
        200,
    )
    assert client.get("/api/v1/contacts/c9").status_code == 401
    assert client.get("/api/v1/contacts/c9", headers=as_user("eve")).status_code == 401
    assert client.put("/api/v1/webhooks/payments").status_code == 405


def test_an_idempotency_key_is_passed_on(client):
    """A treasurer's manual payment is idempotent on it (memberships.payments)."""
    client.post(
        "/api/v1/payments/manual",
        content=b"{}",
        headers=as_user("alice", **{"Idempotency-Key": "k-123456789"}),
    )
    assert SEEN[-1]["idempotency-key"] == "k-123456789"


# ---------------------------------------------------------------- the path, read one way


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-routes"])
def served(request, upstream) -> Iterator[tuple[int, FastAPI]]:
    """The gateway on a real HTTP server: a request line reaches it byte for byte (the
    test client would resolve ``..`` itself before sending)."""
    SEEN.clear()
    app = gateway(upstream, fast=request.param)
    with serving(app) as port:
        yield port, app


def raw_call(
    port: int, method: str, target: str, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    """``target`` sent as it is (http.client neither resolves nor re-encodes it)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, target, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


REFUSED = (
    # another service's data under an innocent prefix (and an audit naming no contact)
    "/api/v1/segments/../contacts/c1",
    "/api/v1/segments/%2e%2e/contacts/c1",
    "/api/v1/segments/.%2E/contacts/c1",
    "/api/v1/segments/..%2fcontacts/c1",
    "/api/v1/contacts/./c1",
    "/api/v1/contacts//c1",
    "/api/v1/contacts/c1/..",
    # a service's internal endpoints through a public (no login) route
    "/api/v1/public/consents/../../../../openapi.json",
    "/api/v1/public/consents/%2e%2e/%2e%2e/%2e%2e/%2e%2e/openapi.json",
    "/api/v1/public/consents/%2E%2E/%2E%2E/%2E%2E/%2E%2E/docs",
    "/api/v1/public/consents/..%2f..%2f..%2f..%2fmetrics",
    "/api/v1/public/consents/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fready",
    "/api/v1/public/consents/..%5c..%5c..%5c..%5chealth",
    "/api/v1/public/consents/%252e%252e/%252e%252e/%252e%252e/%252e%252e/openapi.json",
    # what a second decoding or a parser could read otherwise
    "/api/v1/contacts/c1%00",
    "/api/v1/contacts/%ff%fe",
)


def test_a_path_that_reads_two_ways_is_refused_and_reaches_no_service(served):
    port, app = served
    for target in REFUSED:
        for method in ("GET", "POST"):
            status, body = raw_call(port, method, target, as_user("alice"))
            assert status == 400, (method, target, body)
            assert body["error"] == "invalid_path"
    assert SEEN == []  # nothing reached the service
    assert app.state.access_audit.entries == []


def test_the_path_is_decoded_once_and_routed_audited_and_forwarded_as_one(served):
    port, app = served
    status, body = raw_call(port, "GET", "/api/v1/contacts/c%31?q=%C3%A9", as_user("alice"))
    assert (status, body) == (200, {"path": "/api/v1/contacts/c1"})
    assert SEEN[-1]["x-raw-path"] == b"/api/v1/contacts/c1"
    assert app.state.access_audit.entries[-1] == ("alice", "GET /api/v1/contacts/c1", 200)
    # an encoded character stays one: the service decodes it once into the same path
    status, body = raw_call(port, "GET", "/api/v1/contacts/%C3%A9t%C3%A9", as_user("alice"))
    assert (status, body) == (200, {"path": "/api/v1/contacts/été"})
    assert SEEN[-1]["x-raw-path"] == b"/api/v1/contacts/%C3%A9t%C3%A9"
    # a public page keeps working, and a trailing slash is no trick
    status, body = raw_call(port, "GET", "/api/v1/public/consents/unsubscribe?t=x")
    assert (status, body) == (200, {"path": "/api/v1/public/consents/unsubscribe"})
    assert raw_call(port, "GET", "/api/v1/contacts/", as_user("alice"))[0] == 200


# ---------------------------------------------------------------- clients behind a proxy

CLIENT_IP = "x-tribune-client-ip"


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "fastapi-routes"])
def test_forwarded_for_is_believed_from_a_trusted_proxy_only(upstream, fast):
    forwarded = {"X-Forwarded-For": "198.51.100.23, 10.1.2.3"}
    # nobody is trusted (the default): the direct peer is the client, whatever it says
    SEEN.clear()
    app = gateway(upstream, fast=fast)
    with serving(app) as port:
        assert raw_call(port, "GET", "/api/v1/contacts/c1", as_user("alice", **forwarded))[0] == 200
        raw_call(port, "POST", "/api/v1/public/consents/unsubscribe", forwarded)
    assert [seen[CLIENT_IP] for seen in SEEN] == ["127.0.0.1", "127.0.0.1"]
    assert app.state.access_audit.ips == ["127.0.0.1"]

    # the loopback is a trusted proxy, and so is 10.0.0.0/8 (the next hop): the client is
    # the last address before them
    SEEN.clear()
    app = gateway(upstream, fast=fast, trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"])
    with serving(app) as port:
        assert raw_call(port, "GET", "/api/v1/contacts/c1", as_user("alice", **forwarded))[0] == 200
        raw_call(port, "POST", "/api/v1/public/consents/unsubscribe", forwarded)
        raw_call(port, "GET", "/api/v1/contacts/c1", as_user("alice"))  # no header: the peer
    assert [seen[CLIENT_IP] for seen in SEEN] == ["198.51.100.23", "198.51.100.23", "127.0.0.1"]
    assert app.state.access_audit.ips == ["198.51.100.23", "127.0.0.1"]
