"""HTTP routes of donations (thin: validate, call the service): the pre-capture check and
the elections whose campaign accounts take gifts. Treasurers and administrators, in their
own federation subtree."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from tribune_shared.app import ID_PATTERN, IdPath
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.events import utcnow
from tribune_shared.events.contracts import PaymentMethod

from memberships.donations.rules import Assessment, Rule
from memberships.donations.service import (
    ElectionInput,
    Elections,
    GiftQuestion,
    GiftRules,
    room_view,
)
from memberships.payments.api import DonorDeclarationIn
from memberships.service import MembershipsService

router = APIRouter(prefix="/api/v1/donations", tags=["donations"])

may_manage = require_roles(Role.treasurer)  # and administrators
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]


def _memberships(request: Request) -> MembershipsService:
    return request.app.state.memberships_service


async def gift_rules(request: Request) -> GiftRules:
    return _memberships(request).gifts


async def elections(request: Request) -> Elections:
    svc = _memberships(request)
    return Elections(svc.settings, svc.store)


Rules = Annotated[GiftRules, Depends(gift_rules)]
ElectionsService = Annotated[Elections, Depends(elections)]


# ---------------------------------------------------------------- the pre-capture check


class CheckIn(BaseModel):
    """A payment about to be taken (a payment page asks before capturing the money)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contact_id: Id
    amount_cents: int = Field(gt=0, strict=True)
    method: PaymentMethod
    purpose: Literal["dues", "donation"] = "donation"
    donor: DonorDeclarationIn | None = Field(
        default=None, description="the donor's declaration (required for gifts)"
    )
    elected_official: bool = Field(
        default=False, description="dues of an elected official (outside the yearly ceiling)"
    )
    election_id: Id | None = Field(
        default=None, description="a gift to this election's campaign account"
    )
    paid_at: AwareDatetime | None = Field(
        default=None, description="when it would be paid (default now): the year and period"
    )


class RefusalView(BaseModel):
    rule: Rule
    reason: str
    field: str | None = None


class RoomView(BaseModel):
    ceiling_cents: int
    given_cents: int = Field(description="already counted (accepted payments)")
    remaining_cents: int = Field(description="what may still be given, before this payment")


class CheckOut(BaseModel):
    accepted: bool = Field(description="the payment would be accepted now")
    refusals: list[RefusalView] = Field(description="every rule it breaks, with the reason")
    year: int = Field(description="the calendar year the payment counts in")
    party: RoomView | None = Field(
        description="the yearly ceiling (null: the payment does not count towards it)"
    )
    election_id: str | None
    campaign: RoomView | None = Field(description="the election's ceiling (campaign gifts)")


def _check_out(assessment: Assessment, year: int, election_id: str | None) -> CheckOut:
    def room(r: Any) -> RoomView | None:
        view = room_view(r)
        return RoomView(**view) if view else None

    return CheckOut(
        accepted=assessment.accepted,
        refusals=[
            RefusalView(rule=r.rule, reason=r.reason, field=r.field) for r in assessment.refusals
        ],
        year=year,
        party=room(assessment.party_room),
        election_id=election_id,
        campaign=room(assessment.campaign_room),
    )


@router.post(
    "/check",
    dependencies=[may_manage],
    summary="Would this gift or due be accepted now? Every reason, and the room left",
    responses={
        404: {"description": "unknown contact or election (or outside the caller's subtree)"},
        422: {"description": "invalid field (with the reason)"},
    },
)
async def check(body: CheckIn, rules: Rules, identity: CurrentIdentity) -> CheckOut:
    now = utcnow()
    question = GiftQuestion(
        contact_id=body.contact_id,
        amount_cents=body.amount_cents,
        method=body.method,
        purpose=body.purpose,
        donor=body.donor.declaration() if body.donor else None,
        elected_official=body.elected_official,
        election_id=body.election_id,
        paid_at=body.paid_at,
    )
    assessment = await rules.check(identity, question, now)
    year = (body.paid_at or now).astimezone(rules.settings.zone).year
    return _check_out(assessment, year, body.election_id)


# ---------------------------------------------------------------- elections


Name = Annotated[str, Field(min_length=1, max_length=200)]


class CandidateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name


class FinancialAgentIn(BaseModel):
    """The candidate's mandataire (code électoral L52-4): a person (mandataire financier)
    or an association de financement électorale; only they collect the gifts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["individual", "association"]
    name: Name
    declared_on: date | None = Field(
        default=None, description="declared to the prefecture on this day"
    )


class ElectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = Field(description="e.g. Municipales 2026, Paris 11e")
    federation_id: Id | None = Field(
        default=None, description="the federation it belongs to (default: the caller's)"
    )
    starts_on: date = Field(description="first day gifts are collected (code électoral L52-4)")
    ends_on: date = Field(description="last day gifts are collected (account filed)")
    candidate: CandidateIn
    financial_agent: FinancialAgentIn


class ElectionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name | None = None
    starts_on: date | None = None
    ends_on: date | None = None
    candidate: CandidateIn | None = None
    financial_agent: FinancialAgentIn | None = None


class CandidateView(BaseModel):
    name: str


class FinancialAgentView(BaseModel):
    kind: Literal["individual", "association"]
    name: str
    declared_on: date | None = None


class ElectionView(BaseModel):
    election_id: str
    name: str
    federation_id: str
    starts_on: date
    ends_on: date
    candidate: CandidateView
    financial_agent: FinancialAgentView
    created_at: datetime
    updated_at: datetime


class ElectionList(BaseModel):
    items: list[ElectionView]


def _view(doc: dict[str, Any]) -> ElectionView:
    return ElectionView.model_validate({"election_id": doc["_id"], **doc})


@router.post(
    "/elections",
    status_code=status.HTTP_201_CREATED,
    dependencies=[may_manage],
    responses={404: {"description": "federation outside the caller's subtree"}},
)
async def create_election(
    body: ElectionIn, svc: ElectionsService, identity: CurrentIdentity
) -> ElectionView:
    doc = await svc.create(
        identity,
        ElectionInput(
            name=body.name,
            starts_on=body.starts_on,
            ends_on=body.ends_on,
            candidate=body.candidate.model_dump(mode="json"),
            financial_agent=body.financial_agent.model_dump(mode="json"),
            federation_id=body.federation_id,
        ),
    )
    return _view(doc)


@router.get("/elections", dependencies=[may_manage])
async def list_elections(svc: ElectionsService, identity: CurrentIdentity) -> ElectionList:
    return ElectionList(items=[_view(d) for d in await svc.list(identity)])


@router.get("/elections/{election_id}", dependencies=[may_manage])
async def get_election(
    election_id: IdPath, svc: ElectionsService, identity: CurrentIdentity
) -> ElectionView:
    return _view(await svc.get(identity, election_id))


@router.patch("/elections/{election_id}", dependencies=[may_manage])
async def update_election(
    election_id: IdPath, body: ElectionPatch, svc: ElectionsService, identity: CurrentIdentity
) -> ElectionView:
    # nested objects as stored (JSON types); the period as days, which the service checks
    changes: dict[str, Any] = body.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    for day in ("starts_on", "ends_on"):
        if (value := getattr(body, day)) is not None:
            changes[day] = value
    return _view(await svc.update(identity, election_id, changes))


@router.delete(
    "/elections/{election_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[may_manage],
    responses={409: {"description": "gifts are recorded for this election"}},
)
async def delete_election(
    election_id: IdPath, svc: ElectionsService, identity: CurrentIdentity
) -> Response:
    await svc.delete(identity, election_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
