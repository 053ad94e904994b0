"""HTTP routes of segments: saved filters of a federation, their preview and export."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.client_info import ClientInfo

from contacts.export_service import ExportRequest, ExportsService, csv_response
from contacts.segment_service import Preview, Segment, SegmentsService

router = APIRouter(prefix="/api/v1/segments", tags=["segments"])

SegmentId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="uuid4 hex")]
may_edit = require_roles(Role.secretary, Role.campaign_manager)
FilterBody = Annotated[
    dict[str, Any],
    Field(description="a filter of the segment language (see contacts.filter_language)"),
]


async def segments(request: Request) -> SegmentsService:
    return request.app.state.segments_service


async def exports(request: Request) -> ExportsService:
    return request.app.state.exports_service


Segments = Annotated[SegmentsService, Depends(segments)]
Exports = Annotated[ExportsService, Depends(exports)]
PreviewSize = Annotated[int | None, Query(ge=0, description="sample size (bounded)")]


class SegmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=1_000, description="unique in the federation (any case)")
    description: str = Field(default="", max_length=10_000)
    filter: FilterBody
    federation_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="the caller's by default"
    )


class SegmentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=1_000)
    description: str | None = Field(default=None, max_length=10_000)
    filter: FilterBody | None = None
    version: int | None = Field(default=None, ge=1, description="409 if it changed since")


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: FilterBody
    size: int | None = Field(default=None, ge=0)


class SegmentPage(BaseModel):
    items: list[Segment]
    next_cursor: str | None


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[may_edit])
async def create_segment(body: SegmentCreate, svc: Segments, identity: CurrentIdentity) -> Segment:
    return await svc.create(
        identity,
        name=body.name,
        description=body.description,
        raw_filter=body.filter,
        federation_id=body.federation_id,
    )


@router.get("")
async def list_segments(
    svc: Segments,
    identity: CurrentIdentity,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
) -> SegmentPage:
    """Segments of the caller's subtree."""
    items, next_cursor = await svc.list_page(identity, limit=limit, cursor=cursor)
    return SegmentPage(items=items, next_cursor=next_cursor)


@router.post("/preview")
async def preview_filter(
    body: PreviewRequest, request: Request, svc: Segments, identity: CurrentIdentity
) -> Preview:
    """How many of the caller's contacts a filter matches, and a sample of them."""
    flt = await svc.parse(identity, body.filter)
    client = ClientInfo.from_headers(request.headers)
    return await svc.preview(identity, flt, identity.scope(), body.size, client)


@router.get("/{segment_id}")
async def get_segment(segment_id: SegmentId, svc: Segments, identity: CurrentIdentity) -> Segment:
    return await svc.get(identity, segment_id)


@router.patch("/{segment_id}", dependencies=[may_edit])
async def update_segment(
    segment_id: SegmentId, body: SegmentPatch, svc: Segments, identity: CurrentIdentity
) -> Segment:
    return await svc.update(
        identity,
        segment_id,
        name=body.name,
        description=body.description,
        raw_filter=body.filter,
        version=body.version,
    )


@router.delete("/{segment_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[may_edit])
async def delete_segment(
    segment_id: SegmentId, svc: Segments, identity: CurrentIdentity
) -> Response:
    await svc.delete(identity, segment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{segment_id}/preview")
async def preview_segment(
    segment_id: SegmentId,
    request: Request,
    svc: Segments,
    identity: CurrentIdentity,
    size: PreviewSize = None,
) -> Preview:
    """How many contacts the segment matches now (in its federation's subtree), and a
    sample of them."""
    _, flt, scope = await svc.resolve(identity, segment_id)
    client = ClientInfo.from_headers(request.headers)
    return await svc.preview(identity, flt, scope, size, client)


@router.get(
    "/{segment_id}/export", response_class=Response, responses={200: {"content": {"text/csv": {}}}}
)
async def export_segment(
    segment_id: SegmentId,
    request: Request,
    exp: Exports,
    identity: CurrentIdentity,
    delimiter: Annotated[Literal[",", ";", "\t"], Query()] = ",",
) -> Response:
    """The segment's contacts as CSV (see POST /api/v1/contacts/exports)."""
    export = await exp.start(
        identity, ExportRequest(segment_id=segment_id, delimiter=delimiter), request.headers
    )
    return csv_response(export)
