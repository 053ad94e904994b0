"""Privacy in the messaging service: the person's data for an access export (DPO only),
and erasure: the contact projection becomes a tombstone (no late or replayed event brings
the person back), their consent projection and message log are deleted."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pymongo import DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.app import IdPath
from tribune_shared.auth import CurrentIdentity
from tribune_shared.contact_directory import ERASED_VERSION
from tribune_shared.errors import NotFound
from tribune_shared.events import Envelope
from tribune_shared.outbox import Outbox
from tribune_shared.privacy import dpo_router, erasure_completed, erasure_request
from tribune_shared.store import Store
from tribune_shared.subscriptions import Handler

from messaging.campaigns.store import CampaignStore
from messaging.domain import MessageStatus
from messaging.store import CONSENTS, CONTACTS, MEMBERSHIPS, MESSAGES

SERVICE = "messaging"
#: the version of an erased contact's tombstone: no contact event is ever newer

#: collections holding a person's data besides the contact projection, by their field
PERSON_COLLECTIONS: list[tuple[str, str]] = [
    (CONSENTS, "contact_id"),
    (MESSAGES, "contact_id"),
    (MEMBERSHIPS, "contact_id"),
]


class MessagingPrivacyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def forget_contact(self, contact_id: str, session: AsyncClientSession | None) -> None:
        await self.store[CONTACTS].replace_one(
            {"_id": contact_id},
            {"erased": True, "version": ERASED_VERSION},
            upsert=True,
            session=session,
        )

    async def is_erased(self, contact_id: str, session: AsyncClientSession | None) -> bool:
        doc = await self.store[CONTACTS].find_one(
            {"_id": contact_id}, {"erased": 1}, session=session
        )
        return bool(doc and doc.get("erased"))

    async def erase(self, contact_id: str, session: AsyncClientSession) -> None:
        await self.forget_contact(contact_id, session)
        await self._uncount_pending(contact_id, session)
        for collection, field in PERSON_COLLECTIONS:
            await self.store[collection].delete_many({field: contact_id}, session=session)

    async def _uncount_pending(self, contact_id: str, session: AsyncClientSession) -> None:
        """The person's campaign messages not sent yet go with the rest of their data: the
        campaigns' counters say so (``erased``), so they still add up."""
        pending = [MessageStatus.queued.value, MessageStatus.held.value]
        counts: dict[str, dict[str, int]] = {}
        async for d in self.store[MESSAGES].find(
            {"contact_id": contact_id, "status": {"$in": pending}, "campaign_id": {"$ne": None}},
            {"campaign_id": 1, "status": 1},
            session=session,
        ):
            tally = counts.setdefault(d["campaign_id"], {"erased": 0})
            tally[d["status"]] = tally.get(d["status"], 0) - 1
            tally["erased"] += 1
        await CampaignStore(self.store).count_stats(counts, session)

    async def person(self, identity_scope: dict[str, Any], contact_id: str) -> dict | None:
        contact = await self.store[CONTACTS].find_one({"_id": contact_id, **identity_scope})
        if contact is None:
            return None
        consents = await self.store[CONSENTS].find({"contact_id": contact_id}).to_list()
        messages = (
            await self.store[MESSAGES]
            .find({"contact_id": contact_id})
            .sort("created_at", DESCENDING)
            .to_list()
        )
        return {"contact": contact, "consents": consents, "messages": messages}


def erasure_handlers(store: Store) -> dict[str, Handler]:
    data = MessagingPrivacyStore(store)
    outbox = Outbox(store)

    async def on_erasure_requested(envelope: Envelope, session: AsyncClientSession) -> None:
        event = erasure_request(envelope)
        await data.erase(event.contact_id, session)
        await outbox.forget_published(event.contact_id, session)
        await outbox.add(session, erasure_completed(envelope, SERVICE))

    return {"erasure-requested": on_erasure_requested}


router = dpo_router("/api/v1/messages")


@router.get("/privacy/{contact_id}")
async def person_data(
    request: Request,
    identity: CurrentIdentity,
    contact_id: IdPath,
) -> dict:
    """Everything messaging holds on the person: its view of the contact and of their
    consents, and the message log (the access export's part; DPO)."""
    found = await MessagingPrivacyStore(request.app.state.store).person(
        identity.scope(), contact_id
    )
    if found is None:
        raise NotFound("contact not found")
    contact = {k: v for k, v in found["contact"].items() if k != "_id"}
    return {
        "contact_id": contact_id,
        "contact": contact,
        "consents": [{k: v for k, v in d.items() if k != "_id"} for d in found["consents"]],
        "messages": [
            {"message_id": d["_id"], **{k: v for k, v in d.items() if k != "_id"}}
            for d in found["messages"]
        ],
    }
