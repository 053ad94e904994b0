"""HTTP routes of tax receipts (thin: validate, call the service)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.app import IdPath
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.errors import InvalidField

from memberships.receipts.service import ReceiptsService

router = APIRouter(prefix="/api/v1/receipts", tags=["receipts"])

#: money is the treasurer's; the DPO reads receipts for access requests
may_read = require_roles(Role.treasurer, Role.dpo)
may_change = require_roles(Role.treasurer)


async def service(request: Request) -> ReceiptsService:
    return ReceiptsService(request.app.state.settings, request.app.state.store)


Service = Annotated[ReceiptsService, Depends(service)]


class DonorView(BaseModel):
    given_name: str
    family_name: str
    address_lines: list[str]
    postcode: str
    commune: str


class Cancellation(BaseModel):
    at: datetime
    by: str | None
    reason: str | None
    kind: str


class ReceiptView(BaseModel):
    receipt_id: str
    number: str
    status: Literal["issued", "cancelled"]
    payment_id: str
    contact_id: str
    federation_id: str
    nature: Literal["dues", "donation"]
    elected_official: bool
    amount_cents: int
    currency: str
    amount_words: str = Field(description="the amount in French words, as printed")
    paid_on: date
    method: str
    donor: DonorView | None = Field(description="frozen at issue; null once purged")
    identity_complete: bool = Field(
        description="false: no full name and address was known (complete it, then reissue)"
    )
    tax_reduction_percent: int
    issued_at: datetime
    issued_by: str | None
    replaces: str | None
    replaced_by: str | None
    cancellation: Cancellation | None
    history: list[dict[str, Any]] = Field(description="the audit trail: issued, cancelled")


class ReceiptList(BaseModel):
    items: list[ReceiptView]
    next_after: int | None = Field(
        default=None, description="year listing: pass as ``after`` for the next page"
    )


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=5000, description="kept in the audit trail")


def view(doc: dict[str, Any]) -> ReceiptView:
    return ReceiptView.model_validate({"receipt_id": doc["_id"], **doc})


@router.get("", dependencies=[may_read])
async def list_receipts(
    svc: Service,
    identity: CurrentIdentity,
    contact_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    ] = None,
    year: Annotated[int | None, Query(ge=1900, le=9999)] = None,
    after: Annotated[int, Query(ge=0, description="year listing: numbers after this one")] = 0,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> ReceiptList:
    """A contact's receipts (newest first), or a year's receipts in number order, paged."""
    if (contact_id is None) == (year is None):
        raise InvalidField("give either contact_id or year", field="contact_id")
    if contact_id is not None:
        return ReceiptList(items=[view(d) for d in await svc.of_contact(identity, contact_id)])
    assert year is not None
    size = min(limit or svc.settings.max_page_size, svc.settings.max_page_size)
    docs = await svc.of_year(identity, year, after, size)
    return ReceiptList(
        items=[view(d) for d in docs], next_after=docs[-1]["seq"] if len(docs) == size else None
    )


@router.get("/{receipt_id}", dependencies=[may_read])
async def get_receipt(receipt_id: IdPath, svc: Service, identity: CurrentIdentity) -> ReceiptView:
    return view(await svc.get(identity, receipt_id))


@router.get(
    "/{receipt_id}/pdf",
    dependencies=[may_read],
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "the receipt"}},
)
async def receipt_pdf(receipt_id: IdPath, svc: Service, identity: CurrentIdentity) -> Response:
    doc, pdf = await svc.pdf(identity, receipt_id)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="recu-{doc["number"]}.pdf"'},
    )


@router.post("/{receipt_id}/cancel", dependencies=[may_change])
async def cancel_receipt(
    receipt_id: IdPath, body: Reason, svc: Service, identity: CurrentIdentity
) -> ReceiptView:
    """Cancel a receipt: kept, marked cancelled with the reason; its number never reused."""
    return view(await svc.cancel(identity, receipt_id, body.reason))


@router.post("/{receipt_id}/reissue", status_code=201, dependencies=[may_change])
async def reissue_receipt(
    receipt_id: IdPath, body: Reason, svc: Service, identity: CurrentIdentity
) -> ReceiptView:
    """A new receipt with a new number (and the donor's current identity); the old one is
    cancelled and names its replacement. Answers the new receipt."""
    return view(await svc.reissue(identity, receipt_id, body.reason))
