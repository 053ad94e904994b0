"""The web app's calls to the gateway's own HTTP API, in-process, as the browser's user.

A page never reads the store nor checks a role: it calls ``/api/v1/...`` on the very
application that serves it (through every middleware: path normalisation, body limits,
the login limiter, the access audit, read-your-writes) with the user's bearer token, so
what a page shows is exactly what the API lets that user see. No socket is opened: the
request goes to the ASGI application directly (httpx's ASGI transport), with the
browser's address and user agent, so the limiter and the audit see the real client.

Streams (the live figures' Server-Sent Events) cannot go through httpx's ASGI transport,
which waits for the whole answer: ``stream`` runs the application on a queue instead and
hands the answer on as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import httpx
from starlette.types import ASGIApp, Message

#: the host the in-process calls name (never resolved: no socket is opened)
INTERNAL_BASE = "http://gateway.internal"
#: messages of a stream waiting for the browser to take them (backpressure on the API)
STREAM_QUEUE = 16


@dataclass(frozen=True)
class Caller:
    """Who the browser is, as the API must see it."""

    client: tuple[str, int]
    user_agent: str | None
    scheme: str = "http"


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    headers: Mapping[str, str]
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class StreamAnswer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes]


class ApiClient:
    def __init__(self, app: ASGIApp, timeout_seconds: float) -> None:
        self.app = app
        self.timeout = timeout_seconds

    def _headers(self, caller: Caller, token: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if caller.user_agent:
            headers["User-Agent"] = caller.user_agent[:512]
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def request(
        self,
        caller: Caller,
        method: str,
        path: str,
        *,
        token: str | None = None,
        params: Mapping[str, str | Sequence[str]] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, IO[bytes], str]] | None = None,
    ) -> ApiAnswer:
        """One call; ``files`` (with ``data`` as the other fields) makes it a multipart
        form whose file parts are read in chunks as the API takes them, never held whole."""
        transport = httpx.ASGITransport(app=self.app, client=caller.client)
        async with httpx.AsyncClient(
            transport=transport, base_url=INTERNAL_BASE, timeout=self.timeout, trust_env=False
        ) as client:
            response = await client.request(
                method,
                path,
                params=params,
                json=json,
                data=data,
                files=files,
                headers=self._headers(caller, token),
            )
        body: Any = None
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                body = response.json()
            except ValueError:
                body = None
        return ApiAnswer(response.status_code, response.headers, body)

    async def stream(
        self,
        caller: Caller,
        path: str,
        *,
        token: str,
        params: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
        accept: str = "text/event-stream",
    ) -> StreamAnswer:
        """A GET whose answer is handed on as the API writes it (Server-Sent Events, a
        CSV download)."""
        query = httpx.QueryParams(params or {})
        headers = {**self._headers(caller, token), "Accept": accept}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id[:200]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": caller.scheme,
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": str(query).encode(),
            "headers": [(b"host", b"gateway.internal")]
            + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": caller.client,
            "server": ("gateway.internal", 80),
        }
        queue: asyncio.Queue[Message | None] = asyncio.Queue(STREAM_QUEUE)
        gone = asyncio.Event()
        asked = False

        async def receive() -> Message:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()  # the browser left: the API's stream ends
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            await queue.put(message)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        start = await queue.get()
        if start is None or start["type"] != "http.response.start":
            gone.set()
            with contextlib.suppress(Exception):
                await task
            return StreamAnswer(502, [], _nothing())

        async def body() -> AsyncIterator[bytes]:
            try:
                while True:
                    message = await queue.get()
                    if message is None:
                        return
                    if message["type"] == "http.response.body":
                        if chunk := message.get("body", b""):
                            yield chunk
                        if not message.get("more_body", False):
                            return
            finally:
                gone.set()
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

        return StreamAnswer(start["status"], list(start.get("headers", [])), body())


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover  (an async generator that yields nothing)
