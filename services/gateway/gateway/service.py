"""Use cases of the gateway: bootstrap, login, the federation tree and users."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TextIO

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError
from tribune_shared.auth import Identity, Role
from tribune_shared.errors import Conflict, Forbidden, InvalidField, NotFound, Unauthorized
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import FederationCreatedV1
from tribune_shared.group_commit import GroupCommit
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from gateway import domain
from gateway.audit import AccessAction, AccessEntry, access_document, from_document
from gateway.caches import TtlCache
from gateway.errors import TooManyAttempts
from gateway.security import (
    AccessToken,
    InvalidToken,
    LoginLimits,
    VerifiedToken,
    hash_password,
    issue_token,
    needs_rehash,
    verify_password,
    verify_token_until,
)
from gateway.sessions.domain import EndReason, SessionPolicy, started_before
from gateway.sessions.service import InvalidRefreshToken, SessionService
from gateway.settings import GatewaySettings
from gateway.store import AccessAuditStore, GatewayStore
from gateway.users import domain as user_rules

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}

log = get_logger(__name__)

BAD_CREDENTIALS = "incorrect email or password"
#: how long a checked access token is remembered (never past its own expiry)
TOKEN_CACHE_SECONDS = 300
#: what a login's password may be at most (as a user's): longer is refused unread
MAX_PASSWORD_CHARS = 1024


def identity_of(user: dict[str, Any]) -> Identity:
    return Identity(
        user_id=user["_id"],
        email=user["email"],
        role=Role(user["role"]),
        federation_id=user["federation_id"],
        federation_path=user["federation_path"],
    )


def tokens_after(user: dict[str, Any]) -> float:
    """Tokens issued before this (epoch seconds) are refused: the password changed since."""
    at = user.get("tokens_after")
    return at.timestamp() if isinstance(at, datetime) else 0.0


def terminal() -> TextIO | None:
    """The terminal the process runs in (its standard error, if that is one); None in a
    container or under a supervisor, where standard error is the log."""
    try:
        return sys.stderr if sys.stderr is not None and sys.stderr.isatty() else None
    except (OSError, ValueError):
        return None


class GatewayService:
    def __init__(self, settings: GatewaySettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.data = GatewayStore(store)
        self.outbox = Outbox(store)
        self.limits = LoginLimits(
            max_attempts=settings.login_max_attempts,
            network_max_attempts=settings.login_network_max_attempts,
            window_seconds=settings.login_window_seconds,
            prefix_ipv4=settings.login_network_prefix_ipv4,
            prefix_ipv6=settings.login_network_prefix_ipv6,
        )
        # Every authenticated request needs its user (still active? which role? since when
        # are its tokens good?): read from the store at most once per user_cache_seconds,
        # not once per request.
        self.users: TtlCache[str, tuple[Identity, float]] = TtlCache(
            settings.user_cache_seconds, settings.user_cache_max_entries
        )
        # A token's signature and claims do not change: checked once, then until it
        # expires only its expiry is (a client sends the same token on every request).
        self.verified: TtlCache[str, VerifiedToken] = TtlCache(
            TOKEN_CACHE_SECONDS, settings.user_cache_max_entries
        )
        self.sessions = SessionService(
            store,
            SessionPolicy(settings.refresh_token_ttl_seconds, settings.session_max_seconds),
            cache_seconds=settings.user_cache_seconds,
            max_entries=settings.user_cache_max_entries,
        )

    # ------------------------------------------------------------ bootstrap
    async def bootstrap(self) -> bool:
        """First start: the root federation and its administrator, exactly once even when
        several processes start together. True if this call created them."""
        if await self.data.has_federation():
            return False
        email = domain.normalize_email(self.settings.admin_email, field="GATEWAY_ADMIN_EMAIL")
        generated = self.settings.admin_password is None
        screen = terminal() if generated else None
        if generated and screen is None:
            # A generated password would have nowhere to go but the logs.
            raise RuntimeError(
                "GATEWAY_ADMIN_PASSWORD is unset and the gateway has no terminal to show a "
                "generated one on: set it for the first start"
            )
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
        if screen is not None:
            # Shown once, by the one process that created the administrator, on its
            # terminal: never in the logs (which keep it, ship it, show it to ops).
            screen.write(
                f"\nTribune: the first administrator is {email}, password {password}\n"
                "  shown once, here only: keep it, then change it (POST /api/v1/me/password)\n\n"
            )
            screen.flush()
            log.warning("gateway.admin_password_generated", email=email, shown_on="terminal")
        return True

    # ------------------------------------------------------------ login
    async def _checked_password(
        self, email: str, stored_hash: str | None, password: str, client_ip: str | None
    ) -> bool:
        """Whether ``password`` is the one of ``email``'s account (``stored_hash``; None
        for an unknown email, which costs the same), within the login limits: the attempt
        is counted first, atomically and for every replica, in the email's and the client
        network's counters (429 when either is over its limit, without checking anything);
        a right password clears the email's failures and gives the network its attempt
        back, a wrong one stays counted."""
        now = utcnow()
        window = timedelta(seconds=self.limits.window_seconds)
        reserved: list[str] = []
        for key, limit in self.limits.counters(email, client_ip):
            count, until = await self.data.reserve_attempt(key, now, window)
            if count > limit:
                # refused before the check: what it reserved in the other counters is
                # given back (its own is over the limit anyway)
                for earlier in reserved:
                    await self.data.release_attempt(earlier)
                log.info("gateway.login_limited", counter=key.split(":", 1)[0])
                raise TooManyAttempts((until - now).total_seconds())
            reserved.append(key)
        ok = await asyncio.to_thread(verify_password, stored_hash, password)
        if ok:
            email_key, *others = reserved
            await self.data.clear_attempts(email_key)
            for key in others:
                await self.data.release_attempt(key)
        return ok

    async def login(self, username: str, password: str, client_ip: str | None) -> AccessToken:
        """OAuth2 password flow; ``username`` is the email."""
        email = username.strip().lower()
        # bounded before it is counted: a megabyte "email" is nobody's
        if len(email) > domain.MAX_EMAIL_LENGTH:
            raise InvalidField(
                f"must have at most {domain.MAX_EMAIL_LENGTH} characters", field="username"
            )
        if len(password) > MAX_PASSWORD_CHARS:
            raise InvalidField(
                f"must have at most {MAX_PASSWORD_CHARS} characters", field="password"
            )
        user = await self.data.find_user_by_email(email)
        stored_hash = user["password_hash"] if user else None
        ok = await self._checked_password(email, stored_hash, password, client_ip)
        if not ok or user is None or not user.get("active", False):
            log.info("gateway.login_failed", email_known=user is not None)
            raise Unauthorized(BAD_CREDENTIALS, headers=BEARER_CHALLENGE)
        if needs_rehash(user["password_hash"]):
            await self.data.set_password_hash(
                user["_id"], await asyncio.to_thread(hash_password, password)
            )
        return await self._new_session(user)

    async def _new_session(self, user: dict[str, Any]) -> AccessToken:
        """A new session (gateway.sessions): an access token and its refresh token."""
        started = await self.sessions.start(user["_id"], user["federation_path"])
        return self._token_for(
            user["_id"], started.session_id, started.refresh_token, started.refresh_expires_in
        )

    def _token_for(
        self,
        user_id: str,
        session_id: str | None = None,
        refresh_token: str | None = None,
        refresh_expires_in: int | None = None,
    ) -> AccessToken:
        issued = issue_token(
            user_id, self.settings.jwt_secret, self.settings.access_token_ttl_seconds, session_id
        )
        return AccessToken(issued.token, issued.expires_in, refresh_token, refresh_expires_in)

    async def refresh(self, refresh_token: str) -> AccessToken:
        """OAuth2 refresh grant: a new access token and a new refresh token of the same
        session (the one presented is retired; presented again, it revokes the session:
        ``RefreshTokenReused``). A deactivated user, or one whose password changed since
        the login, gets 401 and the session ends."""
        if len(refresh_token) > MAX_PASSWORD_CHARS:
            raise InvalidField(
                f"must have at most {MAX_PASSWORD_CHARS} characters", field="refresh_token"
            )
        rotated = await self.sessions.rotate(refresh_token)
        user = await self.data.find_user(rotated.user_id)
        if (
            user is None
            or not user.get("active", False)
            or started_before(rotated.started_at, user.get("tokens_after"))
        ):
            await self.sessions.revoke(rotated.session_id, EndReason.user_refused)
            raise InvalidRefreshToken()
        return self._token_for(
            rotated.user_id,
            rotated.session_id,
            rotated.refresh_token,
            rotated.refresh_expires_in,
        )

    async def logout(
        self, identity: Identity, session_id: str | None, refresh_token: str | None
    ) -> int:
        """Ends one session of the caller: the one of ``refresh_token`` when given (one of
        theirs: a device they log out), else the one of their access token. Its refresh
        tokens stop working at once, its access tokens at once here and within
        ``user_cache_seconds`` on other replicas. How many sessions this ended (0 or 1)."""
        target = session_id
        if refresh_token:
            owner = await self.sessions.owner_of(refresh_token)
            if owner is None or owner[0] != identity.user_id:
                raise InvalidRefreshToken()
            target = owner[1]
        count = int(await self.sessions.revoke(target, EndReason.logout)) if target else 0
        log.info("gateway.logged_out", user_id=identity.user_id, sessions=count)
        return count

    async def identity_for_token(self, token: str) -> Identity:
        """The caller behind an access token; a deactivated or deleted user is refused, and
        so is a token issued before the user's password last changed."""
        verified = self.verified.get(token)
        if verified is None:
            try:
                verified = verify_token_until(token, self.settings.jwt_secret)
            except InvalidToken as exc:
                raise Unauthorized("invalid or expired token", headers=BEARER_CHALLENGE) from exc
            self.verified.put(token, verified)
        if verified.expires_at <= time.time():
            self.verified.invalidate(token)
            raise Unauthorized("invalid or expired token", headers=BEARER_CHALLENGE)
        user_id = verified.user_id
        active = await self.users.get_or_load(user_id, lambda: self._active_user(user_id))
        if active is None or verified.issued_at < active[1]:
            raise Unauthorized("invalid or expired token", headers=BEARER_CHALLENGE)
        if verified.session_id is not None and not await self.sessions.is_live(verified.session_id):
            raise Unauthorized("invalid or expired token", headers=BEARER_CHALLENGE)
        return active[0]

    def session_of(self, token: str) -> str | None:
        """The session an access token belongs to (a token already accepted: verified
        and cached by ``identity_for_token``)."""
        verified = self.verified.get(token)
        return verified.session_id if verified is not None else None

    async def _active_user(self, user_id: str) -> tuple[Identity, float] | None:
        user = await self.data.find_user(user_id)
        if user is None or not user.get("active", False):
            return None
        return identity_of(user), tokens_after(user)

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
            "version": 1,  # +1 per rename or move (gateway.federations)
            "created_at": utcnow(),
        }
        await self.data.insert_federation(doc, session)
        event = FederationCreatedV1(
            federation_id=federation_id,
            parent_id=doc["parent_id"],
            name=name,
            path=doc["path"],
            version=1,
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

    async def _confirm(
        self, identity: Identity, password: str | None, client_ip: str | None
    ) -> None:
        """The second confirmation of a change that grants DPO powers: the caller's own
        current password, checked within the login limits (a stolen access token alone
        can neither make a DPO nor try passwords faster than a login could)."""
        if not password:
            raise InvalidField(
                "granting the DPO role takes your current password, to confirm it is you",
                field="confirm_password",
            )
        me = await self.data.find_user_by_email(identity.email)
        stored = me["password_hash"] if me is not None and me["_id"] == identity.user_id else None
        if not await self._checked_password(identity.email, stored, password, client_ip):
            raise Forbidden("your password did not confirm this change", field="confirm_password")

    async def _target(self, identity: Identity, user_id: str) -> dict[str, Any]:
        """A user of the caller's subtree, never the caller (changing one's own role or
        state could lock the last administrator out; one's password: ``change_password``)."""
        if user_id == identity.user_id:
            raise Conflict("you may not change your own account here", field="user_id")
        doc = await self.data.find_user(user_id)
        if doc is None or not identity.can_see(doc["federation_path"]):
            raise NotFound("user not found", field="user_id")
        return doc

    async def _apply(
        self, identity: Identity, target: dict[str, Any], changes: dict[str, Any]
    ) -> dict[str, Any]:
        """``changes`` to ``target``, if it is still what the rules were checked on (its
        role and state); takes effect at once on this replica (its cached user is dropped)
        and within ``user_cache_seconds`` on the others."""
        expected = {"role": target["role"], "active": target.get("active", False)}
        try:
            doc = await self.data.update_user(
                target["_id"], identity.federation_path, changes, expected
            )
        finally:
            self.users.invalidate(target["_id"])
        if doc is None:
            raise Conflict("the user changed meanwhile; try again", field="user_id")
        return doc

    async def create_user(
        self,
        identity: Identity,
        email: str,
        password: str,
        role: Role,
        federation_id: str | None,
        *,
        confirm_password: str | None = None,
        client_ip: str | None = None,
    ) -> dict[str, Any]:
        grants = domain.grants_dpo(None, role=role)
        domain.check_account_change(identity, grants=grants, dpo_only=True)
        user_rules.check_role_within(identity, role)
        email = domain.normalize_email(email)
        domain.check_password(password, self.settings.password_min_length)
        federation = await self.data.find_federation(
            federation_id or identity.federation_id, identity.federation_path
        )
        if federation is None:
            raise NotFound("federation not found", field="federation_id")
        if grants:
            await self._confirm(identity, confirm_password, client_ip)
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
        federation_id: str | None = None,
        confirm_password: str | None = None,
        client_ip: str | None = None,
    ) -> dict[str, Any]:
        """Deactivate, reactivate, change the role or the federation of a user of the
        caller's subtree (the new federation too: else 404; a role never above the
        caller's: gateway.users.domain). Takes effect at once on this replica (its cached
        user is dropped) and within ``user_cache_seconds`` on the others; a deactivation
        ends the user's sessions."""
        target = await self._target(identity, user_id)
        federation = None
        if federation_id is not None and federation_id != target["federation_id"]:
            federation = await self.data.find_federation(federation_id, identity.federation_path)
            if federation is None:
                raise NotFound("federation not found", field="federation_id")
        new_path = federation["path"] if federation is not None else None
        grants = domain.grants_dpo(target, role=role, active=active) or user_rules.moves_dpo(
            target, role, new_path
        )
        domain.check_account_change(
            identity,
            grants=grants,
            dpo_only=role in (None, Role.dpo) and active in (None, True) and federation is None,
        )
        if role is not None:
            user_rules.check_role_within(identity, role)
        changes: dict[str, Any] = {}
        if active is not None:
            changes["active"] = active
        if role is not None:
            changes["role"] = role.value
        if federation is not None:
            changes["federation_id"] = federation["_id"]
            changes["federation_path"] = federation["path"]
        if not changes:
            return target
        if grants:
            await self._confirm(identity, confirm_password, client_ip)
        doc = await self._apply(identity, target, changes)
        if active is False:
            # a later reactivation must not bring the old sessions back
            await self.sessions.revoke_user(user_id, EndReason.deactivated)
        log.info("gateway.user_updated", user_id=user_id, fields=sorted(changes))
        return doc

    async def reset_password(
        self,
        identity: Identity,
        user_id: str,
        new_password: str,
        *,
        confirm_password: str | None = None,
        client_ip: str | None = None,
    ) -> dict[str, Any]:
        """An administrator sets the password of a user of their subtree (forgotten, or
        the account is compromised): the user's current tokens stop working. A DPO's
        password is set only as the DPO role is granted (``domain.grants_dpo``)."""
        target = await self._target(identity, user_id)
        grants = domain.grants_dpo(target, password=True)
        domain.check_account_change(identity, grants=grants, dpo_only=True)
        domain.check_password(new_password, self.settings.password_min_length, "new_password")
        if grants:
            await self._confirm(identity, confirm_password, client_ip)
        doc = await self._apply(identity, target, await self._new_password(new_password))
        await self.sessions.revoke_user(user_id, EndReason.password_reset)
        log.info("gateway.password_reset", user_id=user_id)
        return doc

    async def change_password(
        self,
        identity: Identity,
        current_password: str,
        new_password: str,
        client_ip: str | None,
    ) -> AccessToken:
        """The caller's own password, given the current one (checked within the login
        limits): every token issued before stops working; a new one is returned."""
        domain.check_password(new_password, self.settings.password_min_length, "new_password")
        me = await self.data.find_user_by_email(identity.email)
        if me is None or me["_id"] != identity.user_id:
            raise NotFound("user not found")
        ok = await self._checked_password(
            identity.email, me["password_hash"], current_password, client_ip
        )
        if not ok:
            raise Forbidden("the current password is not right", field="current_password")
        try:
            doc = await self.data.update_user(
                identity.user_id, identity.federation_path, await self._new_password(new_password)
            )
        finally:
            self.users.invalidate(identity.user_id)
        if doc is None:
            raise NotFound("user not found")
        # every other session (a stolen one too) ends; the caller goes on in a new one
        await self.sessions.revoke_user(identity.user_id, EndReason.password_changed)
        log.info("gateway.password_changed", user_id=identity.user_id)
        return await self._new_session(doc)

    async def _new_password(self, password: str) -> dict[str, Any]:
        """The fields a new password sets: its hash, and the second from which tokens are
        good (those issued earlier, before the change, are refused; token times are whole
        seconds, so one issued in the very second of the change still works)."""
        now = utcnow()
        return {
            "password_hash": await asyncio.to_thread(hash_password, password),
            "tokens_after": now.replace(microsecond=0),
        }


class AccessAudit:
    """Records every authenticated call the gateway answers, and reads them back for the
    DPO (gateway.audit).

    Entries are written in batches (group commit): concurrent requests share one
    ``insert_many``. ``record`` returns only once the batch holding its entry is stored,
    raising if it could not be (the caller refuses a read then); with ``wait=False`` (a
    write, answered whatever becomes of its entry) it returns once the entry is queued,
    unless ``max_pending_entries`` already wait. Reads of the audit first wait for what
    is queued, so an entry is there to be read as soon as its request was answered."""

    def __init__(
        self,
        store: Store,
        *,
        batch_max_entries: int = 500,
        flush_interval_seconds: float = 0.0,
        max_pending_entries: int = 5_000,
    ) -> None:
        self.entries = AccessAuditStore(store)
        self.writer = GroupCommit(
            self.entries.append_many,
            max_batch=batch_max_entries,
            interval=flush_interval_seconds,
            max_pending=max_pending_entries,
            name="gateway.audit",
        )

    @classmethod
    def from_settings(cls, settings: GatewaySettings, store: Store) -> AccessAudit:
        return cls(
            store,
            batch_max_entries=settings.audit_batch_max_entries,
            flush_interval_seconds=settings.audit_flush_interval_seconds,
            max_pending_entries=settings.audit_max_pending_entries,
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
        target_user_id: str | None = None,
        changes: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> str:
        """The entry's id, once it is stored (``wait``), or once it is queued."""
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
            target_user_id=target_user_id,
            changes=changes,
        )
        if wait:
            await self.writer.write(doc)
        else:
            await self.writer.submit(doc)
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
        """The entries of users of the DPO's subtree, newest first, and the next cursor
        (the entries of requests already answered included: queued ones are written
        first)."""
        await self.writer.drained()
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
