"""Route of sessions: logging out. (Opening and refreshing a session is the OAuth2 token
endpoint, ``POST /api/v1/auth/token`` in gateway.api.)"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from gateway.api import Audit, ClientIdentity, Service, audited, oauth2
from gateway.sessions.domain import MAX_REFRESH_TOKEN_CHARS, EndReason

router = APIRouter(prefix="/api/v1")


class Logout(BaseModel):
    refresh_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REFRESH_TOKEN_CHARS,
        description="the refresh token of the session to end (one of yours; default: the "
        "session of the access token)",
    )


class LoggedOut(BaseModel):
    revoked_sessions: int = Field(description="sessions this call ended (0: already ended)")


@router.post("/auth/logout", tags=["auth"])
async def logout(
    request: Request,
    identity: ClientIdentity,
    svc: Service,
    audit: Audit,
    token: Annotated[str | None, Depends(oauth2)],
    body: Logout | None = None,
) -> LoggedOut:
    """Ends one of the caller's sessions: the one of ``refresh_token`` if given (401 if
    it is not one of theirs), else the one of the access token. Its refresh tokens stop
    working at once, its access tokens at once on this gateway replica and within
    ``GATEWAY_USER_CACHE_SECONDS`` on the others. Audited."""
    session_id = svc.session_of(token) if token else None
    refresh = body.refresh_token if body is not None else None
    count = await audited(
        request,
        identity,
        audit,
        lambda: svc.logout(identity, session_id, refresh),
        account=lambda _: (identity.user_id, {"session": EndReason.logout.value}),
    )
    return LoggedOut(revoked_sessions=count)
