"""All database access of receipts: the receipts, the yearly counters, and the link a
receipt leaves on its payment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store

from memberships.store import PAYMENTS, RECEIPTS

#: one document per numbering series (year): {_id: "2026", last: <highest number given>}
RECEIPT_COUNTERS = "receipt_counters"

INDEXES = [
    # One receipt per payment, one reissue per receipt: a redelivered event or a double
    # click never issues twice.
    IndexSpec(RECEIPTS, [("issue_key", ASCENDING)], {"unique": True, "name": "issue_key_unique"}),
    # A number is given once (the counter guarantees it; the index proves it).
    IndexSpec(
        RECEIPTS,
        [("series", ASCENDING), ("seq", ASCENDING)],
        {"unique": True, "name": "series_seq_unique"},
    ),
    IndexSpec(RECEIPTS, [("payment_id", ASCENDING)]),
    IndexSpec(RECEIPTS, [("contact_id", ASCENDING), ("issued_at", DESCENDING)]),
    IndexSpec(RECEIPTS, [("federation_path", ASCENDING), ("series", ASCENDING)]),
    # the retention sweep of erased donors' receipts
    IndexSpec(RECEIPTS, [("retain_until", ASCENDING)], {"sparse": True}),
]


class ReceiptsStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.receipts = store[RECEIPTS]
        self.counters = store[RECEIPT_COUNTERS]

    # ------------------------------------------------------------ numbering

    async def take_numbers(self, series: str, count: int, session: AsyncClientSession) -> int:
        """Reserve ``count`` numbers of ``series`` in the caller's transaction; returns the
        highest. Concurrent transactions conflict on this document (one is run again)."""
        doc = await self.counters.find_one_and_update(
            {"_id": series},
            {"$inc": {"last": count}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        return int(doc["last"])

    async def counter(self, series: str) -> int:
        doc = await self.counters.find_one({"_id": series})
        return int(doc["last"]) if doc else 0

    # ------------------------------------------------------------ payments

    async def payments(
        self, payment_ids: Sequence[str], session: AsyncClientSession | None = None
    ) -> dict[str, dict[str, Any]]:
        docs = self.store[PAYMENTS].find({"_id": {"$in": list(payment_ids)}}, session=session)
        return {d["_id"]: d async for d in docs}

    async def payment(
        self, payment_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.store[PAYMENTS].find_one({"_id": payment_id}, session=session)

    async def link_payments(
        self, links: dict[str, dict[str, Any]], session: AsyncClientSession
    ) -> None:
        """Each payment names its current receipt. Writing the payment also makes an
        issuance conflict with a concurrent refund of it (which writes its status): one of
        them runs again and sees the other, so a refunded payment never gets a receipt."""
        if links:
            await self.store[PAYMENTS].bulk_write(
                [
                    UpdateOne({"_id": payment_id}, {"$set": link})
                    for payment_id, link in links.items()
                ],
                ordered=False,
                session=session,
            )

    # ------------------------------------------------------------ receipts

    async def issued_keys(self, keys: Sequence[str], session: AsyncClientSession) -> set[str]:
        docs = self.receipts.find(
            {"issue_key": {"$in": list(keys)}}, {"issue_key": 1}, session=session
        )
        return {d["issue_key"] async for d in docs}

    async def insert(self, docs: Sequence[dict[str, Any]], session: AsyncClientSession) -> None:
        if docs:
            await self.receipts.insert_many(list(docs), ordered=True, session=session)

    async def get(
        self, receipt_id: str, scope: dict[str, Any], session: AsyncClientSession | None = None
    ) -> dict[str, Any] | None:
        return await self.receipts.find_one({"_id": receipt_id, **scope}, session=session)

    async def issued_for_payments(
        self, payment_ids: Sequence[str], session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """The receipts still issued for these payments, in one read."""
        return await self.receipts.find(
            {"payment_id": {"$in": list(payment_ids)}, "status": "issued"}, session=session
        ).to_list()

    async def cancel_many(
        self,
        cancels: Sequence[tuple[str, dict[str, Any], dict[str, Any]]],
        session: AsyncClientSession,
    ) -> None:
        """Cancel receipts read as issued in this ``session`` (receipt id, fields, history
        entry), in one write: a concurrent change to one of them makes the transaction
        conflict and run again."""
        if cancels:
            await self.receipts.bulk_write(
                [
                    UpdateOne(
                        {"_id": receipt_id, "status": "issued"},
                        {"$set": fields, "$push": {"history": entry}},
                    )
                    for receipt_id, fields, entry in cancels
                ],
                ordered=False,
                session=session,
            )

    async def cancel(
        self,
        receipt_id: str,
        fields: dict[str, Any],
        entry: dict[str, Any],
        session: AsyncClientSession,
    ) -> bool:
        """Cancel a receipt still issued (False: someone cancelled it first)."""
        result = await self.receipts.update_one(
            {"_id": receipt_id, "status": "issued"},
            {"$set": fields, "$push": {"history": entry}},
            session=session,
        )
        return result.modified_count == 1

    async def of_contact(
        self, contact_id: str, scope: dict[str, Any], limit: int
    ) -> list[dict[str, Any]]:
        return (
            await self.receipts.find({"contact_id": contact_id, **scope})
            .sort([("issued_at", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def of_year(
        self, series: str, scope: dict[str, Any], after_seq: int, limit: int
    ) -> list[dict[str, Any]]:
        return (
            await self.receipts.find({"series": series, "seq": {"$gt": after_seq}, **scope})
            .sort("seq", ASCENDING)
            .limit(limit)
            .to_list()
        )

    async def by_payment(
        self, payment_ids: Sequence[str], session: AsyncClientSession | None = None
    ) -> dict[str, dict[str, Any]]:
        """The issued receipt of each payment (the CNCCFP file's receipt numbers)."""
        docs = self.receipts.find(
            {"payment_id": {"$in": list(payment_ids)}, "status": "issued"},
            {"payment_id": 1, "number": 1},
            session=session,
        )
        return {d["payment_id"]: d async for d in docs}

    async def purge_expired(self, now: datetime, limit: int) -> int:
        """The retention sweep: receipts of erased (pseudonymised) donors past their
        retention period lose the donor's identity. Returns how many."""
        ids = [
            d["_id"]
            async for d in self.receipts.find(
                {
                    "retain_until": {"$lte": now},
                    "pseudonymised_at": {"$ne": None},
                    "donor": {"$ne": None},
                },
                {"_id": 1},
            ).limit(limit)
        ]
        if not ids:
            return 0
        result = await self.receipts.update_many(
            {"_id": {"$in": ids}}, {"$set": {"donor": None, "donor_purged_at": now}}
        )
        return result.modified_count
