"""Use cases of tax receipts: issue (a batch of payments, in the consumer's transaction),
cancel, reissue, read, render, and forget an erased donor once the law allows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.errors import InvalidField, NotFound, Refused
from tribune_shared.events import Envelope, decode_as, new_envelope
from tribune_shared.events.contracts import (
    EventContract,
    PaymentReceivedV1,
    PaymentRefundedV1,
    ReceiptCancelledV1,
    ReceiptIssuedV1,
)
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from memberships.people import People
from memberships.receipts.domain import (
    RECEIPTABLE_PAYMENT,
    cancellation,
    check_cancellable,
    check_reissuable,
    paid_day,
    receipt_doc,
)
from memberships.receipts.numbering import Series, allocated, series_for
from memberships.receipts.pdf import render_receipt
from memberships.receipts.store import ReceiptsStore
from memberships.settings import MembershipsSettings

log = get_logger(__name__)
PRODUCER = "memberships"

RECEIPTS_ISSUED = Counter(
    "tribune_receipts_issued_total", "Tax receipts issued", ["service", "nature"]
)
RECEIPTS_CANCELLED = Counter(
    "tribune_receipts_cancelled_total", "Tax receipts cancelled, by why", ["service", "kind"]
)


def _envelope(doc: dict[str, Any], event: EventContract, cause: Envelope | None) -> Envelope:
    return new_envelope(
        event,
        producer=PRODUCER,
        federation_id=doc["federation_id"],
        federation_path=doc["federation_path"],
        causation=cause,
    )


def issued_event(doc: dict[str, Any]) -> ReceiptIssuedV1:
    return ReceiptIssuedV1(
        receipt_id=doc["_id"],
        number=doc["number"],
        contact_id=doc["contact_id"],
        amount_cents=doc["amount_cents"],
        issued_at=doc["issued_at"],
    )


def cancelled_event(doc: dict[str, Any], detail: dict[str, Any]) -> ReceiptCancelledV1:
    return ReceiptCancelledV1(
        receipt_id=doc["_id"],
        number=doc["number"],
        contact_id=doc["contact_id"],
        payment_id=doc["payment_id"],
        kind=detail["kind"],
        reason=detail["reason"] or "",
        replaced_by=detail.get("replaced_by"),
        cancelled_at=detail["at"],
    )


class ReceiptsService:
    def __init__(
        self,
        settings: MembershipsSettings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.config = settings.receipts
        self.store = store
        self.repo = ReceiptsStore(store)
        self.people = People(store)
        self.contacts = ContactDirectory(store)
        self.outbox = Outbox(store)
        self.clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # ------------------------------------------------------------ issuing

    async def issue_for_payments(
        self, envelopes: Sequence[Envelope], session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """payment-received, a batch at a time, in the consumer's transaction: one receipt
        per accepted payment (not for a payment already receipted, refunded meanwhile, or
        to a candidate's campaign account, whose financial agent issues the CNCCFP's own
        receipts). Numbers come from one ``$inc`` per year for the whole batch."""
        causes: dict[str, Envelope] = {}
        for envelope in envelopes:
            causes.setdefault(decode_as(envelope, PaymentReceivedV1).payment_id, envelope)
        already = await self.repo.issued_keys(list(causes), session)
        payments = await self.repo.payments([p for p in causes if p not in already], session)
        todo = []
        for payment_id in causes:  # offset order: numbers follow the payments' order
            payment = payments.get(payment_id)
            if payment is None or payment_id in already:
                continue
            if payment.get("status") != RECEIPTABLE_PAYMENT or payment.get("election_id"):
                continue
            todo.append(payment)
        if not todo:
            return []
        zone = self.settings.zone
        by_series: dict[Series, list[dict[str, Any]]] = {}
        for payment in todo:
            by_series.setdefault(series_for(paid_day(payment, zone)), []).append(payment)
        donors = await self.people.identities({p["contact_id"] for p in todo}, session)
        now = self.now()
        docs: list[dict[str, Any]] = []
        for series, items in sorted(by_series.items(), key=lambda kv: kv[0].year):
            last = await self.repo.take_numbers(series.key, len(items), session)
            for payment, seq in zip(items, allocated(last, len(items)), strict=True):
                docs.append(
                    receipt_doc(
                        receipt_id=uuid.uuid4().hex,
                        issue_key=payment["_id"],
                        series=series,
                        seq=seq,
                        payment=payment,
                        paid_on=paid_day(payment, zone),
                        donor=donors.get(payment["contact_id"]),
                        config=self.config,
                        issued_at=now,
                    )
                )
        await self.repo.insert(docs, session)
        await self.repo.link_payments(
            {
                d["payment_id"]: {"receipt_id": d["_id"], "receipt_number": d["number"]}
                for d in docs
            },
            session,
        )
        await self.outbox.add(
            session, *[_envelope(d, issued_event(d), causes[d["payment_id"]]) for d in docs]
        )
        for d in docs:
            RECEIPTS_ISSUED.labels(PRODUCER, d["nature"]).inc()
        incomplete = sum(1 for d in docs if not d["identity_complete"])
        log.info("receipts.issued", count=len(docs), without_full_identity=incomplete)
        return docs

    async def cancel_for_refunds(
        self, envelopes: Sequence[Envelope], session: AsyncClientSession
    ) -> int:
        """payment-refunded: the payment's receipt is cancelled (refund or chargeback), its
        number kept and never reused. A refund seen again finds nothing left to cancel."""
        now = self.now()
        refunds = [(envelope, decode_as(envelope, PaymentRefundedV1)) for envelope in envelopes]
        issued = await self.repo.issued_for_payments([r.payment_id for _, r in refunds], session)
        by_payment: dict[str, list[dict[str, Any]]] = {}
        for doc in issued:
            by_payment.setdefault(doc["payment_id"], []).append(doc)
        events: list[Envelope] = []
        cancels: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        for envelope, refund in refunds:
            # pop: a second refund of the same payment in the batch finds nothing left
            for doc in by_payment.pop(refund.payment_id, []):
                fields, entry = cancellation(
                    at=now, by=None, reason=refund.reason or refund.kind, kind=refund.kind
                )
                cancels.append((doc["_id"], fields, entry))
                events.append(_envelope(doc, cancelled_event(doc, entry), envelope))
                RECEIPTS_CANCELLED.labels(PRODUCER, refund.kind).inc()
        await self.repo.cancel_many(cancels, session)
        cancelled = {receipt_id for receipt_id, _, _ in cancels}
        await self.repo.link_payments(
            {
                doc["payment_id"]: {"receipt_id": None, "receipt_number": None}
                for doc in issued
                if doc["_id"] in cancelled
            },
            session,
        )
        await self.outbox.add(session, *events)
        return len(events)

    # ------------------------------------------------------------ cancel, reissue

    def _reason(self, reason: str) -> str:
        reason = reason.strip()
        if not reason:
            raise InvalidField("a reason is required (it stays in the audit trail)", field="reason")
        if len(reason) > self.config.reason_max_length:
            raise InvalidField(
                f"at most {self.config.reason_max_length} characters", field="reason"
            )
        return reason

    async def cancel(self, identity: Identity, receipt_id: str, reason: str) -> dict[str, Any]:
        """A treasurer cancels a receipt (given by mistake): it stays, marked cancelled
        with who, when and why; its number is never given again."""
        reason = self._reason(reason)

        async def work(session: AsyncClientSession) -> dict[str, Any]:
            doc = await self._visible(identity, receipt_id, session)
            check_cancellable(doc)
            fields, entry = cancellation(
                at=self.now(), by=identity.user_id, reason=reason, kind="cancelled"
            )
            if not await self.repo.cancel(receipt_id, fields, entry, session):
                raise Refused("the receipt was cancelled meanwhile", field="receipt_id")
            await self.repo.link_payments(
                {doc["payment_id"]: {"receipt_id": None, "receipt_number": None}}, session
            )
            await self.outbox.add(session, _envelope(doc, cancelled_event(doc, entry), None))
            return {**doc, **fields, "history": [*doc["history"], entry]}

        cancelled = await self.store.run_transaction(work, what="receipts.cancel")
        RECEIPTS_CANCELLED.labels(PRODUCER, "cancelled").inc()
        return cancelled

    async def reissue(self, identity: Identity, receipt_id: str, reason: str) -> dict[str, Any]:
        """A new receipt with a new number (the year's next) and the donor's identity as
        known now; the old one is cancelled and names its replacement."""
        reason = self._reason(reason)

        async def work(session: AsyncClientSession) -> dict[str, Any]:
            old = await self._visible(identity, receipt_id, session)
            payment = await self.repo.payment(old["payment_id"], session)
            check_reissuable(old, payment)
            assert payment is not None
            series = Series(int(old["series"]))
            last = await self.repo.take_numbers(series.key, 1, session)
            donors = await self.people.identities([payment["contact_id"]], session)
            now = self.now()
            new = receipt_doc(
                receipt_id=uuid.uuid4().hex,
                issue_key=f"{old['_id']}:reissue",
                series=series,
                seq=last,
                payment=payment,
                paid_on=paid_day(payment, self.settings.zone),
                donor=donors.get(payment["contact_id"]),
                config=self.config,
                issued_at=now,
                replaces=old["_id"],
                issued_by=identity.user_id,
            )
            fields, entry = cancellation(
                at=now, by=identity.user_id, reason=reason, kind="reissued", replaced_by=new["_id"]
            )
            if not await self.repo.cancel(old["_id"], fields, entry, session):
                raise Refused("the receipt was cancelled meanwhile", field="receipt_id")
            await self.repo.insert([new], session)
            await self.repo.link_payments(
                {payment["_id"]: {"receipt_id": new["_id"], "receipt_number": new["number"]}},
                session,
            )
            cancelled = _envelope(old, cancelled_event(old, entry), None)
            await self.outbox.add(session, cancelled, _envelope(new, issued_event(new), cancelled))
            return new

        new = await self.store.run_transaction(work, what="receipts.reissue")
        RECEIPTS_CANCELLED.labels(PRODUCER, "reissued").inc()
        RECEIPTS_ISSUED.labels(PRODUCER, new["nature"]).inc()
        return new

    # ------------------------------------------------------------ reads

    async def _visible(
        self, identity: Identity, receipt_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any]:
        doc = await self.repo.get(receipt_id, identity.scope(), session)
        if doc is None:
            raise NotFound("receipt not found", field="receipt_id")
        return doc

    async def get(self, identity: Identity, receipt_id: str) -> dict[str, Any]:
        return await self._visible(identity, receipt_id)

    async def pdf(self, identity: Identity, receipt_id: str) -> tuple[dict[str, Any], bytes]:
        doc = await self._visible(identity, receipt_id)
        return doc, render_receipt(doc)

    async def of_contact(self, identity: Identity, contact_id: str) -> list[dict[str, Any]]:
        if await self.contacts.visible(identity, contact_id) is None:
            raise NotFound("contact not found", field="contact_id")
        return await self.repo.of_contact(contact_id, identity.scope(), self.settings.max_page_size)

    async def of_year(
        self, identity: Identity, year: int, after: int, limit: int
    ) -> list[dict[str, Any]]:
        return await self.repo.of_year(str(year), identity.scope(), after, limit)

    async def highest_number(self, year: int) -> int:
        return await self.repo.counter(str(year))

    # ------------------------------------------------------------ retention

    async def purge_expired(self, limit: int = 1000) -> int:
        """Receipts of erased donors past their retention period (LPF art. L102 E: six
        years from issue) lose the donor's name and address."""
        purged = await self.repo.purge_expired(self.now(), limit)
        if purged:
            log.info("receipts.donor_identity_purged", count=purged)
        return purged
