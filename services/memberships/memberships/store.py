"""All database access of the memberships service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.contact_directory import CONTACT_DIRECTORY, ContactDirectory, follow_moves
from tribune_shared.store import IndexSpec, Store

from memberships.domain import Membership, MembershipStatus

CONTACTS = CONTACT_DIRECTORY  # the kernel ContactDirectory, plus current_membership_id
PAYMENTS = "payments"  # one document per provider payment, never twice
MEMBERSHIPS = "memberships"
#: recurring dues and donations (memberships.payments.schedules)
SCHEDULES = "payment_schedules"
#: tax receipts (memberships.receipts); a merged or moved donor's receipts follow them
RECEIPTS = "receipts"
#: a person's history, placed in the federation the person is in (moves follow them)
HISTORY = (PAYMENTS, MEMBERSHIPS, SCHEDULES, RECEIPTS)

INDEXES = [
    *ContactDirectory.indexes,
    # A provider's payment is recorded once, whatever its retries.
    IndexSpec(
        PAYMENTS,
        [("provider", ASCENDING), ("provider_payment_id", ASCENDING)],
        {"unique": True, "name": "provider_payment_unique"},
    ),
    IndexSpec(PAYMENTS, [("contact_id", ASCENDING), ("paid_at", DESCENDING)]),
    IndexSpec(PAYMENTS, [("federation_path", ASCENDING)]),
    IndexSpec(MEMBERSHIPS, [("contact_id", ASCENDING), ("starts_on", DESCENDING)]),
    IndexSpec(MEMBERSHIPS, [("federation_path", ASCENDING)]),
    # For the standing sweep (grace -> lapsed) and roll-ups.
    IndexSpec(MEMBERSHIPS, [("status", ASCENDING), ("ends_on", ASCENDING)]),
]


def _day(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _parse_day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def membership_from_doc(doc: dict[str, Any]) -> Membership:
    return Membership(
        membership_id=doc["_id"],
        contact_id=doc["contact_id"],
        plan=doc["plan"],
        status=MembershipStatus(doc["status"]),
        starts_on=_parse_day(doc.get("starts_on")),
        ends_on=_parse_day(doc.get("ends_on")),
        grace_days=doc.get("grace_days", 0),
    )


class MembershipsStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ contacts
    # Which federation each contact is in: the kernel's ContactDirectory (same collection).

    async def set_current_membership(
        self, contact_id: str, membership_id: str, session: AsyncClientSession
    ) -> None:
        """Also serialises concurrent dues of one contact: their transactions conflict here."""
        await self.store[CONTACTS].update_one(
            {"_id": contact_id},
            {"$set": {"current_membership_id": membership_id}},
            session=session,
        )

    async def merge_contact(
        self, merged_id: str, survivor_id: str, session: AsyncClientSession
    ) -> None:
        """contact-merged: the merged contact's payments and memberships become the
        survivor's (donation ceilings and standing add up on one person, in the survivor's
        federation); the survivor keeps its current membership, or takes the merged one's if
        it had none."""
        for collection in HISTORY:
            await self.store[collection].update_many(
                {"contact_id": merged_id},
                {"$set": {"contact_id": survivor_id, "merged_from": merged_id}},
                session=session,
            )
        await self.follow_moves([survivor_id], session)
        merged = await self.store[CONTACTS].find_one({"_id": merged_id}, session=session)
        if merged and merged.get("current_membership_id"):
            await self.store[CONTACTS].update_one(
                {"_id": survivor_id, "current_membership_id": None},
                {"$set": {"current_membership_id": merged["current_membership_id"]}},
                session=session,
            )

    async def follow_moves(self, contact_ids: list[str], session: AsyncClientSession) -> None:
        """The contacts' payments and memberships take the federation the directory has for
        them now (a contact moved): the new federation's DPO export and lists find them.
        A batch costs one read and one bulk write per collection."""
        if not contact_ids:
            return
        updates = follow_moves(await ContactDirectory(self.store).placements(contact_ids, session))
        if updates:
            for collection in HISTORY:
                await self.store[collection].bulk_write(updates, ordered=False, session=session)

    # ------------------------------------------------------------ payments

    async def payment_by_provider_id(
        self, provider: str, provider_payment_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.store[PAYMENTS].find_one(
            {"provider": provider, "provider_payment_id": provider_payment_id}, session=session
        )

    async def insert_payment(self, doc: dict[str, Any], session: AsyncClientSession) -> None:
        """Raises DuplicateKeyError if the provider's payment is already recorded."""
        await self.store[PAYMENTS].insert_one(doc, session=session)

    async def payments_of(self, identity: Identity, contact_id: str, limit: int) -> list[dict]:
        return (
            await self.store[PAYMENTS]
            .find({"contact_id": contact_id, **identity.scope()})
            .sort([("paid_at", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    # ------------------------------------------------------------ memberships

    async def membership(
        self, membership_id: str, session: AsyncClientSession | None = None
    ) -> Membership | None:
        doc = await self.store[MEMBERSHIPS].find_one({"_id": membership_id}, session=session)
        return membership_from_doc(doc) if doc else None

    async def save_membership(
        self,
        membership: Membership,
        contact: dict[str, Any],
        session: AsyncClientSession,
        *,
        history: Sequence[dict[str, Any]] = (),
    ) -> None:
        update: dict[str, Any] = {
            "$set": {
                "contact_id": membership.contact_id,
                "plan": membership.plan,
                "status": membership.status.value,
                "starts_on": _day(membership.starts_on),
                "ends_on": _day(membership.ends_on),
                "grace_days": membership.grace_days,
                # stored for the lifecycle sweep's and the roll's indexed queries
                "grace_ends_on": _day(membership.grace_ends_on),
                "federation_id": contact["federation_id"],
                "federation_path": contact["federation_path"],
            }
        }
        if history:
            update["$push"] = {"history": {"$each": list(history)}}
        await self.store[MEMBERSHIPS].update_one(
            {"_id": membership.membership_id}, update, upsert=True, session=session
        )

    async def memberships_of(self, identity: Identity, contact_id: str, limit: int) -> list[dict]:
        return (
            await self.store[MEMBERSHIPS]
            .find({"contact_id": contact_id, **identity.scope()})
            .sort([("starts_on", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )
