"""Every database access of backups and restores: one database at a time, read and
written as raw BSON (documents are never decoded and re-encoded, so nothing about them
changes: types, field order, binary keys of the vault)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bson import json_util
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient, IndexModel
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import client_options

_RAW: CodecOptions = CodecOptions(document_class=RawBSONDocument)
#: what an index listing holds besides its options
_NOT_OPTIONS = ("v", "key", "ns")


class Database:
    """One database of the platform (a service's, or the vault)."""

    def __init__(self, settings: ServiceSettings, url: str, name: str, timeout_ms: int) -> None:
        options = client_options(settings)
        options["serverSelectionTimeoutMS"] = timeout_ms
        self.client: AsyncMongoClient = AsyncMongoClient(url, **options)
        self.name = name
        self.db = self.client.get_database(name, codec_options=_RAW)
        #: decoded documents, for index listings (their options go to the manifest)
        self.plain = self.client.get_database(name)

    @classmethod
    def of_service(cls, settings: ServiceSettings, timeout_ms: int) -> Database:
        return cls(settings, settings.mongo_url, settings.database_name, timeout_ms)

    @classmethod
    def of_vault(cls, settings: ServiceSettings, timeout_ms: int) -> Database:
        url = settings.vault_mongo_url or settings.mongo_url
        return cls(settings, url, settings.vault_database_name, timeout_ms)

    async def close(self) -> None:
        await self.client.close()

    # ------------------------------------------------------------ reading
    async def collections(self) -> list[str]:
        return sorted(await self.db.list_collection_names())

    async def estimated_count(self, collection: str) -> int:
        return int(await self.db[collection].estimated_document_count())

    async def indexes(self, collection: str) -> list[dict[str, Any]]:
        """The collection's indexes but ``_id_``, as JSON (extended JSON for the options):
        ``{"key": [[field, direction], ...], "options": {...}}``."""
        out = []
        async for spec in await self.plain[collection].list_indexes():
            if spec.get("name") == "_id_":
                continue
            key = [[str(k), v] for k, v in spec["key"].items()]
            options = {k: v for k, v in spec.items() if k not in _NOT_OPTIONS}
            out.append({"key": key, "options": json.loads(json_util.dumps(options))})
        return out

    async def batches(
        self, collection: str, batch_size: int
    ) -> AsyncIterator[list[RawBSONDocument]]:
        """Every document, ``batch_size`` per round trip, in ``_id`` order (a stable order:
        two backups of the same data give the same file)."""
        cursor = self.db[collection].find({}, batch_size=batch_size).sort("_id", 1)
        try:
            while True:
                batch = await cursor.to_list(batch_size)
                if not batch:
                    return
                yield batch
        finally:
            await cursor.close()

    async def non_empty(self) -> list[str]:
        """The collections holding at least one document (a service that started creates
        its collections and indexes: empty ones do not count as data)."""
        found = []
        for name in await self.collections():
            if name.startswith("system."):
                continue
            if await self.db[name].find_one({}, {"_id": 1}) is not None:
                found.append(name)
        return found

    # ------------------------------------------------------------ writing
    async def drop(self) -> None:
        await self.client.drop_database(self.name)

    async def insert(self, collection: str, documents: Sequence[RawBSONDocument]) -> None:
        if documents:
            await self.db[collection].insert_many(list(documents), ordered=True)

    async def ensure_collection(self, collection: str) -> None:
        """An empty collection of the backup exists after the restore too."""
        if collection not in await self.db.list_collection_names():
            await self.db.create_collection(collection)

    async def create_indexes(self, collection: str, indexes: Sequence[dict[str, Any]]) -> None:
        models = [
            IndexModel(
                [(k, v) for k, v in index["key"]],
                **json_util.loads(json.dumps(index.get("options") or {})),
            )
            for index in indexes
        ]
        if models:
            await self.db[collection].create_indexes(models)
