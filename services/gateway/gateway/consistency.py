"""Read-your-writes at the door: each user's latest consistency token, remembered so that a
client that does not send the ``X-Tribune-Consistency`` header back (a browser form, a
script) still reads its own writes (tribune_shared.consistency).

The gateway forwards, on every call to a service, the client's token merged with the one
it remembers for that user, and remembers every token it answers that user with (what the
services committed for them, the gateway's own writes) and every token the user sends. It
is in-process: each replica remembers what passed through it (a client whose requests are
spread over replicas should send the header back itself).

A service confirms, in its answer, the entries it checked and found applied (the
``X-Tribune-Consistency-Applied`` header): the gateway leaves those out of that service's
later calls, so that a remembered token does not cost the service a look-up in its
processed events on every request for the token's whole horizon.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from tribune_shared import consistency
from tribune_shared.consistency import HEADER_LOWER, Written
from tribune_shared.errors import InvalidFields
from tribune_shared.logging import get_logger

log = get_logger(__name__)

#: where client_identity leaves the caller's user id for RememberTokens (the ASGI scope's
#: state, shared by every layer of one request)
USER_STATE_KEY = "gateway_user_id"


class UserTokens:
    """user id -> the entries of their latest token: a bounded LRU whose entries drop out
    ``horizon_seconds`` after their write (as a token's own entries do)."""

    def __init__(
        self,
        *,
        max_users: int,
        max_entries: int,
        horizon_seconds: float,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.max_users = max_users
        self.max_entries = max_entries
        self.horizon_seconds = horizon_seconds
        self.clock_ms = clock_ms
        self._tokens: OrderedDict[str, list[Written]] = OrderedDict()
        #: service -> ids of events it is known to have applied (least recent forgotten)
        self._applied: dict[str, OrderedDict[str, None]] = {}
        self.max_applied = max_users

    @classmethod
    def from_settings(cls, settings) -> UserTokens:
        return cls(
            max_users=settings.consistency_max_users,
            max_entries=settings.consistency_max_entries,
            horizon_seconds=settings.consistency_horizon_seconds,
        )

    def __len__(self) -> int:
        return len(self._tokens)

    def _merge(self, *tokens: list[Written]) -> list[Written]:
        return consistency.merge(
            *tokens,
            max_entries=self.max_entries,
            horizon_seconds=self.horizon_seconds,
            now_ms=self.clock_ms(),
        )

    def _store(self, user_id: str, entries: list[Written]) -> None:
        if not entries:
            self._tokens.pop(user_id, None)
            return
        self._tokens[user_id] = entries
        self._tokens.move_to_end(user_id)
        while len(self._tokens) > self.max_users:
            self._tokens.popitem(last=False)

    def remembered(self, user_id: str) -> list[Written]:
        known = self._tokens.get(user_id)
        if not known:
            return []
        fresh = self._merge(known)
        if len(fresh) != len(known):
            self._store(user_id, fresh)
        return fresh

    def remember(self, user_id: str, entries: list[Written]) -> None:
        if entries:
            self._store(user_id, self._merge(entries, self._tokens.get(user_id, [])))

    def outgoing(
        self, user_id: str, client_header: str | None, service: str | None = None
    ) -> str | None:
        """The token to send ``service`` on behalf of ``user_id``: what the client sent
        (remembered too) merged with what is remembered, less what that service is known
        to have applied; None when there is nothing. A malformed client token is a 422
        (InvalidFields), as a service would answer."""
        sent = consistency.parse(client_header) if client_header else []
        if sent:
            self.remember(user_id, sent)
        entries = self.remembered(user_id)
        if entries and service is not None and (applied := self._applied.get(service)):
            entries = [e for e in entries if e.event_id not in applied]
        return consistency.render(entries) if entries else None

    def answered(self, service: str, applied_header: str | None) -> None:
        """``service`` answered, confirming it applied the events ``applied_header`` names
        (tribune_shared.consistency.APPLIED_HEADER): those are no longer sent to it."""
        if not applied_header:
            return
        applied = self._applied.setdefault(service, OrderedDict())
        for event_id in applied_header.split(","):
            if event_id := event_id.strip():
                applied[event_id] = None
                applied.move_to_end(event_id)
        while len(applied) > self.max_applied:
            applied.popitem(last=False)


class RememberTokens:
    """ASGI middleware: the token of every answer to an authenticated user (a service's,
    relayed by the proxy, or the gateway's own writes, set by the kernel) is remembered for
    that user. Outermost, so it sees the header as the client will."""

    def __init__(self, app, tokens: UserTokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_remembering(message) -> None:
            if message["type"] == "http.response.start":
                user_id = scope.get("state", {}).get(USER_STATE_KEY)
                if user_id is not None:
                    for name, value in message.get("headers", ()):
                        if name == HEADER_LOWER:
                            self._remember(user_id, value)
            await send(message)

        await self.app(scope, receive, send_remembering)

    def _remember(self, user_id: str, raw: bytes) -> None:
        try:
            self.tokens.remember(user_id, consistency.parse(raw.decode("latin-1")))
        except InvalidFields:  # a service's bad token: not worth failing the answer for
            log.warning("gateway.bad_consistency_token", user_id=user_id)
