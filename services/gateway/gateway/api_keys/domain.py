"""API keys for integrations, free of I/O.

A key acts as one **role** in one **federation** (and its subtree), optionally only on
some **route prefixes**: the gateway turns it into the same signed identity a user gets,
so services authorize it exactly as a person of that role and federation (no second
authorization logic). One role, not a set: the identity every service verifies holds
one role, and a union of roles would need a rule of its own in every service.

A key reaches the forwarded APIs and the person view only; never the gateway's account,
key and federation administration (an integration cannot mint users or other keys).
A key's role follows the role rule (gateway.users.domain: never above its creator's) and
is never ``dpo`` (the access audit and erasures are a person's job).

The secret is shown once, at creation. The store keeps its SHA-256 (256 random bits: a
fast hash is enough, and it makes the check one indexed read) and the key's prefix, for
people to recognise it in the list (``trk_<prefix>_...``).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tribune_shared.auth import Identity, Role
from tribune_shared.errors import Forbidden, InvalidField

from gateway.routing import ROUTES
from gateway.users.domain import check_role_within

KEY_PREFIX = "trk_"
PREFIX_CHARS = 8
MAX_KEY_CHARS = 128
#: the gateway's own route a key may call besides the forwarded ones
PERSON_VIEW = "/api/v1/people"
#: what a key may be scoped to: every forwarded prefix that needs a login, the person view
SCOPABLE: frozenset[str] = frozenset({r.prefix for r in ROUTES if not r.public} | {PERSON_VIEW})
MAX_ROUTES = 50
#: the header an integration may send its key in (or ``Authorization: Bearer <key>``)
API_KEY_HEADER = "x-api-key"


def new_key_id() -> str:
    return uuid.uuid4().hex


def new_key() -> tuple[str, str]:
    """(the key, its recognisable prefix)."""
    prefix = secrets.token_hex(PREFIX_CHARS // 2)
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_key(value: str | None) -> bool:
    return value is not None and value.startswith(KEY_PREFIX) and len(value) <= MAX_KEY_CHARS


def key_user_id(key_id: str) -> str:
    """What the identity of a key names as its user (services record it as the author)."""
    return f"apikey-{key_id}"


def key_email(prefix: str) -> str:
    # a syntactically valid address of a reserved domain: services may treat it as an email
    return f"apikey-{prefix}@api-keys.invalid"


def check_new_key(
    identity: Identity,
    role: Role,
    routes: Iterable[str],
    expires_at: datetime | None,
    now: datetime,
) -> list[str]:
    """The key's routes, checked (422 naming the field, 403 for a role above the
    creator's or ``dpo``)."""
    if role is Role.dpo:
        raise Forbidden("an API key may not have the DPO role", field="role")
    check_role_within(identity, role)
    chosen = sorted(set(routes))
    if len(chosen) > MAX_ROUTES:
        raise InvalidField(f"at most {MAX_ROUTES} route prefixes", field="routes")
    for prefix in chosen:
        if prefix not in SCOPABLE:
            raise InvalidField(
                f"{prefix!r} is not a route prefix a key may use (one of: "
                f"{', '.join(sorted(SCOPABLE))})",
                field="routes",
            )
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidField("must carry a time zone", field="expires_at")
        if expires_at <= now:
            raise InvalidField("must be in the future", field="expires_at")
    return chosen


@dataclass(frozen=True)
class KeyGrant:
    """What a presented key lets its holder do (cached on the hot path)."""

    key_id: str
    identity: Identity
    #: route prefixes it is limited to; empty: every one a key may use
    routes: tuple[str, ...]
    #: epoch seconds; None: no expiry
    expires_at: float | None

    def allows(self, path: str) -> bool:
        reachable = self.routes or SCOPABLE
        return any(path == p or path.startswith(p + "/") for p in reachable)
