"""Request limits of every service (tribune_shared.limits, installed by create_service_app):
a body above its route's limit is a 413 naming the limit before anything parses it, and
headers with control characters are a 400."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, Header, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, model_validator
from starlette.types import Message, Receive, Scope, Send
from tribune_shared.app import CORRELATION_HEADER, create_service_app
from tribune_shared.errors import Unauthorized
from tribune_shared.limits import BodyLimit, HeaderCheck, allow_body, larger_body
from tribune_shared.settings import ServiceSettings

SETTINGS = ServiceSettings()  # max_body_bytes 64 KiB, max_text_body_bytes 1 MiB
LIMIT = SETTINGS.max_body_bytes
#: what the routes below were given to parse or validate, and what they streamed
SEEN: list[str] = []


class Command(BaseModel):
    filter: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _seen(cls, data: Any) -> Any:
        SEEN.append("validated")
        return data


async def caller(authorization: Annotated[str | None, Header()] = None) -> str:
    if authorization != "Bearer good":
        raise Unauthorized("not authenticated")
    return "someone"


router = APIRouter()


@router.post("/preview")
async def preview(body: Command) -> dict[str, int]:
    return {"keys": len(body.filter)}


@router.post("/texts", openapi_extra=larger_body("max_text_body_bytes"))
async def texts(body: Command) -> dict[str, int]:
    return {"keys": len(body.filter)}


@router.post("/uploads", openapi_extra=larger_body("max_text_body_bytes"))
async def upload(request: Request, who: Annotated[str, Depends(caller)]) -> dict[str, int]:
    size = 0
    async for chunk in request.stream():
        SEEN.append("chunk")
        size += len(chunk)
    return {"bytes": size}


@pytest.fixture
def client(monkeypatch) -> Iterator[TestClient]:
    SEEN.clear()
    original = Request.json

    async def recorded_json(self: Request) -> Any:
        SEEN.append("parsed")
        return await original(self)

    monkeypatch.setattr(Request, "json", recorded_json)
    app = create_service_app(SETTINGS, title="t", routers=[router])
    # no lifespan (no store): the limits answer before any route needs one
    yield TestClient(app)


def big_json(size: int) -> bytes:
    body = json.dumps({"filter": {"op": "tags", "tags": ["x" * size]}}).encode()
    assert len(body) > size
    return body


def test_a_json_body_above_the_limit_is_413_before_anything_parses_it(client):
    """A viewer's 1 MB preview was parsed whole (19x its size in memory), then refused."""
    r = client.post(
        "/preview", content=big_json(1_000_000), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert r.json() == {
        "error": "payload_too_large",
        "detail": f"the request body is larger than {LIMIT} bytes, the limit of this route",
        "limit": LIMIT,
    }
    assert SEEN == []  # neither parsed nor validated
    assert r.headers["connection"] == "close"  # the server stops reading the rest
    assert r.headers[CORRELATION_HEADER]  # inside the kernel's middlewares: logged, counted
    ok = client.post("/preview", json={"filter": {"op": "all"}})
    assert ok.status_code == 200 and SEEN == ["parsed", "validated"]


def test_a_chunked_body_is_counted_while_it_streams(client):
    def chunks(count: int) -> Iterator[bytes]:
        yield b'{"filter": {"op": "all", "pad": "'
        for _ in range(count):
            yield b"x" * 16_384
        yield b'"}}'

    headers = {"Content-Type": "application/json"}
    r = client.post("/preview", content=chunks(8), headers=headers)  # no Content-Length
    assert r.status_code == 413, r.text
    assert r.json()["limit"] == LIMIT and SEEN == []
    assert client.post("/preview", content=chunks(2), headers=headers).status_code == 200


def test_a_route_declares_a_larger_limit_next_to_it(client):
    body = big_json(200_000)
    headers = {"Content-Type": "application/json"}
    assert client.post("/preview", content=body, headers=headers).status_code == 413
    assert client.post("/texts", content=body, headers=headers).status_code == 200
    r = client.post("/texts", content=big_json(2_000_000), headers=headers)
    assert r.status_code == 413 and r.json()["limit"] == SETTINGS.max_text_body_bytes


def test_a_big_body_is_not_read_before_its_caller_is_authenticated(client):
    big = b"x" * 3_000_000
    r = client.post("/uploads", content=big)
    assert r.status_code == 401 and SEEN == []
    r = client.post("/uploads", content=big, headers={"Authorization": "Bearer good"})
    assert r.status_code == 413 and SEEN == []  # refused on its declared length
    r = client.post("/uploads", content=b"x" * 500_000, headers={"Authorization": "Bearer good"})
    assert r.status_code == 200 and r.json() == {"bytes": 500_000}


def test_json_nested_deeper_than_the_reader_goes_is_a_422(client):
    deep = b'{"filter": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # 40 KB, within the limit
    r = client.post("/preview", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [{"field": "body", "reason": "nested too deeply to be read"}]
    # other HTTP errors as FastAPI answers them
    assert client.get("/nowhere").json() == {"detail": "Not Found"}


def test_a_route_naming_an_unknown_limit_fails_at_start():
    bad = APIRouter()

    @bad.post("/x", openapi_extra=larger_body("no_such_setting"))
    async def x() -> None: ...

    with pytest.raises(ValueError, match="no_such_setting"):
        create_service_app(SETTINGS, title="t", routers=[bad])


# ---------------------------------------------------------------- at the ASGI level


def call(app, scope: Scope, messages: list[Message]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def http(headers: list[tuple[bytes, bytes]]) -> Scope:
    return {"type": "http", "method": "POST", "path": "/", "headers": headers}


class Recorder:
    """An app that sets its own limit (as the gateway does from its route table), reads
    the body and records what it got to parse."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parsed: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        allow_body(scope, self.limit)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.parsed.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def chunk(data: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


def test_a_handler_sets_the_limit_before_reading_and_is_held_to_it():
    app = Recorder(limit=10)
    sent = call(BodyLimit(app, settings=SETTINGS), http([]), [chunk(b"x" * 6), chunk(b"x" * 5)])
    assert sent[0]["status"] == 413 and app.parsed == []
    assert json.loads(sent[1]["body"])["limit"] == 10
    declared = http([(b"content-length", b"11")])
    sent = call(BodyLimit(app, settings=SETTINGS), declared, [chunk(b"x" * 11, more=False)])
    assert sent[0]["status"] == 413 and app.parsed == []
    sent = call(BodyLimit(app, settings=SETTINGS), http([]), [chunk(b"x" * 10, more=False)])
    assert sent[0]["status"] == 200 and app.parsed == [b"x" * 10]


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        (b"x-note", b"a\x00b", "headers.x-note"),
        (b"user-agent", b"\x00", "headers.user-agent"),
        (b"x-note", b"a\x1bb", "headers.x-note"),  # h11 lets ESC through
        (b"x-note", b"a\nb", "headers.x-note"),
        (b"x-note", b"a\x7f", "headers.x-note"),
        (b"x-n\x00te", b"a", "headers"),
        (b"x note", b"a", "headers"),
    ],
)
def test_a_header_with_a_control_character_is_400(name: bytes, value: bytes, field: str):
    app = Recorder(limit=10)
    sent = call(HeaderCheck(app), http([(b"host", b"x"), (name, value)]), [chunk(b"", False)])
    assert sent[0]["status"] == 400 and app.parsed == []
    body = json.loads(sent[1]["body"])
    assert body["error"] == "invalid_header" and body["detail"][0]["field"] == field


def test_tabs_and_non_ascii_bytes_in_headers_are_fine(client):
    app = Recorder(limit=10)
    headers = [(b"x-note", b"a\tb"), (b"x-name", "Zoé".encode("latin-1"))]
    sent = call(HeaderCheck(app), http(headers), [chunk(b"", False)])
    assert sent[0]["status"] == 200
    # and through a whole service
    r = client.get("/health", headers={"X-Note": "a\x00b"})
    assert r.status_code == 400 and r.json()["detail"][0]["field"] == "headers.x-note"
    assert client.get("/health", headers={"X-Note": "a\tb"}).status_code == 200
