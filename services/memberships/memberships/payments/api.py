"""HTTP routes of payments (thin: validate, call the use cases): the generic signed webhook,
the treasurer's manual entries, refunds and chargebacks, remittance slips of cheques,
recurring schedules and the lists. Every route is under ``/api/v1/payments`` but the public
webhook."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from tribune_shared.app import ID_PATTERN, IdPath
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.errors import PayloadTooLarge
from tribune_shared.events.contracts import PaymentMethod
from tribune_shared.webhooks import SIGNATURE_HEADER, SIGNATURE_PARAMETERS, TIMESTAMP_HEADER

from memberships.domain import MembershipStatus
from memberships.payments.domain import Interval, ReversalKind, ScheduleStatus
from memberships.payments.lists import PaymentFilter, PaymentLists
from memberships.payments.manual import ManualEntries, ManualEntry, ManualMethod
from memberships.payments.notice import DonorDeclaration, PaymentNotice, PaymentOutcome
from memberships.payments.recording import PaymentRecorder
from memberships.payments.refunds import RefundService, Reversal
from memberships.payments.slips import SlipService
from memberships.service import MembershipsService

router = APIRouter(prefix="/api/v1", tags=["payments"])

may_read_payments = require_roles(Role.treasurer, Role.secretary, Role.dpo)
#: money changes: the treasurer (and administrators)
may_handle_money = require_roles(Role.treasurer)

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=200)]
Limit = Annotated[int, Query(ge=1, le=1000, description="capped by MEMBERSHIPS_MAX_PAGE_SIZE")]
SlipCursor = Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")]


async def service(request: Request) -> MembershipsService:
    return request.app.state.memberships_service


Service = Annotated[MembershipsService, Depends(service)]


async def _refunds(svc: Service) -> RefundService:
    return RefundService(svc.settings, svc.store, clock=svc.clock)


async def _slips(svc: Service) -> SlipService:
    return SlipService(svc.settings, svc.store, clock=svc.clock)


Refunds = Annotated[RefundService, Depends(_refunds)]
Slips = Annotated[SlipService, Depends(_slips)]


def iso_currency(value: str) -> str:
    value = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise ValueError("must be a 3-letter ISO 4217 code such as EUR")
    return value


# ---------------------------------------------------------------- payment webhook


class DonorDeclarationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    natural_person: bool = Field(description="a person, not a company or an association")
    nationality: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2, e.g. FR"
    )
    resides_in_france: bool = False

    def declaration(self) -> DonorDeclaration:
        return DonorDeclaration(
            natural_person=self.natural_person,
            nationality=self.nationality.upper() if self.nationality else None,
            resides_in_france=self.resides_in_france,
        )


class PaymentNoticeIn(BaseModel):
    """The payment webhook's body (unknown fields are ignored: providers add some)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    provider: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    provider_payment_id: str = Field(min_length=1, max_length=200)
    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    amount_cents: int = Field(gt=0, strict=True, description="the maximum is configured")
    currency: str = Field(description="ISO 4217 code, e.g. EUR")
    method: PaymentMethod
    purpose: Literal["dues", "donation"]
    paid_at: AwareDatetime
    plan: str | None = Field(
        default=None, min_length=1, max_length=64, description="dues only; default plan if absent"
    )
    rate: str | None = Field(
        default=None, min_length=1, max_length=64, description="a reduced rate of the plan"
    )
    donor: DonorDeclarationIn | None = Field(
        default=None, description="the donor's declaration (gifts: natural person, residence)"
    )
    elected_official: bool = Field(
        default=False, description="dues of an elected official (outside the yearly ceiling)"
    )
    election_id: str | None = Field(
        default=None, max_length=64, pattern=ID_PATTERN, description="a campaign account's gift"
    )
    schedule_id: str | None = Field(
        default=None,
        max_length=64,
        pattern=ID_PATTERN,
        description="the recurring schedule this payment belongs to (advances it)",
    )

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        return iso_currency(value)

    def notice(self) -> PaymentNotice:
        """The generic webhook's notice: the provider captured the money."""
        return PaymentNotice(
            **self.model_dump(exclude={"donor"}),
            donor=self.donor.declaration() if self.donor else None,
        )


class WebhookResult(BaseModel):
    status: Literal["recorded", "duplicate", "flagged_for_refund"]
    payment_id: str
    refusal: str | None = Field(
        default=None, description="flagged_for_refund: the legal rule the captured money breaks"
    )
    membership_id: str | None = None
    membership_status: MembershipStatus | None = None
    starts_on: date | None = None
    ends_on: date | None = None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_notice(body: bytes) -> PaymentNoticeIn:
    try:
        return PaymentNoticeIn.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        ) from None


@router.post(
    "/webhooks/payments",
    status_code=status.HTTP_201_CREATED,
    tags=["webhooks"],
    summary="A payment provider confirms a payment (signed, public)",
    responses={
        200: {"description": "already recorded (provider retry)", "model": WebhookResult},
        401: {"description": "missing, invalid or stale signature; nothing recorded"},
        404: {"description": "unknown contact; nothing recorded"},
        422: {"description": "invalid field (with the reason); nothing recorded"},
    },
    openapi_extra={
        "parameters": SIGNATURE_PARAMETERS,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PaymentNoticeIn.model_json_schema()}},
        },
    },
)
async def payment_webhook(request: Request, response: Response, svc: Service) -> WebhookResult:
    # The signature covers the raw bytes: verify before parsing anything.
    body = await _read_body(request, svc.settings.webhook_max_body_bytes)
    svc.verify_webhook(
        request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), body
    )
    notice = _parse_notice(body)
    # recorded with the payments arriving at the same time (one shared transaction)
    recorder: PaymentRecorder = request.app.state.payment_recorder
    outcome = await recorder.record(notice.notice())
    if outcome.status == "duplicate":
        response.status_code = status.HTTP_200_OK
    m = outcome.membership
    return WebhookResult(
        status=outcome.status,
        payment_id=outcome.payment_id,
        refusal=outcome.refusal,
        membership_id=outcome.membership_id,
        membership_status=m.status if m else None,
        starts_on=m.starts_on if m else None,
        ends_on=m.ends_on if m else None,
    )


# ---------------------------------------------------------------- payments: views


class Reversed(BaseModel):
    refund_id: str
    kind: ReversalKind
    reason: str
    reference: str
    by: str | None = Field(description="the user who entered it; None: the provider reported it")
    source: Literal["treasurer", "provider"]
    at: datetime


class PaymentView(BaseModel):
    payment_id: str
    provider: str
    provider_payment_id: str
    contact_id: str
    amount_cents: int
    currency: str
    method: PaymentMethod
    purpose: Literal["dues", "donation"]
    status: str = Field(
        default="accepted", description="accepted | flagged_for_refund | refunded | charged_back"
    )
    plan: str | None
    rate: str | None = None
    amount_check: dict[str, Any] | None = Field(
        default=None, description="what the plan expected against what was paid ('flagged')"
    )
    paid_at: datetime
    recorded_at: datetime
    membership_id: str | None
    entered_by: str | None = None
    details: dict[str, str] = Field(
        default_factory=dict, description="cheque_number, bank, drawer; transfer reference"
    )
    slip_id: str | None = Field(default=None, description="the remittance slip of a cheque")
    schedule_id: str | None = None
    reversal: Reversed | None = None
    refusal: dict[str, Any] | None = Field(
        default=None, description="flagged_for_refund: the legal rule the money breaks"
    )
    federation_id: str


class PaymentList(BaseModel):
    contact_id: str | None
    items: list[PaymentView]
    next_cursor: str | None = Field(default=None, description="pass as cursor for the next page")


def _payment(doc: dict[str, Any]) -> PaymentView:
    return PaymentView.model_validate({"payment_id": doc["_id"], **doc})


@router.get("/payments", dependencies=[may_read_payments])
async def list_payments(
    svc: Service,
    identity: CurrentIdentity,
    contact_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)
    ] = None,
    federation_id: Annotated[
        str | None,
        Query(min_length=1, max_length=64, pattern=ID_PATTERN, description="a subtree of yours"),
    ] = None,
    status_: Annotated[
        Literal["accepted", "flagged_for_refund", "refunded", "charged_back"] | None,
        Query(alias="status"),
    ] = None,
    method: PaymentMethod | None = None,
    purpose: Literal["dues", "donation"] | None = None,
    amount_flagged: Annotated[
        bool | None, Query(description="only payments whose amount differs from the plan's")
    ] = None,
    unremitted: Annotated[
        bool | None, Query(description="only accepted cheques on no remittance slip yet")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> PaymentList:
    """The payments of the caller's subtree (or of one contact), newest first, paged."""
    filters = PaymentFilter(
        contact_id=contact_id,
        federation_id=federation_id,
        status=status_,
        method=method,
        purpose=purpose,
        amount_flagged=amount_flagged,
        unremitted=unremitted,
    )
    if contact_id is not None:  # an unknown or out-of-subtree contact is 404
        await svc.payments(identity, contact_id)
    docs, next_cursor = await PaymentLists(svc.settings, svc.store).page(
        identity, filters, limit=limit, cursor=cursor
    )
    return PaymentList(
        contact_id=contact_id, items=[_payment(d) for d in docs], next_cursor=next_cursor
    )


# ---------------------------------------------------------------- manual entry


class ChequeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    number: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9 -]+$")
    bank: str = Field(min_length=1, max_length=120, description="the drawer's bank")
    drawer: str | None = Field(
        default=None, min_length=1, max_length=200, description="the name on the cheque"
    )


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str = Field(min_length=1, max_length=140, description="the transfer's reference")


class ManualEntryIn(BaseModel):
    """A payment a treasurer received: same fields as a provider's notice, plus the
    cheque or transfer details."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contact_id: Id
    amount_cents: int = Field(gt=0, strict=True, description="the maximum is configured")
    currency: str = Field(default="EUR", description="ISO 4217 code")
    method: ManualMethod
    purpose: Literal["dues", "donation"]
    paid_on: date | None = Field(default=None, description="the day it was received (today)")
    plan: str | None = Field(default=None, min_length=1, max_length=64)
    rate: str | None = Field(default=None, min_length=1, max_length=64)
    donor: DonorDeclarationIn | None = None
    elected_official: bool = False
    election_id: Id | None = None
    schedule_id: Id | None = None
    cheque: ChequeIn | None = Field(default=None, description="required for a cheque")
    transfer: TransferIn | None = Field(default=None, description="required for a transfer")

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        return iso_currency(value)

    @model_validator(mode="after")
    def _details_match_method(self) -> ManualEntryIn:
        if self.method == "cheque" and self.cheque is None:
            raise ValueError("a cheque needs 'cheque' (number, bank)")
        if self.method == "transfer" and self.transfer is None:
            raise ValueError("a transfer needs 'transfer' (reference)")
        if self.method != "cheque" and self.cheque is not None:
            raise ValueError("'cheque' is only for method cheque")
        if self.method != "transfer" and self.transfer is not None:
            raise ValueError("'transfer' is only for method transfer")
        return self

    def entry(self) -> ManualEntry:
        details: dict[str, str] = {}
        if self.cheque is not None:
            details = {"cheque_number": self.cheque.number, "bank": self.cheque.bank}
            if self.cheque.drawer:
                details["drawer"] = self.cheque.drawer
        if self.transfer is not None:
            details = {"transfer_reference": self.transfer.reference}
        return ManualEntry(
            **self.model_dump(exclude={"donor", "cheque", "transfer"}),
            donor=self.donor.declaration() if self.donor else None,
            details=details,
        )


class RecordResult(BaseModel):
    status: Literal["recorded", "duplicate", "flagged_for_refund"]
    payment_id: str
    membership_id: str | None = None
    membership_status: MembershipStatus | None = None
    starts_on: date | None = None
    ends_on: date | None = None


def _recorded(outcome: PaymentOutcome) -> RecordResult:
    m = outcome.membership
    return RecordResult(
        status=outcome.status,
        payment_id=outcome.payment_id,
        membership_id=outcome.membership_id,
        membership_status=m.status if m else None,
        starts_on=m.starts_on if m else None,
        ends_on=m.ends_on if m else None,
    )


IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="one per payment the user means (a UUID): the same key again records nothing",
    ),
]


@router.post(
    "/payments/manual",
    status_code=status.HTTP_201_CREATED,
    dependencies=[may_handle_money],
    responses={
        200: {"description": "already recorded with this Idempotency-Key", "model": RecordResult},
        404: {"description": "unknown contact or outside your federations"},
        409: {"description": "a legal rule refuses it (with the rule), or a cheque recorded"},
        422: {"description": "invalid field (with the reason); nothing recorded"},
    },
)
async def enter_payment(
    body: ManualEntryIn,
    idempotency_key: IdempotencyKey,
    response: Response,
    svc: Service,
    identity: CurrentIdentity,
) -> RecordResult:
    """A treasurer enters a cheque, a transfer or cash (dues or a gift)."""
    outcome = await ManualEntries(svc).enter(identity, body.entry(), idempotency_key)
    if outcome.status == "duplicate":
        response.status_code = status.HTTP_200_OK
    return _recorded(outcome)


# ---------------------------------------------------------------- remittance slips


class SlipIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bank: str = Field(min_length=1, max_length=120, description="the bank the cheques go to")
    federation_id: Id | None = Field(default=None, description="default: the caller's own")
    remitted_on: date | None = Field(default=None, description="default: today")
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    payment_ids: list[Id] | None = Field(
        default=None,
        min_length=1,
        description="these cheques only (default: every cheque awaiting remittance)",
    )


class SlipCheque(BaseModel):
    payment_id: str
    cheque_number: str
    bank: str
    paid_on: date
    amount_cents: int


class SlipView(BaseModel):
    slip_id: str
    number: int = Field(description="sequential per federation")
    reference: str = Field(description="<federation>-<number>")
    federation_id: str
    bank: str
    remitted_on: date
    currency: str
    count: int
    total_cents: int
    cheques: list[SlipCheque]
    created_by: str
    created_at: datetime


class SlipPage(BaseModel):
    items: list[SlipView]
    next_cursor: str | None


def _slip(doc: dict[str, Any]) -> SlipView:
    return SlipView.model_validate(
        {"slip_id": doc["_id"], "reference": f"{doc['federation_id']}-{doc['number']:05d}", **doc}
    )


@router.post(
    "/payments/slips", status_code=status.HTTP_201_CREATED, dependencies=[may_handle_money]
)
async def create_slip(body: SlipIn, slips: Slips, identity: CurrentIdentity) -> SlipView:
    """Gather the federation's cheques awaiting remittance into a new slip (409: none)."""
    doc = await slips.create(identity, **body.model_dump())
    return _slip(doc)


@router.get("/payments/slips", dependencies=[may_handle_money])
async def list_slips(
    slips: Slips,
    identity: CurrentIdentity,
    federation_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)
    ] = None,
    limit: Limit = 50,
    cursor: SlipCursor = None,
) -> SlipPage:
    docs, more = await slips.page(identity, federation_id=federation_id, limit=limit, before=cursor)
    return SlipPage(
        items=[_slip(d) for d in docs], next_cursor=docs[-1]["_id"] if more and docs else None
    )


@router.get("/payments/slips/{slip_id}", dependencies=[may_handle_money])
async def read_slip(slip_id: IdPath, slips: Slips, identity: CurrentIdentity) -> SlipView:
    return _slip(await slips.get(identity, slip_id))


def _file_name(doc: dict[str, Any], ext: str) -> str:
    return f"bordereau-{doc['federation_id']}-{doc['number']:05d}.{ext}"


@router.get(
    "/payments/slips/{slip_id}/csv",
    dependencies=[may_handle_money],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def slip_csv(slip_id: IdPath, slips: Slips, identity: CurrentIdentity) -> Response:
    doc, text = await slips.csv(identity, slip_id)
    return Response(
        text.encode(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{_file_name(doc, "csv")}"'},
    )


@router.get(
    "/payments/slips/{slip_id}/pdf",
    dependencies=[may_handle_money],
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
async def slip_pdf(slip_id: IdPath, slips: Slips, identity: CurrentIdentity) -> Response:
    doc, data = await slips.pdf(identity, slip_id)
    return Response(
        data,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{_file_name(doc, "pdf")}"'},
    )


# ---------------------------------------------------------------- recurring schedules


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    contact_id: Id
    amount_cents: int = Field(gt=0, strict=True)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    purpose: Literal["dues", "donation"]
    interval: Interval
    next_due_on: date = Field(description="the first due date (today or later)")
    method: PaymentMethod
    provider: str = Field(
        default="manual", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"
    )
    plan: str | None = Field(default=None, min_length=1, max_length=64, description="dues")
    rate: str | None = Field(default=None, min_length=1, max_length=64, description="dues")

    @model_validator(mode="after")
    def _plan_for_dues(self) -> ScheduleIn:
        if self.purpose != "dues" and (self.plan or self.rate):
            raise ValueError("plan and rate are for dues only")
        return self


class MissedDue(BaseModel):
    due_on: date
    at: datetime


class ScheduleView(BaseModel):
    schedule_id: str
    contact_id: str
    amount_cents: int
    currency: str
    purpose: Literal["dues", "donation"]
    interval: Interval
    next_due_on: date
    method: PaymentMethod
    provider: str
    plan: str | None = None
    rate: str | None = None
    status: ScheduleStatus
    payments: int = Field(description="payments that advanced it")
    last_payment_id: str | None = None
    missed: list[MissedDue]
    federation_id: str
    created_by: str
    created_at: datetime


class SchedulePage(BaseModel):
    items: list[ScheduleView]
    next_cursor: str | None


class ScheduleChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(default="", max_length=500)


def _schedule(doc: dict[str, Any]) -> ScheduleView:
    return ScheduleView.model_validate({"schedule_id": doc["_id"], **doc})


@router.post(
    "/payments/schedules", status_code=status.HTTP_201_CREATED, dependencies=[may_handle_money]
)
async def create_schedule(
    body: ScheduleIn, svc: Service, identity: CurrentIdentity
) -> ScheduleView:
    """A person's recurring dues or gift (one open schedule per person and purpose)."""
    return _schedule(await svc.schedules.create(identity, body.model_dump()))


@router.get("/payments/schedules", dependencies=[may_handle_money])
async def list_schedules(
    svc: Service,
    identity: CurrentIdentity,
    contact_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)
    ] = None,
    status_: Annotated[ScheduleStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    cursor: SlipCursor = None,
) -> SchedulePage:
    docs, more = await svc.schedules.page(
        identity, contact_id=contact_id, status=status_, limit=limit, before=cursor
    )
    return SchedulePage(
        items=[_schedule(d) for d in docs], next_cursor=docs[-1]["_id"] if more and docs else None
    )


@router.get("/payments/schedules/{schedule_id}", dependencies=[may_handle_money])
async def read_schedule(
    schedule_id: IdPath, svc: Service, identity: CurrentIdentity
) -> ScheduleView:
    return _schedule(await svc.schedules.get(identity, schedule_id))


@router.post("/payments/schedules/{schedule_id}/{action}", dependencies=[may_handle_money])
async def change_schedule(
    schedule_id: IdPath,
    action: Literal["pause", "resume", "cancel"],
    svc: Service,
    identity: CurrentIdentity,
    body: ScheduleChange | None = None,
) -> ScheduleView:
    """pause (no due date is missed while paused), resume (from the next due date from
    today), cancel (final). 409 from a status that does not allow it."""
    reason = body.reason if body else ""
    return _schedule(await svc.schedules.change(identity, schedule_id, action, reason))


# ---------------------------------------------------------------- one payment, refunds


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ReversalKind = Field(description="refund (money sent back) or chargeback (bank claim)")
    reason: str = Field(min_length=1, max_length=500)
    reference: str | None = Field(
        default=None, min_length=1, max_length=200, description="the bank's or provider's id"
    )


class RefundResult(BaseModel):
    status: Literal["reversed", "duplicate"]
    refund_id: str
    payment_id: str
    kind: ReversalKind
    payment_status: str
    membership_id: str | None
    membership_status: str | None = Field(description="after the reversal (None: untouched)")
    ends_on: date | None = Field(description="the membership's paid period now ends on")


def _reversal(r: Reversal) -> RefundResult:
    return RefundResult.model_validate(r, from_attributes=True)


@router.get("/payments/{payment_id}", dependencies=[may_read_payments])
async def read_payment(payment_id: IdPath, svc: Service, identity: CurrentIdentity) -> PaymentView:
    """One payment with its status and audit trail (404 outside the caller's subtree)."""
    return _payment(await PaymentLists(svc.settings, svc.store).get(identity, payment_id))


@router.post(
    "/payments/{payment_id}/refund",
    dependencies=[may_handle_money],
    responses={409: {"description": "already refunded or charged back"}},
)
async def refund_payment(
    payment_id: IdPath, body: RefundIn, refunds: Refunds, identity: CurrentIdentity
) -> RefundResult:
    """Refund (or record the chargeback of) a payment in full: its status, the standing it
    bought and the totals it counted in are reversed, with the audit trail."""
    return _reversal(
        await refunds.refund(
            identity, payment_id, kind=body.kind, reason=body.reason, reference=body.reference
        )
    )
