"""Consistency tokens: parsed strictly, merged newest first within bounds, and a request
records only what it wrote."""

from __future__ import annotations

import asyncio
import time

import pytest
from tribune_shared.consistency import (
    APPLIED_HEADER,
    HEADER,
    ConsistencyMiddleware,
    NotYetApplied,
    Written,
    confirm,
    merge,
    parse,
    record,
    recording,
    render,
    transaction_events,
    wait_applied,
)
from tribune_shared.errors import InvalidFields

NOW = 1_800_000_000_000


def entry(
    event_id: str, at_ms: int = NOW, event_type: str = "contact-created", key: str = ""
) -> Written:
    return Written(at_ms, event_type, event_id, key)


def test_a_token_round_trips_and_blank_entries_are_ignored():
    entries = [entry("a" * 32), entry("b" * 32, NOW - 5, "consent-granted")]
    assert parse(render(entries) + ", ") == entries


@pytest.mark.parametrize(
    "raw",
    ["contact-created", "contact-created.abc", "Contact.abc.1", "contact-created.a b.1", "x.y.z"],
)
def test_a_malformed_entry_is_a_422_naming_the_header(raw):
    with pytest.raises(InvalidFields) as err:
        parse(raw)
    assert err.value.problems[0][0] == HEADER


def test_an_oversized_header_is_refused_before_parsing():
    with pytest.raises(InvalidFields, match="longer than"):
        parse("a" * 50_000)


def test_merge_keeps_the_newest_distinct_entries_within_the_horizon_and_the_bound():
    old = entry("old", NOW - 700_000)
    tokens = [entry(f"e{i}", NOW - i) for i in range(10)]
    merged = merge(
        tokens[:6], [*tokens[4:], old, tokens[0]], max_entries=5, horizon_seconds=600, now_ms=NOW
    )
    assert [e.event_id for e in merged] == ["e0", "e1", "e2", "e3", "e4"]


def test_only_events_written_inside_a_request_are_recorded():
    record("contact-created", "outside")  # no request: nothing to record into
    with recording() as written:
        record("contact-created", "inside")
    assert [w.event_id for w in written] == ["inside"]


async def test_waiting_returns_once_every_entry_is_applied_or_names_what_is_missing():
    applied: set[str] = {"a"}

    async def check(ids: list[str]) -> set[str]:
        return applied & set(ids)

    async def apply_b_later() -> None:
        await asyncio.sleep(0.05)
        applied.add("b")

    later = asyncio.create_task(apply_b_later())
    await wait_applied(check, [entry("a"), entry("b")], timeout=2, poll_seconds=0.01)
    await later
    with pytest.raises(NotYetApplied) as err:
        await wait_applied(check, [entry("a"), entry("c")], timeout=0.05, poll_seconds=0.01)
    assert [e.event_id for e in err.value.missing] == ["c"]


async def test_a_long_wait_looks_again_less_and_less_often():
    """Held by a backlog for 0.5 s: the looks come after waits that double up to the
    ceiling (10 ms, 20, 40, 80, 80...), not every 10 ms (about 50 looks)."""
    looks = 0

    async def check(ids: list[str]) -> set[str]:
        nonlocal looks
        looks += 1
        return set()

    with pytest.raises(NotYetApplied):
        await wait_applied(
            check, [entry("a")], timeout=0.5, poll_seconds=0.01, poll_max_seconds=0.08
        )
    assert 6 <= looks <= 12, looks


# ---------------------------------------------------------------- the middleware

URGENT = "consent-revoked"
BULK = "contact-created"


class Service:
    """A service behind ConsistencyMiddleware: a contact is found once its creation is
    applied; a message is refused once the revocation is. Counts what it was asked."""

    def __init__(self) -> None:
        self.applied: set[str] = set()
        self.lookups: list[list[str]] = []
        self.bodies: list[bytes] = []

    async def check(self, ids: list[str]) -> set[str]:
        self.lookups.append(sorted(ids))
        return self.applied & set(ids)

    async def app(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        status = 200 if scope["path"] == "/ok" or "created" in self.applied else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"answer"})

    def middleware(self, wait_seconds: float = 1.0) -> ConsistencyMiddleware:
        async def committed(ids: list[str]) -> set[str]:
            return set(ids)

        return ConsistencyMiddleware(
            self.app,
            awaited=frozenset({URGENT, BULK}),
            urgent=frozenset({URGENT}),
            applied=lambda: self.check,
            committed=lambda: committed,
            wait_seconds=wait_seconds,
            poll_seconds=0.01,
            max_entries=32,
            horizon_seconds=600,
        )


async def call(mw, path: str, token: list[Written], body: bytes = b"payload") -> tuple:
    sent: list[dict] = []
    chunks = [
        {"type": "http.request", "body": body[:3], "more_body": True},
        {"type": "http.request", "body": body[3:], "more_body": False},
    ]

    async def receive():
        return chunks.pop(0)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "path": path,
        "headers": [(HEADER.lower().encode(), render(token).encode())] if token else [],
    }
    await mw(scope, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def now() -> int:
    return int(time.time() * 1000)


async def test_a_success_never_waits_for_nor_looks_up_a_bulk_entry():
    svc = Service()
    status, headers, body = await call(svc.middleware(), "/ok", [entry("created", now(), BULK)])
    assert (status, body) == (200, b"answer")
    assert svc.lookups == []  # the backlog it does not depend on costs it nothing
    assert APPLIED_HEADER.lower() not in headers  # nothing confirmed: the gateway resends


async def test_a_miss_is_held_until_the_bulk_entry_is_applied_then_run_again_whole():
    svc = Service()

    async def apply_later() -> None:
        await asyncio.sleep(0.05)
        svc.applied.add("created")

    later = asyncio.create_task(apply_later())
    status, headers, body = await call(
        svc.middleware(), "/contact", [entry("created", now(), BULK)], b"grant-body"
    )
    await later
    assert (status, body) == (200, b"answer")  # no false 404
    assert svc.bodies == [b"grant-body", b"grant-body"]  # the body was replayed whole
    assert headers[APPLIED_HEADER.lower()] == "created"


async def test_a_true_404_is_answered_after_one_more_run_once_its_entries_are_applied():
    """The entries may have been applied between the first run's read and the miss: the
    request runs once more, and that answer stands."""
    svc = Service()
    svc.applied.add("other")
    status, headers, _ = await call(svc.middleware(), "/contact", [entry("other", now(), BULK)])
    assert status == 404
    assert len(svc.bodies) == 2
    assert headers[APPLIED_HEADER.lower()] == "other"


async def test_a_miss_whose_entry_never_arrives_is_a_503_with_retry_after():
    svc = Service()
    status, headers, body = await call(
        svc.middleware(wait_seconds=0.05), "/contact", [entry("created", now(), BULK)]
    )
    assert status == 503 and headers["retry-after"] == "1"
    assert b"not_yet_consistent" in body


async def test_an_urgent_entry_is_waited_for_before_the_request_runs():
    svc = Service()
    token = [entry("revoked", now(), URGENT)]
    status, _, _ = await call(svc.middleware(wait_seconds=0.05), "/ok", token)
    assert status == 503 and svc.bodies == []  # never answered ignoring the "no"
    svc.applied.add("revoked")
    status, headers, _ = await call(svc.middleware(), "/ok", token)
    assert status == 200 and headers[APPLIED_HEADER.lower()] == "revoked"


async def test_a_bulk_entry_about_what_the_request_names_is_waited_for_first():
    """A 200 can depend on a bulk event too (reachable or not): when the request names the
    event's aggregate, the event is applied before it runs."""
    svc = Service()
    contact = "c0ffee" * 6
    token = [entry("granted", now(), BULK, key=contact)]
    status, _, _ = await call(svc.middleware(wait_seconds=0.05), f"/ok/{contact}", token)
    assert status == 503 and svc.bodies == [] and svc.lookups
    svc.lookups.clear()
    status, _, _ = await call(svc.middleware(wait_seconds=0.05), "/ok", token)
    assert status == 200 and svc.lookups == []  # about something else: not waited for


async def test_events_the_transaction_runner_saw_commit_are_named_without_a_lookup():
    """A write request's token names only committed events. Those of a transaction the
    runner saw commit are named as they are; only the others (an attempt that rolled back,
    an outbox write outside the runner) are looked up in the outbox, here finding nothing."""
    asked: list[list[str]] = []

    async def committed(ids: list[str]) -> set[str]:
        asked.append(sorted(ids))
        return set()  # the rolled-back attempt's event is not in the outbox

    async def app(scope, receive, send) -> None:
        with transaction_events() as first_attempt:
            record(BULK, "rolled-back")  # a write conflict: this attempt is run again
        assert first_attempt == ["rolled-back"]
        with transaction_events() as second_attempt:
            record(BULK, "committed")
        confirm(second_attempt)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = ConsistencyMiddleware(
        app,
        awaited=frozenset({BULK}),
        urgent=frozenset(),
        applied=lambda: committed,
        committed=lambda: committed,
        wait_seconds=1,
        poll_seconds=0.01,
        max_entries=32,
        horizon_seconds=600,
    )
    status, headers, _ = await call(mw, "/contacts", [])
    assert status == 201
    assert [e.event_id for e in parse(headers[HEADER.lower()])] == ["committed"]
    assert asked == [["rolled-back"]]


def test_an_entry_carries_its_key_and_an_unfit_key_is_left_out():
    with recording() as written:
        record("contact-created", "e1", "c" * 32)
        record("contact-created", "e2", "has spaces")
    assert [w.key for w in written] == ["c" * 32, ""]
    assert parse(render(written)) == written
    assert parse("contact-created.e3.1800000000000") == [entry("e3", 1_800_000_000_000)]
