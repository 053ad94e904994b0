"""All database access of the gateway: users, the federation tree, the bootstrap marker,
the login limiter's counters, the access audit."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError, PyMongoError
from tribune_shared.errors import ServiceUnavailable
from tribune_shared.store import IndexSpec, Store, is_transient, subtree_filter

USERS = "users"
FEDERATIONS = "federations"
META = "meta"  # one document per one-time action (the bootstrap)
ACCESS_AUDIT = "access_audit"  # append-only (gateway.audit)
LOGIN_ATTEMPTS = "login_attempts"  # one counter per key (gateway.security.LoginLimits)

BOOTSTRAP_MARKER = "bootstrap"


def audit_indexes(retention_days: int) -> list[IndexSpec]:
    return [
        IndexSpec(ACCESS_AUDIT, [("contact_id", ASCENDING), ("_id", DESCENDING)]),
        IndexSpec(ACCESS_AUDIT, [("user_id", ASCENDING), ("_id", DESCENDING)]),
        # Entries are kept for the retention the DPO set, then expire (CNIL: 6 months to
        # a year for access logs).
        IndexSpec(ACCESS_AUDIT, [("at", ASCENDING)], expire_after_seconds=retention_days * 86_400),
    ]


INDEXES = [
    IndexSpec(USERS, [("email", ASCENDING)], {"unique": True}),
    IndexSpec(USERS, [("federation_path", ASCENDING)]),
    IndexSpec(FEDERATIONS, [("path", ASCENDING)], {"unique": True}),
    IndexSpec(FEDERATIONS, [("parent_id", ASCENDING), ("name_key", ASCENDING)], {"unique": True}),
    # a counter goes once its window is over (reserve_attempt does not rely on it: it
    # starts a new window over an expired counter the expiry sweep has not removed yet)
    IndexSpec(LOGIN_ATTEMPTS, [("expires_at", ASCENDING)], expire_after_seconds=0),
]

#: how often reserve_attempt tries again when it loses a race it cannot win at once (a
#: concurrent first attempt, a write conflict): a handful, each a single-document write
_RESERVE_TRIES = 10

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

    async def update_user(
        self,
        user_id: str,
        scope_path: str,
        changes: dict[str, Any],
        expected: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """The user of ``scope_path``'s subtree after ``changes``; None if there is none,
        or if it no longer has the ``expected`` field values (it changed meanwhile)."""
        return await self.store[USERS].find_one_and_update(
            {"_id": user_id, **subtree_filter(scope_path, "federation_path"), **(expected or {})},
            {"$set": changes},
            projection=_PUBLIC_USER,
            return_document=ReturnDocument.AFTER,
        )

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """A rehash of the same password (stronger parameters): sessions stay valid."""
        await self.store[USERS].update_one(
            {"_id": user_id}, {"$set": {"password_hash": password_hash}}
        )

    # ------------------------------------------------------------ login limiter
    async def reserve_attempt(
        self, key: str, now: datetime, window: timedelta
    ) -> tuple[int, datetime]:
        """One more attempt counted under ``key``, atomically (concurrent attempts, on any
        replica, each get their own count): in its current window, or in a new one when
        there is none or it is over. The count including this attempt, and when the
        window ends."""
        attempts = self.store[LOGIN_ATTEMPTS]
        for _ in range(_RESERVE_TRIES):
            try:
                doc = await attempts.find_one_and_update(
                    {"_id": key, "expires_at": {"$gt": now}},
                    {"$inc": {"count": 1}},
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:  # none yet, or its window is over: open one
                    doc = await attempts.find_one_and_update(
                        {"_id": key, "expires_at": {"$lte": now}},
                        {"$set": {"count": 1, "expires_at": now + window}},
                        upsert=True,
                        return_document=ReturnDocument.AFTER,
                    )
            except DuplicateKeyError:
                continue  # a concurrent attempt opened it first: count in it
            except PyMongoError as exc:
                if not is_transient(exc):
                    raise
                continue
            return int(doc["count"]), doc["expires_at"]
        raise ServiceUnavailable("the login limiter is busy; try again later")

    async def release_attempt(self, key: str) -> None:
        """Gives one reserved attempt back (it did not fail)."""
        await self.store[LOGIN_ATTEMPTS].update_one(
            {"_id": key, "count": {"$gt": 0}}, {"$inc": {"count": -1}}
        )

    async def clear_attempts(self, key: str) -> None:
        await self.store[LOGIN_ATTEMPTS].delete_one({"_id": key})


class AccessAuditStore:
    """Append and read; nothing here updates or deletes an entry (the expiry sweep deletes
    them after the retention)."""

    def __init__(self, store: Store) -> None:
        self.entries = store[ACCESS_AUDIT]

    async def append(self, doc: dict[str, Any]) -> None:
        await self.entries.insert_one(doc)

    async def append_many(self, docs: list[dict[str, Any]]) -> None:
        # unordered: one entry the store refuses does not keep the others out
        await self.entries.insert_many(docs, ordered=False)

    async def page(
        self,
        scope_path: str,
        *,
        contact_id: str | None,
        user_id: str | None,
        action: str | None,
        since: datetime | None,
        until: datetime | None,
        before_id: str | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, of the users of ``scope_path``'s subtree; ``before_id`` continues
        a page (ids sort by time)."""
        query: dict[str, Any] = subtree_filter(scope_path, "federation_path")
        if contact_id is not None:
            query["contact_id"] = contact_id
        if user_id is not None:
            query["user_id"] = user_id
        if action is not None:
            query["action"] = action
        when: dict[str, Any] = {}
        if since is not None:
            when["$gte"] = since
        if until is not None:
            when["$lt"] = until
        if when:
            query["at"] = when
        if before_id is not None:
            query["_id"] = {"$lt": before_id}
        found = await self.entries.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list()
        return found[:limit], len(found) > limit
