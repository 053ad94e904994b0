"""Passwords (argon2id), client access tokens (JWT HS256) and the login limiter."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from tribune_shared.client_info import minimise_ip
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
    #: the session's new refresh token (gateway.sessions), when the call opened or
    #: refreshed one
    refresh_token: str | None = None
    refresh_expires_in: int | None = None


def issue_token(
    user_id: str, secret: str, ttl_seconds: int, session_id: str | None = None
) -> AccessToken:
    """``session_id``: the session (gateway.sessions) the token belongs to; it stops
    working when that session is revoked (logout)."""
    now = utcnow()
    claims = {
        "sub": user_id,
        "iss": TOKEN_ISSUER,
        "aud": TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + timedelta(seconds=ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    if session_id is not None:
        claims["sid"] = session_id
    return AccessToken(jwt.encode(claims, secret, algorithm=ALGORITHM), ttl_seconds)


@dataclass(frozen=True)
class VerifiedToken:
    user_id: str
    #: epoch seconds
    issued_at: float
    expires_at: float
    session_id: str | None = None


def verify_token(token: str, secret: str) -> str:
    """The user id a valid, unexpired token was issued to; raises ``InvalidToken``."""
    return verify_token_until(token, secret).user_id


def verify_token_until(token: str, secret: str) -> VerifiedToken:
    """Whom a valid, unexpired token was issued to, when, and when it expires; raises
    ``InvalidToken``."""
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
    if not isinstance(claims["iat"], int | float):
        raise InvalidToken("invalid iat")
    session_id = claims.get("sid")
    if session_id is not None and (not isinstance(session_id, str) or not session_id):
        raise InvalidToken("invalid sid")
    return VerifiedToken(subject, float(claims["iat"]), float(claims["exp"]), session_id)


# ---------------------------------------------------------------- login limiter


@dataclass(frozen=True)
class LoginLimits:
    """Which counters a password check counts in, and their limits (pure: the counting
    itself is in the store, ``GatewayStore.reserve_attempt``, shared by every replica).

    Keys never hold what the client typed: the email is hashed (a 1 MB username is refused
    before it gets here, and unknown emails are not kept in clear), the address is cut to
    its network."""

    max_attempts: int
    network_max_attempts: int
    window_seconds: float
    prefix_ipv4: int
    prefix_ipv6: int

    def counters(self, email: str, client_ip: str | None) -> list[tuple[str, int]]:
        """(key, limit) of every counter an attempt for ``email`` from ``client_ip``
        counts in: the email's first, then the client network's (none without an IP)."""
        found = [("email:" + hashlib.sha256(email.encode()).hexdigest(), self.max_attempts)]
        network = client_network(client_ip, self.prefix_ipv4, self.prefix_ipv6)
        if network is not None:
            found.append(("net:" + network, self.network_max_attempts))
        return found


def client_network(client_ip: str | None, prefix_ipv4: int, prefix_ipv6: int) -> str | None:
    """The network a client address belongs to (``203.0.113.0/24``); None if it is not an
    IP address (the kernel's minimisation, at the limiter's own prefixes)."""
    return minimise_ip(client_ip, prefix_ipv4, prefix_ipv6)
