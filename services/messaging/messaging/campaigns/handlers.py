"""Events of the campaign flow, in messaging's worker: recipients become intents; the
resolved audience tells when a campaign can complete."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope, decode_as, utcnow
from tribune_shared.events.contracts import (
    CampaignAudienceResolvedV1,
    CampaignRecipientSelectedV1,
)
from tribune_shared.logging import get_logger
from tribune_shared.store import Store
from tribune_shared.subscriptions import Awaiting, Batch, Handler

from messaging.campaigns.domain import CampaignStatus, ab_variant, message_id
from messaging.campaigns.store import CampaignStore
from messaging.domain import MessageStatus
from messaging.store import MessagingStore

log = get_logger(__name__)


def _placement(campaign: dict[str, Any], contact_id: str) -> tuple[MessageStatus, str | None]:
    """Where a recipient's intent starts: queued, or (an A/B test not decided yet) queued
    in its test group or held for the winner."""
    ab = campaign.get("ab_test")
    if not ab:
        return MessageStatus.queued, None
    if ab.get("winner"):
        return MessageStatus.queued, ab["winner"]
    variant = ab_variant(campaign["_id"], contact_id, ab["share"])
    return (MessageStatus.queued if variant else MessageStatus.held), variant


def campaign_handlers(store: Store) -> dict[str, Handler | Batch]:
    campaigns = CampaignStore(store)
    messages = MessagingStore(store)

    async def on_recipients(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        """One intent per (campaign, contact), queued for the dispatchers. An erased
        person gets none (nothing is kept about them); a cancelled campaign's recipients
        are recorded as cancelled, so its counts add up."""
        events = [(e, decode_as(e, CampaignRecipientSelectedV1)) for e in envelopes]
        known = await messages.projected_among(list({ev.contact_id for _, ev in events}), session)
        missing = sorted({ev.contact_id for _, ev in events} - set(known))
        if missing:
            # contact-created comes on another topic: wait for it rather than refuse
            raise Awaiting(f"contacts not projected yet: {', '.join(missing[:5])}")
        # nothing is kept about an erased person; a merged contact's survivor is in the
        # audience on its own
        gone = {cid for cid, d in known.items() if d.get("erased") or d.get("merged_into")}
        wanted = {ev.campaign_id for _, ev in events}
        known = await campaigns.by_ids(list(wanted), session, with_stats=False)
        now = utcnow()
        intents: list[dict[str, Any]] = []
        # "selected": recipient events seen (a campaign completes once it has seen as many
        # as contacts resolved, whatever topic order they came in); "audience": intents
        counts: dict[str, Counter[str]] = {}
        for envelope, event in events:
            campaign = known.get(event.campaign_id)
            if campaign is None:
                continue
            counts.setdefault(event.campaign_id, Counter())["selected"] += 1
            if event.contact_id in gone:
                continue
            cancelled = campaign["status"] == CampaignStatus.cancelled.value
            status, variant = _placement(campaign, event.contact_id)
            intents.append(
                {
                    "_id": message_id(event.campaign_id, event.contact_id),
                    "campaign_id": event.campaign_id,
                    "contact_id": event.contact_id,
                    "channel": campaign["channel"],
                    "purpose": campaign["purpose"],
                    "federation_id": envelope.federation_id,
                    "federation_path": envelope.federation_path,
                    "position": event.position,
                    "status": (MessageStatus.cancelled if cancelled else status).value,
                    "variant": variant,
                    "not_before": None,
                    "claim": None,
                    "created_at": now,
                    "transactional": False,
                }
            )
        recorded = await campaigns.queue(intents, session)
        for intent in recorded:
            tally = counts.setdefault(intent["campaign_id"], Counter())
            tally["audience"] += 1
            tally[intent["status"]] += 1
        await campaigns.count_stats(counts, session)

    async def on_resolved(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, CampaignAudienceResolvedV1)
        campaign = await campaigns.audience_resolved(
            event.campaign_id, event.recipients, event.error, session
        )
        if campaign is None:
            return
        if event.error:
            await campaigns.update(
                event.campaign_id,
                expected=(CampaignStatus.sending, CampaignStatus.paused),
                fields={"status": CampaignStatus.failed.value, "status_reason": event.error},
                session=session,
            )
            log.warning(
                "campaign.audience_failed", campaign_id=event.campaign_id, error=event.error
            )

    return {
        "campaign-recipient-selected": Batch(on_recipients),
        "campaign-audience-resolved": on_resolved,
    }
