"""All database access of payments: the batched recording of the webhook's payments, the
treasurer's lists, reversals, remittance slips and recurring schedules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from datetime import date, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store, set_each

from memberships.domain import Membership
from memberships.store import CONTACTS, MEMBERSHIPS, PAYMENTS, SCHEDULES

REFUNDS = "payment_refunds"  # one document per reversal (refund or chargeback)
SLIPS = "remittance_slips"
SLIP_COUNTERS = "remittance_slip_counters"  # the next slip number, per federation

INDEXES = [
    # A provider's refund or dispute is applied once, whatever its retries.
    IndexSpec(
        REFUNDS,
        [("provider", ASCENDING), ("reference", ASCENDING)],
        {"unique": True, "name": "refund_reference_unique"},
    ),
    IndexSpec(REFUNDS, [("payment_id", ASCENDING)]),
    # the treasurer's lists: a subtree, newest first
    IndexSpec(PAYMENTS, [("federation_path", ASCENDING), ("paid_at", DESCENDING)]),
    # the cheques of a federation not yet on a slip
    IndexSpec(PAYMENTS, [("federation_id", ASCENDING), ("method", ASCENDING), ("slip_id", 1)]),
    IndexSpec(SLIPS, [("federation_id", ASCENDING), ("number", ASCENDING)], {"unique": True}),
    IndexSpec(SLIPS, [("federation_path", ASCENDING), ("_id", DESCENDING)]),
    IndexSpec(SCHEDULES, [("status", ASCENDING), ("next_due_on", ASCENDING)]),
    IndexSpec(SCHEDULES, [("contact_id", ASCENDING)]),
    IndexSpec(SCHEDULES, [("federation_path", ASCENDING), ("_id", DESCENDING)]),
]


def iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


class PaymentsStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.payments = store[PAYMENTS]
        self.refunds = store[REFUNDS]
        self.slips = store[SLIPS]
        self.schedules = store[SCHEDULES]
        self.memberships = store[MEMBERSHIPS]

    # ------------------------------------------------------------ a batch of payments
    # One read or one bulk write per collection for the whole batch (recording.py).

    async def payments_by_keys(
        self, keys: Sequence[tuple[str, str]], session: AsyncClientSession
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """(provider, provider payment id) -> the payment already recorded."""
        by_provider: dict[str, list[str]] = {}
        for provider, payment_id in keys:
            by_provider.setdefault(provider, []).append(payment_id)
        found: dict[tuple[str, str], dict[str, Any]] = {}
        # One query per provider (a batch names one or two), each on the unique index: a
        # top-level $or would scan the whole collection on the local store.
        for provider, ids in sorted(by_provider.items()):
            docs = self.payments.find(
                {"provider": provider, "provider_payment_id": {"$in": sorted(set(ids))}},
                session=session,
            )
            found.update({(d["provider"], d["provider_payment_id"]): d async for d in docs})
        return found

    async def live_contacts(
        self, contact_ids: Sequence[str], session: AsyncClientSession
    ) -> dict[str, dict[str, Any]]:
        """The contacts memberships knows, erased ones left out (as ``ContactDirectory.get``)."""
        docs = self.store[CONTACTS].find(
            {"_id": {"$in": sorted(set(contact_ids))}, "erased": {"$ne": True}}, session=session
        )
        return {d["_id"]: d async for d in docs}

    async def memberships_by_ids(
        self, membership_ids: Sequence[str], session: AsyncClientSession
    ) -> dict[str, dict[str, Any]]:
        if not membership_ids:
            return {}
        docs = self.memberships.find({"_id": {"$in": sorted(set(membership_ids))}}, session=session)
        return {d["_id"]: d async for d in docs}

    async def insert_payments(
        self, docs: Sequence[Mapping[str, Any]], session: AsyncClientSession
    ) -> None:
        """Raises (BulkWriteError, a DuplicateKeyError) if one is already recorded."""
        if docs:
            await self.payments.insert_many([dict(d) for d in docs], session=session)

    async def save_memberships(
        self,
        writes: Sequence[tuple[Membership, Sequence[Mapping[str, Any]], Mapping[str, Any]]],
        session: AsyncClientSession,
        *,
        stored: Set[str],
    ) -> None:
        """Each (membership, history entries, contact) as ``MembershipsStore.save_membership``
        stores it, in order (one membership may be written twice: settled by time, then
        renewed). ``stored`` (required: a wrong guess would insert a stored membership
        again): the ids of those already in the store, read by the caller in the same
        transaction; the others are new and go in one ``insert_many``, their
        writes folded in order, since an upsert per membership cost the store one statement
        each. The stored ones are updated in one bulk write."""
        if not writes:
            return
        new: dict[str, dict[str, Any]] = {}
        ops = []
        for m, history, contact in writes:
            fields = {
                "contact_id": m.contact_id,
                "plan": m.plan,
                "status": m.status.value,
                "starts_on": iso(m.starts_on),
                "ends_on": iso(m.ends_on),
                "grace_days": m.grace_days,
                "grace_ends_on": iso(m.grace_ends_on),
                "federation_id": contact["federation_id"],
                "federation_path": contact["federation_path"],
            }
            entries = [dict(h) for h in history]
            if m.membership_id not in stored:
                doc = new.setdefault(m.membership_id, {"_id": m.membership_id})
                doc.update(fields)
                if entries:
                    doc.setdefault("history", []).extend(entries)
                continue
            update: dict[str, Any] = {"$set": fields}
            if entries:
                update["$push"] = {"history": {"$each": entries}}
            ops.append(UpdateOne({"_id": m.membership_id}, update))
        if new:
            await self.memberships.insert_many(list(new.values()), session=session)
        if ops:
            await self.memberships.bulk_write(ops, ordered=True, session=session)

    async def set_current_memberships(
        self, current: Mapping[str, str], session: AsyncClientSession
    ) -> None:
        """contact id -> its current membership; also serialises a person's dues across
        concurrent batches (their transactions conflict on the contact)."""
        if not current:
            return
        await set_each(
            self.store[CONTACTS],
            {c: {"current_membership_id": m} for c, m in current.items()},
            session=session,
        )

    # ------------------------------------------------------------ payments

    async def payment(
        self, query: Mapping[str, Any], session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.payments.find_one(dict(query), session=session)

    async def page(
        self,
        query: Mapping[str, Any],
        *,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest first (paid_at, then id); ``after`` is the last item of the previous page."""
        q: dict[str, Any] = dict(query)
        if after is not None:
            paid_at, payment_id = after
            q["$or"] = [
                {"paid_at": {"$lt": paid_at}},
                {"paid_at": paid_at, "_id": {"$gt": payment_id}},
            ]
        docs = (
            await self.payments.find(q)
            .sort([("paid_at", DESCENDING), ("_id", ASCENDING)])
            .limit(limit + 1)
            .to_list()
        )
        return docs[:limit], len(docs) > limit

    async def same_cheque(
        self, federation_id: str, bank: str, number: str, exclude_provider_payment_id: str
    ) -> dict[str, Any] | None:
        """An accepted cheque of the federation with this bank and number, entered before."""
        return await self.payments.find_one(
            {
                "federation_id": federation_id,
                "method": "cheque",
                "status": "accepted",
                "details.bank": bank,
                "details.cheque_number": number,
                "provider_payment_id": {"$ne": exclude_provider_payment_id},
            }
        )

    async def mark_reversed(
        self,
        payment_id: str,
        expected_statuses: Sequence[str],
        status: str,
        reversal: Mapping[str, Any],
        session: AsyncClientSession,
    ) -> bool:
        """Only from an expected status: two concurrent reversals conflict here, one wins."""
        result = await self.payments.update_one(
            {"_id": payment_id, "status": {"$in": list(expected_statuses)}},
            {
                "$set": {"status": status, "reversal": dict(reversal)},
                "$push": {"status_history": dict(reversal, status=status)},
            },
            session=session,
        )
        return result.modified_count == 1

    # ------------------------------------------------------------ refunds

    async def refund_by_reference(
        self, provider: str, reference: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.refunds.find_one(
            {"provider": provider, "reference": reference}, session=session
        )

    async def insert_refund(self, doc: Mapping[str, Any], session: AsyncClientSession) -> None:
        """Raises DuplicateKeyError if the provider's refund is already applied."""
        await self.refunds.insert_one(dict(doc), session=session)

    # ------------------------------------------------------------ memberships

    async def membership_doc(
        self, membership_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.memberships.find_one({"_id": membership_id}, session=session)

    async def current_memberships(
        self, contact_ids: Sequence[str], session: AsyncClientSession
    ) -> dict[str, dict[str, Any]]:
        """contact id -> its current membership document (one read each collection)."""
        contacts = self.store[CONTACTS].find(
            {"_id": {"$in": list(contact_ids)}, "current_membership_id": {"$ne": None}},
            {"current_membership_id": 1},
            session=session,
        )
        current = {d["current_membership_id"]: d["_id"] async for d in contacts}
        if not current:
            return {}
        docs = self.memberships.find({"_id": {"$in": list(current)}}, session=session)
        return {current[d["_id"]]: d async for d in docs}

    async def change_memberships(
        self,
        changes: Sequence[tuple[Membership, Mapping[str, Any]]],
        session: AsyncClientSession,
    ) -> None:
        """Write each membership's new status and period with its history entry, in one
        bulk write (the same stored fields as ``MembershipsStore.save_membership``)."""
        if not changes:
            return
        ops = [
            UpdateOne(
                {"_id": m.membership_id},
                {
                    "$set": {
                        "status": m.status.value,
                        "ends_on": iso(m.ends_on),
                        "grace_ends_on": iso(m.grace_ends_on),
                    },
                    "$push": {"history": dict(entry)},
                },
            )
            for m, entry in changes
        ]
        await self.memberships.bulk_write(ops, ordered=True, session=session)

    # ------------------------------------------------------------ remittance slips

    async def unremitted_cheques(
        self,
        federation_id: str,
        currency: str,
        payment_ids: Sequence[str] | None,
        limit: int,
        session: AsyncClientSession,
    ) -> list[dict[str, Any]]:
        """Accepted cheques of the federation on no slip yet, oldest first."""
        query: dict[str, Any] = {
            "federation_id": federation_id,
            "method": "cheque",
            "status": "accepted",
            "currency": currency,
            "slip_id": None,
        }
        if payment_ids is not None:
            query["_id"] = {"$in": list(payment_ids)}
        return (
            await self.payments.find(query, session=session)
            .sort([("paid_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def next_slip_number(self, federation_id: str, session: AsyncClientSession) -> int:
        """Sequential per federation; concurrent slips conflict on the counter and one runs
        again, so numbers have no gap and no double."""
        doc = await self.store[SLIP_COUNTERS].find_one_and_update(
            {"_id": federation_id},
            {"$inc": {"last": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        return int(doc["last"])

    async def put_on_slip(
        self, payment_ids: Sequence[str], slip_id: str, session: AsyncClientSession
    ) -> int:
        result = await self.payments.update_many(
            {"_id": {"$in": list(payment_ids)}, "slip_id": None},
            {"$set": {"slip_id": slip_id}},
            session=session,
        )
        return result.modified_count

    async def insert_slip(self, doc: Mapping[str, Any], session: AsyncClientSession) -> None:
        await self.slips.insert_one(dict(doc), session=session)

    async def slip(self, scope: Mapping[str, Any], slip_id: str) -> dict[str, Any] | None:
        return await self.slips.find_one({"_id": slip_id, **scope})

    async def slips_page(
        self, query: Mapping[str, Any], *, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        q: dict[str, Any] = dict(query)
        if before is not None:
            q["_id"] = {"$lt": before}
        docs = await self.slips.find(q).sort("_id", DESCENDING).limit(limit + 1).to_list()
        return docs[:limit], len(docs) > limit

    async def drawers(self, payment_ids: Sequence[str]) -> dict[str, str]:
        """The drawer names of a slip's cheques, read from the payments (not copied)."""
        docs = self.payments.find({"_id": {"$in": list(payment_ids)}}, {"details.drawer": 1})
        return {d["_id"]: (d.get("details") or {}).get("drawer") or "" async for d in docs}

    # ------------------------------------------------------------ schedules

    async def insert_schedule(self, doc: Mapping[str, Any]) -> None:
        await self.schedules.insert_one(dict(doc))

    async def schedule(
        self,
        query: Mapping[str, Any],
        session: AsyncClientSession | None = None,
    ) -> dict[str, Any] | None:
        return await self.schedules.find_one(dict(query), session=session)

    async def schedules_by_ids(
        self, schedule_ids: Sequence[str], session: AsyncClientSession
    ) -> dict[str, dict[str, Any]]:
        docs = self.schedules.find({"_id": {"$in": list(schedule_ids)}}, session=session)
        return {d["_id"]: d async for d in docs}

    async def schedules_page(
        self, query: Mapping[str, Any], *, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        q: dict[str, Any] = dict(query)
        if before is not None:
            q["_id"] = {"$lt": before}
        docs = await self.schedules.find(q).sort("_id", DESCENDING).limit(limit + 1).to_list()
        return docs[:limit], len(docs) > limit

    async def update_schedule(
        self,
        schedule_id: str,
        expected: Mapping[str, Any],
        update: Mapping[str, Any],
        session: AsyncClientSession | None = None,
    ) -> dict[str, Any] | None:
        """Change a schedule still as ``expected`` (a concurrent change wins otherwise)."""
        return await self.schedules.find_one_and_update(
            {"_id": schedule_id, **expected},
            dict(update),
            return_document=ReturnDocument.AFTER,
            session=session,
        )

    async def due_schedules(
        self, before: date, limit: int, session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """Active schedules due before ``before`` (ISO dates sort as strings)."""
        return (
            await self.schedules.find(
                {"status": "active", "next_due_on": {"$lt": before.isoformat()}}, session=session
            )
            .sort([("next_due_on", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def apply_schedule_updates(
        self, updates: Sequence[UpdateOne], session: AsyncClientSession
    ) -> int:
        if not updates:
            return 0
        result = await self.schedules.bulk_write(list(updates), ordered=False, session=session)
        return result.modified_count
