"""Use cases of sessions: open one at login, rotate its refresh token, revoke it (logout,
reuse, an account change), and tell the hot path whether an access token's session
still holds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.errors import Unauthorized
from tribune_shared.events import utcnow
from tribune_shared.logging import get_logger
from tribune_shared.store import Store

from gateway.caches import TtlCache
from gateway.sessions.domain import (
    EndReason,
    SessionPolicy,
    looks_like_refresh_token,
    new_refresh_token,
    new_session_id,
    token_hash,
)
from gateway.sessions.store import SessionStore

log = get_logger(__name__)

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
INVALID_REFRESH = "invalid or expired refresh token"


class InvalidRefreshToken(Unauthorized):
    """401: unknown, expired, or its session ended. Never says which."""

    def __init__(self) -> None:
        super().__init__(INVALID_REFRESH, field="refresh_token", headers=BEARER_CHALLENGE)


class RefreshTokenReused(InvalidRefreshToken):
    """A retired refresh token came back: its session is now revoked. The same 401 as
    any bad token (the presenter may be the thief), with whose session it was, for the
    access audit."""

    def __init__(self, user_id: str, session_id: str) -> None:
        super().__init__()
        self.user_id = user_id
        self.session_id = session_id


@dataclass(frozen=True)
class Refreshed:
    """A rotation: the new refresh token, and the session it belongs to."""

    user_id: str
    session_id: str
    started_at: datetime
    refresh_token: str
    refresh_expires_in: int


class SessionService:
    def __init__(
        self, store: Store, policy: SessionPolicy, *, cache_seconds: float, max_entries: int
    ) -> None:
        self.store = store
        self.data = SessionStore(store)
        self.policy = policy
        # An access token names its session: whether it still holds is read from the
        # store at most once per cache_seconds per session (like the user: a logout on
        # another replica takes effect within that time, at once on this one).
        self.live: TtlCache[str, bool] = TtlCache(cache_seconds, max_entries)

    def _token_doc(
        self, token: str, session_id: str, user_id: str, now: datetime, expires_at: datetime
    ) -> dict[str, Any]:
        return {
            "_id": token_hash(token),
            "session_id": session_id,
            "user_id": user_id,
            "issued_at": now,
            "expires_at": expires_at,
            "used_at": None,
        }

    async def start(self, user_id: str, federation_path: str) -> Refreshed:
        """A new session for a user who just proved who they are."""
        now = utcnow()
        session_id = new_session_id()
        session_end = self.policy.session_expiry(now)
        token = new_refresh_token()
        token_end = self.policy.token_expiry(now, session_end)
        await self.data.insert_session(
            {
                "_id": session_id,
                "user_id": user_id,
                "federation_path": federation_path,
                "started_at": now,
                "expires_at": session_end,
                "refreshed_at": None,
                "refreshes": 0,
                "revoked_at": None,
                "revoked_reason": None,
            },
            self._token_doc(token, session_id, user_id, now, token_end),
        )
        return Refreshed(user_id, session_id, now, token, _seconds(token_end, now))

    async def rotate(self, token: str) -> Refreshed:
        """The refresh token exchanged for a new one of the same session (the old one is
        retired). A retired token revokes its session (``RefreshTokenReused``); an
        unknown or expired one, or one of an ended session, is ``InvalidRefreshToken``."""
        if not looks_like_refresh_token(token):
            raise InvalidRefreshToken()
        token_id = token_hash(token)
        now = utcnow()

        async def work(tx: AsyncClientSession) -> Refreshed | None:
            old = await self.data.retire_token(token_id, now, tx)
            if old is None:
                return None
            session = await self.data.live_session(old["session_id"], now, tx)
            if session is None:
                raise InvalidRefreshToken()  # aborts: the old token stays as it was
            new = new_refresh_token()
            end = self.policy.token_expiry(now, session["expires_at"])
            await self.data.add_token(
                self._token_doc(new, session["_id"], old["user_id"], now, end),
                session["_id"],
                now,
                tx,
            )
            return Refreshed(
                old["user_id"], session["_id"], session["started_at"], new, _seconds(end, now)
            )

        rotated = await self.store.run_transaction(work, what="gateway.session_refresh")
        if rotated is not None:
            return rotated
        known = await self.data.find_token(token_id)
        if known is not None and known.get("used_at") is not None:
            # Two parties hold this session: end it for both.
            await self.revoke(known["session_id"], EndReason.reuse)
            log.warning(
                "gateway.refresh_token_reused",
                user_id=known["user_id"],
                session_id=known["session_id"],
            )
            raise RefreshTokenReused(known["user_id"], known["session_id"])
        raise InvalidRefreshToken()

    async def owner_of(self, token: str) -> tuple[str, str] | None:
        """(user id, session id) of a refresh token we issued (current or retired)."""
        if not looks_like_refresh_token(token):
            return None
        known = await self.data.find_token(token_hash(token))
        return (known["user_id"], known["session_id"]) if known else None

    async def revoke(self, session_id: str, reason: EndReason) -> bool:
        """Ends the session (its refresh tokens and, at once on this replica, its access
        tokens). True if it was live."""
        try:
            return await self.data.revoke(session_id, utcnow(), reason.value)
        finally:
            self.live.invalidate(session_id)

    async def revoke_user(self, user_id: str, reason: EndReason, *, keep: str | None = None) -> int:
        """Ends every session of the user (but ``keep``). Their access tokens are refused
        by the account change itself (inactive user, newer password)."""
        count = await self.data.revoke_user(user_id, utcnow(), reason.value, keep)
        if count:
            log.info("gateway.sessions_revoked", user_id=user_id, count=count, reason=reason)
        return count

    async def is_live(self, session_id: str) -> bool:
        """Whether an access token's session still holds (cached, see __init__)."""
        live = await self.live.get_or_load(session_id, lambda: self._load(session_id))
        return bool(live)

    async def _load(self, session_id: str) -> bool | None:
        # None (not cached) for an ended session: it stays ended, but there is no need to
        # keep it in memory either; a live one is cached.
        return True if await self.data.live_session(session_id, utcnow()) else None


def _seconds(until: datetime, now: datetime) -> int:
    return max(0, int((until - now).total_seconds()))
