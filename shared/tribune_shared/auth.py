"""Identity: the gateway signs who is calling; every service verifies it.

The identity carries the caller's role and federation scope (id and tree path);
services filter every query to that subtree.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

import jwt
from fastapi import Depends, Header, Request
from pydantic import BaseModel, ConfigDict

from tribune_shared.errors import Forbidden, Unauthorized
from tribune_shared.events import utcnow
from tribune_shared.store import subtree_filter

IDENTITY_HEADER = "X-Tribune-Identity"
AUDIENCE = "tribune-services"
ALGORITHM = "HS256"
#: claims an identity token must carry (PyJWT only checks exp and iat when present)
REQUIRED_CLAIMS = ["exp", "iat", "aud", "sub"]


class Role(StrEnum):
    admin = "admin"  # national or federation administrator
    secretary = "secretary"
    treasurer = "treasurer"
    campaign_manager = "campaign_manager"
    dpo = "dpo"
    viewer = "viewer"


class Identity(BaseModel):
    model_config = ConfigDict(frozen=True)

    user_id: str
    email: str
    role: Role
    federation_id: str
    federation_path: str

    def scope(self, field: str = "federation_path") -> dict[str, Any]:
        """Mongo filter limiting a query to the caller's federation subtree."""
        return subtree_filter(self.federation_path, field)

    def can_see(self, federation_path: str) -> bool:
        return federation_path.startswith(self.federation_path)


def sign_identity(identity: Identity, secret: str, ttl_seconds: int = 120) -> str:
    now = utcnow()
    claims = {
        "sub": identity.user_id,
        "email": identity.email,
        "role": identity.role.value,
        "fid": identity.federation_id,
        "fpath": identity.federation_path,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + timedelta(seconds=ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class InvalidIdentity(Exception):
    pass


def verify_identity(token: str, secret: str) -> Identity:
    try:
        # A token without an expiry would be valid forever once leaked: exp (and iat, so
        # a token from the future is refused too) must be present, not merely checked if so.
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": REQUIRED_CLAIMS},
        )
        return Identity(
            user_id=claims["sub"],
            email=claims["email"],
            role=Role(claims["role"]),
            federation_id=claims["fid"],
            federation_path=claims["fpath"],
        )
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise InvalidIdentity(str(exc)) from exc


async def current_identity(
    request: Request,
    x_tribune_identity: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Identity:
    """FastAPI dependency: the verified caller, or 401."""
    if not x_tribune_identity:
        raise Unauthorized("missing identity")
    secret = request.app.state.settings.identity_secret
    try:
        return verify_identity(x_tribune_identity, secret)
    except InvalidIdentity as exc:
        raise Unauthorized("invalid identity") from exc


CurrentIdentity = Annotated[Identity, Depends(current_identity)]


def require_roles(*roles: Role, admin: bool = True):
    """Dependency factory: 403 unless the caller has one of ``roles`` (admin always may,
    unless ``admin=False``: e.g. privacy requests are the DPO's alone)."""
    allowed = {*roles, Role.admin} if admin else set(roles)

    async def check(identity: CurrentIdentity) -> Identity:
        if identity.role not in allowed:
            raise Forbidden(f"role {identity.role} may not do this")
        return identity

    return Depends(check)
