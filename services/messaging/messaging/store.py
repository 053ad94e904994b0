"""All database access of the messaging service (its own database only)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.contact_directory import ERASED_VERSION, follow_moves
from tribune_shared.events.contracts import Channel
from tribune_shared.store import (
    IndexSpec,
    Projected,
    Store,
    subtree_filter,
    upsert_many_if_newer,
)

from messaging.domain import (
    ConsentState,
    ConsentStatus,
    MembershipState,
    MessageStatus,
    Recipient,
    Standing,
    standing_of,
)

CONTACTS = "contacts"  # projection of contact-*: address, names, federation
CONSENTS = "consents"  # projection of consent-*: latest fact per contact x channel x purpose
MESSAGES = "messages"  # the message log and each message's delivery state
SUPPRESSED = "suppressed"  # projection of suppression-added: salted address hashes only
MEMBERSHIPS = "memberships"  # projection of membership-*: each membership's latest fact
#: a person's history, placed in the federation the person is in (moves follow them)
HISTORY = (MESSAGES, CONSENTS)

INDEXES = [
    IndexSpec(CONTACTS, [("federation_path", ASCENDING)]),
    IndexSpec(CONSENTS, [("contact_id", ASCENDING)]),
    IndexSpec(MEMBERSHIPS, [("contact_id", ASCENDING)]),
    IndexSpec(MESSAGES, [("contact_id", ASCENDING), ("created_at", DESCENDING)]),
    IndexSpec(MESSAGES, [("federation_path", ASCENDING), ("created_at", DESCENDING)]),
]


def consent_key(contact_id: str, channel: Channel | str, purpose: str) -> str:
    return f"{contact_id}:{Channel(channel).value}:{purpose}"


class MessagingStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ projections

    # ``into``: the collection written, the projection's active one unless a rebuild
    # (messaging.projections) builds a fresh version of it

    async def project_contacts(
        self, states: list[Projected], session: AsyncClientSession, *, into: str = CONTACTS
    ) -> None:
        """Contact states (address, names, federation), newest version wins; a batch is
        one read and one bulk write."""
        await upsert_many_if_newer(self.store[into], states, session=session)

    async def project_consents(
        self, states: list[Projected], session: AsyncClientSession, *, into: str = CONSENTS
    ) -> None:
        """Consent facts, the latest in time wins per contact x channel x purpose
        (``consent_version``), whatever order they arrive in."""
        await upsert_many_if_newer(self.store[into], states, session=session)

    async def project_memberships(
        self, states: list[Projected], session: AsyncClientSession, *, into: str = MEMBERSHIPS
    ) -> None:
        """Memberships' facts, the latest (by the day it happened) wins per membership."""
        await upsert_many_if_newer(self.store[into], states, session=session)

    async def forget_contacts(
        self, contact_ids: list[str], session: AsyncClientSession, *, into: str = CONTACTS
    ) -> None:
        """Erasure tombstones (their ids only), whatever was stored: no contact event is
        ever newer, so no late or replayed one brings the people back."""
        if contact_ids:
            await self.store[into].bulk_write(
                [
                    ReplaceOne({"_id": c}, {"erased": True, "version": ERASED_VERSION}, upsert=True)
                    for c in contact_ids
                ],
                ordered=False,
                session=session,
            )

    async def mark_merged(
        self,
        merged_id: str,
        survivor_id: str,
        session: AsyncClientSession,
        *,
        into: str = CONTACTS,
    ) -> None:
        """The merged contact is never reachable again: a tombstone that no late contact
        event overwrites, naming whom it became."""
        await self.store[into].replace_one(
            {"_id": merged_id},
            {"merged_into": survivor_id, "version": ERASED_VERSION},
            upsert=True,
            session=session,
        )

    async def delete_of(
        self, collection: str, contact_ids: list[str], session: AsyncClientSession
    ) -> None:
        """What ``collection`` holds about these contacts goes (erasure, a merged
        contact's consents)."""
        if contact_ids:
            await self.store[collection].delete_many(
                {"contact_id": {"$in": contact_ids}}, session=session
            )

    async def repoint(
        self, collection: str, merged_id: str, person: str, session: AsyncClientSession
    ) -> None:
        """A merged contact's documents of ``collection`` become the person's."""
        await self.store[collection].update_many(
            {"contact_id": merged_id}, {"$set": {"contact_id": person}}, session=session
        )

    async def repath(
        self, contact_ids: list[str], collections: tuple[str, ...], session: AsyncClientSession
    ) -> None:
        """The documents of these contacts in ``collections`` take the federation the
        contact projection has now (``follow_moves``)."""
        if not contact_ids:
            return
        docs = self.store[CONTACTS].find(
            {"_id": {"$in": contact_ids}},
            {"federation_id": 1, "federation_path": 1, "erased": 1},
            session=session,
        )
        updates = follow_moves({d["_id"]: d async for d in docs})
        if updates:
            for collection in collections:
                await self.store[collection].bulk_write(updates, ordered=False, session=session)

    async def standings(self, contact_ids: list[str], today: date) -> dict[str, Standing]:
        """The standing of each of these contacts who ever was a member."""
        found: dict[str, list[tuple[MembershipState, date | None]]] = {}
        docs = self.store[MEMBERSHIPS].find(
            {"contact_id": {"$in": contact_ids}}, {"contact_id": 1, "state": 1, "ends_on": 1}
        )
        async for d in docs:
            ends = d.get("ends_on")
            found.setdefault(d["contact_id"], []).append(
                (MembershipState(d["state"]), ends.date() if ends else None)
            )
        out = {}
        for contact_id, memberships in found.items():
            if (standing := standing_of(memberships, today)) is not None:
                out[contact_id] = standing
        return out

    async def projected_among(
        self, contact_ids: list[str], session: AsyncClientSession | None = None
    ) -> dict[str, dict[str, Any]]:
        """Which of these contacts messaging has heard of (tombstones included), with the
        flags saying whether they were erased or merged away."""
        docs = self.store[CONTACTS].find(
            {"_id": {"$in": contact_ids}}, {"erased": 1, "merged_into": 1}, session=session
        )
        return {d["_id"]: d async for d in docs}

    async def erased_among(
        self, contact_ids: list[str], session: AsyncClientSession | None = None
    ) -> set[str]:
        """Which of these contacts are erasure tombstones (messaging.privacy)."""
        docs = self.store[CONTACTS].find(
            {"_id": {"$in": contact_ids}, "erased": True}, {"_id": 1}, session=session
        )
        return {d["_id"] async for d in docs}

    async def project_suppression(
        self,
        address_hash: str,
        kind: str,
        suppressed_at: datetime,
        session: AsyncClientSession,
        *,
        into: str = SUPPRESSED,
    ) -> None:
        """Idempotent: the first time an address was suppressed is kept."""
        await self.store[into].update_one(
            {"_id": address_hash},
            {"$setOnInsert": {"kind": kind, "suppressed_at": suppressed_at}},
            upsert=True,
            session=session,
        )

    # ------------------------------------------------------------ reads

    async def is_suppressed(
        self, address_hash: str | None, session: AsyncClientSession | None = None
    ) -> bool:
        if not address_hash:
            return False
        return (
            await self.store[SUPPRESSED].find_one({"_id": address_hash}, session=session)
            is not None
        )

    async def merge_contact(
        self, merged_id: str, survivor_id: str, session: AsyncClientSession
    ) -> None:
        """contact-merged: the merged contact is never reachable again (a tombstone that no
        late contact event overwrites, naming whom it became); its consents view goes
        (consent publishes what the survivor carries over); its messages become the
        survivor's (or of whom the survivor was merged into since), in their federation."""
        await self.mark_merged(merged_id, survivor_id, session)
        await self.store[CONSENTS].delete_many({"contact_id": merged_id}, session=session)
        person = await self.survivor_of(survivor_id, session)
        await self._drop_double_campaign_messages(merged_id, person, session)
        await self.store[MESSAGES].update_many(
            {"contact_id": merged_id},
            {"$set": {"contact_id": person, "merged_from": merged_id}},
            session=session,
        )
        # the duplicate's memberships are the person's (their standing carries over)
        await self.repoint(MEMBERSHIPS, merged_id, person, session)
        await self.follow_moves([person], session)

    async def _drop_double_campaign_messages(
        self, merged_id: str, person: str, session: AsyncClientSession
    ) -> None:
        """A campaign reaches a person once: the duplicate's messages not sent yet, of a
        campaign that already has one for the survivor, are cancelled before the
        duplicate's messages become the survivor's."""
        pending = [MessageStatus.queued.value, MessageStatus.held.value]
        theirs = await self.store[MESSAGES].distinct(
            "campaign_id",
            {"contact_id": person, "campaign_id": {"$ne": None}},
            session=session,
        )
        if not theirs:
            return
        doubles = {
            "contact_id": merged_id,
            "campaign_id": {"$in": theirs},
            "status": {"$in": pending},
        }
        counts: dict[str, dict[str, int]] = {}
        async for d in self.store[MESSAGES].find(
            doubles, {"campaign_id": 1, "status": 1}, session=session
        ):
            tally = counts.setdefault(d["campaign_id"], {"cancelled": 0})
            tally[d["status"]] = tally.get(d["status"], 0) - 1
            tally["cancelled"] += 1
        if counts:
            await self.store[MESSAGES].update_many(
                doubles,
                {"$set": {"status": MessageStatus.cancelled.value, "cancel_reason": "merged"}},
                session=session,
            )
            # (imported here: the campaigns' store builds on this module)
            from messaging.campaigns.store import CampaignStore

            await CampaignStore(self.store).count_stats(counts, session)

    async def survivor_of(
        self, contact_id: str, session: AsyncClientSession | None = None, *, into: str = CONTACTS
    ) -> str:
        """Who the contact is now: itself, or whom it was merged into, along chains."""
        seen = {contact_id}
        while True:
            doc = await self.store[into].find_one(
                {"_id": contact_id}, {"merged_into": 1}, session=session
            )
            target = (doc or {}).get("merged_into")
            if target is None or target in seen:
                return contact_id
            seen.add(target)
            contact_id = target

    async def follow_moves(self, contact_ids: list[str], session: AsyncClientSession) -> None:
        """The contacts' messages and consent facts take the federation their projection
        has now (a contact moved): the new federation's lists and DPO export find them. A
        batch costs one read and one bulk write per collection."""
        await self.repath(contact_ids, HISTORY, session)

    async def is_erased(
        self, contact_id: str, session: AsyncClientSession | None = None, *, into: str = CONTACTS
    ) -> bool:
        """The contact projection is an erasure tombstone (messaging.privacy)."""
        doc = await self.store[into].find_one({"_id": contact_id}, {"erased": 1}, session=session)
        return bool(doc and doc.get("erased"))

    async def recipients(
        self, contact_ids: list[str], session: AsyncClientSession | None = None
    ) -> dict[str, Recipient]:
        """The projected contacts among these ids (erased and merged ones are not)."""
        found = {}
        async for doc in self.store[CONTACTS].find({"_id": {"$in": contact_ids}}, session=session):
            if (recipient := _recipient(doc)) is not None:
                found[recipient.contact_id] = recipient
        return found

    async def consents_of(
        self, contact_ids: list[str], channel: Channel, purpose: str
    ) -> dict[str, ConsentState]:
        """The latest consent fact for ``channel`` x ``purpose`` of each of these contacts."""
        keys = [consent_key(c, channel, purpose) for c in contact_ids]
        out = {}
        async for doc in self.store[CONSENTS].find({"_id": {"$in": keys}}):
            out[doc["contact_id"]] = ConsentState(
                status=ConsentStatus(doc["status"]), changed_at=doc["changed_at"]
            )
        return out

    async def consents_among(
        self, contact_ids: list[str], pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str, str], ConsentState]:
        """The latest consent fact of each of these contacts for each (channel, purpose)
        pair, in one read (a campaign hand-off needs its purpose's and tracking's):
        {(contact_id, channel, purpose): state}."""
        wanted = {
            consent_key(c, channel, purpose): (c, Channel(channel).value, purpose)
            for channel, purpose in set(pairs)
            for c in contact_ids
        }
        out = {}
        docs = self.store[CONSENTS].find(
            {"_id": {"$in": list(wanted)}}, {"status": 1, "changed_at": 1}
        )
        async for doc in docs:
            out[wanted[doc["_id"]]] = ConsentState(
                status=ConsentStatus(doc["status"]), changed_at=doc["changed_at"]
            )
        return out

    async def suppressed_among(
        self, address_hashes: list[str], session: AsyncClientSession | None = None
    ) -> set[str]:
        docs = self.store[SUPPRESSED].find(
            {"_id": {"$in": address_hashes}}, {"_id": 1}, session=session
        )
        return {d["_id"] async for d in docs}

    async def recipient(
        self, contact_id: str, session: AsyncClientSession | None = None
    ) -> Recipient | None:
        """Any contact (for event handlers, which act for no user)."""
        doc = await self.store[CONTACTS].find_one({"_id": contact_id}, session=session)
        return _recipient(doc) if doc is not None else None

    async def find_recipient(self, identity: Identity, contact_id: str) -> Recipient | None:
        doc = await self.store[CONTACTS].find_one({"_id": contact_id, **identity.scope()})
        if doc is None:
            return None
        return _recipient(doc)

    async def consent(self, contact_id: str, channel: Channel, purpose: str) -> ConsentState | None:
        key = consent_key(contact_id, channel, purpose)
        doc = await self.store[CONSENTS].find_one({"_id": key})
        if doc is None:
            return None
        return ConsentState(status=ConsentStatus(doc["status"]), changed_at=doc["changed_at"])

    async def messages_of(
        self, identity: Identity, contact_id: str, limit: int
    ) -> list[dict[str, Any]]:
        return (
            await self.store[MESSAGES]
            .find({"contact_id": contact_id, **identity.scope()})
            .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
            .to_list()
        )

    async def totals(self, federation_path: str, since: datetime) -> dict[str, dict[str, int]]:
        """Per channel: messages created since ``since`` in a subtree by status, and how many
        were delivered, bounced and complained about (aggregate figures: no per-person
        tracking consent needed). Four aggregations on the (federation_path, created_at)
        index, whatever the number of messages."""
        scope = {**subtree_filter(federation_path), "created_at": {"$gte": since}}
        out: dict[str, dict[str, int]] = {}
        rows = self.store[MESSAGES].aggregate(
            [
                {"$match": scope},
                {"$group": {"_id": {"channel": "$channel", "status": "$status"}, "n": {"$sum": 1}}},
            ]
        )
        async for row in await rows:
            out.setdefault(row["_id"]["channel"], {})[row["_id"]["status"]] = int(row["n"])
        for outcome, field in (
            ("delivered", "delivered_at"),
            ("bounced", "bounced_at"),
            ("complained", "complained_at"),
        ):
            counted = self.store[MESSAGES].aggregate(
                [
                    {"$match": {**scope, field: {"$ne": None}}},
                    {"$group": {"_id": "$channel", "n": {"$sum": 1}}},
                ]
            )
            async for row in await counted:
                out.setdefault(row["_id"], {})[outcome] = int(row["n"])
        return out

    # ------------------------------------------------------------ message log

    async def record_sending(self, message: dict[str, Any]) -> None:
        """The attempt is on record before the provider sees it: a crash mid-send leaves
        a message in "sending", never a mail nobody knows about."""
        await self.store[MESSAGES].insert_one({**message, "status": MessageStatus.sending.value})

    async def message(
        self, message_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.store[MESSAGES].find_one({"_id": message_id}, session=session)

    async def record_message(
        self, message: dict[str, Any], session: AsyncClientSession | None
    ) -> None:
        """Log a message whose id derives from its cause (an event): written whole, so a
        redelivered event overwrites a failed attempt rather than adding one."""
        await self.store[MESSAGES].replace_one(
            {"_id": message["_id"]}, message, upsert=True, session=session
        )

    async def sent_among(
        self, message_ids: list[str], session: AsyncClientSession | None = None
    ) -> set[str]:
        """Which of these messages are logged as sent (a redelivered event's, say)."""
        docs = self.store[MESSAGES].find(
            {"_id": {"$in": message_ids}, "status": MessageStatus.sent.value},
            {"_id": 1},
            session=session,
        )
        return {d["_id"] async for d in docs}

    async def record_messages(
        self, messages: list[dict[str, Any]], session: AsyncClientSession | None
    ) -> None:
        """``record_message`` of many messages in one statement."""
        if messages:
            await self.store[MESSAGES].bulk_write(
                [ReplaceOne({"_id": m["_id"]}, m, upsert=True) for m in messages],
                ordered=False,
                session=session,
            )

    async def record_outcome(
        self,
        message_id: str,
        status: MessageStatus,
        at: datetime,
        reason: str | None,
        session: AsyncClientSession,
    ) -> dict[str, Any]:
        """Set the outcome of a "sending" message; returns the fields that changed."""
        fields: dict[str, Any] = {"status": status.value}
        if status is MessageStatus.sent:
            fields["sent_at"] = at
        else:
            fields["failed_at"] = at
            fields["failure_reason"] = reason
        await self.store[MESSAGES].update_one(
            {"_id": message_id, "status": MessageStatus.sending.value},
            {"$set": fields},
            session=session,
        )
        return fields


def _recipient(doc: dict[str, Any]) -> Recipient | None:
    if doc.get("federation_path") is None:  # a tombstone (erased person)
        return None
    return Recipient(
        contact_id=doc["_id"],
        federation_id=doc["federation_id"],
        federation_path=doc["federation_path"],
        email=doc.get("email"),
        given_name=doc.get("given_name") or "",
        family_name=doc.get("family_name") or "",
        phone=doc.get("phone"),
        origin_kind=doc.get("origin_kind"),
        origin_detail=doc.get("origin_detail") or "",
        department=doc.get("department"),
    )
