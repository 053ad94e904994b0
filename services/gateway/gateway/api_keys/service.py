"""Use cases of API keys: create (the secret shown once), list, revoke, and, on the hot
path, turn a presented key into the identity it acts as."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime
from typing import Any

from tribune_shared.auth import Identity, Role
from tribune_shared.errors import Forbidden, NotFound, Unauthorized
from tribune_shared.events import utcnow
from tribune_shared.logging import get_logger
from tribune_shared.store import Store

from gateway.api_keys import domain
from gateway.api_keys.store import ApiKeyStore
from gateway.caches import TtlCache
from gateway.domain import normalize_name

log = get_logger(__name__)

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
INVALID_KEY = "invalid, expired or revoked API key"


class ApiKeyService:
    def __init__(
        self,
        store: Store,
        *,
        cache_seconds: float,
        max_entries: int,
        last_used_flush_seconds: float,
    ) -> None:
        self.data = ApiKeyStore(store)
        # A key is read from the store at most once per cache_seconds (as a user is): a
        # revocation takes effect at once on this replica, within that time on others.
        self.grants: TtlCache[str, domain.KeyGrant] = TtlCache(cache_seconds, max_entries)
        #: key id -> hash of the keys loaded here (to drop one from the cache on revocation)
        self._digest_of: dict[str, str] = {}
        self.flush_seconds = last_used_flush_seconds
        # last_used_at is written without a store write per request: each use is noted
        # here, and all the keys used since the last write go in one bulk write, at most
        # once per flush_seconds (in the background: no request waits for it), and at
        # shutdown.
        self._used: dict[str, datetime] = {}
        self._last_flush = time.monotonic()
        self._flushing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ administration
    async def create(
        self,
        identity: Identity,
        *,
        name: str,
        role: Role,
        federation_id: str | None,
        routes: list[str],
        expires_at: datetime | None,
    ) -> tuple[dict[str, Any], str]:
        """The key's record and its secret (returned this once, never stored)."""
        now = utcnow()
        name = normalize_name(name)
        chosen = domain.check_new_key(identity, role, routes, expires_at, now)
        federation = await self.data.federation(
            federation_id or identity.federation_id, identity.federation_path
        )
        if federation is None:
            raise NotFound("federation not found", field="federation_id")
        key, prefix = domain.new_key()
        doc: dict[str, Any] = {
            "_id": domain.new_key_id(),
            "name": name,
            "prefix": prefix,
            "hash": domain.key_hash(key),
            "role": role.value,
            "federation_id": federation["_id"],
            "routes": chosen,
            "created_by": identity.user_id,
            "created_at": now,
            "expires_at": expires_at,
            "last_used_at": None,
            "revoked_at": None,
            "revoked_by": None,
        }
        await self.data.insert(doc)
        log.info("gateway.api_key_created", key_id=doc["_id"], role=role.value)
        doc.pop("hash")
        return doc, key

    async def page(self, identity: Identity, limit: int) -> list[dict[str, Any]]:
        """The keys of the caller's subtree, newest first (never their secret)."""
        await self.flush()  # this replica's recent uses show at once
        return await self.data.page(await self.data.subtree_ids(identity.federation_path), limit)

    async def revoke(self, identity: Identity, key_id: str) -> dict[str, Any]:
        ids = await self.data.subtree_ids(identity.federation_path)
        if await self.data.find(key_id, ids) is None:
            raise NotFound("API key not found", field="key_id")
        try:
            doc = await self.data.revoke(key_id, utcnow(), identity.user_id)
        finally:
            self._drop(key_id)
        if doc is None:
            raise NotFound("API key not found", field="key_id")
        log.info("gateway.api_key_revoked", key_id=key_id)
        return doc

    def _drop(self, key_id: str) -> None:
        digest = self._digest_of.pop(key_id, None)
        if digest is not None:
            self.grants.invalidate(digest)

    # ------------------------------------------------------------ hot path
    async def identity_for_key(self, key: str, path: str) -> Identity:
        """The identity a presented key acts as, for ``path``: 401 for an unknown,
        expired or revoked key; 403 for a route the key may not call."""
        if not domain.looks_like_key(key):
            raise Unauthorized(INVALID_KEY, headers=BEARER_CHALLENGE)
        digest = domain.key_hash(key)
        grant = await self.grants.get_or_load(digest, lambda: self._load(digest))
        if grant is None or (grant.expires_at is not None and grant.expires_at <= time.time()):
            raise Unauthorized(INVALID_KEY, headers=BEARER_CHALLENGE)
        if not grant.allows(path):
            raise Forbidden("this API key may not call this route")
        self._note_use(grant.key_id)
        return grant.identity

    async def _load(self, digest: str) -> domain.KeyGrant | None:
        doc = await self.data.find_by_hash(digest)
        if doc is None or doc.get("revoked_at") is not None:
            return None
        # the federation's path now (it may have moved since the key was made)
        federation = await self.data.federation(doc["federation_id"])
        if federation is None:
            return None
        expires = doc.get("expires_at")
        self._digest_of[doc["_id"]] = digest
        return domain.KeyGrant(
            key_id=doc["_id"],
            identity=Identity(
                user_id=domain.key_user_id(doc["_id"]),
                email=domain.key_email(doc["prefix"]),
                role=Role(doc["role"]),
                federation_id=federation["_id"],
                federation_path=federation["path"],
            ),
            routes=tuple(doc.get("routes") or ()),
            expires_at=expires.timestamp() if isinstance(expires, datetime) else None,
        )

    def _note_use(self, key_id: str) -> None:
        self._used[key_id] = utcnow()
        due = time.monotonic() - self._last_flush >= self.flush_seconds
        if due and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.create_task(self.flush(), name="gateway.api_keys_used")

    async def flush(self) -> None:
        """Writes the last uses noted since the previous write (one bulk write)."""
        self._last_flush = time.monotonic()
        used, self._used = self._used, {}
        try:
            await self.data.mark_used(used)
        except Exception as exc:  # not worth failing anything for: kept for the next one
            log.warning("gateway.api_keys_used_not_written", keys=len(used), error=repr(exc))
            for key_id, at in used.items():
                self._used.setdefault(key_id, at)

    async def close(self) -> None:
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await self._flushing
        await self.flush()
