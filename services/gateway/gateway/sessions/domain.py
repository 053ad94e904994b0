"""Sessions and their refresh tokens, free of I/O.

A login opens a **session** (a family of refresh tokens). Its refresh token is an opaque
random string: only its SHA-256 is stored (it carries 256 bits of randomness, so a fast
hash is enough: nobody can guess one from its hash, and the lookup is one indexed read).
Each use **rotates** it: the token is retired and a new one of the same session handed
out. A retired token presented again means two parties hold the session (the token was
stolen, or replayed): the whole session is revoked (**reuse detection**), the thief's and
the owner's tokens alike, and the owner logs in again.

A session ends at the latest ``session_max_seconds`` after the login whatever the
refreshes (an absolute lifetime), and earlier when a refresh token is left unused for
``refresh_token_ttl_seconds`` (an idle lifetime).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

#: what a refresh token looks like (for a client's logs and secret scanners): the prefix,
#: then 43 base64url characters (256 bits)
REFRESH_PREFIX = "trt_"
#: longer than any token we issue: a bigger value is refused unread
MAX_REFRESH_TOKEN_CHARS = 128


class EndReason(StrEnum):
    """Why a session was revoked (kept on the session, and in the access audit)."""

    logout = "logout"
    reuse = "refresh_token_reused"
    deactivated = "user_deactivated"
    password_reset = "password_reset"
    password_changed = "password_changed"
    #: the user's state (inactive, newer password) refused a refresh
    user_refused = "user_refused"


def new_session_id() -> str:
    return uuid.uuid4().hex


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the store keeps of a refresh token (and looks it up by)."""
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_refresh_token(token: str) -> bool:
    return token.startswith(REFRESH_PREFIX) and len(token) <= MAX_REFRESH_TOKEN_CHARS


@dataclass(frozen=True)
class SessionPolicy:
    """How long a refresh token and a session last (GatewaySettings)."""

    refresh_ttl_seconds: int
    session_max_seconds: int

    def session_expiry(self, started_at: datetime) -> datetime:
        return started_at + timedelta(seconds=self.session_max_seconds)

    def token_expiry(self, now: datetime, session_expires_at: datetime) -> datetime:
        """A new refresh token lives its idle lifetime, never past its session's end."""
        return min(now + timedelta(seconds=self.refresh_ttl_seconds), session_expires_at)


def started_before(session_started_at: datetime, tokens_after: datetime | None) -> bool:
    """True if the session was opened before the user's password last changed (so it
    must not be refreshed: the change revoked it, even if that revocation was lost).
    ``tokens_after`` is a whole second, as a token's issue time."""
    if tokens_after is None:
        return False
    return session_started_at.replace(microsecond=0) < tokens_after
