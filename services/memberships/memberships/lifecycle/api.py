"""HTTP routes of the membership lifecycle: cancel, the roll (JSON and CSV) and the counts
of a subtree at a day (thin: validate, call the service)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.app import ID_PATTERN, IdPath
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.spreadsheet import BOM, encode_rows

from memberships.domain import MembershipStatus
from memberships.lifecycle.domain import StateOn, roll_header, roll_row
from memberships.lifecycle.service import LifecycleService

router = APIRouter(prefix="/api/v1/memberships", tags=["memberships lifecycle"])

#: who keeps the members' file: the secretary and the treasurer (and admins)
may_keep_members = require_roles(Role.secretary, Role.treasurer)


async def service(request: Request) -> LifecycleService:
    return LifecycleService(request.app.state.settings, request.app.state.store)


Service = Annotated[LifecycleService, Depends(service)]
FederationQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        pattern=ID_PATTERN,
        description="a federation of the caller's subtree (default: the caller's own)",
    ),
]
OnQuery = Annotated[date | None, Query(description="the day (default today)")]


# ---------------------------------------------------------------- cancel


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(
        min_length=1, max_length=5000, description="why (the maximum is configured)"
    )


class Cancelled(BaseModel):
    membership_id: str
    contact_id: str
    status: MembershipStatus
    cancelled_on: date
    reason: str
    federation_id: str


@router.post(
    "/{membership_id}/cancel",
    dependencies=[may_keep_members],
    responses={
        404: {"description": "unknown, or outside the caller's subtree"},
        409: {"description": "already final (lapsed or cancelled)"},
    },
)
async def cancel_membership(
    membership_id: IdPath, body: CancelIn, svc: Service, identity: CurrentIdentity
) -> Cancelled:
    return Cancelled.model_validate(await svc.cancel(identity, membership_id, body.reason))


# ---------------------------------------------------------------- roll and counts


class RollEntry(BaseModel):
    contact_id: str
    given_name: str | None = Field(description="from the people projection (null: unknown)")
    family_name: str | None
    membership_id: str
    plan: str
    state: StateOn = Field(description="active or grace on the day: both in good standing")
    starts_on: date | None
    ends_on: date | None
    grace_ends_on: date | None
    federation_id: str


class Roll(BaseModel):
    federation_id: str
    on: date
    items: list[RollEntry]
    next_after: str | None = Field(description="pass as ``after`` for the next page; null: last")


class Counts(BaseModel):
    federation_id: str
    on: date
    in_good_standing: int = Field(description="active + grace on the day")
    active: int
    grace: int
    lapsed: int
    cancelled: int


@router.get("/roll", dependencies=[may_keep_members])
async def membership_roll(
    svc: Service,
    identity: CurrentIdentity,
    federation_id: FederationQuery = None,
    on: OnQuery = None,
    after: Annotated[
        str | None,
        Query(min_length=1, max_length=64, pattern=ID_PATTERN, description="the last contact id"),
    ] = None,
    limit: Annotated[int | None, Query(ge=1, description="the maximum is configured")] = None,
) -> Roll:
    """The members in good standing on ``on`` in a federation subtree (an internal vote's
    electoral roll), one entry per person, by contact id."""
    return Roll.model_validate(await svc.roll(identity, federation_id, on, after, limit))


@router.get(
    "/roll.csv",
    dependencies=[may_keep_members],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "UTF-8 CSV with a BOM"}},
)
async def membership_roll_csv(
    svc: Service,
    identity: CurrentIdentity,
    federation_id: FederationQuery = None,
    on: OnQuery = None,
) -> StreamingResponse:
    """The whole roll as CSV (cells neutralised against formula injection)."""
    fid, day, batches = await svc.roll_export(identity, federation_id, on)

    async def body() -> AsyncIterator[bytes]:
        yield (BOM + encode_rows([roll_header(True)])).encode()
        async for batch in batches:
            yield encode_rows([roll_row(entry, True) for entry in batch]).encode()

    filename = f"roll-{fid}-{day.isoformat()}.csv"
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/counts", dependencies=[may_keep_members])
async def membership_counts(
    svc: Service,
    identity: CurrentIdentity,
    federation_id: FederationQuery = None,
    on: OnQuery = None,
) -> Counts:
    """Memberships of a subtree by their state on ``on`` (the live dashboard's figures
    are recounted against these)."""
    return Counts.model_validate(await svc.counts(identity, federation_id, on))
