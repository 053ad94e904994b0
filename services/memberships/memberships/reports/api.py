"""HTTP routes of the treasurer's reports (thin: validate, call the service)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from tribune_shared.auth import CurrentIdentity, Role, require_roles

from memberships.reports.ledger import COLUMNS, csv_value
from memberships.reports.service import ReportsService

router = APIRouter(prefix="/api/v1/treasury", tags=["treasury"])

may_read = require_roles(Role.treasurer)

Year = Annotated[int, Query(ge=1900, le=9999, description="calendar year (organisation's zone)")]
FederationId = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="a federation of the caller's subtree (default: the caller's own)",
    ),
]


async def service(request: Request) -> ReportsService:
    return ReportsService(request.app.state.settings, request.app.state.store)


Service = Annotated[ReportsService, Depends(service)]


async def _encoded(lines: AsyncIterator[str]) -> AsyncIterator[bytes]:
    async for text in lines:
        yield text.encode()


@router.get(
    "/cnccfp",
    dependencies=[may_read],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/tab-separated-values": {}}}},
)
async def cnccfp_file(
    svc: Service, identity: CurrentIdentity, year: Year, federation_id: FederationId = None
) -> StreamingResponse:
    """The year's list of donors and members for the CNCCFP (tab-separated, UTF-8), of
    the federation subtree: the national treasurer or admin gets the full file."""
    lines = await svc.cnccfp_file(identity, year, federation_id)
    return StreamingResponse(
        _encoded(lines),
        media_type="text/tab-separated-values; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="cnccfp-{year}.tsv"'},
    )


class LedgerRow(BaseModel):
    at: datetime
    kind: str = Field(description="payment, refund or chargeback")
    payment_id: str
    refund_id: str | None
    contact_id: str | None
    federation_id: str | None
    purpose: str
    method: str | None
    amount_cents: int = Field(description="positive in, negative out")
    currency: str
    receipt_number: str | None
    dues_total_cents: int
    donations_total_cents: int
    flagged_total_cents: int = Field(description="captured money the law refuses (owed back)")
    balance_cents: int


class Ledger(BaseModel):
    year: int
    items: list[LedgerRow]
    offset: int
    next_offset: int | None
    totals: dict[str, int] = Field(description="the running totals after this page")


@router.get("/ledger", dependencies=[may_read])
async def ledger(
    svc: Service,
    identity: CurrentIdentity,
    year: Year,
    federation_id: FederationId = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> Ledger:
    """The year's payments and refunds in time order with running totals (paged: totals
    run from the year's first row, whatever the page)."""
    size = min(limit or svc.settings.max_page_size, svc.settings.max_page_size)
    rows: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    more = False
    index = 0
    stream = await svc.ledger(identity, year, federation_id)
    try:
        async for row in stream:
            if index >= offset + size:
                more = True
                break
            if index >= offset:
                rows.append(row)
            last = row
            index += 1
    finally:
        await stream.aclose()
    totals = {k: last[k] for k in COLUMNS[-4:]} if last else {k: 0 for k in COLUMNS[-4:]}
    return Ledger(
        year=year,
        items=[LedgerRow.model_validate(r) for r in rows],
        offset=offset,
        next_offset=offset + size if more else None,
        totals=totals,
    )


async def _csv(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    async for row in rows:
        writer.writerow([csv_value(row[c]) for c in COLUMNS])
        if buffer.tell() > 64_000:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


@router.get(
    "/ledger.csv",
    dependencies=[may_read],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def ledger_csv(
    svc: Service, identity: CurrentIdentity, year: Year, federation_id: FederationId = None
) -> StreamingResponse:
    """The ledger for the accountant: CSV (comma-separated, UTF-8, amounts in cents)."""
    rows = await svc.ledger(identity, year, federation_id)
    return StreamingResponse(
        _csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="ledger-{year}.csv"'},
    )
