"""``campaign-launched``: record the campaign's audience job (the worker resolves it)."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope, decode_as, utcnow
from tribune_shared.events.contracts import CampaignLaunchedV1
from tribune_shared.store import Store
from tribune_shared.subscriptions import Handler

from contacts.audiences.store import AudienceStore


def audience_handlers(store: Store) -> dict[str, Handler]:
    audiences = AudienceStore(store)

    async def on_launched(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, CampaignLaunchedV1)
        await audiences.record(
            {
                "_id": event.campaign_id,
                "status": "pending",
                "channel": event.channel.value,
                "segment_id": event.segment_id,
                "needs_address": event.needs_address,
                "federation_id": envelope.federation_id,
                "federation_path": envelope.federation_path,
                "correlation_id": envelope.correlation_id,
                "cause_event_id": envelope.event_id,
                "cursor": None,
                "selected": 0,
                "created_at": utcnow(),
            },
            session,
        )

    return {"campaign-launched": on_launched}
