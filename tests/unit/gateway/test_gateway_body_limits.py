"""Body limits at the gateway (the real app of gateway.main, a real upstream server): each
forwarded request may carry what its route allows (gateway.routing), checked only once the
caller is authenticated, on the declared length and then while the body streams on; bad
headers are refused before anything reads them."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from gateway.main import create_app
from gateway.proxy import Proxy
from gateway.routing import ROUTES
from gateway.settings import GatewaySettings
from support import make_identity
from tribune_shared.auth import Identity, Role
from tribune_shared.errors import Unauthorized
from tribune_shared.limits import declared_limit, every_route

# ---------------------------------------------------------------- the upstream service

upstream_app = FastAPI()
RECEIVED: list[tuple[str, int]] = []  # (path, body bytes) of every call the service got


@upstream_app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH"])
async def service(request: Request, path: str) -> JSONResponse:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    RECEIVED.append((request.url.path, size))
    return JSONResponse({"bytes": size})


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(upstream_app, host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "upstream did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


# ---------------------------------------------------------------- the gateway

VIEWER = make_identity("/root/paris/", Role.viewer, user_id="vera")


class Users:
    async def identity_for_token(self, token: str) -> Identity:
        if token != "vera-token":
            raise Unauthorized("invalid or expired token")
        return VIEWER


class Audit:
    def __init__(self) -> None:
        self.statuses: list[tuple[str, int]] = []

    async def record(self, identity, method, path, query, status, *args, **kwargs) -> str:
        self.statuses.append((f"{method} {path}", status))
        return "id"


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-routes"])
def client(request, upstream) -> Iterator[TestClient]:
    settings = GatewaySettings(
        contacts_url=upstream, consent_url=upstream, memberships_url=upstream,
        messaging_url=upstream, fast_forward=request.param,
    )  # fmt: skip
    app = create_app(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the real middlewares and routes; users and the audit without a store
        app.state.proxy = Proxy(settings)
        app.state.gateway_service = Users()
        app.state.access_audit = Audit()
        yield
        await app.state.proxy.close()

    app.router.lifespan_context = lifespan
    RECEIVED.clear()
    with TestClient(app) as c:
        yield c


VERA = {"Authorization": "Bearer vera-token"}
JSON = {"Content-Type": "application/json"}
LIMIT = GatewaySettings().max_body_bytes


def test_a_viewers_megabyte_preview_is_413_and_never_reaches_the_service(client):
    big = b'{"filter": {"op": "all", "pad": "' + b"x" * 1_000_000 + b'"}}'
    r = client.post("/api/v1/segments/preview", content=big, headers={**VERA, **JSON})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large" and r.json()["limit"] == LIMIT
    assert str(LIMIT) in r.json()["detail"]
    assert RECEIVED == []
    assert client.app.state.access_audit.statuses == [("POST /api/v1/segments/preview", 413)]
    small = b'{"filter": {"op": "all"}}'
    r = client.post("/api/v1/segments/preview", content=small, headers={**VERA, **JSON})
    assert r.status_code == 200 and RECEIVED == [("/api/v1/segments/preview", len(small))]


def test_a_chunked_body_above_the_limit_is_413(client):
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 16_384

    r = client.post("/api/v1/segments/preview", content=chunks(), headers={**VERA, **JSON})
    assert r.status_code == 413, r.text
    assert r.json()["limit"] == LIMIT
    # whatever part went on before the limit was reached, the service answered nothing
    assert all(size <= LIMIT for _, size in RECEIVED)


def test_an_import_above_the_json_limit_is_forwarded_whole(client):
    csv = b"nom;email\n" + b"Dupont;d@example.org\n" * 50_000  # 1 MiB
    r = client.post(
        "/api/v1/contacts/imports", content=csv, headers={**VERA, "Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    assert RECEIVED == [("/api/v1/contacts/imports", len(csv))]
    # the import limit holds on that route only
    r = client.post("/api/v1/contacts/imports/j1/cancel", content=csv, headers=VERA)
    assert r.status_code == 413 and r.json()["limit"] == LIMIT
    r = client.post("/api/v1/contacts", content=csv, headers={**VERA, **JSON})
    assert r.status_code == 413
    # a long text fits its own limit
    text = b'{"text": "' + b"x" * 200_000 + b'"}'
    r = client.post("/api/v1/messages", content=text, headers={**VERA, **JSON})
    assert r.status_code == 200 and RECEIVED[-1] == ("/api/v1/messages", len(text))
    assert len(RECEIVED) == 2


def test_an_unauthenticated_big_body_gets_401_first(client):
    big = b"x" * 3_000_000
    for path in ("/api/v1/segments/preview", "/api/v1/contacts/imports"):
        r = client.post(path, content=big, headers=JSON)
        assert r.status_code == 401, r.text
        r = client.post(path, content=big, headers={"Authorization": "Bearer stolen", **JSON})
        assert r.status_code == 401, r.text
    assert RECEIVED == []


def test_a_header_with_a_nul_byte_is_400(client):
    r = client.get("/api/v1/contacts/c1", headers={**VERA, "X-Note": "a\x00b"})
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == [
        {
            "field": "headers.x-note",
            "reason": "holds a control character (0x00); only tab is allowed",
        }
    ]
    r = client.get("/api/v1/contacts/c1", headers={**VERA, "User-Agent": "a\x1bb"})
    assert r.status_code == 400
    assert RECEIVED == []
    assert client.get("/api/v1/contacts/c1", headers={**VERA, "X-Note": "a\tb"}).status_code == 200


def test_the_route_table_knows_every_route_a_service_lets_take_more():
    """The gateway's larger limits and the services' are declared in two places: the same
    requests, or an upload would be refused by one of them (or let through by it)."""
    from consent.main import create_app as consent_app
    from contacts.main import create_app as contacts_app
    from memberships.main import create_app as memberships_app
    from messaging.main import create_app as messaging_app

    declared = {
        (method, route.path)
        for make in (contacts_app, consent_app, memberships_app, messaging_app)
        for route in every_route(make().routes)
        if declared_limit(route) is not None
        for method in getattr(route, "methods", ())
    }
    at_gateway = {(large.method, large.path) for r in ROUTES for large in r.large_bodies}
    assert declared == at_gateway
    settings = GatewaySettings()
    for route in ROUTES:
        for large in route.large_bodies:
            assert large.path.startswith(route.prefix + "/") or large.path == route.prefix
            assert getattr(settings, large.setting) > settings.max_body_bytes


def test_a_larger_limit_holds_on_its_exact_requests_only():
    settings = GatewaySettings()
    consents = next(r for r in ROUTES if r.prefix == "/api/v1/consents")
    text, json_limit = settings.max_text_body_bytes, settings.max_body_bytes
    assert consents.max_body_bytes(settings, "PUT", "/api/v1/consents/texts/t1") == text
    assert consents.max_body_bytes(settings, "POST", "/api/v1/consents/texts") == text
    for method, path in [
        ("PUT", "/api/v1/consents/texts/t1/more"),
        ("PUT", "/api/v1/consents/texts/"),
        ("PATCH", "/api/v1/consents/texts/t1"),
        ("POST", "/api/v1/consents/c1/grant"),
    ]:
        assert consents.max_body_bytes(settings, method, path) == json_limit, (method, path)
