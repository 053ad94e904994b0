"""Database access of federation changes (the gateway's ``federations`` and ``users``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, UpdateMany, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import Store, subtree_filter

from gateway import domain
from gateway.federations.domain import FederationChange
from gateway.store import FEDERATIONS, USERS


class FederationStore:
    def __init__(self, store: Store) -> None:
        self.federations = store[FEDERATIONS]
        self.users = store[USERS]

    async def find(
        self, federation_id: str, scope_path: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        """A federation in the subtree of ``scope_path`` (anything else is not found)."""
        return await self.federations.find_one(
            {"_id": federation_id, **subtree_filter(scope_path, "path")}, session=session
        )

    async def subtree(self, path: str, session: AsyncClientSession) -> list[dict[str, Any]]:
        return (
            await self.federations.find(subtree_filter(path, "path"), session=session)
            .sort("path", ASCENDING)
            .to_list()
        )

    async def sibling(
        self, parent_id: str | None, name: str, session: AsyncClientSession
    ) -> dict[str, Any] | None:
        return await self.federations.find_one(
            {"parent_id": parent_id, "name_key": domain.name_key(name)}, session=session
        )

    async def apply(
        self, changes: Sequence[FederationChange], at: datetime, session: AsyncClientSession
    ) -> int:
        """Each change, only over the path it was planned on (a concurrent change makes
        the count short: the caller refuses). How many federations changed."""
        ops = [
            UpdateOne(
                {"_id": c.federation_id, "path": c.previous_path},
                {
                    "$set": {
                        "name": c.name,
                        "name_key": domain.name_key(c.name),
                        "parent_id": c.parent_id,
                        "path": c.path,
                        "version": c.version,
                        "updated_at": at,
                    }
                },
            )
            for c in changes
        ]
        result = await self.federations.bulk_write(ops, ordered=True, session=session)
        return int(result.matched_count)

    async def claim_parent(self, parent_id: str, at: datetime, session: AsyncClientSession) -> None:
        """A write to the new parent: two concurrent moves (B under C, C under B) then
        conflict and one is retried, re-checked and refused, instead of both making a
        cycle."""
        await self.federations.update_one(
            {"_id": parent_id}, {"$set": {"children_changed_at": at}}, session=session
        )

    async def move_users(
        self, changes: Sequence[FederationChange], session: AsyncClientSession
    ) -> None:
        """Users of the moved federations take their new path (one bulk write)."""
        ops = [
            UpdateMany({"federation_path": c.previous_path}, {"$set": {"federation_path": c.path}})
            for c in changes
            if c.moved
        ]
        if ops:
            await self.users.bulk_write(ops, ordered=False, session=session)

    async def user_ids(self, path: str) -> list[str]:
        docs = self.users.find(subtree_filter(path, "federation_path"), {"_id": 1})
        return [d["_id"] async for d in docs]
