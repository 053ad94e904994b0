"""Use cases of federation changes: read one, rename or move it within the caller's
subtree (the tree, its users' paths and a federation-updated per changed federation, in
one transaction)."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError, DuplicateKeyError
from tribune_shared.auth import Identity
from tribune_shared.errors import Conflict, NotFound
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import FederationUpdatedV1
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from gateway.caches import TtlCache
from gateway.federations.domain import FederationChange, plan_change
from gateway.federations.store import FederationStore

log = get_logger(__name__)

DUPLICATE_KEY = 11000


def updated_event(change: FederationChange) -> Envelope:
    return new_envelope(
        FederationUpdatedV1(
            federation_id=change.federation_id,
            parent_id=change.parent_id,
            name=change.name,
            path=change.path,
            version=change.version,
            previous_path=change.previous_path,
        ),
        producer="gateway",
        federation_id=change.federation_id,
        federation_path=change.path,
    )


class FederationService:
    def __init__(self, store: Store, users: TtlCache[str, Any] | None = None) -> None:
        self.store = store
        self.data = FederationStore(store)
        self.outbox = Outbox(store)
        #: the gateway's cache of users (their identity holds their federation's path)
        self.users = users

    async def federation(self, identity: Identity, federation_id: str) -> dict[str, Any]:
        doc = await self.data.find(federation_id, identity.federation_path)
        if doc is None:
            raise NotFound("federation not found", field="federation_id")
        return doc

    async def update(
        self,
        identity: Identity,
        federation_id: str,
        *,
        name: str | None = None,
        parent_id: str | None = None,
    ) -> dict[str, Any]:
        """Rename and/or move a federation of the caller's subtree under another one of
        it. Everything the move changes (the federation's and its descendants' paths,
        their users' paths, one federation-updated per changed federation) commits at
        once; the services then re-path what they hold (tribune_shared.federations)."""
        scope = identity.federation_path

        async def work(session: AsyncClientSession) -> tuple[dict[str, Any], list[Any]]:
            target = await self.data.find(federation_id, scope, session)
            if target is None:
                raise NotFound("federation not found", field="federation_id")
            parent = None
            if parent_id is not None:
                parent = await self.data.find(parent_id, scope, session)
                if parent is None:
                    raise NotFound("federation not found", field="parent_id")
            moving = parent is not None and parent["_id"] != target["parent_id"]
            subtree = await self.data.subtree(target["path"], session) if moving else [target]
            changes = plan_change(identity, target, subtree, name=name, new_parent=parent)
            if not changes:
                return target, []
            head = changes[0]
            same_name = await self.data.sibling(head.parent_id, head.name, session)
            if same_name is not None and same_name["_id"] != target["_id"]:
                raise _conflict(same_name["_id"])
            now = utcnow()
            if await self.data.apply(changes, now, session) != len(changes):
                raise Conflict("the federation tree changed meanwhile; try again")
            if moving and parent is not None:
                await self.data.claim_parent(parent["_id"], now, session)
            await self.data.move_users(changes, session)
            await self.outbox.add(session, *[updated_event(c) for c in changes])
            doc = {
                **target,
                "name": head.name,
                "parent_id": head.parent_id,
                "path": head.path,
                "version": head.version,
            }
            return doc, changes

        try:
            doc, changes = await self.store.run_transaction(work, what="gateway.federation")
        except (DuplicateKeyError, BulkWriteError) as exc:
            if _duplicate(exc):
                raise _conflict(None) from None
            raise
        if changes:
            await self._forget_users(doc["path"])
            log.info(
                "gateway.federation_updated",
                federation_id=federation_id,
                path=doc["path"],
                federations_changed=len(changes),
                moved=changes[0].moved,
            )
        return doc

    async def _forget_users(self, path: str) -> None:
        """The moved users' cached identities (their path changed) on this replica; the
        others reload them within ``user_cache_seconds``."""
        if self.users is None:
            return
        for user_id in await self.data.user_ids(path):
            self.users.invalidate(user_id)


def _duplicate(exc: DuplicateKeyError | BulkWriteError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    return any(e.get("code") == DUPLICATE_KEY for e in exc.details.get("writeErrors", []))


def _conflict(existing_id: str | None) -> Conflict:
    return Conflict(
        "a federation with this name already exists under this parent",
        field="name",
        existing_id=existing_id,
    )
