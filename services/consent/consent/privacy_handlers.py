"""Event handlers of privacy and retention in the consent worker (small, idempotent).

Retention clocks move with what happens to a person, whatever order the events arrive in
($min / $max updates): contact-created starts them, a consent given stops the prospect's
clock, consents, payments, memberships and clicks count as activity, the first message
sent starts the prospect's clock.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
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
from tribune_shared.subscriptions import Batch, Handler
from tribune_shared.worker import BackgroundTask, periodic

from consent.privacy_service import PrivacyService
from consent.privacy_store import ClockTouch, PrivacyStore

log = get_logger(__name__)


def _touch(envelope: Envelope, contact_id: str, **moves: Any) -> ClockTouch:
    return ClockTouch(
        contact_id,
        federation_id=envelope.federation_id,
        federation_path=envelope.federation_path,
        **moves,
    )


def clock_touch(envelope: Envelope) -> ClockTouch | None:
    """What an event does to its person's retention clocks (None: nothing)."""
    event = decode(envelope)
    at = envelope.occurred_at
    match event:
        case ContactCreatedV1():
            if event.erased:  # a replay about someone erased: no clock for them
                return None
            origin = event.contact.origin.kind.value if event.contact.origin else None
            return _touch(
                envelope,
                event.contact_id,
                set_fields={"origin_kind": origin},
                earliest={"created_at": at},
                latest={"last_activity_at": at},
            )
        case ConsentGrantedV1():
            return _touch(
                envelope,
                event.contact_id,
                earliest={"consented_at": event.granted_at},
                latest={"last_activity_at": event.granted_at},
            )
        case ConsentRevokedV1():
            return _touch(envelope, event.contact_id, latest={"last_activity_at": event.revoked_at})
        case MessageSentV1():
            return _touch(
                envelope,
                event.contact_id,
                earliest={"first_message_at": event.sent_at},
                inc={"messages_sent": 1},
            )
        case PaymentReceivedV1():
            return _touch(
                envelope, event.contact_id, latest={"last_activity_at": event.received_at}
            )
        case MessageClickedV1():
            return _touch(envelope, event.contact_id, latest={"last_activity_at": event.clicked_at})
        case MembershipActivatedV1():
            return _touch(envelope, event.contact_id, latest={"last_activity_at": at})
    raise TypeError(f"{envelope.type} does not move retention clocks")


RETENTION_EVENTS = (
    "contact-created",
    "consent-granted",
    "consent-revoked",
    "message-sent",
    "payment-received",
    "membership-activated",
    "message-clicked",
)


def retention_handlers(data: PrivacyStore) -> dict[str, Batch]:
    async def touch_all(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        touches = [t for t in map(clock_touch, envelopes) if t is not None]
        await data.touch_clocks(touches, session)

    batch = Batch(touch_all)
    return dict.fromkeys(RETENTION_EVENTS, batch)


def privacy_handlers(privacy: PrivacyService) -> dict[str, Handler]:
    return {
        "erasure-requested": privacy.on_erasure_requested,
        "erasure-completed": privacy.on_erasure_completed,
    }


def retention_sweeper(privacy: PrivacyService, interval_seconds: float) -> BackgroundTask:
    """The consent worker's periodic retention sweep (a worker background task)."""
    return periodic("retention.sweep", interval_seconds, privacy.sweep)
