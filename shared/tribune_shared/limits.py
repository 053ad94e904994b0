"""What every Tribune HTTP process refuses before its routes see a request: headers holding
control characters (400), and a body larger than its route's limit (413).

Body limits. A route takes at most ``max_body_bytes`` (a few KiB: JSON commands) unless it
declares a larger limit next to its definition (``openapi_extra=larger_body("<setting>")``:
an upload, a long text), or a handler that knows better sets this request's limit before
reading the body (``allow_body``: the gateway, from its route table). The limit is checked
when the body is first read, on the declared ``Content-Length`` first and then while it
streams in (a chunked body has none), so a refused body is never parsed nor held whole,
and nothing reads it at all before authentication wherever authentication comes first (the
gateway's forwarded routes, streamed uploads): an anonymous caller gets its 401, not a
chance to stream. The refusal is 413 ``payload_too_large`` naming the limit, whatever the
route made of the failed read, and nothing was changed (the route never got its input).

Why not FastAPI's own ``max_body_size``: its per-route limits are fixed where the route is
declared (ours are Settings), it turns any answer into a 413 once the declared length is
above the limit (a 401 included), and its error does not name the limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tribune_shared.errors import DomainError, InvalidField, PayloadTooLarge
from tribune_shared.settings import ServiceSettings

#: ``openapi_extra`` key of a route's larger limit: the name of the Settings field holding it
ROUTE_KEY = "x-tribune-body-limit"
#: scope key of this request's limit, set by a handler before it reads the body
SCOPE_KEY = "tribune.max_body_bytes"
#: the limit of a route that declares none
DEFAULT_SETTING = "max_body_bytes"

# RFC 9110: a field name is a token; a field value holds no control character but tab
# (obs-text, bytes 0x80-0xFF, stays allowed). As translation tables (a bad byte becomes
# NUL): on every request of the gateway, a quarter of the cost of a regex search.
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NAME_BYTES = bytes(1 if b in _TOKEN else 0 for b in range(256))
_VALUE_BYTES = bytes(0 if (b < 0x20 and b != 0x09) or b == 0x7F else 1 for b in range(256))


class InvalidHeader(DomainError):
    """400: a header the HTTP grammar does not allow (a NUL byte, a line break...)."""

    status_code = 400
    code = "invalid_header"


def larger_body(setting: str) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body may exceed ``max_body_bytes`` (an upload, a
    long text): the name of the service Settings field holding its limit in bytes."""
    return {ROUTE_KEY: setting}


def allow_body(scope: Scope, limit: int) -> None:
    """Let this request's body be up to ``limit`` bytes; for a handler that knows the limit
    better than its route does, called before it reads the body."""
    scope[SCOPE_KEY] = limit


def too_large(limit: int) -> PayloadTooLarge:
    """The refusal of a body above ``limit``; the connection closes after it, so the server
    stops reading the rest."""
    return PayloadTooLarge(
        f"the request body is larger than {limit} bytes, the limit of this route",
        limit=limit,
        headers={"Connection": "close"},
    )


def every_route(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The app's routes, those of included routers and mounts too."""
    for route in routes:
        # FastAPI keeps an included router whole (``original_router``); a mount its routes
        inner = getattr(getattr(route, "original_router", route), "routes", None)
        if inner is not None:
            yield from every_route(inner)
        else:
            yield route


def check_route_limits(routes: Iterable[BaseRoute], settings: ServiceSettings) -> None:
    """Fail at start-up, not on a request, when a route names a limit Settings do not hold."""
    for route in every_route(routes):
        name = declared_limit(route)
        if name is not None and not isinstance(getattr(settings, name, None), int):
            path = getattr(route, "path", route)
            raise ValueError(f"route {path}: body limit {name!r} is not an integer setting")


def declared_limit(route: object) -> str | None:
    """The Settings field a route names for its body limit (``larger_body``), if any."""
    extra = getattr(route, "openapi_extra", None)
    name = extra.get(ROUTE_KEY) if isinstance(extra, dict) else None
    return name if isinstance(name, str) else None


def limit_for(scope: Scope, settings: ServiceSettings) -> int:
    """This request's body limit: the one a handler set, else its route's, else the default.
    Read when the body is first read: by then the router has matched (``scope["route"]``)."""
    limit = scope.get(SCOPE_KEY)
    if isinstance(limit, int):
        return limit
    return int(getattr(settings, declared_limit(scope.get("route")) or DEFAULT_SETTING))


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimit:
    """ASGI middleware: a request's body within its limit (see the module's docstring).
    Installed inside the kernel's other middlewares, so they see (and count) the 413."""

    def __init__(self, app: ASGIApp, *, settings: ServiceSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        guard = _Guard(scope, receive, send, self.settings)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            # what the route made of the refused read (an error, a failed upstream call)
            if guard.refused is None or guard.started:
                raise
        if guard.refused is not None and not guard.started:
            refused = guard.refused
            await JSONResponse(
                refused.body(), status_code=refused.status_code, headers=refused.headers
            )(scope, receive, send)


class _Guard:
    """One request's ``receive`` counted against its limit, and its ``send`` that drops
    the route's own answer once the body was refused (the 413 is sent instead)."""

    __slots__ = ("_receive", "_send", "limit", "refused", "scope", "settings", "size", "started")

    def __init__(self, scope: Scope, receive: Receive, send: Send, settings: ServiceSettings):
        self.scope = scope
        self.settings = settings
        self._receive = receive
        self._send = send
        self.limit: int | None = None
        self.size = 0
        self.refused: PayloadTooLarge | None = None
        self.started = False  # the route's answer is under way: it can no longer be replaced

    def _refuse(self, limit: int) -> PayloadTooLarge:
        self.refused = too_large(limit)
        return self.refused

    async def receive(self) -> Message:
        if self.refused is not None:
            raise self.refused
        if self.limit is None:
            self.limit = limit_for(self.scope, self.settings)
            declared = _declared_length(self.scope)
            if declared is not None and declared > self.limit:
                raise self._refuse(self.limit)
        message = await self._receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.limit:
                raise self._refuse(self.limit)
        return message

    async def send(self, message: Message) -> None:
        if self.refused is not None and not self.started:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answers to HTTP errors, but a body nested deeper than its JSON reader can
    go (it recurses: a hostile filter tree of a thousand levels fits in a few KiB) is bad
    input like any other: 422 naming the body, not "There was an error parsing the body"."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        problem = InvalidField("nested too deeply to be read", field="body")
        return JSONResponse(problem.body(), status_code=problem.status_code)
    return await http_exception_handler(request, exc)


def header_problem(headers: Iterable[tuple[bytes, bytes]]) -> InvalidHeader | None:
    """The first header the HTTP grammar does not allow, as a 400; None when all are fine.
    (uvicorn's httptools parser refuses most of them itself; h11 lets control characters
    such as ESC through, and other servers or proxies may let more: checked here whatever
    runs the app.)"""
    names, values = [], []
    for name, value in headers:
        names.append(name)
        values.append(value)
    if (
        all(names)
        and b"\0" not in b"".join(names).translate(_NAME_BYTES)
        and b"\0" not in b"\t".join(values).translate(_VALUE_BYTES)
    ):
        return None
    for name, value in zip(names, values, strict=True):
        if not name or b"\0" in name.translate(_NAME_BYTES):
            return InvalidHeader(
                "a header name holds a character a header name may not hold", field="headers"
            )
        at = value.translate(_VALUE_BYTES).find(b"\0")
        if at >= 0:
            return InvalidHeader(
                f"holds a control character (0x{value[at]:02x}); only tab is allowed",
                field=f"headers.{name.decode('latin-1')}",
            )
    return None  # pragma: no cover (the joined check found one)


class HeaderCheck:
    """ASGI middleware: 400 for a request whose headers hold a NUL byte or another control
    character (tab aside), before anything reads them (logs, tokens, forwarding)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = header_problem(scope["headers"]) if scope["type"] == "http" else None
        if problem is None:
            await self.app(scope, receive, send)
            return
        await JSONResponse(problem.body(), status_code=problem.status_code)(scope, receive, send)


class BodyTooLarge(Exception):
    """A body beyond the limit a handler reads it with (a public page answers it with a
    page of its own rather than the JSON 413)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (BodyTooLarge) as soon as it is known to exceed
    ``limit``: from its declared length, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return body
