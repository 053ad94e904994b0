"""Routes of user administration that read: the users of the caller's subtree. (Creating
and changing accounts: ``POST /api/v1/users``, ``PATCH /api/v1/users/{id}``, ``POST
/api/v1/users/{id}/password`` in gateway.api.)"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from tribune_shared.auth import Role

from gateway.api import AccountManager, UserId, UserOut
from gateway.users.service import UserDirectory

router = APIRouter(prefix="/api/v1", tags=["users"])


async def _directory(request: Request) -> UserDirectory:
    return request.app.state.user_directory


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


@router.get("/users")
async def list_users(
    request: Request,
    identity: AccountManager,
    role: Role | None = None,
    active: bool | None = None,
    q: Annotated[
        str | None, Query(min_length=1, max_length=100, description="part of the email")
    ] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UserPage:
    """The users of the caller's subtree (administrators and DPOs), by email; filters:
    ``role``, ``active``, ``q`` (part of the email). ``next_cursor`` continues the list."""
    directory = await _directory(request)
    docs, next_cursor = await directory.page(
        identity,
        role=role,
        active=active,
        q=q,
        cursor=cursor,
        limit=min(limit, request.app.state.settings.max_page_size),
    )
    return UserPage(items=[UserOut.of(d) for d in docs], next_cursor=next_cursor)


@router.get("/users/{user_id}")
async def get_user(request: Request, user_id: UserId, identity: AccountManager) -> UserOut:
    """One user of the caller's subtree (else 404)."""
    return UserOut.of(await (await _directory(request)).get(identity, user_id))
