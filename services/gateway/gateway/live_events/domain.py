"""Pure rules of the live event stream: who sees which event, what an event shows, and
where a resumed stream starts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tribune_shared.auth import Identity, Role
from tribune_shared.events import Envelope
from tribune_shared.events.contracts import LIVE_EVENTS

#: role -> the event types it may follow (from the registry's one table)
VISIBLE: dict[Role, frozenset[str]] = {
    role: frozenset(t for t, roles in LIVE_EVENTS.items() if role.value in roles) for role in Role
}


def visible_types(role: Role, wanted: Iterable[str] = ()) -> frozenset[str]:
    """The types a caller of ``role`` follows: ``wanted`` (all by default) among those
    its role may see. Asking for a type it may not see is the caller's mistake, said by
    ``unknown_types``; here it is simply not followed."""
    allowed = VISIBLE[role]
    asked = frozenset(wanted)
    return allowed & asked if asked else allowed


def unknown_types(wanted: Iterable[str]) -> list[str]:
    """The asked types the stream does not carry at all (422)."""
    return sorted(set(wanted) - set(LIVE_EVENTS))


def recorded(envelope: Envelope, seq: int, at: datetime) -> dict[str, Any]:
    """The stored form of an event: its envelope without personal data (the sealed part
    never leaves Kafka) and its place in the stream."""
    return {
        "seq": seq,
        "event_id": envelope.event_id,
        "type": envelope.type,
        "version": envelope.version,
        "occurred_at": envelope.occurred_at,
        "key": envelope.key,
        "federation_id": envelope.federation_id,
        "federation_path": envelope.federation_path,
        "data": envelope.data,
        "recorded_at": at,
    }


@dataclass(frozen=True)
class Follower:
    """What one connection follows: its caller's subtree (or a federation inside it) and
    the types its role may see."""

    federation_path: str
    types: frozenset[str]

    @classmethod
    def of(cls, identity: Identity, federation_path: str, wanted: Iterable[str]) -> Follower:
        return cls(federation_path, visible_types(identity.role, wanted))

    def sees(self, doc: dict[str, Any]) -> bool:
        return doc["type"] in self.types and str(doc["federation_path"]).startswith(
            self.federation_path
        )


def frame(doc: dict[str, Any]) -> bytes:
    """One SSE message: id = the stream's number, event = the type, data = the event."""
    body = {
        "event_id": doc["event_id"],
        "type": doc["type"],
        "version": doc["version"],
        "occurred_at": _iso(doc["occurred_at"]),
        "key": doc["key"],
        "federation_id": doc["federation_id"],
        "data": doc["data"],
    }
    data = json.dumps(body, separators=(",", ":"), default=str, ensure_ascii=False)
    return f"id: {doc['seq']}\nevent: {doc['type']}\ndata: {data}\n\n".encode()


def control(event: str, body: dict[str, Any], retry_ms: int | None = None) -> bytes:
    """A message of the stream itself (``ready``, ``reset``, ``end``), without an id so the
    client's resume position stays the last event's."""
    lines = f"event: {event}\ndata: {json.dumps(body, separators=(',', ':'))}\n"
    if retry_ms is not None:
        lines = f"retry: {retry_ms}\n" + lines
    return (lines + "\n").encode()


HEARTBEAT = b": keep-alive\n\n"


def parse_last_event_id(raw: str | None) -> int | None:
    """The client's resume position (``Last-Event-ID``): a stream number, or None (start
    at the live end). Anything else is not ours: start at the live end too, with a reset."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 18:
        return -1
    return int(text)


def needs_reset(last_seen: int | None, oldest_kept: int | None, latest: int) -> bool:
    """True when the client missed events the store no longer keeps, or sent an id that
    is not ours (not a number, or beyond the last one numbered): it must reload what it
    shows, then follow. ``oldest_kept`` None: nothing is kept."""
    if last_seen is None:
        return False
    if last_seen < 0 or last_seen > latest:
        return True
    first = latest + 1 if oldest_kept is None else oldest_kept
    return last_seen + 1 < first


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
