"""Use cases of the gateway: bootstrap, login, the federation tree and users."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError
from tribune_shared.auth import Identity, Role
from tribune_shared.errors import Conflict, NotFound, Unauthorized
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import FederationCreatedV1
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from gateway import domain
from gateway.audit import AccessAction, AccessEntry, access_document, from_document
from gateway.caches import TtlCache
from gateway.errors import TooManyAttempts
from gateway.group_commit import GroupCommit
from gateway.security import (
    AccessToken,
    InvalidToken,
    LoginLimiter,
    hash_password,
    issue_token,
    needs_rehash,
    verify_password,
    verify_token_until,
)
from gateway.settings import GatewaySettings
from gateway.store import AccessAuditStore, GatewayStore

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}

log = get_logger(__name__)

BAD_CREDENTIALS = "incorrect email or password"
#: how long a checked access token is remembered (never past its own expiry)
TOKEN_CACHE_SECONDS = 300


def identity_of(user: dict[str, Any]) -> Identity:
    return Identity(
        user_id=user["_id"],
        email=user["email"],
        role=Role(user["role"]),
        federation_id=user["federation_id"],
        federation_path=user["federation_path"],
    )


class GatewayService:
    def __init__(self, settings: GatewaySettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.data = GatewayStore(store)
        self.outbox = Outbox(store)
        self.limiter = LoginLimiter(
            settings.login_max_attempts,
            settings.login_window_seconds,
            max_tracked=settings.login_limiter_max_tracked,
        )
        # Every authenticated request needs its user (still active? which role?): read from
        # the store at most once per user_cache_seconds, not once per request.
        self.users: TtlCache[str, Identity] = TtlCache(
            settings.user_cache_seconds, settings.user_cache_max_entries
        )
        # A token's signature and claims do not change: checked once, then until it
        # expires only its expiry is (a client sends the same token on every request).
        self.verified: TtlCache[str, tuple[str, float]] = TtlCache(
            TOKEN_CACHE_SECONDS, settings.user_cache_max_entries
        )

    # ------------------------------------------------------------ bootstrap
    async def bootstrap(self) -> bool:
        """First start: the root federation and its administrator, exactly once even when
        several processes start together. True if this call created them."""
        if await self.data.has_federation():
            return False
        email = domain.normalize_email(self.settings.admin_email, field="GATEWAY_ADMIN_EMAIL")
        generated = self.settings.admin_password is None
        password = self.settings.admin_password or domain.generate_password()
        password_hash = await asyncio.to_thread(hash_password, password)

        async def create(session: AsyncClientSession) -> dict[str, Any] | None:
            # Also what a retry sees after losing the write conflict to another process.
            if await self.data.has_federation(session):
                return None
            await self.data.claim_bootstrap(utcnow(), session)
            root = await self._insert_federation(
                domain.normalize_name(self.settings.root_federation_name), None, session
            )
            await self.data.insert_user(
                self._user_doc(email, password_hash, Role.admin, root), session
            )
            return root

        try:
            root = await self.store.run_transaction(create, what="gateway.bootstrap")
        except DuplicateKeyError:
            if await self.data.has_federation():
                return False  # another process won
            raise
        if root is None:
            return False  # another process won
        log.info("gateway.bootstrapped", federation_id=root["_id"], admin_email=email)
        if generated:
            # Logged once, by the one process that created the administrator.
            log.warning("gateway.admin_password_generated", email=email, password=password)
        return True

    # ------------------------------------------------------------ login
    async def login(self, username: str, password: str) -> AccessToken:
        key = username.strip().lower()
        wait = self.limiter.retry_after(key)
        if wait > 0:
            raise TooManyAttempts(wait)
        user = await self.data.find_user_by_email(key)
        stored_hash = user["password_hash"] if user else None
        ok = await asyncio.to_thread(verify_password, stored_hash, password)
        if not ok or user is None or not user.get("active", False):
            self.limiter.failed(key)
            log.info("gateway.login_failed", email_known=user is not None)
            raise Unauthorized(BAD_CREDENTIALS, headers=BEARER_CHALLENGE)
        self.limiter.succeeded(key)
        if needs_rehash(user["password_hash"]):
            await self.data.set_password_hash(
                user["_id"], await asyncio.to_thread(hash_password, password)
            )
        return issue_token(
            user["_id"], self.settings.jwt_secret, self.settings.access_token_ttl_seconds
        )

    async def identity_for_token(self, token: str) -> Identity:
        """The caller behind an access token; a deactivated or deleted user is refused."""
        verified = self.verified.get(token)
        if verified is None:
            try:
                verified = verify_token_until(token, self.settings.jwt_secret)
            except InvalidToken as exc:
                raise Unauthorized("invalid or expired token", headers=BEARER_CHALLENGE) from exc
            self.verified.put(token, verified)
        user_id, expires_at = verified
        if expires_at <= time.time():
            self.verified.invalidate(token)
            raise Unauthorized("invalid or expired token", headers=BEARER_CHALLENGE)
        identity = await self.users.get_or_load(user_id, lambda: self._active_user(user_id))
        if identity is None:
            raise Unauthorized("invalid or expired token", headers=BEARER_CHALLENGE)
        return identity

    async def _active_user(self, user_id: str) -> Identity | None:
        user = await self.data.find_user(user_id)
        if user is None or not user.get("active", False):
            return None
        return identity_of(user)

    async def me(self, identity: Identity) -> dict[str, Any]:
        user = await self.data.find_user(identity.user_id)
        if user is None:
            raise NotFound("user not found")
        federation = await self.data.find_federation(
            identity.federation_id, identity.federation_path
        )
        return {**user, "federation_name": federation["name"] if federation else None}

    # ------------------------------------------------------------ federations
    async def _parent(self, identity: Identity, parent_id: str | None) -> dict[str, Any]:
        wanted = parent_id or identity.federation_id
        parent = await self.data.find_federation(wanted, identity.federation_path)
        if parent is None:
            raise NotFound("federation not found", field="parent_id")
        return parent

    async def _insert_federation(
        self, name: str, parent: dict[str, Any] | None, session: AsyncClientSession
    ) -> dict[str, Any]:
        federation_id = domain.new_federation_id()
        doc: dict[str, Any] = {
            "_id": federation_id,
            "name": name,
            "name_key": domain.name_key(name),
            "parent_id": parent["_id"] if parent else None,
            "path": domain.federation_path(parent["path"] if parent else None, federation_id),
            "created_at": utcnow(),
        }
        await self.data.insert_federation(doc, session)
        event = FederationCreatedV1(
            federation_id=federation_id, parent_id=doc["parent_id"], name=name, path=doc["path"]
        )
        await self.outbox.add(
            session,
            new_envelope(
                event, producer="gateway", federation_id=federation_id, federation_path=doc["path"]
            ),
        )
        return doc

    async def create_federation(
        self, identity: Identity, name: str, parent_id: str | None
    ) -> dict[str, Any]:
        name = domain.normalize_name(name)
        parent = await self._parent(identity, parent_id)
        key = domain.name_key(name)

        async def conflict() -> Conflict:
            existing = await self.data.find_sibling(parent["_id"], key)
            return Conflict(
                "a federation with this name already exists under this parent",
                field="name",
                existing_id=existing["_id"] if existing else None,
            )

        if await self.data.find_sibling(parent["_id"], key):
            raise await conflict()
        try:
            async with self.store.transaction() as session:
                doc = await self._insert_federation(name, parent, session)
        except DuplicateKeyError:
            raise await conflict() from None
        log.info("gateway.federation_created", federation_id=doc["_id"], path=doc["path"])
        return doc

    async def federations(self, identity: Identity) -> list[dict[str, Any]]:
        return await self.data.list_federations(identity.federation_path)

    # ------------------------------------------------------------ users
    def _user_doc(
        self, email: str, password_hash: str, role: Role, federation: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "_id": domain.new_user_id(),
            "email": email,
            "password_hash": password_hash,
            "role": role.value,
            "federation_id": federation["_id"],
            "federation_path": federation["path"],
            "active": True,
            "created_at": utcnow(),
        }

    async def create_user(
        self,
        identity: Identity,
        email: str,
        password: str,
        role: Role,
        federation_id: str | None,
    ) -> dict[str, Any]:
        email = domain.normalize_email(email)
        domain.check_password(password, self.settings.password_min_length)
        federation = await self.data.find_federation(
            federation_id or identity.federation_id, identity.federation_path
        )
        if federation is None:
            raise NotFound("federation not found", field="federation_id")
        password_hash = await asyncio.to_thread(hash_password, password)
        doc = self._user_doc(email, password_hash, role, federation)
        try:
            await self.data.insert_user(doc)  # one document, no event: no transaction needed
        except DuplicateKeyError:
            raise Conflict("a user with this email already exists", field="email") from None
        log.info("gateway.user_created", user_id=doc["_id"], role=role.value)
        doc.pop("password_hash")
        return doc

    async def update_user(
        self,
        identity: Identity,
        user_id: str,
        *,
        active: bool | None = None,
        role: Role | None = None,
    ) -> dict[str, Any]:
        """Deactivate, reactivate or change the role of a user of the caller's subtree.
        Takes effect at once on this replica (its cached user is dropped) and within
        ``user_cache_seconds`` on the others."""
        if user_id == identity.user_id:
            # the last administrator must not lock everybody out
            raise Conflict("you may not change your own account", field="user_id")
        changes: dict[str, Any] = {}
        if active is not None:
            changes["active"] = active
        if role is not None:
            changes["role"] = role.value
        if not changes:
            doc = await self.data.find_user(user_id)
            if doc is None or not identity.can_see(doc["federation_path"]):
                raise NotFound("user not found", field="user_id")
            return doc
        try:
            doc = await self.data.update_user(user_id, identity.federation_path, changes)
        finally:
            self.users.invalidate(user_id)
        if doc is None:
            raise NotFound("user not found", field="user_id")
        log.info("gateway.user_updated", user_id=user_id, fields=sorted(changes))
        return doc


class AccessAudit:
    """Records every authenticated call the gateway answers, and reads them back for the
    DPO (gateway.audit).

    Entries are written in batches (group commit): concurrent requests share one
    ``insert_many``, and each ``record`` returns only once the batch holding its entry is
    stored, raising if it could not be (the caller refuses a read then)."""

    def __init__(
        self,
        store: Store,
        *,
        batch_max_entries: int = 500,
        flush_interval_seconds: float = 0.0,
    ) -> None:
        self.entries = AccessAuditStore(store)
        self.writer = GroupCommit(
            self.entries.append_many,
            max_batch=batch_max_entries,
            interval=flush_interval_seconds,
            name="gateway.audit",
        )

    @classmethod
    def from_settings(cls, settings: GatewaySettings, store: Store) -> AccessAudit:
        return cls(
            store,
            batch_max_entries=settings.audit_batch_max_entries,
            flush_interval_seconds=settings.audit_flush_interval_seconds,
        )

    async def close(self) -> None:
        await self.writer.close()

    async def record(
        self,
        identity: Identity,
        method: str,
        path: str,
        query: Mapping[str, str],
        status: int,
        client_ip: str | None,
        user_agent: str | None,
        *,
        contact_id: str | None = None,
    ) -> str:
        """The entry's id, once it is stored."""
        now = utcnow()
        entry_id = f"{int(now.timestamp() * 1000):013x}{secrets.token_hex(6)}"
        doc = access_document(
            entry_id,
            now,
            identity,
            method,
            path,
            query,
            status,
            client_ip,
            user_agent,
            contact_id=contact_id,
        )
        await self.writer.write(doc)
        return entry_id

    async def read(
        self,
        identity: Identity,
        *,
        contact_id: str | None = None,
        user_id: str | None = None,
        action: AccessAction | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int,
    ) -> tuple[list[AccessEntry], str | None]:
        """The entries of users of the DPO's subtree, newest first, and the next cursor."""
        docs, more = await self.entries.page(
            identity.federation_path,
            contact_id=contact_id,
            user_id=user_id,
            action=action.value if action else None,
            since=since,
            until=until,
            before_id=cursor,
            limit=limit,
        )
        entries = [from_document(d) for d in docs]
        return entries, (entries[-1].id if more and entries else None)
