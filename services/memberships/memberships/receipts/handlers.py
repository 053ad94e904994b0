"""payment-received issues receipts; payment-refunded cancels them (batch handlers, in the
consumer's transaction: the numbers of a batch are taken and used, or not taken at all)."""

from __future__ import annotations

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.events import Envelope
from tribune_shared.logging import get_logger
from tribune_shared.store import Store
from tribune_shared.subscriptions import Batch
from tribune_shared.worker import BackgroundTask, periodic

from memberships.receipts.service import ReceiptsService
from memberships.settings import MembershipsSettings

log = get_logger(__name__)


def receipt_handlers(settings: MembershipsSettings, store: Store) -> dict[str, Batch]:
    receipts = ReceiptsService(settings, store)

    async def on_received(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await receipts.issue_for_payments(envelopes, session)

    async def on_refunded(envelopes: list[Envelope], session: AsyncClientSession) -> None:
        await receipts.cancel_for_refunds(envelopes, session)

    return {"payment-received": Batch(on_received), "payment-refunded": Batch(on_refunded)}


def retention_sweep(settings: MembershipsSettings, store: Store) -> BackgroundTask:
    """A worker background task: once in a while, receipts of erased donors past their
    retention period lose the donor's identity (in batches, until none is left)."""
    receipts = ReceiptsService(settings, store)

    async def purge_all() -> None:
        while await receipts.purge_expired() > 0:
            pass

    return periodic(
        "receipts.retention_sweep", settings.receipts.retention_sweep_seconds, purge_all
    )
