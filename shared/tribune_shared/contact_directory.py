"""Each service's own projection of which federation every contact belongs to (from
contact-created / contact-updated), so it can scope its data without asking contacts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ASCENDING, UpdateMany
from pymongo.asynchronous.client_session import AsyncClientSession

from tribune_shared.auth import Identity
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import ContactCreatedV1, ContactUpdatedV1
from tribune_shared.store import IndexSpec, Projected, Store, upsert_many_if_newer
from tribune_shared.subscriptions import Batch

CONTACT_DIRECTORY = "contacts"
#: the version of an erased contact's tombstone: no contact event is ever newer
ERASED_VERSION = 2**62


def tombstone(contact_id: str) -> Projected:
    """An erased contact: its id only, at a version no contact event ever reaches."""
    return Projected(contact_id, ERASED_VERSION, {"erased": True}, replace=True)


def placement(envelope: Envelope) -> Projected:
    """Where a contact event puts its contact (a tombstone for an erased person's event:
    a replay never brings them back)."""
    event = decode_as(envelope, ContactCreatedV1, ContactUpdatedV1)
    if event.erased:
        return tombstone(event.contact_id)
    return Projected(
        event.contact_id,
        event.contact_version,
        {"federation_id": envelope.federation_id, "federation_path": envelope.federation_path},
    )


def moved_contacts(envelopes: Iterable[Envelope]) -> list[str]:
    """Contacts a batch of contact events may have moved to another federation (their
    history documents must follow: ``follow_moves``)."""
    moved: list[str] = []
    for envelope in envelopes:
        if envelope.type != "contact-updated":
            continue
        event = decode_as(envelope, ContactUpdatedV1)
        # an event without changed_fields may be a move too
        if not event.erased and (
            not event.changed_fields or "federation_id" in event.changed_fields
        ):
            moved.append(event.contact_id)
    return list(dict.fromkeys(moved))


def follow_moves(placements: Mapping[str, Mapping[str, Any]]) -> list[UpdateMany]:
    """The updates that give every history document (``contact_id`` field) of these
    contacts the federation their placement says now ({contact id: {federation_id,
    federation_path}}): one per federation, touching only documents still elsewhere, so a
    replay or an older event changes nothing."""
    by_place: dict[tuple[str, str], list[str]] = {}
    for contact_id, doc in placements.items():
        path = doc.get("federation_path")
        if path and not doc.get("erased"):
            by_place.setdefault((doc.get("federation_id") or "", path), []).append(contact_id)
    return [
        UpdateMany(
            {"contact_id": {"$in": ids}, "federation_path": {"$ne": path}},
            {"$set": {"federation_id": federation_id, "federation_path": path}},
        )
        for (federation_id, path), ids in by_place.items()
    ]


class ContactDirectory:
    indexes = (
        IndexSpec(CONTACT_DIRECTORY, [("federation_path", ASCENDING)]),
        IndexSpec(CONTACT_DIRECTORY, [("merged_into", ASCENDING)], {"sparse": True}),
    )

    def __init__(self, store: Store, collection: str = CONTACT_DIRECTORY) -> None:
        self.store = store
        self.name = collection

    @property
    def collection(self):
        # resolved at each use, not once: a rebuild's flip (tribune_shared.projections)
        # moves the directory to another collection while the process runs
        return self.store[self.name]

    async def on_contact_events(
        self, envelopes: list[Envelope], session: AsyncClientSession
    ) -> None:
        """Only newer contact versions apply (contact-updated may overtake contact-created);
        a batch costs one read and one bulk write."""
        await upsert_many_if_newer(
            self.collection, [placement(e) for e in envelopes], session=session
        )

    async def on_contact_event(self, envelope: Envelope, session: AsyncClientSession) -> None:
        await self.on_contact_events([envelope], session)

    async def forget(self, contact_id: str, session: AsyncClientSession | None = None) -> None:
        """Erasure: the contact becomes a tombstone (its id only), invisible to reads, that
        no late or replayed contact event can bring back."""
        await self.collection.replace_one(
            {"_id": contact_id},
            {"erased": True, "version": ERASED_VERSION},
            upsert=True,
            session=session,
        )  # unconditional, unlike tombstone(): erasure wins over any stored version

    async def forget_merged(
        self, merged_id: str, survivor_id: str, session: AsyncClientSession | None = None
    ) -> None:
        """contact-merged: the merged contact is a tombstone like an erased one (invisible,
        never brought back) that remembers whom it became (``survivors``)."""
        await self.collection.replace_one(
            {"_id": merged_id},
            {"erased": True, "merged_into": survivor_id, "version": ERASED_VERSION},
            upsert=True,
            session=session,
        )

    async def survivors(
        self, contact_ids: Iterable[str], session: AsyncClientSession | None = None
    ) -> dict[str, str]:
        """Who each id is now: itself, or the contact it was merged into, along chains of
        merges (A into B, then B into C: A is C). One read per link of the longest chain."""
        now = {c: c for c in contact_ids}
        seen = {c: {c} for c in now}
        moving = list(now)
        while moving:
            docs = self.collection.find(
                {"_id": {"$in": list({now[c] for c in moving})}, "merged_into": {"$ne": None}},
                {"merged_into": 1},
                session=session,
            )
            into = {d["_id"]: d["merged_into"] async for d in docs}
            still = []
            for c in moving:
                target = into.get(now[c])
                if target is not None and target not in seen[c]:  # a cycle cannot loop
                    now[c] = target
                    seen[c].add(target)
                    still.append(c)
            moving = still
        return now

    async def merged_ids(
        self, contact_id: str, session: AsyncClientSession | None = None
    ) -> list[str]:
        """Every id merged into the person, directly or along chains (never the id itself);
        erasure (``forget``) drops these links with the rest."""
        seen = {contact_id}
        found: list[str] = []
        frontier = [contact_id]
        while frontier:
            docs = self.collection.find(
                {"merged_into": {"$in": frontier}}, {"_id": 1}, session=session
            )
            frontier = [d["_id"] async for d in docs if d["_id"] not in seen]
            seen.update(frontier)
            found += frontier
        return found

    async def is_erased(self, contact_id: str, session: AsyncClientSession | None = None) -> bool:
        doc = await self.collection.find_one({"_id": contact_id}, {"erased": 1}, session=session)
        return bool(doc and doc.get("erased"))

    def handlers(self) -> dict[str, Batch]:
        batch = Batch(self.on_contact_events)
        return {"contact-created": batch, "contact-updated": batch}

    async def visible(self, identity: Identity, contact_id: str) -> dict[str, Any] | None:
        """The contact if it is in the caller's subtree (else None: answer 404)."""
        return await self.collection.find_one({"_id": contact_id, **identity.scope()})

    async def placements(
        self, contact_ids: list[str], session: AsyncClientSession | None = None
    ) -> dict[str, dict[str, Any]]:
        """Where each of these contacts is now (``follow_moves`` takes it)."""
        docs = self.collection.find(
            {"_id": {"$in": contact_ids}},
            {"federation_id": 1, "federation_path": 1, "erased": 1},
            session=session,
        )
        return {d["_id"]: d async for d in docs}

    async def get(
        self, contact_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        """Any contact, for callers that are not users (provider webhooks); not an erased one."""
        return await self.collection.find_one(
            {"_id": contact_id, "erased": {"$ne": True}}, session=session
        )
