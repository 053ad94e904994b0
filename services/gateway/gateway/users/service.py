"""Use cases of user administration that only read: the users of the caller's subtree.
(Creating and changing accounts: gateway.service.GatewayService, whose rules they share.)"""

from __future__ import annotations

from typing import Any

from tribune_shared.auth import Identity, Role
from tribune_shared.errors import NotFound
from tribune_shared.store import Store

from gateway.users import domain
from gateway.users.store import UserQueries


class UserDirectory:
    def __init__(self, store: Store) -> None:
        self.queries = UserQueries(store)

    async def page(
        self,
        identity: Identity,
        *,
        role: Role | None = None,
        active: bool | None = None,
        q: str | None = None,
        cursor: str | None = None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], str | None]:
        docs, more = await self.queries.page(
            identity.federation_path,
            role=role.value if role else None,
            active=active,
            email_pattern=domain.search_pattern(q) if q is not None else None,
            after_email=domain.decode_cursor(cursor) if cursor else None,
            limit=limit,
        )
        next_cursor = domain.encode_cursor(docs[-1]["email"]) if more and docs else None
        return docs, next_cursor

    async def get(self, identity: Identity, user_id: str) -> dict[str, Any]:
        doc = await self.queries.find(user_id, identity.federation_path)
        if doc is None:
            raise NotFound("user not found", field="user_id")
        return doc
