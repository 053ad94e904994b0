"""Messaging's projections: which can be rebuilt from the topics, and how.

``tribune rebuild messaging <projection>`` (tribune_ops.rebuild) builds a fresh version of
one of these views of other services' facts, from the beginning of its topics, then
switches to it atomically (tribune_shared.projections). The handlers below write into the
collection being built; they apply the same rules as the worker's (messaging.handlers:
the same states, the same apply-if-newer versions), keeping only what concerns the view
(no message is sent, no event published, the message log is left alone).

Erased people stay erased: an erased person's contact events open as tombstones (the
vault destroyed their key), erasure-requested is replayed as a tombstone, and the other
views drop whatever the contact view says is erased.

Not rebuildable: the message log (``messages``: what messaging itself sent and what became
of it; the message-* events carry only part of it) and messaging's own objects
(templates, campaigns), which no topic holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.contact_directory import moved_contacts
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import ContactMergedV1, SuppressionAddedV1
from tribune_shared.privacy import erasure_request
from tribune_shared.projections import Projection, ProjectionRegistry
from tribune_shared.store import IndexSpec, Store
from tribune_shared.subscriptions import Batch, Step

from messaging.handlers import consent_state, contact_state, membership_state
from messaging.settings import MessagingSettings
from messaging.store import (
    CONSENTS,
    CONTACTS,
    INDEXES,
    MEMBERSHIPS,
    SUPPRESSED,
    MessagingStore,
)

CONTACT_EVENTS = ("contact-created", "contact-updated")
MEMBERSHIP_EVENTS = ("membership-activated", "membership-lapsed", "membership-cancelled")


def _merged(envelope: Envelope) -> ContactMergedV1:
    return decode_as(envelope, ContactMergedV1)


def contacts_into(store: Store, into: str) -> Mapping[str, Step | Sequence[Step]]:
    """contacts: each person's address, names, origin and federation; tombstones for the
    erased and the merged."""
    messages = MessagingStore(store)

    async def on_contacts(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await messages.project_contacts([contact_state(e) for e in envelopes], session, into=into)

    async def on_merged(envelope: Envelope, session: AsyncClientSession) -> None:
        event = _merged(envelope)
        survivor = await messages.survivor_of(event.surviving_contact_id, session, into=into)
        if await messages.is_erased(survivor, session, into=into):
            await messages.forget_contacts([event.merged_contact_id], session, into=into)
        else:
            await messages.mark_merged(
                event.merged_contact_id, event.surviving_contact_id, session, into=into
            )

    async def on_erasure(envelope: Envelope, session: AsyncClientSession) -> None:
        await messages.forget_contacts([erasure_request(envelope).contact_id], session, into=into)

    batch = Batch(on_contacts)
    return {
        "contact-created": batch,
        "contact-updated": batch,
        "contact-merged": on_merged,
        "erasure-requested": on_erasure,
    }


async def _living(
    messages: MessagingStore, contact_ids: list[str], session: AsyncClientSession
) -> set[str]:
    """Which of these contacts are neither erased nor merged away, by the contact view."""
    flags = await messages.projected_among(list(set(contact_ids)), session)
    return {
        c
        for c in contact_ids
        if not (flags.get(c, {}).get("erased") or flags.get(c, {}).get("merged_into"))
    }


def consents_into(store: Store, into: str) -> Mapping[str, Step | Sequence[Step]]:
    """consents: the latest consent fact per person x channel x purpose, in the federation
    the person is in now."""
    messages = MessagingStore(store)

    async def on_consents(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        states = [consent_state(e) for e in envelopes]
        # a rebuild reads topics in no order between them: an erased (or merged) person's
        # consent may come after their tombstone
        living = await _living(messages, [s.fields["contact_id"] for s in states], session)
        kept = [s for s in states if s.fields["contact_id"] in living]
        await messages.project_consents(kept, session, into=into)
        await messages.repath(list({s.fields["contact_id"] for s in kept}), (into,), session)

    async def on_moves(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await messages.repath(moved_contacts(envelopes), (into,), session)

    async def on_merged(envelope: Envelope, session: AsyncClientSession) -> None:
        # consent publishes what the survivor carries over
        await messages.delete_of(into, [_merged(envelope).merged_contact_id], session)

    async def on_erasure(envelope: Envelope, session: AsyncClientSession) -> None:
        await messages.delete_of(into, [erasure_request(envelope).contact_id], session)

    batch = Batch(on_consents)
    return {
        "consent-granted": batch,
        "consent-revoked": batch,
        "contact-updated": Batch(on_moves),
        "contact-merged": on_merged,
        "erasure-requested": on_erasure,
    }


def memberships_into(store: Store, into: str) -> Mapping[str, Step | Sequence[Step]]:
    """memberships: each membership's latest fact (standing), under the person it is of."""
    messages = MessagingStore(store)

    async def on_memberships(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        states = [membership_state(e) for e in envelopes]
        ids = list({s.fields["contact_id"] for s in states})
        flags = await messages.projected_among(ids, session)
        erased = {c for c, f in flags.items() if f.get("erased")}
        # a merged contact's memberships are the person's it became
        people = {
            c: await messages.survivor_of(c, session)
            for c, f in flags.items()
            if "merged_into" in f
        }
        kept = []
        for state in states:
            contact_id = state.fields["contact_id"]
            if contact_id in erased or people.get(contact_id) in erased:
                continue
            if contact_id in people:
                state = replace(state, fields={**state.fields, "contact_id": people[contact_id]})
            kept.append(state)
        await messages.project_memberships(kept, session, into=into)

    async def on_merged(envelope: Envelope, session: AsyncClientSession) -> None:
        event = _merged(envelope)
        person = await messages.survivor_of(event.surviving_contact_id, session)
        await messages.repoint(into, event.merged_contact_id, person, session)

    async def on_erasure(envelope: Envelope, session: AsyncClientSession) -> None:
        await messages.delete_of(into, [erasure_request(envelope).contact_id], session)

    batch = Batch(on_memberships)
    return {
        **dict.fromkeys(MEMBERSHIP_EVENTS, batch),
        "contact-merged": on_merged,
        "erasure-requested": on_erasure,
    }


def suppressed_into(store: Store, into: str) -> Mapping[str, Step | Sequence[Step]]:
    """suppressed: the salted hashes of addresses never to message."""
    messages = MessagingStore(store)

    async def on_suppression(envelope: Envelope, session: AsyncClientSession) -> None:
        event = decode_as(envelope, SuppressionAddedV1)
        await messages.project_suppression(
            event.address_hash, event.kind, event.suppressed_at, session, into=into
        )

    return {"suppression-added": on_suppression}


def _indexes(collection: str) -> tuple[IndexSpec, ...]:
    """The view's indexes, as the service declares them (messaging.store.INDEXES)."""
    return tuple(spec for spec in INDEXES if spec.collection == collection)


REGISTRY = ProjectionRegistry(
    service="messaging",
    settings=MessagingSettings,
    projections=(
        Projection(
            CONTACTS,
            "who can be reached: address, names, origin, federation; tombstones of the "
            "erased and the merged",
            topics=(*CONTACT_EVENTS, "contact-merged", "erasure-requested"),
            handlers=contacts_into,
            indexes=_indexes(CONTACTS),
        ),
        Projection(
            CONSENTS,
            "the latest consent fact per person x channel x purpose (reads the contacts "
            "view: rebuild contacts first if both are damaged)",
            topics=(
                "consent-granted",
                "consent-revoked",
                "contact-updated",
                "contact-merged",
                "erasure-requested",
            ),
            handlers=consents_into,
            indexes=_indexes(CONSENTS),
        ),
        Projection(
            MEMBERSHIPS,
            "each membership's latest fact, for campaigns targeting a standing (reads the "
            "contacts view)",
            topics=(*MEMBERSHIP_EVENTS, "contact-merged", "erasure-requested"),
            handlers=memberships_into,
            indexes=_indexes(MEMBERSHIPS),
        ),
        Projection(
            SUPPRESSED,
            "salted hashes of suppressed addresses",
            topics=("suppression-added",),
            handlers=suppressed_into,
            indexes=_indexes(SUPPRESSED),
        ),
        Projection(
            "messages",
            "the message log and each message's delivery state",
            why_not="messaging's own record of what it sent; the message-* events carry "
            "only part of it (restore it from a backup)",
        ),
        Projection(
            "campaigns",
            "campaigns, templates and their statistics",
            why_not="messaging's own objects, on no topic (restore them from a backup)",
        ),
    ),
)
