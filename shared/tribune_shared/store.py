"""Store helpers over PyMongo's async API; each service owns one database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from tribune_shared.logging import get_logger
from tribune_shared.settings import ServiceSettings

log = get_logger(__name__)

__all__ = ["DuplicateKeyError", "IndexSpec", "Store", "subtree_filter"]


@dataclass(frozen=True)
class IndexSpec:
    collection: str
    keys: Sequence[tuple[str, int]]
    options: dict[str, Any] = field(default_factory=dict)


def subtree_filter(federation_path: str, field_name: str = "federation_path") -> dict[str, Any]:
    """Everything in a federation's subtree: one anchored (indexable) prefix query."""
    import re

    return {field_name: {"$regex": f"^{re.escape(federation_path)}"}}


class Store:
    """A service's database, its indexes and its transactions."""

    def __init__(self, settings: ServiceSettings, *, server_timeout_ms: int = 5000) -> None:
        self.settings = settings
        self.client: AsyncMongoClient = AsyncMongoClient(
            settings.mongo_url,
            tz_aware=True,
            serverSelectionTimeoutMS=server_timeout_ms,
            uuidRepresentation="standard",
        )
        self.db: AsyncDatabase = self.client[settings.database_name]

    def __getitem__(self, name: str):
        return self.db[name]

    async def ensure_indexes(self, specs: Sequence[IndexSpec]) -> None:
        by_collection: dict[str, list[IndexModel]] = {}
        for spec in specs:
            by_collection.setdefault(spec.collection, []).append(
                IndexModel(list(spec.keys), **spec.options)
            )
        for name, models in by_collection.items():
            await self.db[name].create_indexes(models)

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
            return True
        except Exception:  # any failure means "not ready"
            return False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncClientSession]:
        """A multi-document transaction: everything written with ``session`` commits or none."""
        async with self.client.start_session() as session:
            async with await session.start_transaction(
                read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
            ):
                yield session

    async def close(self) -> None:
        await self.client.close()


async def upsert_if_newer(
    collection, doc_id: str, version: int, fields: dict[str, Any], *, session=None
) -> bool:
    """Apply a projected state only if it is newer than the stored one (events across
    topics arrive in any order). True if it was applied.

    Read-then-write inside the caller's transaction: a concurrent writer gets a write
    conflict (retried), and an older event is a no-op rather than an aborted transaction.
    """
    current = await collection.find_one({"_id": doc_id}, {"version": 1}, session=session)
    if current is not None and current.get("version") is not None and current["version"] >= version:
        return False
    await collection.update_one(
        {"_id": doc_id}, {"$set": {**fields, "version": version}}, upsert=True, session=session
    )
    return True
