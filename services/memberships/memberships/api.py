"""HTTP routes of the memberships service (thin: validate, call the service)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from tribune_shared.app import IdQuery
from tribune_shared.auth import CurrentIdentity

from memberships.domain import MembershipStatus
from memberships.service import MembershipsService

router = APIRouter(prefix="/api/v1", tags=["memberships"])


async def service(request: Request) -> MembershipsService:
    return request.app.state.memberships_service


Service = Annotated[MembershipsService, Depends(service)]


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
