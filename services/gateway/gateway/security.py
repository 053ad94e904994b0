"""Passwords (argon2id), client access tokens (JWT HS256) and the login limiter."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from tribune_shared.events import utcnow

# ---------------------------------------------------------------- passwords

_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters
# Verified when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash("tribune-dummy-password-for-timing")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; an unknown user (``None``) costs a verification too."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


# ---------------------------------------------------------------- access tokens

TOKEN_AUDIENCE = "tribune-clients"
TOKEN_ISSUER = "tribune-gateway"
ALGORITHM = "HS256"


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int


def issue_token(user_id: str, secret: str, ttl_seconds: int) -> AccessToken:
    now = utcnow()
    claims = {
        "sub": user_id,
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + timedelta(seconds=ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    return AccessToken(jwt.encode(claims, secret, algorithm=ALGORITHM), ttl_seconds)


def verify_token(token: str, secret: str) -> str:
    """The user id a valid, unexpired token was issued to; raises ``InvalidToken``."""
    return verify_token_until(token, secret)[0]


def verify_token_until(token: str, secret: str) -> tuple[str, float]:
    """The user id a valid, unexpired token was issued to and when it expires (epoch
    seconds); raises ``InvalidToken``."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=TOKEN_AUDIENCE,
            issuer=TOKEN_ISSUER,
            options={"require": ["sub", "exp", "iat", "aud", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("invalid subject")
    return subject, float(claims["exp"])


# ---------------------------------------------------------------- login limiter


class LoginLimiter:
    """Failed logins per email in a sliding window, in this process's memory.

    Each gateway process counts on its own (N replicas allow N x the limit) and a restart
    forgets; it bounds memory by forgetting the least recently seen emails.
    """

    def __init__(
        self,
        max_attempts: int,
        window_seconds: float,
        *,
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_attempts = max_attempts
        self.window = window_seconds
        self.max_tracked = max_tracked
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        horizon = self.clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def retry_after(self, key: str) -> float:
        """0 if ``key`` may try now, else the seconds until its oldest failure expires."""
        failures = self._recent(key)
        if failures is None or len(failures) < self.max_attempts:
            return 0.0
        return max(0.0, failures[0] + self.window - self.clock())

    def failed(self, key: str) -> None:
        failures = self._recent(key)
        if failures is None:
            failures = self._failures[key] = deque()
        failures.append(self.clock())
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_tracked:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
