"""Event handlers of the messaging service: small and idempotent (a replayed or late
event changes nothing), so any number of worker processes may run them. The projections
of bulk events (contacts, consents) take a whole partition batch at a time."""

from __future__ import annotations

from datetime import datetime, time

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.contact_directory import moved_contacts, tombstone
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import (
    ConsentGrantedV1,
    ConsentRevokedV1,
    ContactCreatedV1,
    ContactMergedV1,
    ContactUpdatedV1,
    MembershipActivatedV1,
    MembershipCancelledV1,
    MembershipLapsedV1,
    SuppressionAddedV1,
)
from tribune_shared.store import Projected
from tribune_shared.subscriptions import Batch, Handler

from messaging.domain import ConsentStatus, MembershipState, consent_version, membership_version
from messaging.privacy import MessagingPrivacyStore
from messaging.service import MessagingService
from messaging.store import MessagingStore, consent_key


def contact_state(envelope: Envelope) -> Projected:
    """Messaging's view of one contact event (a tombstone for an erased person's event:
    a late or replayed event never brings them back)."""
    event = decode_as(envelope, ContactCreatedV1, ContactUpdatedV1)
    if event.erased:
        return tombstone(event.contact_id)
    return Projected(
        event.contact_id,
        event.contact_version,
        {
            "email": event.contact.email,
            "phone": event.contact.phone,
            "given_name": event.contact.given_name,
            "family_name": event.contact.family_name,
            # where the data came from: the line saying why the person receives a message,
            # and the rented-file rule
            "origin_kind": origin.kind.value if (origin := event.contact.origin) else None,
            "origin_detail": origin.detail if origin else "",
            # the recipient's clock and public holidays (SMS quiet hours)
            "department": address.department if (address := event.contact.address) else None,
            "federation_id": envelope.federation_id,
            "federation_path": envelope.federation_path,
        },
    )


def consent_state(envelope: Envelope) -> Projected:
    """One consent fact, versioned by when it happened (a revocation wins a tie)."""
    event = decode_as(envelope, ConsentGrantedV1, ConsentRevokedV1)
    if isinstance(event, ConsentGrantedV1):
        status, changed_at = ConsentStatus.granted, event.granted_at
    else:
        status, changed_at = ConsentStatus.revoked, event.revoked_at
    return Projected(
        consent_key(event.contact_id, event.channel, event.purpose),
        consent_version(status, changed_at),
        {
            "contact_id": event.contact_id,
            "channel": event.channel.value,
            "purpose": event.purpose,
            "status": status.value,
            "changed_at": changed_at,
            "source": event.source,
            "event_id": envelope.event_id,
            "federation_id": envelope.federation_id,
            "federation_path": envelope.federation_path,
        },
    )


def contact_handlers(messages: MessagingStore) -> dict[str, Handler | Batch]:
    privacy = MessagingPrivacyStore(messages.store)

    async def on_contacts(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await messages.project_contacts([contact_state(e) for e in envelopes], session)
        # a contact moved to another federation: its history follows
        await messages.follow_moves(moved_contacts(envelopes), session)

    async def on_merged(envelope: Envelope, session: AsyncClientSession) -> None:
        """The merged contact's messages join the survivor's; if the survivor was erased
        before this merge was seen, the merged contact (the same person) is erased too."""
        event = decode_as(envelope, ContactMergedV1)
        survivor = await messages.survivor_of(event.surviving_contact_id, session)
        if await messages.is_erased(survivor, session):
            await privacy.erase(event.merged_contact_id, session)
        else:
            await messages.merge_contact(
                event.merged_contact_id, event.surviving_contact_id, session
            )

    batch = Batch(on_contacts)
    return {"contact-created": batch, "contact-updated": batch, "contact-merged": on_merged}


def consent_handlers(messages: MessagingStore) -> dict[str, Batch]:
    async def on_consents(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        states = [consent_state(e) for e in envelopes]
        erased = await messages.erased_among(
            list({s.fields["contact_id"] for s in states}), session
        )
        # nothing is kept about an erased person
        await messages.project_consents(
            [s for s in states if s.fields["contact_id"] not in erased], session
        )

    batch = Batch(on_consents)
    return {"consent-granted": batch, "consent-revoked": batch}


def membership_state(envelope: Envelope) -> Projected:
    """One membership's latest fact (activated with its period, lapsed, cancelled): what
    campaigns filtering on standing read."""
    event = decode_as(envelope, MembershipActivatedV1, MembershipLapsedV1, MembershipCancelledV1)
    if isinstance(event, MembershipActivatedV1):
        state, on, ends_on = MembershipState.active, event.starts_on, event.ends_on
    elif isinstance(event, MembershipLapsedV1):
        state, on, ends_on = MembershipState.lapsed, event.lapsed_on, None
    else:
        state, on, ends_on = MembershipState.cancelled, event.cancelled_on, None
    return Projected(
        event.membership_id,
        membership_version(state, on),
        {
            "contact_id": event.contact_id,
            "state": state.value,
            # dates as datetimes: what the store keeps
            "ends_on": datetime.combine(ends_on, time()) if ends_on else None,
            "federation_id": envelope.federation_id,
            "federation_path": envelope.federation_path,
        },
    )


def membership_handlers(messages: MessagingStore) -> dict[str, Batch]:
    """membership-*: each person's standing, for campaigns that target one."""

    async def on_memberships(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        states = [membership_state(e) for e in envelopes]
        erased = await messages.erased_among(
            list({s.fields["contact_id"] for s in states}), session
        )
        # nothing is kept about an erased person (a late or replayed membership event)
        await messages.project_memberships(
            [s for s in states if s.fields["contact_id"] not in erased], session
        )

    batch = Batch(on_memberships)
    return {
        "membership-activated": batch,
        "membership-lapsed": batch,
        "membership-cancelled": batch,
    }


def suppression_handlers(messages: MessagingStore) -> dict[str, Handler]:
    """suppression-added: the hash joins messaging's own list; nothing is ever sent to an
    address on it (campaigns, single messages, confirmations)."""

    async def on_suppression(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, SuppressionAddedV1)
        await messages.project_suppression(
            event.address_hash, event.kind, event.suppressed_at, session
        )

    return {"suppression-added": on_suppression}


def confirmation_handlers(service: MessagingService) -> dict[str, Batch]:
    """consent-confirmation-requested: the double opt-in emails (transactional), a
    partition batch at once."""
    return {"consent-confirmation-requested": Batch(service.send_confirmations)}
