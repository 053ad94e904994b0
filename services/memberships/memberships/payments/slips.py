"""Remittance slips of cheques (bordereaux de remise de chèques).

A treasurer gathers their federation's cheques not yet remitted into a slip they take to
the bank: a number sequential per federation (no gap, no double: a counter document taken
in the slip's transaction), the bank, the day, the cheques, their count and total. A cheque
goes on one slip only (the payment takes the slip's id in the same transaction; concurrent
slips conflict and the loser runs again without the cheques already taken)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from fpdf import FPDF
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.errors import InvalidField, NotFound, Refused
from tribune_shared.events import utcnow
from tribune_shared.federations import FederationDirectory
from tribune_shared.ids import sortable_id
from tribune_shared.logging import get_logger
from tribune_shared.store import Store

from memberships.payments.domain import SlipLine, euros, slip_csv, slip_lines
from memberships.payments.store import PaymentsStore
from memberships.settings import MembershipsSettings

log = get_logger(__name__)


class SlipService:
    def __init__(
        self,
        settings: MembershipsSettings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.repo = PaymentsStore(store)
        self.federations = FederationDirectory(store)
        self.clock = clock

    def today(self) -> date:
        return self.settings.day_at(self.clock())

    async def create(
        self,
        identity: Identity,
        *,
        bank: str,
        federation_id: str | None = None,
        remitted_on: date | None = None,
        currency: str = "EUR",
        payment_ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """A new slip of the federation's unremitted cheques (all of them, oldest first, up
        to ``slip_max_cheques``; or exactly ``payment_ids``)."""
        fid, path = await self.federations.resolve(identity, federation_id)
        limit = self.settings.slip_max_cheques
        if payment_ids is not None and len(payment_ids) > limit:
            raise InvalidField(f"at most {limit} cheques on one slip", field="payment_ids")
        day = remitted_on or self.today()
        if day > self.today():
            raise InvalidField("the remittance day is in the future", field="remitted_on")

        async def work(session: AsyncClientSession) -> dict[str, Any]:
            cheques = await self.repo.unremitted_cheques(fid, currency, payment_ids, limit, session)
            if payment_ids is not None:
                missing = sorted(set(payment_ids) - {c["_id"] for c in cheques})
                if missing:
                    raise InvalidField(
                        "not an accepted cheque of this federation awaiting remittance: "
                        + ", ".join(missing),
                        field="payment_ids",
                    )
            if not cheques:
                raise Refused("no cheque awaiting remittance", federation_id=fid)
            number = await self.repo.next_slip_number(fid, session)
            slip_id = sortable_id()
            taken = await self.repo.put_on_slip([c["_id"] for c in cheques], slip_id, session)
            if taken != len(cheques):  # cannot happen in one snapshot; never half a slip
                raise Refused("a cheque was put on another slip meanwhile")
            doc = {
                "_id": slip_id,
                "number": number,
                "federation_id": fid,
                "federation_path": path,
                "bank": bank,
                "remitted_on": day.isoformat(),
                "currency": currency,
                # no personal data copied: the drawers' names are read from the payments
                "cheques": [
                    {
                        "payment_id": c["_id"],
                        "cheque_number": (c.get("details") or {}).get("cheque_number", ""),
                        "bank": (c.get("details") or {}).get("bank", ""),
                        "paid_on": c["paid_at"].astimezone(self.settings.zone).date().isoformat(),
                        "amount_cents": c["amount_cents"],
                    }
                    for c in cheques
                ],
                "count": len(cheques),
                "total_cents": sum(c["amount_cents"] for c in cheques),
                "created_by": identity.user_id,
                "created_at": utcnow(),
            }
            await self.repo.insert_slip(doc, session)
            return doc

        slip = await self.store.run_transaction(work, what="memberships.slip")
        log.info("slip.created", slip_id=slip["_id"], number=slip["number"], count=slip["count"])
        return slip

    async def get(self, identity: Identity, slip_id: str) -> dict[str, Any]:
        slip = await self.repo.slip(identity.scope(), slip_id)
        if slip is None:
            raise NotFound("slip not found", field="slip_id")
        return slip

    async def page(
        self, identity: Identity, *, federation_id: str | None, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        query: dict[str, Any] = dict(identity.scope())
        if federation_id is not None:
            fid, _ = await self.federations.resolve(identity, federation_id)
            query["federation_id"] = fid
        return await self.repo.slips_page(
            query, limit=min(limit, self.settings.max_page_size), before=before
        )

    async def lines(self, slip: dict[str, Any]) -> list[SlipLine]:
        drawers = await self.repo.drawers([c["payment_id"] for c in slip["cheques"]])
        return slip_lines(slip["cheques"], drawers)

    async def csv(self, identity: Identity, slip_id: str) -> tuple[dict[str, Any], str]:
        slip = await self.get(identity, slip_id)
        return slip, slip_csv(slip["number"], await self.lines(slip), slip["currency"])

    async def pdf(self, identity: Identity, slip_id: str) -> tuple[dict[str, Any], bytes]:
        slip = await self.get(identity, slip_id)
        return slip, render_slip_pdf(slip, await self.lines(slip))


def _latin1(text: str) -> str:
    # fpdf2's core fonts are Latin-1: anything else is replaced, never an error
    return text.encode("latin-1", "replace").decode("latin-1")


def render_slip_pdf(slip: dict[str, Any], lines: Sequence[SlipLine]) -> bytes:
    """The slip as the bank takes it: header, one row per cheque, count and total."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, _latin1("Bordereau de remise de chèques"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for label, value in (
        ("Numéro", f"{slip['federation_id']}-{slip['number']:05d}"),
        ("Fédération", slip["federation_id"]),
        ("Banque", slip["bank"]),
        ("Date de remise", slip["remitted_on"]),
        ("Nombre de chèques", str(slip["count"])),
        ("Montant total", f"{euros(slip['total_cents'])} {slip['currency']}"),
    ):
        pdf.cell(0, 6, _latin1(f"{label} : {value}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    widths = (10, 30, 45, 55, 22, 28)
    pdf.set_font("Helvetica", "B", 9)
    for width, title in zip(
        widths, ("#", "N° chèque", "Banque tirée", "Tireur", "Reçu le", "Montant"), strict=True
    ):
        pdf.cell(width, 7, _latin1(title), border=1)
    pdf.ln()
    pdf.set_font("Helvetica", size=9)
    for i, line in enumerate(lines, start=1):
        cells = (
            str(i),
            line.cheque_number,
            line.bank[:28],
            line.drawer[:34],
            line.paid_on.isoformat(),
            euros(line.amount_cents),
        )
        for width, text in zip(widths, cells, strict=True):
            pdf.cell(width, 6, _latin1(text), border=1, align="R" if text == cells[-1] else "L")
        pdf.ln()
    pdf.set_font("Helvetica", "B", 9)
    pdf.cell(sum(widths[:-1]), 7, _latin1(f"Total ({slip['count']} chèques)"), border=1)
    pdf.cell(widths[-1], 7, euros(slip["total_cents"]), border=1, align="R")
    return bytes(pdf.output())
