"""HTTP routes of the live figures (thin: validate, call the use cases)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from tribune_shared.app import IdQuery
from tribune_shared.auth import Identity, Role, require_roles

from memberships.live.service import LiveService

router = APIRouter(prefix="/api/v1/live", tags=["live"])

#: the dashboards' readers: counts and totals, no person in them
may_read_figures = require_roles(Role.treasurer, Role.secretary, Role.viewer)
Reader = Annotated[Identity, may_read_figures]


async def service(request: Request) -> LiveService:
    return request.app.state.live_service


Service = Annotated[LiveService, Depends(service)]
FederationQuery = Annotated[
    IdQuery | None, Query(description="a federation of the caller's subtree (default: its own)")
]


class LiveFiguresView(BaseModel):
    federation_id: str
    federation_path: str
    members_in_good_standing: int = Field(description="active or in grace (à jour)")
    members_in_grace: int
    members_lapsed: int
    members_cancelled: int
    year: int = Field(description="the calendar year of the totals (organisation's time zone)")
    dues_cents: int = Field(description="dues received this year, refunds subtracted")
    donations_cents: int = Field(description="donations received this year, refunds subtracted")
    version: int = Field(description="grows whenever these figures change")


@router.get("/memberships")
async def live_memberships(
    svc: Service,
    identity: Reader,
    federation_id: FederationQuery = None,
    year: Annotated[int | None, Query(ge=2000, le=2100, description="default: this year")] = None,
) -> LiveFiguresView:
    """The federation's live figures (its whole subtree), as faust keeps them."""
    return LiveFiguresView.model_validate(await svc.figures(identity, federation_id, year))


@router.get(
    "/memberships/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def live_memberships_stream(
    svc: Service, identity: Reader, federation_id: FederationQuery = None
) -> StreamingResponse:
    """Server-Sent Events: ``event: figures`` with the figures (as GET /memberships) at
    once and whenever they change; ``: keep-alive`` comments while idle."""
    events = await svc.open_stream(identity, federation_id)
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
