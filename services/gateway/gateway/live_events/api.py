"""``GET /api/v1/events/stream``: the live events of the caller's subtree (SSE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from tribune_shared.app import ID_PATTERN
from tribune_shared.errors import InvalidField

from gateway.api import ClientIdentity
from gateway.live_events.domain import Follower, parse_last_event_id, unknown_types
from gateway.live_events.service import LiveEventsHub

router = APIRouter(prefix="/api/v1")

#: One Server-Sent Event of the stream, as OpenAPI describes an event stream's items (the
#: fields of the SSE format; every ``data`` is JSON). Clients and fuzzers check each event
#: against it, so it says what the stream really sends: ``ready`` (the position, with the
#: reconnection delay), the events (with their id for Last-Event-ID), ``reset``, ``end``.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "ready, an event type, reset or end"},
        "id": {"type": "string", "description": "send it back as Last-Event-ID to resume"},
        "retry": {"type": "integer", "minimum": 0, "description": "reconnect after (ms)"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
_SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}}
}


@router.get("/events/stream", tags=["events"], response_class=StreamingResponse, responses=_SSE)
async def event_stream(
    request: Request,
    identity: ClientIdentity,
    types: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006 (FastAPI query list)
    federation_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(
            max_length=32,
            description="resume position when the client cannot send the Last-Event-ID header",
        ),
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events: every event of the caller's subtree (or of ``federation_id``
    inside it) of the ``types`` asked (default: all) that the caller's role may follow
    (the registry's ``LIVE_EVENTS``). Each message's id is its place in the stream; a
    client reconnecting with ``Last-Event-ID`` gets what it missed, or a ``reset`` event
    when that is no longer kept. Keep-alive comments while idle; the stream ends after
    ``GATEWAY_LIVE_EVENTS_MAX_SECONDS`` (the client reconnects, its login checked again).
    429 past the open streams allowed per user or per server."""
    unknown = unknown_types(types)
    if unknown:
        raise InvalidField(f"not carried by the live stream: {', '.join(unknown)}", field="types")
    path = identity.federation_path
    if federation_id is not None:
        federation = await request.app.state.federation_service.federation(identity, federation_id)
        path = federation["path"]
    follower = Follower.of(identity, path, types)
    hub: LiveEventsHub = request.app.state.live_events
    resume = parse_last_event_id(request.headers.get("last-event-id") or last_event_id)
    who = identity.user_id
    messages = hub.stream(who, follower, resume)
    # the limits are checked before the answer starts: a refusal is a plain 429
    first = await anext(messages)
    return StreamingResponse(
        _chain(first, messages),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for message in rest:
        yield message
