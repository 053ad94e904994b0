"""payment-refunded: the refund joins the treasurer's ledger (after the receipt handler,
in the same transaction)."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope
from tribune_shared.store import Store
from tribune_shared.subscriptions import Batch

from memberships.reports.service import ReportsService
from memberships.settings import MembershipsSettings


def ledger_handlers(settings: MembershipsSettings, store: Store) -> dict[str, Batch]:
    reports = ReportsService(settings, store)

    async def on_refunded(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await reports.record_refunds(envelopes, session)

    return {"payment-refunded": Batch(on_refunded)}
