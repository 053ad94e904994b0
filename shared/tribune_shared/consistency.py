"""Read-your-writes across services: consistency tokens.

A write answers with a token naming the events it committed (type, id, time) in the
``X-Tribune-Consistency`` header; the client (or the gateway on its behalf) sends the
latest token back on its next requests. A service that consumes one of the named event
types waits, a bounded time, until its consumer has applied that event (the event id is in
its processed-events record, written in the same transaction as the projection), then
serves the request on a projection that holds it. If the wait runs out it answers 503
with Retry-After, never a false 404 or a false refusal.

A token accumulates: each response carries the request's token merged with the events the
request itself committed, newest first, bounded in entries and in age, so a chain of
writes across several services (create a contact, grant its consent, send a message) is
honoured at every step. Tokens are not secret and not signed: a forged one can only make
its own request wait (bounded) and fail with 503.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from tribune_shared.errors import InvalidFields

HEADER = "X-Tribune-Consistency"
HEADER_LOWER = HEADER.lower().encode()

#: one entry: ``<event-type>.<event-id>.<committed at, epoch milliseconds>``
_ENTRY = re.compile(r"^([a-z][a-z0-9-]{0,63})\.([A-Za-z0-9_-]{1,64})\.(\d{1,15})$")
#: a header longer than this is refused before parsing (256 entries of the longest form)
MAX_HEADER_LENGTH = 40_000


@dataclass(frozen=True, order=True)
class Written:
    """An event a client's write committed."""

    at_ms: int
    event_type: str
    event_id: str

    def render(self) -> str:
        return f"{self.event_type}.{self.event_id}.{self.at_ms}"


def parse(header: str | None) -> list[Written]:
    """The entries of a token; a malformed one is a 422 naming the header."""
    if not header:
        return []
    if len(header) > MAX_HEADER_LENGTH:
        raise InvalidFields([(HEADER, f"longer than {MAX_HEADER_LENGTH} characters")])
    out = []
    for raw in header.split(","):
        raw = raw.strip()
        if not raw:
            continue
        match = _ENTRY.match(raw)
        if match is None:
            raise InvalidFields(
                [(HEADER, f"entry {raw[:80]!r} is not <event-type>.<event-id>.<epoch-ms>")]
            )
        out.append(Written(int(match[3]), match[1], match[2]))
    return out


def merge(
    *tokens: Iterable[Written],
    max_entries: int,
    horizon_seconds: float,
    now_ms: int | None = None,
) -> list[Written]:
    """Entries of several tokens, deduplicated, newest first, at most ``max_entries``, none
    older than the horizon (a projection that is that far behind is an incident the
    token cannot paper over)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    oldest = now_ms - int(horizon_seconds * 1000)
    seen: dict[str, Written] = {}
    for token in tokens:
        for entry in token:
            if entry.at_ms >= oldest and entry.event_id not in seen:
                seen[entry.event_id] = entry
    return sorted(seen.values(), reverse=True)[:max_entries]


def render(entries: Iterable[Written]) -> str:
    return ",".join(e.render() for e in entries)


# ---------------------------------------------------------------- what a request wrote

_written: ContextVar[list[Written] | None] = ContextVar("tribune_written", default=None)


@contextmanager
def recording() -> Iterator[list[Written]]:
    """Collect the events committed while handling one request (the outbox reports them)."""
    collected: list[Written] = []
    token = _written.set(collected)
    try:
        yield collected
    finally:
        _written.reset(token)


def record(event_type: str, event_id: str) -> None:
    """Called by the outbox for every event it stores; a no-op outside a request."""
    collected = _written.get()
    if collected is not None:
        collected.append(Written(int(time.time() * 1000), event_type, event_id))


# ---------------------------------------------------------------- waiting for them

#: which of these event ids a service has applied (its processed-events record)
AppliedCheck = Callable[[list[str]], Awaitable[set[str]]]


class NotYetApplied(Exception):
    """The service has not applied every named event within the wait."""

    def __init__(self, missing: list[Written]) -> None:
        super().__init__(f"{len(missing)} event(s) not applied yet")
        self.missing = missing


async def wait_applied(
    applied: AppliedCheck,
    entries: list[Written],
    *,
    timeout: float,
    poll_seconds: float,
) -> None:
    """Return once ``applied`` reports every entry, else raise ``NotYetApplied``."""
    pending = entries
    deadline = time.monotonic() + timeout
    while pending:
        done = await applied([e.event_id for e in pending])
        pending = [e for e in pending if e.event_id not in done]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise NotYetApplied(pending)
        await asyncio.sleep(poll_seconds)


# ---------------------------------------------------------------- the HTTP side

#: paths that never wait (probes and scrapes must answer whatever the projections hold)
_NEVER_WAIT = frozenset({"/health", "/ready", "/metrics"})


class ConsistencyMiddleware:
    """ASGI middleware of every service API: waits for the events a request's token names
    (those of ``awaited``: what it consumes from other services), and answers with the
    token of what it committed.

    ``applied`` says which event ids the service's consumers applied; ``committed`` which
    of the events a request wrote really committed (a transaction retried or rolled back
    leaves ids that never will, and a token must not name them)."""

    def __init__(
        self,
        app,
        *,
        awaited: frozenset[str],
        applied: Callable[[], AppliedCheck],
        committed: Callable[[], AppliedCheck],
        wait_seconds: float,
        poll_seconds: float,
        max_entries: int,
        horizon_seconds: float,
    ) -> None:
        self.app = app
        self.awaited = awaited
        self.applied = applied
        self.committed = committed
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.max_entries = max_entries
        self.horizon_seconds = horizon_seconds

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in _NEVER_WAIT:
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope["headers"] if k == HEADER_LOWER), None)
        try:
            incoming = merge(
                parse(raw.decode("latin-1") if raw else None),
                max_entries=self.max_entries,
                horizon_seconds=self.horizon_seconds,
            )
        except InvalidFields as exc:
            await _json(send, exc.status_code, exc.body(), {})
            return
        needed = [e for e in incoming if e.event_type in self.awaited]
        if needed:
            try:
                await wait_applied(
                    self.applied(),
                    needed,
                    timeout=self.wait_seconds,
                    poll_seconds=self.poll_seconds,
                )
            except NotYetApplied as exc:
                body = {
                    "error": "not_yet_consistent",
                    "detail": "this service has not yet applied a change you just made; "
                    "retry shortly",
                    "pending": len(exc.missing),
                }
                await _json(send, 503, body, {"retry-after": "1"})
                return
        with recording() as written:

            async def send_with_token(message) -> None:
                if message["type"] == "http.response.start":
                    fresh: list[Written] = []
                    if written:
                        done = await self.committed()([w.event_id for w in written])
                        fresh = [w for w in written if w.event_id in done]
                    # a token the app set itself (the gateway relaying a service's) is kept
                    relayed = next(
                        (v for k, v in message.get("headers", []) if k == HEADER_LOWER), None
                    )
                    if fresh or incoming or relayed:
                        token = merge(
                            fresh,
                            _parse_lenient(relayed),
                            incoming,
                            max_entries=self.max_entries,
                            horizon_seconds=self.horizon_seconds,
                        )
                        headers = [
                            *(h for h in message.get("headers", []) if h[0] != HEADER_LOWER),
                            (HEADER_LOWER, render(token).encode()),
                        ]
                        message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, send_with_token)


def _parse_lenient(raw: bytes | None) -> list[Written]:
    try:
        return parse(raw.decode("latin-1")) if raw else []
    except InvalidFields:  # an upstream's bad token is not the client's fault: drop it
        return []


async def _json(send, status: int, body: dict, headers: dict[str, str]) -> None:
    import json

    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *((k.encode(), v.encode()) for k, v in headers.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
