"""All database access of the gateway: users, the federation tree, the bootstrap marker."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store, subtree_filter

USERS = "users"
FEDERATIONS = "federations"
META = "meta"  # one document per one-time action (the bootstrap)

BOOTSTRAP_MARKER = "bootstrap"

INDEXES = [
    IndexSpec(USERS, [("email", ASCENDING)], {"unique": True}),
    IndexSpec(USERS, [("federation_path", ASCENDING)]),
    IndexSpec(FEDERATIONS, [("path", ASCENDING)], {"unique": True}),
    IndexSpec(FEDERATIONS, [("parent_id", ASCENDING), ("name_key", ASCENDING)], {"unique": True}),
]

_PUBLIC_USER = {"password_hash": 0}


class GatewayStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ bootstrap
    async def has_federation(self, session: AsyncClientSession | None = None) -> bool:
        return await self.store[FEDERATIONS].find_one({}, {"_id": 1}, session=session) is not None

    async def claim_bootstrap(self, at: Any, session: AsyncClientSession) -> None:
        """Raises DuplicateKeyError (or a write conflict) if another process bootstrapped."""
        await self.store[META].insert_one({"_id": BOOTSTRAP_MARKER, "at": at}, session=session)

    # ------------------------------------------------------------ federations
    async def insert_federation(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        await self.store[FEDERATIONS].insert_one(doc, session=session)

    async def find_federation(self, federation_id: str, scope_path: str) -> dict[str, Any] | None:
        """A federation in the subtree of ``scope_path`` (anything else is not found)."""
        return await self.store[FEDERATIONS].find_one(
            {"_id": federation_id, **subtree_filter(scope_path, "path")}
        )

    async def find_sibling(self, parent_id: str | None, name_key: str) -> dict[str, Any] | None:
        return await self.store[FEDERATIONS].find_one(
            {"parent_id": parent_id, "name_key": name_key}
        )

    async def list_federations(self, scope_path: str) -> list[dict[str, Any]]:
        return (
            await self.store[FEDERATIONS]
            .find(subtree_filter(scope_path, "path"))
            .sort("path", ASCENDING)
            .to_list()
        )

    # ------------------------------------------------------------ users
    async def insert_user(
        self, doc: dict[str, Any], session: AsyncClientSession | None = None
    ) -> None:
        await self.store[USERS].insert_one(doc, session=session)

    async def find_user_by_email(self, email: str) -> dict[str, Any] | None:
        """With the password hash: only for logging in."""
        return await self.store[USERS].find_one({"email": email})

    async def find_user(self, user_id: str) -> dict[str, Any] | None:
        return await self.store[USERS].find_one({"_id": user_id}, _PUBLIC_USER)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        await self.store[USERS].update_one(
            {"_id": user_id}, {"$set": {"password_hash": password_hash}}
        )
