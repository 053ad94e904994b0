"""All database access of sessions: ``sessions`` (one document per login) and
``refresh_tokens`` (one per token handed out, by its hash; kept once retired, until it
would have expired, so a replay is recognised)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store

SESSIONS = "sessions"
REFRESH_TOKENS = "refresh_tokens"

INDEXES = [
    IndexSpec(SESSIONS, [("user_id", ASCENDING), ("revoked_at", ASCENDING)]),
    # a session goes once over (refresh tokens cannot outlive it)
    IndexSpec(SESSIONS, [("expires_at", ASCENDING)], expire_after_seconds=0),
    IndexSpec(REFRESH_TOKENS, [("session_id", ASCENDING)]),
    IndexSpec(REFRESH_TOKENS, [("expires_at", ASCENDING)], expire_after_seconds=0),
]


class SessionStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def sessions(self) -> Any:
        return self.store[SESSIONS]

    @property
    def tokens(self) -> Any:
        return self.store[REFRESH_TOKENS]

    async def insert_session(self, session_doc: dict[str, Any], token_doc: dict[str, Any]) -> None:
        """A new session and its first refresh token, together."""

        async def work(tx: AsyncClientSession) -> None:
            await self.sessions.insert_one(session_doc, session=tx)
            await self.tokens.insert_one(token_doc, session=tx)

        await self.store.run_transaction(work, what="gateway.session_start")

    async def retire_token(
        self, token_id: str, now: datetime, tx: AsyncClientSession
    ) -> dict[str, Any] | None:
        """The current, unexpired token ``token_id``, marked used (once: a concurrent use
        of the same token loses the write and finds it used); None otherwise."""
        return await self.tokens.find_one_and_update(
            {"_id": token_id, "used_at": None, "expires_at": {"$gt": now}},
            {"$set": {"used_at": now}},
            return_document=ReturnDocument.AFTER,
            session=tx,
        )

    async def find_token(self, token_id: str) -> dict[str, Any] | None:
        return await self.tokens.find_one({"_id": token_id})

    async def live_session(
        self, session_id: str, now: datetime, tx: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.sessions.find_one(
            {"_id": session_id, "revoked_at": None, "expires_at": {"$gt": now}}, session=tx
        )

    async def find_session(self, session_id: str) -> dict[str, Any] | None:
        return await self.sessions.find_one({"_id": session_id})

    async def add_token(
        self, token_doc: dict[str, Any], session_id: str, now: datetime, tx: AsyncClientSession
    ) -> None:
        await self.tokens.insert_one(token_doc, session=tx)
        await self.sessions.update_one(
            {"_id": session_id},
            {"$set": {"refreshed_at": now}, "$inc": {"refreshes": 1}},
            session=tx,
        )

    async def revoke(self, session_id: str, now: datetime, reason: str) -> bool:
        """True if this call ended a live session."""
        result = await self.sessions.update_one(
            {"_id": session_id, "revoked_at": None},
            {"$set": {"revoked_at": now, "revoked_reason": reason}},
        )
        return result.modified_count == 1

    async def revoke_user(
        self, user_id: str, now: datetime, reason: str, keep: str | None = None
    ) -> int:
        """Every live session of the user (but ``keep``) revoked; how many."""
        query: dict[str, Any] = {"user_id": user_id, "revoked_at": None}
        if keep is not None:
            query["_id"] = {"$ne": keep}
        result = await self.sessions.update_many(
            query, {"$set": {"revoked_at": now, "revoked_reason": reason}}
        )
        return result.modified_count
