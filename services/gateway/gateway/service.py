"""Use cases of the gateway: bootstrap, login, the federation tree and users."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError, PyMongoError
from tribune_shared.auth import Identity, Role
from tribune_shared.errors import Conflict, NotFound, Unauthorized
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import FederationCreatedV1
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from gateway import domain
from gateway.audit import AccessAction, AccessEntry, access_entry, from_document, to_document
from gateway.errors import TooManyAttempts
from gateway.security import (
    AccessToken,
    InvalidToken,
    LoginLimiter,
    hash_password,
    issue_token,
    needs_rehash,
    verify_password,
    verify_token,
)
from gateway.settings import GatewaySettings
from gateway.store import AccessAuditStore, GatewayStore

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}

log = get_logger(__name__)

BAD_CREDENTIALS = "incorrect email or password"
BOOTSTRAP_ATTEMPTS = 20


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
        for attempt in range(BOOTSTRAP_ATTEMPTS):
            try:
                async with self.store.transaction() as session:
                    if await self.data.has_federation(session):
                        return False
                    await self.data.claim_bootstrap(utcnow(), session)
                    root = await self._insert_federation(
                        domain.normalize_name(self.settings.root_federation_name), None, session
                    )
                    await self.data.insert_user(
                        self._user_doc(email, password_hash, Role.admin, root), session
                    )
                break
            except DuplicateKeyError:
                if await self.data.has_federation():
                    return False  # another process won
                raise
            except PyMongoError as exc:
                if not exc.has_error_label("TransientTransactionError"):
                    raise
                if await self.data.has_federation():
                    return False
                await asyncio.sleep(0.05 * (attempt + 1))
        else:
            raise RuntimeError("gateway bootstrap kept conflicting; is another process stuck?")
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
        try:
            user_id = verify_token(token, self.settings.jwt_secret)
        except InvalidToken as exc:
            raise Unauthorized("invalid or expired token", headers=BEARER_CHALLENGE) from exc
        user = await self.data.find_user(user_id)
        if user is None or not user.get("active", False):
            raise Unauthorized("invalid or expired token", headers=BEARER_CHALLENGE)
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
        doc = {
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


class AccessAudit:
    """Records every authenticated call the gateway answers, and reads them back for the
    DPO (gateway.audit)."""

    def __init__(self, store: Store) -> None:
        self.entries = AccessAuditStore(store)

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
    ) -> AccessEntry:
        now = utcnow()
        entry_id = f"{int(now.timestamp() * 1000):013x}{secrets.token_hex(6)}"
        entry = access_entry(
            entry_id, now, identity, method, path, query, status, client_ip, user_agent
        )
        if contact_id is not None:
            entry = entry.model_copy(update={"contact_id": contact_id})
        await self.entries.append(to_document(entry))
        return entry

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
