"""The live event stream's rules and one replica's fan-out (gateway.live_events), on an
in-memory stand-in for its store."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from gateway.live_events.api import SSE_EVENT_SCHEMA
from gateway.live_events.domain import (
    VISIBLE,
    Follower,
    control,
    frame,
    needs_reset,
    parse_last_event_id,
    recorded,
    unknown_types,
    visible_types,
)
from gateway.live_events.service import LiveEventsHub
from gateway.settings import GatewaySettings
from tribune_shared.auth import Role
from tribune_shared.errors import TooManyRequests
from tribune_shared.events import Envelope
from tribune_shared.events.contracts import LIVE_EVENTS
from tribune_shared.events.envelope import Sealed

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def _doc(seq: int, type_: str = "contact-created", path: str = "/n/paris/") -> dict[str, Any]:
    envelope = Envelope(
        type=type_,
        version=1,
        producer="contacts",
        key=f"c{seq}",
        federation_id=path.strip("/").split("/")[-1],
        federation_path=path,
        correlation_id="corr",
        data={"contact_id": f"c{seq}"},
    )
    return recorded(envelope, seq, NOW)


class MemoryStore:
    """What LiveEventStore answers, kept in a list."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []
        self.counter = 0

    def add(self, *docs: dict[str, Any]) -> None:
        for doc in docs:
            self.counter = max(self.counter, doc["seq"])
            self.docs.append(doc)

    async def latest(self) -> int:
        return self.counter

    async def oldest(self) -> int | None:
        return min((d["seq"] for d in self.docs), default=None)

    async def after(self, seq, limit, *, federation_path=None, types=None):
        out = [
            d
            for d in sorted(self.docs, key=lambda d: d["seq"])
            if d["seq"] > seq
            and (federation_path is None or d["federation_path"].startswith(federation_path))
            and (types is None or d["type"] in types)
        ]
        return out[:limit]


def _settings(**overrides: Any) -> GatewaySettings:
    base: dict[str, Any] = {
        "live_events_poll_seconds": 0.02,
        "live_events_heartbeat_seconds": 1,
        "live_events_max_seconds": 30,
        "live_events_max_connections_per_user": 2,
    }
    return GatewaySettings(**(base | overrides))


def _follower(path: str = "/n/paris/", role: Role = Role.secretary) -> Follower:
    return Follower(path, visible_types(role))


async def _messages(stream, count: int, timeout: float = 5) -> list[bytes]:
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.append(await anext(stream))
    return out


def _ids(messages: list[bytes]) -> list[int]:
    return [int(m.split(b"\n")[0].removeprefix(b"id: ")) for m in messages if m.startswith(b"id:")]


# ---------------------------------------------------------------- rules


def test_the_registry_table_names_real_roles_and_real_topics():
    from tribune_shared.events.contracts import TOPICS

    assert set(LIVE_EVENTS) <= set(TOPICS)
    assert {r for roles in LIVE_EVENTS.values() for r in roles} <= {r.value for r in Role}


def test_each_role_follows_only_what_its_work_needs():
    assert "payment-received" in VISIBLE[Role.treasurer]
    assert "contact-created" not in VISIBLE[Role.treasurer]
    assert "payment-received" not in VISIBLE[Role.viewer]
    assert "message-bounced" in VISIBLE[Role.campaign_manager]
    assert "erasure-requested" in VISIBLE[Role.dpo]
    assert "erasure-requested" not in VISIBLE[Role.secretary]
    assert VISIBLE[Role.admin] == frozenset(LIVE_EVENTS)


def test_asking_for_types_narrows_and_never_widens_a_role():
    assert visible_types(Role.treasurer, ["payment-received", "contact-created"]) == {
        "payment-received"
    }
    assert unknown_types(["payment-received", "nope"]) == ["nope"]


def test_a_follower_sees_its_subtree_only():
    follower = _follower("/n/paris/")
    assert follower.sees(_doc(1, path="/n/paris/"))
    assert follower.sees(_doc(2, path="/n/paris/11e/"))
    assert not follower.sees(_doc(3, path="/n/lyon/"))
    assert not follower.sees(_doc(4, path="/n/paris-sud/"))
    assert not follower.sees(_doc(5, "payment-received", "/n/paris/"))  # not a secretary's


def test_a_message_is_an_sse_event_with_its_number_and_no_personal_data():
    envelope = Envelope(
        type="contact-created",
        version=1,
        producer="contacts",
        key="c1",
        federation_id="paris",
        federation_path="/n/paris/",
        correlation_id="corr",
        data={"contact_id": "c1"},
        sealed=Sealed(subject="c1", fields=["email"], nonce="n", ciphertext="secret"),
    )
    message = frame(recorded(envelope, 42, NOW))
    lines = message.decode().split("\n")
    assert lines[0] == "id: 42"
    assert lines[1] == "event: contact-created"
    body = json.loads(lines[2].removeprefix("data: "))
    assert body["data"] == {"contact_id": "c1"}
    assert "secret" not in message.decode()
    assert message.endswith(b"\n\n")


def _sse_fields(message: bytes) -> dict[str, Any]:
    """An SSE event as a client parses it: its fields, ``retry`` as a number."""
    fields: dict[str, Any] = {}
    for line in message.decode().strip("\n").split("\n"):
        name, _, value = line.partition(": ")
        fields[name] = int(value) if name == "retry" else value
    return fields


def test_every_kind_of_event_the_stream_sends_is_what_its_openapi_schema_says():
    """The documented event schema (a fuzzer checks each event against it) holds for the
    events, the control events with a reconnection delay, reset and end."""
    import jsonschema

    envelope = Envelope(
        type="payment-received",
        version=1,
        producer="memberships",
        key="p1",
        federation_id="paris",
        federation_path="/n/paris/",
        correlation_id="corr",
        data={"payment_id": "p1"},
    )
    messages = [
        frame(recorded(envelope, 7, NOW)),
        control("ready", {"position": 121}, retry_ms=1250),
        control("reset", {"position": 3}),
        control("end", {"reason": "time"}),
    ]
    for message in messages:
        event = _sse_fields(message)
        jsonschema.validate(event, SSE_EVENT_SCHEMA)
        json.loads(event["data"])  # contentMediaType application/json
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"retry": "soon"}, SSE_EVENT_SCHEMA)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("", None), ("17", 17), ("abc", -1), ("-3", -1), ("9" * 30, -1)],
)
def test_last_event_id_is_a_number_or_not_ours(raw, expected):
    assert parse_last_event_id(raw) == expected


def test_a_resume_needs_a_reset_when_missed_events_are_gone_or_the_id_is_not_ours():
    assert not needs_reset(None, 5, 10)
    assert not needs_reset(4, 5, 10)  # the next one is still kept
    assert needs_reset(3, 5, 10)  # 4 expired
    assert needs_reset(-1, 1, 10)
    assert needs_reset(11, 1, 10)  # beyond the last number
    assert not needs_reset(10, None, 10)  # nothing kept, nothing missed
    assert needs_reset(9, None, 10)  # 10 expired


# ---------------------------------------------------------------- one replica


async def test_events_reach_only_the_connections_allowed_to_see_them():
    store = MemoryStore()
    hub = LiveEventsHub(_settings(), store)  # type: ignore[arg-type]
    paris = hub.stream("u1", _follower("/n/paris/"), None)
    lyon = hub.stream("u2", _follower("/n/lyon/"), None)
    await _messages(paris, 1)  # ready
    await _messages(lyon, 1)
    store.add(_doc(1, path="/n/paris/"), _doc(2, path="/n/lyon/"), _doc(3, path="/n/paris/1/"))
    assert _ids(await _messages(paris, 2)) == [1, 3]
    assert _ids(await _messages(lyon, 1)) == [2]
    await paris.aclose()
    await lyon.aclose()
    await hub.close()


async def test_a_resumed_stream_gets_what_it_missed_once_then_live():
    store = MemoryStore()
    store.add(*(_doc(i) for i in range(1, 6)), _doc(6, path="/n/lyon/"))
    hub = LiveEventsHub(_settings(), store)  # type: ignore[arg-type]
    stream = hub.stream("u1", _follower(), 3)
    first = await _messages(stream, 3)  # ready, 4, 5 (6 is Lyon's)
    assert first[0].startswith(b"retry:")
    assert _ids(first) == [4, 5]
    store.add(_doc(7))
    assert _ids(await _messages(stream, 1)) == [7]
    await stream.aclose()
    await hub.close()


async def test_a_stream_resumed_after_its_events_expired_is_told_to_reset():
    store = MemoryStore()
    store.add(_doc(10), _doc(11))
    store.counter = 11
    hub = LiveEventsHub(_settings(), store)  # type: ignore[arg-type]
    stream = hub.stream("u1", _follower(), 4)  # 5..9 are gone
    messages = await _messages(stream, 2)
    assert b"event: reset" in messages[1]
    await stream.aclose()
    await hub.close()


async def test_too_many_missed_events_is_a_reset_not_an_endless_replay():
    store = MemoryStore()
    store.add(*(_doc(i) for i in range(1, 30)))
    hub = LiveEventsHub(_settings(live_events_replay_max=10), store)  # type: ignore[arg-type]
    stream = hub.stream("u1", _follower(), 1)
    messages = await _messages(stream, 2)
    assert b"too_many_missed" in messages[1]
    await stream.aclose()
    await hub.close()


async def test_a_user_opens_at_most_the_allowed_streams_and_closing_frees_one():
    store = MemoryStore()
    hub = LiveEventsHub(_settings(), store)  # type: ignore[arg-type]
    one, two = hub.stream("u1", _follower(), None), hub.stream("u1", _follower(), None)
    await _messages(one, 1)
    await _messages(two, 1)
    with pytest.raises(TooManyRequests) as refused:
        await anext(hub.stream("u1", _follower(), None))
    assert refused.value.retry_after >= 1
    other = hub.stream("u2", _follower(), None)  # another user is not affected
    await _messages(other, 1)
    await one.aclose()
    three = hub.stream("u1", _follower(), None)
    await _messages(three, 1)
    for s in (two, other, three):
        await s.aclose()
    await hub.close()


async def test_a_connection_too_far_behind_is_ended_and_resumes_from_its_id():
    store = MemoryStore()
    hub = LiveEventsHub(_settings(live_events_queue_size=10), store)  # type: ignore[arg-type]
    slow = hub.stream("u1", _follower(), None)
    await _messages(slow, 1)
    store.add(*(_doc(i) for i in range(1, 40)))
    messages = []
    async with asyncio.timeout(5):
        async for message in slow:
            messages.append(message)
    assert b"event: end" in messages[-1] and b"behind" in messages[-1]
    got = _ids(messages)
    assert got == list(range(1, len(got) + 1))  # in order, none skipped before the end
    resumed = hub.stream("u1", _follower(), got[-1])
    rest = await _messages(resumed, 1 + 39 - len(got))
    assert _ids(rest) == list(range(len(got) + 1, 40))
    await resumed.aclose()
    await hub.close()


async def test_an_idle_stream_sends_keep_alives_and_ends_after_its_time():
    store = MemoryStore()
    hub = LiveEventsHub(  # type: ignore[arg-type]
        _settings(live_events_heartbeat_seconds=1, live_events_max_seconds=2.5), store
    )
    stream = hub.stream("u1", _follower(), None)
    messages = [m async for m in stream]
    assert messages.count(b": keep-alive\n\n") >= 1
    assert b"event: end" in messages[-1] and b'"time"' in messages[-1]
    await hub.close()
