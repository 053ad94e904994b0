"""Database access of user administration: reading users page by page (the writes are
gateway.store.GatewayStore's)."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from tribune_shared.store import IndexSpec, Store, subtree_filter

from gateway.store import USERS

_PUBLIC = {"password_hash": 0}

INDEXES = [
    # listing a subtree's users by email, filtered by role or state
    IndexSpec(USERS, [("federation_path", ASCENDING), ("email", ASCENDING)]),
]


class UserQueries:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def page(
        self,
        scope_path: str,
        *,
        role: str | None,
        active: bool | None,
        email_pattern: str | None,
        after_email: str | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Users of ``scope_path``'s subtree by email, after ``after_email``; and whether
        there are more."""
        query: dict[str, Any] = subtree_filter(scope_path, "federation_path")
        email: dict[str, Any] = {}
        if email_pattern is not None:
            email["$regex"] = email_pattern
        if after_email is not None:
            email["$gt"] = after_email
        if email:
            query["email"] = email
        if role is not None:
            query["role"] = role
        if active is not None:
            query["active"] = active
        found = (
            await self.store[USERS]
            .find(query, _PUBLIC)
            .sort("email", ASCENDING)
            .limit(limit + 1)
            .to_list()
        )
        return found[:limit], len(found) > limit

    async def find(self, user_id: str, scope_path: str) -> dict[str, Any] | None:
        return await self.store[USERS].find_one(
            {"_id": user_id, **subtree_filter(scope_path, "federation_path")}, _PUBLIC
        )
