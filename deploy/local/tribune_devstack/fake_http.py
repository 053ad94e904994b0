"""The small HTTP/1.1 server and client the fake providers (fake_sms, fake_payments) share:
JSON in, JSON out, one request per connection, on asyncio streams. A test double of a
provider needs no web framework, and the devstack must start with nothing but the
standard library and its pinned dependencies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("tribune.fake_http")

#: the largest request body a fake accepts
MAX_BODY = 64 * 1024
REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        url = urlsplit(target)
        self.method = method
        self.path = url.path.rstrip("/") or "/"
        self.query = parse_qs(url.query)
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """The body as JSON (None when empty); ValueError when it is not JSON."""
        return json.loads(self.body or b"null")


#: (HTTP status, JSON payload, extra response headers)
Response = tuple[int, Any, dict[str, str]]
Route = Callable[[Request], Awaitable[Response]]


async def handle_connection(
    route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read one request, answer what ``route`` says (400 for a body that is not JSON, 413
    above MAX_BODY, 500 if the route fails: a bug must not kill the fake)."""
    headers_out: dict[str, str] = {}
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        length = int(headers.get("content-length") or 0)
        if len(parts) != 3:
            status, payload = 400, {"error": "bad request line"}
        elif length > MAX_BODY:
            status, payload = 413, {"error": f"body larger than {MAX_BODY} bytes"}
        else:
            body = await asyncio.wait_for(reader.readexactly(length), timeout=10)
            try:
                status, payload, headers_out = await route(
                    Request(parts[0].upper(), parts[1], headers, body)
                )
            except ValueError:
                status, payload = 400, {"error": "body is not valid JSON"}
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
        writer.close()
        return
    except Exception as exc:
        log.exception("http handler failed")
        status, payload = 500, {"error": str(exc)}
    data = json.dumps(payload).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers_out.items())
    writer.write(
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n{extra}"
        "Connection: close\r\n\r\n".encode("latin-1")
        + data
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


def decode(raw: bytes) -> Any:
    """An answer's body: JSON if it is, else its text (cut)."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:2000]


async def post(
    url: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int | str, Any]:
    """POST (in a thread: the fakes call the platform's webhooks): (HTTP status, answer), or
    ("unreachable: ...", None)."""

    def call() -> tuple[int | str, Any]:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return r.status, decode(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, decode(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            return f"unreachable: {exc}", None

    return await asyncio.to_thread(call)


async def serve_until(
    route: Route,
    tasks: set[asyncio.Task[None]],
    host: str,
    port: int,
    stop: asyncio.Event,
    listening: Callable[[], None] | None = None,
) -> None:
    """Serve ``route`` until ``stop`` is set, then cancel the fake's background ``tasks``.
    ``listening`` is called once the port accepts connections."""
    server = await asyncio.start_server(lambda r, w: handle_connection(route, r, w), host, port)
    if listening is not None:
        listening()
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        for task in list(tasks):
            task.cancel()


def run_until_signalled(serve: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run a fake as a program: until SIGTERM or SIGINT."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    asyncio.run(run())
