"""Read-your-writes across services: consistency tokens.

A write answers with a token naming the events it committed (type, id, time) in the
``X-Tribune-Consistency`` header; the client (or the gateway on its behalf) sends the
latest token back on its next requests. A service that consumes one of the named event
types makes sure, a bounded time, that its consumer has applied that event (the event id is
in its processed-events record, written in the same transaction as the projection) before
an answer that depends on it: always for an urgent event (a "no" is honoured at once), and
for a bulk one only when the answer would be a 404 or a refusal (see
ConsistencyMiddleware). If the wait runs out it answers 503 with Retry-After, never a false
404 or a false refusal.

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

#: one entry: ``<event-type>.<event-id>.<committed at, epoch milliseconds>[.<key>]`` (the
#: key, the event's aggregate id, tells a service whether a request is about it)
_ENTRY = re.compile(
    r"^([a-z][a-z0-9-]{0,63})\.([A-Za-z0-9_-]{1,64})\.(\d{1,15})(?:\.([A-Za-z0-9_-]{1,64}))?$"
)
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: a header longer than this is refused before parsing (256 entries of the longest form)
MAX_HEADER_LENGTH = 40_000


@dataclass(frozen=True, order=True)
class Written:
    """An event a client's write committed."""

    at_ms: int
    event_type: str
    event_id: str
    #: the aggregate id (a contact's, a federation's); "" when it cannot travel in a token
    key: str = ""

    def render(self) -> str:
        tail = f".{self.key}" if self.key else ""
        return f"{self.event_type}.{self.event_id}.{self.at_ms}{tail}"


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
                [
                    (
                        HEADER,
                        f"entry {raw[:80]!r} is not <event-type>.<event-id>.<epoch-ms>[.<key>]",
                    )
                ]
            )
        out.append(Written(int(match[3]), match[1], match[2], match[4] or ""))
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
#: the ids among them known to be committed (the transaction runner saw the commit)
_committed: ContextVar[set[str] | None] = ContextVar("tribune_committed", default=None)
#: the ids recorded by the current transaction attempt
_attempt: ContextVar[list[str] | None] = ContextVar("tribune_attempt", default=None)


@contextmanager
def recording() -> Iterator[list[Written]]:
    """Collect the events committed while handling one request (the outbox reports them)."""
    collected: list[Written] = []
    token = _written.set(collected)
    known = _committed.set(set())
    try:
        yield collected
    finally:
        _committed.reset(known)
        _written.reset(token)


def record(event_type: str, event_id: str, key: str = "", *, committed: bool = False) -> None:
    """Called by the outbox for every event it stores; a no-op outside a request.
    ``committed``: the caller knows its transaction committed (a batch run for it)."""
    collected = _written.get()
    if collected is not None:
        key = key if _KEY.match(key) else ""
        collected.append(Written(int(time.time() * 1000), event_type, event_id, key))
        if committed:
            confirm([event_id])
        elif (attempt := _attempt.get()) is not None:
            attempt.append(event_id)


@contextmanager
def transaction_events() -> Iterator[list[str]]:
    """The ids of the events recorded inside (one attempt of one transaction: the runner's
    own, even while other transactions of the request run concurrently)."""
    ids: list[str] = []
    token = _attempt.set(ids)
    try:
        yield ids
    finally:
        _attempt.reset(token)


def confirm(event_ids: Iterable[str]) -> None:
    """These events are committed: the transaction runner saw its commit succeed. The
    request's token then names them without asking the store (a find per write request:
    most of the webhook's store commands)."""
    if (known := _committed.get()) is not None:
        known.update(event_ids)


def known_committed() -> set[str]:
    """The ids this request's recording knows to be committed."""
    return _committed.get() or set()


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
    poll_max_seconds: float | None = None,
) -> None:
    """Return once ``applied`` reports every entry, else raise ``NotYetApplied``.

    It looks again after ``poll_seconds``, then after waits that double up to
    ``poll_max_seconds``: an event applied at once is seen at once, and a request held by a
    backlog does not ask the store a hundred times a second while that backlog is digested
    (measured during an import's digest: one service's waiting requests made 87 reads a
    second, the busiest statement of the store)."""
    pending = entries
    deadline = time.monotonic() + timeout
    interval = poll_seconds
    ceiling = max(poll_seconds, poll_max_seconds if poll_max_seconds is not None else 0.0)
    while pending:
        done = await applied([e.event_id for e in pending])
        pending = [e for e in pending if e.event_id not in done]
        if not pending:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotYetApplied(pending)
        await asyncio.sleep(min(interval, left))
        interval = min(interval * 2, ceiling)


# ---------------------------------------------------------------- the HTTP side

#: paths that never wait (probes and scrapes must answer whatever the projections hold)
_NEVER_WAIT = frozenset({"/health", "/ready", "/metrics"})

#: the answers a projection that lags behind can cause: "not found" and "refused"
MISS_STATUSES = frozenset({404, 409})

#: response header: the ids of the token's entries this service has confirmed it applied
#: (the gateway stops sending those to it); entries it did not need to check are absent
APPLIED_HEADER = "X-Tribune-Consistency-Applied"
APPLIED_HEADER_LOWER = APPLIED_HEADER.lower().encode()


class ConsistencyMiddleware:
    """ASGI middleware of every service API: honours the events a request's token names
    (those of ``awaited``: what it consumes from other services), and answers with the
    token of what it committed.

    Entries are waited for before the request runs when the request depends on them:

    - urgent ones (a revocation, a suppression, an erasure): an answer must never ignore a
      "no" the client just said. Their lane never queues behind bulk work, so the wait is
      short.
    - bulk ones about what the request names (the contact id in its path or query: the
      reachability of a contact just granted consent).

    Other bulk entries (a contact or a federation just created, named in a body or not at
    all) are waited for only when the answer is one a lagging projection can cause (404,
    409): the request runs at once, and only such an answer is held back while the named
    events are applied, then the request runs again. A request that succeeds never pays
    for a backlog it does not depend on (a revocation during a 100,000-row import does not
    wait for the contacts the same user created a moment before).

    When the wait runs out the answer is 503 with Retry-After, never a false 404 or a false
    refusal. ``applied`` says which event ids the service's consumers applied;
    ``committed`` which of the events a request wrote really committed (a transaction
    retried or rolled back leaves ids that never will, and a token must not name them)."""

    def __init__(
        self,
        app,
        *,
        awaited: frozenset[str],
        urgent: frozenset[str],
        applied: Callable[[], AppliedCheck],
        committed: Callable[[], AppliedCheck],
        wait_seconds: float,
        poll_seconds: float,
        max_entries: int,
        horizon_seconds: float,
        poll_max_seconds: float | None = None,
    ) -> None:
        self.app = app
        self.awaited = awaited
        self.urgent = urgent
        self.applied = applied
        self.committed = committed
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.poll_max_seconds = poll_max_seconds
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
        target = scope["path"] + "?" + scope.get("query_string", b"").decode("latin-1")
        first = [e for e in needed if e.event_type in self.urgent or _names(target, e.key)]
        on_miss = [e for e in needed if e not in first]
        confirmed: list[Written] = []
        if first:
            if not await self._waited(first, send):
                return
            confirmed.extend(first)
        if not on_miss:
            await self._run(scope, receive, send, incoming, confirmed)
            return
        # Run once holding back a miss; the request body is kept to run it again.
        replay: list[dict] = []

        async def recorded_receive():
            message = await receive()
            if message["type"] == "http.request":
                replay.append(message)
            return message

        held = _Held(send)
        await self._run(scope, recorded_receive, held, incoming, confirmed)
        if not held.missed:
            return
        # Even if the events are applied by now, the miss may predate them: run again.
        if not await self._waited(on_miss, send):
            return
        confirmed.extend(on_miss)
        pending = list(replay)

        async def replayed_receive():
            if pending:
                return pending.pop(0)
            return await receive()

        await self._run(scope, replayed_receive, send, incoming, confirmed)

    async def _waited(self, entries: list[Written], send) -> bool:
        """Wait for ``entries``; False once a 503 has been answered instead."""
        try:
            await wait_applied(
                self.applied(),
                entries,
                timeout=self.wait_seconds,
                poll_seconds=self.poll_seconds,
                poll_max_seconds=self.poll_max_seconds,
            )
            return True
        except NotYetApplied as exc:
            body = {
                "error": "not_yet_consistent",
                "detail": "this service has not yet applied a change you just made; retry shortly",
                "pending": len(exc.missing),
                "pending_events": [f"{e.event_type}.{e.event_id}" for e in exc.missing],
            }
            await _json(send, 503, body, {"retry-after": "1"})
            return False

    async def _run(self, scope, receive, send, incoming: list[Written], confirmed) -> None:
        with recording() as written:

            async def send_with_token(message) -> None:
                if message["type"] == "http.response.start":
                    message = await self._with_token(message, written, incoming, confirmed)
                await send(message)

            await self.app(scope, receive, send_with_token)

    async def _with_token(
        self, message, written: list[Written], incoming: list[Written], confirmed
    ) -> dict:
        fresh: list[Written] = []
        if written:
            # only the events no transaction runner vouched for are looked up (one written
            # by a transaction that rolled back must not be named)
            done = known_committed()
            if unsure := [w.event_id for w in written if w.event_id not in done]:
                done = done | await self.committed()(unsure)
            fresh = [w for w in written if w.event_id in done]
        # a token the app set itself (the gateway relaying a service's) is kept
        relayed = next((v for k, v in message.get("headers", []) if k == HEADER_LOWER), None)
        if not (fresh or incoming or relayed or confirmed):
            return message
        headers = [
            h
            for h in message.get("headers", [])
            if h[0] != HEADER_LOWER and h[0] != APPLIED_HEADER_LOWER
        ]
        if fresh or incoming or relayed:
            token = merge(
                fresh,
                _parse_lenient(relayed),
                incoming,
                max_entries=self.max_entries,
                horizon_seconds=self.horizon_seconds,
            )
            headers.append((HEADER_LOWER, render(token).encode()))
        if confirmed:
            ids = ",".join(e.event_id for e in confirmed)
            headers.append((APPLIED_HEADER_LOWER, ids.encode()))
        return {**message, "headers": headers}


def _names(target: str, key: str) -> bool:
    """Whether a request's path or query names an aggregate (ids are long and random: a
    substring match is exact in practice, and a rare false match only costs a wait)."""
    return len(key) >= 8 and key in target


class _Held:
    """An ASGI ``send`` that passes an answer on unless it is a miss (404, 409): that one
    is dropped (``missed``), and the request runs again once the awaited events are
    applied. It is not enough to check them when the miss is answered: a consumer may
    apply them between the request's read and the check, and the miss would stand."""

    def __init__(self, send) -> None:
        self.send = send
        self.missed = False

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start" and message["status"] in MISS_STATUSES:
            self.missed = True
        if not self.missed:
            await self.send(message)


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
