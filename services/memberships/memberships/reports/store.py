"""All database access of the reports: read-only over payments and receipts, plus the
refunds the ledger shows (recorded from payment-refunded)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.store import IndexSpec, Store

from memberships.store import PAYMENTS

#: one document per refund or chargeback (its refund id), for the ledger
REFUNDS = "treasury_refunds"

INDEXES = [
    # a year of a subtree, in time order (the CNCCFP file, the ledger)
    IndexSpec(PAYMENTS, [("federation_path", ASCENDING), ("paid_at", ASCENDING)]),
    IndexSpec(REFUNDS, [("federation_path", ASCENDING), ("refunded_at", ASCENDING)]),
]


class ReportsStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.payments = store[PAYMENTS]
        self.refunds = store[REFUNDS]

    async def record_refunds(
        self, docs: Sequence[dict[str, Any]], session: AsyncClientSession
    ) -> None:
        """Idempotent: a refund seen again changes nothing."""
        if docs:
            await self.refunds.bulk_write(
                [UpdateOne({"_id": d["_id"]}, {"$setOnInsert": d}, upsert=True) for d in docs],
                ordered=False,
                session=session,
            )

    async def payments_by_id(
        self, payment_ids: Sequence[str], session: AsyncClientSession
    ) -> dict[str, dict[str, Any]]:
        docs = self.payments.find(
            {"_id": {"$in": list(payment_ids)}},
            {"status": 1, "refusal": 1, "federation_id": 1, "federation_path": 1},
            session=session,
        )
        return {d["_id"]: d async for d in docs}

    async def count_payments(self, query: dict[str, Any]) -> int:
        return await self.payments.count_documents(query)

    async def payments_in_order(
        self, query: dict[str, Any], batch_size: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The matching payments by time, in batches (one cursor, constant memory)."""
        cursor = self.payments.find(query).sort([("paid_at", ASCENDING), ("_id", ASCENDING)])
        batch: list[dict[str, Any]] = []
        async for doc in cursor.batch_size(batch_size):
            batch.append(doc)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def refunds_between(
        self, scope: dict[str, Any], start: datetime, end: datetime, limit: int
    ) -> list[dict[str, Any]]:
        return (
            await self.refunds.find({"refunded_at": {"$gte": start, "$lt": end}, **scope})
            .sort([("refunded_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
            .to_list()
        )

    async def count_refunds(self, query: dict[str, Any]) -> int:
        return await self.refunds.count_documents(query)
