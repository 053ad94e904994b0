"""Event handlers of privacy and retention in the consent worker (small, idempotent).

Retention clocks move with what happens to a person, whatever order the events arrive in
($min / $max updates): contact-created starts them, a consent given stops the prospect's
clock, consents, payments, memberships and clicks count as activity, the first message
sent starts the prospect's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.bus import Handler
from tribune_shared.events import Envelope, decode
from tribune_shared.events.contracts import (
    ConsentGrantedV1,
    ConsentRevokedV1,
    ContactCreatedV1,
    MembershipActivatedV1,
    MessageClickedV1,
    MessageSentV1,
    PaymentReceivedV1,
)
from tribune_shared.logging import get_logger
from tribune_shared.worker import BackgroundTask

from consent.privacy_service import PrivacyService
from consent.privacy_store import PrivacyStore

log = get_logger(__name__)


def chain(*handlers: Handler) -> Handler:
    """One handler running several in the same transaction (one event type, many uses)."""

    async def handle(envelope: Envelope, session: AsyncClientSession) -> None:
        for handler in handlers:
            await handler(envelope, session)

    return handle


def merge_handlers(*maps: dict[str, Handler]) -> dict[str, Handler]:
    """Handler maps merged; event types handled by several maps get a chain."""
    merged: dict[str, list[Handler]] = {}
    for mapping in maps:
        for event_type, handler in mapping.items():
            merged.setdefault(event_type, []).append(handler)
    return {t: hs[0] if len(hs) == 1 else chain(*hs) for t, hs in merged.items()}


def retention_handlers(data: PrivacyStore) -> dict[str, Handler]:
    async def touch(
        envelope: Envelope,
        session: AsyncClientSession,
        contact_id: str,
        *,
        set_fields: dict | None = None,
        earliest: dict[str, datetime] | None = None,
        latest: dict[str, datetime] | None = None,
        inc: dict[str, int] | None = None,
    ) -> None:
        await data.touch_clock(
            contact_id,
            federation_id=envelope.federation_id,
            federation_path=envelope.federation_path,
            session=session,
            set_fields=set_fields,
            earliest=earliest,
            latest=latest,
            inc=inc,
        )

    async def on_contact_created(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, ContactCreatedV1)
        if event.erased:  # a replay about someone erased: no clock for them
            return
        origin = event.contact.origin.kind.value if event.contact.origin else None
        await touch(
            envelope,
            session,
            event.contact_id,
            set_fields={"origin_kind": origin},
            earliest={"created_at": envelope.occurred_at},
            latest={"last_activity_at": envelope.occurred_at},
        )

    async def on_consent(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        if isinstance(event, ConsentGrantedV1):
            await touch(
                envelope,
                session,
                event.contact_id,
                earliest={"consented_at": event.granted_at},
                latest={"last_activity_at": event.granted_at},
            )
        else:
            assert isinstance(event, ConsentRevokedV1)
            await touch(
                envelope, session, event.contact_id, latest={"last_activity_at": event.revoked_at}
            )

    async def on_message_sent(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, MessageSentV1)
        await touch(
            envelope,
            session,
            event.contact_id,
            earliest={"first_message_at": event.sent_at},
            inc={"messages_sent": 1},
        )

    async def on_activity(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode(envelope)
        assert isinstance(event, PaymentReceivedV1 | MembershipActivatedV1 | MessageClickedV1)
        at = {
            PaymentReceivedV1: lambda e: e.received_at,
            MessageClickedV1: lambda e: e.clicked_at,
        }.get(type(event), lambda e: envelope.occurred_at)(event)
        await touch(envelope, session, event.contact_id, latest={"last_activity_at": at})

    return {
        "contact-created": on_contact_created,
        "consent-granted": on_consent,
        "consent-revoked": on_consent,
        "message-sent": on_message_sent,
        "payment-received": on_activity,
        "membership-activated": on_activity,
        "message-clicked": on_activity,
    }


def privacy_handlers(privacy: PrivacyService) -> dict[str, Handler]:
    return {
        "erasure-requested": privacy.on_erasure_requested,
        "erasure-completed": privacy.on_erasure_completed,
    }


def all_privacy_handlers(privacy: PrivacyService) -> Iterable[dict[str, Handler]]:
    return (retention_handlers(privacy.data), privacy_handlers(privacy))


def retention_sweeper(privacy: PrivacyService, interval_seconds: float) -> BackgroundTask:
    """The consent worker's periodic retention sweep (a worker background task)."""

    async def retention_sweep(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await privacy.sweep()
            except Exception as exc:  # the store may be down: try again next time
                log.warning("retention.sweep_failed", error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
            except TimeoutError:
                pass

    return retention_sweep
