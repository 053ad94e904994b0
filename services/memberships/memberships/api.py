"""HTTP routes of the memberships service (thin: validate, call the service)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from tribune_shared.app import ID_PATTERN, IdQuery
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.errors import PayloadTooLarge
from tribune_shared.events.contracts import PaymentMethod
from tribune_shared.webhooks import SIGNATURE_HEADER, SIGNATURE_PARAMETERS, TIMESTAMP_HEADER

from memberships.domain import MembershipStatus
from memberships.payments.notice import DonorDeclaration, PaymentNotice
from memberships.service import MembershipsService

router = APIRouter(prefix="/api/v1", tags=["memberships"])

may_read_payments = require_roles(Role.treasurer, Role.secretary, Role.dpo)


def service(request: Request) -> MembershipsService:
    return request.app.state.memberships_service


Service = Annotated[MembershipsService, Depends(service)]


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

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        value = value.strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError("must be a 3-letter ISO 4217 code such as EUR")
        return value

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
    outcome = await svc.record_payment(notice.notice())
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


# ---------------------------------------------------------------- reads


class MembershipView(BaseModel):
    membership_id: str
    contact_id: str
    plan: str
    status: MembershipStatus = Field(description="at the requested day (time applied)")
    starts_on: date | None
    ends_on: date | None
    grace_ends_on: date | None
    in_good_standing: bool = Field(description="à jour de cotisation: active or in grace")
    federation_id: str


class MembershipList(BaseModel):
    contact_id: str
    on: date
    items: list[MembershipView]


class PaymentView(BaseModel):
    payment_id: str
    provider: str
    provider_payment_id: str
    contact_id: str
    amount_cents: int
    currency: str
    method: PaymentMethod
    purpose: Literal["dues", "donation"]
    plan: str | None
    paid_at: datetime
    recorded_at: datetime
    membership_id: str | None
    federation_id: str


class PaymentList(BaseModel):
    contact_id: str
    items: list[PaymentView]


@router.get("/memberships")
async def list_memberships(
    contact_id: IdQuery,
    svc: Service,
    identity: CurrentIdentity,
    on: Annotated[date | None, Query(description="standing at this day (default today)")] = None,
) -> MembershipList:
    day = on or svc.today()
    items = await svc.memberships(identity, contact_id, day)
    return MembershipList(
        contact_id=contact_id, on=day, items=[MembershipView.model_validate(i) for i in items]
    )


@router.get("/payments", dependencies=[may_read_payments])
async def list_payments(
    contact_id: IdQuery, svc: Service, identity: CurrentIdentity
) -> PaymentList:
    items = await svc.payments(identity, contact_id)
    return PaymentList(contact_id=contact_id, items=[PaymentView.model_validate(i) for i in items])
