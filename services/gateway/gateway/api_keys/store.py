"""All database access of API keys: ``api_keys`` (one document per key: its hash, never
the key), and the federations a key's scope is resolved from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from tribune_shared.store import IndexSpec, Store, subtree_filter

from gateway.store import FEDERATIONS

API_KEYS = "api_keys"

INDEXES = [
    IndexSpec(API_KEYS, [("hash", ASCENDING)], {"unique": True}),
    IndexSpec(API_KEYS, [("federation_id", ASCENDING), ("created_at", DESCENDING)]),
]

_NO_HASH = {"hash": 0}


class ApiKeyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def insert(self, doc: dict[str, Any]) -> None:
        await self.store[API_KEYS].insert_one(doc)

    async def find_by_hash(self, digest: str) -> dict[str, Any] | None:
        return await self.store[API_KEYS].find_one({"hash": digest})

    async def federation(self, federation_id: str, scope_path: str = "/") -> dict[str, Any] | None:
        """A federation (in ``scope_path``'s subtree); its current path (it may have moved
        since the key was made)."""
        return await self.store[FEDERATIONS].find_one(
            {"_id": federation_id, **subtree_filter(scope_path, "path")}
        )

    async def subtree_ids(self, scope_path: str) -> list[str]:
        docs = (
            await self.store[FEDERATIONS]
            .find(subtree_filter(scope_path, "path"), {"_id": 1})
            .to_list()
        )
        return [d["_id"] for d in docs]

    async def page(self, federation_ids: list[str], limit: int) -> list[dict[str, Any]]:
        return (
            await self.store[API_KEYS]
            .find({"federation_id": {"$in": federation_ids}}, _NO_HASH)
            .sort("created_at", DESCENDING)
            .limit(limit)
            .to_list()
        )

    async def find(self, key_id: str, federation_ids: list[str]) -> dict[str, Any] | None:
        return await self.store[API_KEYS].find_one(
            {"_id": key_id, "federation_id": {"$in": federation_ids}}, _NO_HASH
        )

    async def revoke(self, key_id: str, now: datetime, by: str) -> dict[str, Any] | None:
        """The key, revoked (now, or when it was first revoked)."""
        keys = self.store[API_KEYS]
        doc = await keys.find_one_and_update(
            {"_id": key_id, "revoked_at": None},
            {"$set": {"revoked_at": now, "revoked_by": by}},
            projection=_NO_HASH,
            return_document=ReturnDocument.AFTER,
        )
        return doc or await keys.find_one({"_id": key_id}, _NO_HASH)

    async def mark_used(self, last_used: dict[str, datetime]) -> None:
        """Each key's last use, in one write for all of them; ``$max``: replicas flushing
        in any order never move it back."""
        if last_used:
            await self.store[API_KEYS].bulk_write(
                [
                    UpdateOne({"_id": k}, {"$max": {"last_used_at": t}})
                    for k, t in last_used.items()
                ],
                ordered=False,
            )
