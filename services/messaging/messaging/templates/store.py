"""All database access of message templates (messaging's own database).

A template (``templates``) holds what is shared by its versions: name, channel, federation,
the latest version number. Each version (``template_versions``, id ``<template_id>:<n>``)
holds the parts; versions are never deleted, and a frozen one never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.federations import FEDERATIONS
from tribune_shared.store import IndexSpec, Store

TEMPLATES = "templates"
TEMPLATE_VERSIONS = "template_versions"

TEMPLATE_INDEXES = [
    IndexSpec(TEMPLATES, [("federation_path", ASCENDING), ("updated_at", DESCENDING)]),
    IndexSpec(
        TEMPLATE_VERSIONS, [("template_id", ASCENDING), ("version", ASCENDING)], {"unique": True}
    ),
]

#: what a version list shows of each version (not its parts)
_SUMMARY = {"parts": 0}


def version_key(template_id: str, version: int) -> str:
    return f"{template_id}:{version}"


class Amended(StrEnum):
    amended = "amended"
    frozen = "frozen"
    missing = "missing"


class TemplateStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, template: dict[str, Any], version: dict[str, Any]) -> None:
        """A template and its version 1, together."""

        async def work(session: AsyncClientSession) -> None:
            await self.store[TEMPLATES].insert_one(template, session=session)
            await self.store[TEMPLATE_VERSIONS].insert_one(version, session=session)

        await self.store.run_transaction(work, what="template.create")

    async def add_version(
        self,
        template_id: str,
        scope: dict[str, Any],
        make: Callable[[int], dict[str, Any]],
        at: datetime,
    ) -> dict[str, Any] | None:
        """Version n+1 of a template within ``scope`` (``make(n+1)`` builds it), or None if
        there is no such template. Two edits at once get n+1 and n+2 (the counter moves in
        the transaction; a write conflict runs it again)."""

        async def work(session: AsyncClientSession) -> dict[str, Any] | None:
            template = await self.store[TEMPLATES].find_one_and_update(
                {"_id": template_id, **scope},
                {"$inc": {"latest_version": 1}, "$set": {"updated_at": at}},
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            if template is None:
                return None
            version = make(template["latest_version"])
            await self.store[TEMPLATE_VERSIONS].insert_one(version, session=session)
            return version

        return await self.store.run_transaction(work, what="template.add_version")

    async def amend(
        self, template_id: str, version: int, parts: dict[str, Any], at: datetime
    ) -> Amended:
        """Replace the parts of a version unless it is frozen (checked in the same write:
        a freeze and an amendment at once cannot both win)."""
        result = await self.store[TEMPLATE_VERSIONS].update_one(
            {"_id": version_key(template_id, version), "frozen": False},
            {"$set": {"parts": parts, "updated_at": at}, "$inc": {"revision": 1}},
        )
        if result.matched_count:
            await self.store[TEMPLATES].update_one(
                {"_id": template_id}, {"$set": {"updated_at": at}}
            )
            return Amended.amended
        if await self.version(template_id, version) is None:
            return Amended.missing
        return Amended.frozen

    async def freeze(self, template_id: str, version: int, at: datetime) -> dict[str, Any] | None:
        """Freeze a version (idempotent: the first freeze's time is kept); the version."""
        key = version_key(template_id, version)
        await self.store[TEMPLATE_VERSIONS].update_one(
            {"_id": key, "frozen": False}, {"$set": {"frozen": True, "frozen_at": at}}
        )
        return await self.store[TEMPLATE_VERSIONS].find_one({"_id": key})

    # ------------------------------------------------------------ reads

    async def template(self, template_id: str, scope: dict[str, Any]) -> dict[str, Any] | None:
        return await self.store[TEMPLATES].find_one({"_id": template_id, **scope})

    async def templates(
        self, scope: dict[str, Any], channel: str | None, limit: int
    ) -> list[dict[str, Any]]:
        query = {**scope, **({"channel": channel} if channel else {})}
        return (
            await self.store[TEMPLATES]
            .find(query)
            .sort([("updated_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
            .to_list()
        )

    async def version(self, template_id: str, version: int) -> dict[str, Any] | None:
        return await self.store[TEMPLATE_VERSIONS].find_one(
            {"_id": version_key(template_id, version)}
        )

    async def versions(self, template_id: str) -> list[dict[str, Any]]:
        """Every version of a template, oldest first, without their parts."""
        return (
            await self.store[TEMPLATE_VERSIONS]
            .find({"template_id": template_id}, _SUMMARY)
            .sort("version", ASCENDING)
            .to_list()
        )

    async def federation_name(self, federation_id: str) -> str | None:
        """The name of a federation, from messaging's projection of the tree."""
        doc = await self.store[FEDERATIONS].find_one({"_id": federation_id}, {"name": 1})
        return (doc or {}).get("name")
