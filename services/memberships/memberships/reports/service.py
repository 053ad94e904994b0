"""Use cases of the reports: the CNCCFP file of a year and the treasurer's ledger, for
the caller's federation subtree (the national treasurer or admin gets the full file)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.errors import InvalidField
from tribune_shared.events import Envelope, decode_as
from tribune_shared.events.contracts import PaymentRefundedV1
from tribune_shared.federations import FederationDirectory
from tribune_shared.store import Store, subtree_filter

from memberships.people import People
from memberships.receipts.domain import paid_day
from memberships.receipts.store import ReceiptsStore
from memberships.reports import cnccfp
from memberships.reports.ledger import Entry, Totals, payment_entry, refund_entry, running, sort_key
from memberships.reports.store import ReportsStore
from memberships.settings import MembershipsSettings

#: payments read per round trip by the exports
EXPORT_BATCH = 500


class ReportsService:
    def __init__(self, settings: MembershipsSettings, store: Store) -> None:
        self.settings = settings
        self.config = settings.receipts
        self.repo = ReportsStore(store)
        self.receipts = ReceiptsStore(store)
        self.people = People(store)
        self.federations = FederationDirectory(store)

    def year_bounds(self, year: int) -> tuple[datetime, datetime]:
        """A calendar year in the organisation's time zone, as UTC instants."""
        zone = self.settings.zone
        start = datetime(year, 1, 1, tzinfo=zone).astimezone(UTC)
        end = datetime(year + 1, 1, 1, tzinfo=zone).astimezone(UTC)
        return start, end

    async def _within_limit(self, count: int) -> None:
        if count > self.config.export_max_rows:
            raise InvalidField(
                f"{count} rows is more than the {self.config.export_max_rows} one export "
                "reads: ask for a federation lower in the tree",
                field="year",
            )

    # ------------------------------------------------------------ CNCCFP

    async def scope(self, identity: Identity, federation_id: str | None) -> dict[str, Any]:
        """The subtree of the named federation (default: the caller's); 404 outside the
        caller's subtree."""
        _, path = await self.federations.resolve(identity, federation_id)
        return subtree_filter(path)

    async def cnccfp_query(
        self, identity: Identity, year: int, federation_id: str | None = None
    ) -> dict[str, Any]:
        start, end = self.year_bounds(year)
        return {
            **await self.scope(identity, federation_id),
            "paid_at": {"$gte": start, "$lt": end},
            # what the party received and kept: refunded money and money flagged for
            # refund is no gift; a campaign account's gifts are filed with its own account
            "status": "accepted",
            "election_id": None,
        }

    async def cnccfp_file(
        self, identity: Identity, year: int, federation_id: str | None = None
    ) -> AsyncGenerator[str, None]:
        """The file's lines (header first): one per payment, each batch of payments costs
        one read of their receipts and one of their donors."""
        query = await self.cnccfp_query(identity, year, federation_id)
        await self._within_limit(await self.repo.count_payments(query))
        return self._cnccfp_lines(query)

    async def _cnccfp_lines(self, query: dict[str, Any]) -> AsyncGenerator[str, None]:
        columns = self.config.cnccfp_columns
        if self.config.cnccfp_header:
            yield cnccfp.header_line(columns)
        zone = self.settings.zone
        async for batch in self.repo.payments_in_order(query, EXPORT_BATCH):
            receipts = await self.receipts.by_payment([p["_id"] for p in batch])
            # the identity the receipt was issued with (what the donor holds); the people
            # projection for a payment without one
            frozen = await self._receipt_donors([r["_id"] for r in receipts.values()])
            missing = {p["contact_id"] for p in batch if p["_id"] not in receipts}
            current = await self.people.identities(missing)
            donors_by_payment = {
                p["_id"]: frozen.get(receipts[p["_id"]]["_id"])
                if p["_id"] in receipts
                else (current[p["contact_id"]].as_doc() if p["contact_id"] in current else None)
                for p in batch
            }
            for p in batch:
                values = cnccfp.row(
                    p,
                    paid_day(p, zone),
                    donors_by_payment[p["_id"]],
                    receipts[p["_id"]]["number"] if p["_id"] in receipts else None,
                    self.config,
                )
                yield cnccfp.line(values, columns)

    async def _receipt_donors(self, receipt_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not receipt_ids:
            return {}
        docs = self.receipts.receipts.find({"_id": {"$in": list(receipt_ids)}}, {"donor": 1})
        return {d["_id"]: d.get("donor") or {} async for d in docs}

    # ------------------------------------------------------------ ledger

    async def ledger(
        self, identity: Identity, year: int, federation_id: str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every payment and refund of the year, in time order, with running totals."""
        scope = await self.scope(identity, federation_id)
        start, end = self.year_bounds(year)
        query = {**scope, "paid_at": {"$gte": start, "$lt": end}}
        refunds = await self.repo.refunds_between(scope, start, end, self.config.export_max_rows)
        await self._within_limit(await self.repo.count_payments(query) + len(refunds))
        return self._ledger_rows(query, [refund_entry(r) for r in refunds])

    async def _ledger_rows(
        self, query: dict[str, Any], refunds: list[Entry]
    ) -> AsyncGenerator[dict[str, Any], None]:
        totals = Totals()
        pending = iter(refunds)
        next_refund = next(pending, None)
        async for batch in self.repo.payments_in_order(query, EXPORT_BATCH):
            entries: list[Entry] = []
            for payment in map(payment_entry, batch):
                while next_refund is not None and sort_key(next_refund) < sort_key(payment):
                    entries.append(next_refund)
                    next_refund = next(pending, None)
                entries.append(payment)
            for row in running(entries, totals):
                yield row
        rest = [next_refund] if next_refund is not None else []
        for row in running([*rest, *pending], totals):
            yield row

    # ------------------------------------------------------------ refunds (handler)

    async def record_refunds(
        self, envelopes: Sequence[Envelope], session: AsyncClientSession
    ) -> None:
        """payment-refunded: the refund joins the ledger, in its payment's federation and
        bucket (money flagged for refund comes out of the flagged total)."""
        events = [decode_as(e, PaymentRefundedV1) for e in envelopes]
        payments = await self.repo.payments_by_id([e.payment_id for e in events], session)
        docs = []
        for envelope, event in zip(envelopes, events, strict=True):
            payment = payments.get(event.payment_id, {})
            docs.append(
                {
                    "_id": event.refund_id,
                    "payment_id": event.payment_id,
                    "amount_cents": event.amount_cents,
                    "currency": event.currency,
                    "kind": event.kind,
                    "purpose": event.purpose,
                    "reason": event.reason,
                    "refunded_at": event.refunded_at,
                    "flagged": bool(payment.get("refusal")),
                    "federation_id": payment.get("federation_id", envelope.federation_id),
                    "federation_path": payment.get("federation_path", envelope.federation_path),
                }
            )
        await self.repo.record_refunds(docs, session)
