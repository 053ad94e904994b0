"""Each service's own projection of the federation tree (from federation-* events),
used to place documents in a federation the caller may act on."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession

from tribune_shared.auth import Identity
from tribune_shared.errors import NotFound
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import FederationCreatedV1, FederationUpdatedV1
from tribune_shared.store import Store
from tribune_shared.subscriptions import Handler

FEDERATIONS = "federations"


class FederationDirectory:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def on_federation_event(self, envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, FederationCreatedV1, FederationUpdatedV1)
        await self.store[FEDERATIONS].update_one(
            {"_id": event.federation_id},
            {"$set": {"name": event.name, "path": event.path, "parent_id": event.parent_id}},
            upsert=True,
            session=session,
        )

    def handlers(self) -> dict[str, Handler]:
        return {
            "federation-created": self.on_federation_event,
            "federation-updated": self.on_federation_event,
        }

    async def resolve(self, identity: Identity, federation_id: str | None) -> tuple[str, str]:
        """(id, path) of the target federation: the caller's own or one in its subtree."""
        if federation_id is None or federation_id == identity.federation_id:
            return identity.federation_id, identity.federation_path
        doc = await self.store[FEDERATIONS].find_one({"_id": federation_id})
        if doc is None or not identity.can_see(doc["path"]):
            raise NotFound("federation not found", field="federation_id")
        return federation_id, doc["path"]
