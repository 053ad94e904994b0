"""Routes of CSV imports, likely duplicates and merges (declared before the contacts
router's ``/{contact_id}`` so "imports", "duplicates" and "merges" are not taken for ids)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.events.contracts import DataOrigin
from tribune_shared.limits import larger_body

from contacts.domain import Contact
from contacts.import_service import ImportsService
from contacts.merge import MERGE_FIELDS
from contacts.merge_service import MergeService

router = APIRouter(prefix="/api/v1/contacts", tags=["imports"])

Id = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
may_import = require_roles(Role.secretary)
may_merge = require_roles(Role.secretary)
may_read_merges = require_roles(Role.secretary, Role.dpo)


async def imports(request: Request) -> ImportsService:
    return request.app.state.imports_service


async def merges(request: Request) -> MergeService:
    return request.app.state.merge_service


Imports = Annotated[ImportsService, Depends(imports)]
Merges = Annotated[MergeService, Depends(merges)]


# ---------------------------------------------------------------- models


class FileInfo(BaseModel):
    name: str
    bytes: int
    encoding: str
    delimiter: str


class ColumnOut(BaseModel):
    column: str
    field: str


class Progress(BaseModel):
    rows_done: int
    total: int | None = Field(description="data rows of the file, once counted")
    percent: float | None
    rate_per_second: float = Field(description="rows per second of the current run")
    elapsed_seconds: float


class Counts(BaseModel):
    created: int
    updated: int = Field(description="existing contacts a row added data to")
    merged: int = Field(description="rows folded into a contact an earlier row made or changed")
    unchanged: int = Field(description="rows naming an existing contact with nothing new")
    skipped: int = Field(description="duplicates left aside (duplicates=skip)")
    rejected: int
    flagged: int = Field(description="duplicates listed for review (flagged.csv)")


class ImportJob(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    federation_id: str
    created_at: datetime
    created_by: str
    started_at: datetime | None
    finished_at: datetime | None
    file: FileInfo
    header: list[str]
    mapping: list[ColumnOut]
    unmapped_columns: list[str]
    origin: DataOrigin
    duplicates: Literal["merge", "skip", "flag"]
    tags: list[str]
    progress: Progress
    counts: Counts
    cancel_requested: bool
    error: str | None
    links: dict[str, str]


class ImportPage(BaseModel):
    items: list[ImportJob]
    next_cursor: str | None


_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "origin_kind": {"type": "string"},
                        "origin_detail": {"type": "string"},
                        "mapping": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["file"],
                }
            },
        },
    },
    "parameters": [
        {
            "name": n,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": d,
        }
        for n, d in (
            (
                "origin_kind",
                "required: web_form, event, membership, petition, electoral_list, "
                "rented_file, import or manual",
            ),
            ("origin_detail", "required: where the file comes from"),
            ("origin_collected_on", "YYYY-MM-DD"),
            ("federation_id", "the caller's federation by default; else one of its subtree"),
            ("duplicates", "merge (default), skip or flag"),
            (
                "mapping",
                "column=field, repeatable (field: given_name, family_name, email, phone, "
                "address_line, postcode, commune, commune_insee, department, constituency, "
                "polling_station, birth_year, tags, custom.<name>, ignore)",
            ),
            ("delimiter", "comma, semicolon or tab (detected by default)"),
            ("encoding", "utf-8, utf-8-sig, utf-16, cp1252 or latin-1 (detected by default)"),
            ("tag", "a tag added to every imported contact, repeatable"),
            ("filename", "the file's name (raw uploads)"),
        )
    ],
}


# ---------------------------------------------------------------- imports


@router.post(
    "/imports",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[may_import],
    # the one route taking more than a JSON command: streamed, only once the caller may
    # import (no body parameter, so nothing reads it before the dependencies)
    openapi_extra={**_UPLOAD_DOC, **larger_body("import_max_body_bytes")},
    responses={413: {"description": "file too large"}, 415: {"description": "not a CSV"}},
)
async def upload_import(request: Request, svc: Imports, identity: CurrentIdentity) -> JSONResponse:
    """Upload a CSV (the body, or the ``file`` part of a form): 202 with the queued job.
    The contacts worker imports it in batches; follow ``progress`` on the job."""
    query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, []).append(value)
    job = await svc.upload(
        identity,
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
        query=query,
        body=request.stream(),
    )
    body = ImportJob.model_validate(job).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": job["links"]["self"]})


@router.get("/imports", dependencies=[may_import])
async def list_imports(
    svc: Imports,
    identity: CurrentIdentity,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
) -> ImportPage:
    """Imports of the caller's subtree, newest first."""
    items, next_cursor = await svc.list_page(identity, limit=limit, cursor=cursor)
    return ImportPage(items=[ImportJob.model_validate(i) for i in items], next_cursor=next_cursor)


@router.get("/imports/{job_id}", dependencies=[may_import])
async def get_import(job_id: Id, svc: Imports, identity: CurrentIdentity) -> ImportJob:
    return ImportJob.model_validate(await svc.get(identity, job_id))


@router.post(
    "/imports/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, dependencies=[may_import]
)
async def cancel_import(job_id: Id, svc: Imports, identity: CurrentIdentity) -> ImportJob:
    """Cancel: a queued job at once, a running one after its current batch (contacts
    already imported stay). 409 if it already ended."""
    return ImportJob.model_validate(await svc.cancel(identity, job_id))


def _csv(name: str, lines) -> StreamingResponse:
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/imports/{job_id}/rejected.csv",
    dependencies=[may_import],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def rejected_rows(job_id: Id, svc: Imports, identity: CurrentIdentity) -> StreamingResponse:
    """The rows that were not imported: row number (the header is row 1), reason, then
    the row as it was (cells, the header's too, starting with = + - @ are neutralised)."""
    return _csv(*await svc.issues_csv(identity, job_id, "rejected"))


@router.get(
    "/imports/{job_id}/flagged.csv",
    dependencies=[may_import],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def flagged_rows(job_id: Id, svc: Imports, identity: CurrentIdentity) -> StreamingResponse:
    """Duplicates left for review (duplicates=flag, or a row matching two contacts), with
    the existing contact's id."""
    return _csv(*await svc.issues_csv(identity, job_id, "flagged"))


# ---------------------------------------------------------------- duplicates and merges


class LikelyDuplicate(BaseModel):
    score: float = Field(description="0-100, name similarity")
    postcode: str
    federation_id: str
    a: Contact
    b: Contact


class DuplicatesPage(BaseModel):
    items: list[LikelyDuplicate]
    next_cursor: str | None
    threshold: float
    scanned: int = Field(description="contacts read for this page")
    partial_postcode: str | None = Field(
        description="a postcode with more contacts than are read per page: compared in part"
    )


@router.get("/duplicates", dependencies=[may_merge])
async def likely_duplicates(
    svc: Merges,
    identity: CurrentIdentity,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    threshold: Annotated[float | None, Query(ge=50, le=100)] = None,
    federation_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> DuplicatesPage:
    """Likely duplicates of the caller's subtree for review: alike names at the same
    postcode in the same federation (exact email/phone duplicates cannot exist)."""
    page = await svc.likely_duplicates(
        identity, limit=limit, cursor=cursor, threshold=threshold, federation_id=federation_id
    )
    return DuplicatesPage.model_validate(page)


MergeChoice = Literal["auto", "survivor", "merged", "union"]


class MergeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    merged_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="the contact that disappears")
    fields: dict[str, MergeChoice] = Field(
        default_factory=dict,
        description="per field, whose value survives: "
        + "; ".join(f"{n}: {'|'.join(c.value for c in cs)}" for n, cs in MERGE_FIELDS.items())
        + " (the first is the default)",
    )
    survivor_version: int | None = Field(default=None, ge=1, description="the version you read")
    merged_version: int | None = Field(default=None, ge=1, description="the version you read")


@router.post("/{contact_id}/merge", dependencies=[may_merge])
async def merge_contacts(
    contact_id: Id, body: MergeBody, svc: Merges, identity: CurrentIdentity
) -> Contact:
    """Merge ``merged_id`` into this contact (the survivor): its version goes up, the
    merged contact is deleted, the merge is logged, contact-merged and contact-updated
    are published."""
    return await svc.merge(
        identity,
        contact_id,
        body.merged_id,
        body.fields,
        survivor_version=body.survivor_version,
        merged_version=body.merged_version,
    )


class MergeRecord(BaseModel):
    id: str
    federation_id: str
    surviving_contact_id: str
    merged_contact_id: str
    merged_by: str
    merged_by_email: str | None = None
    merged_at: datetime
    choices: dict[str, str]
    changed_fields: list[str]
    surviving_version: int
    merged_version: int
    merged_origin: dict[str, Any] | None = None


class MergePage(BaseModel):
    items: list[MergeRecord]
    next_cursor: str | None


@router.get("/merges", dependencies=[may_read_merges])
async def merge_log(
    svc: Merges,
    identity: CurrentIdentity,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
) -> MergePage:
    """Who merged what, newest first (the caller's subtree)."""
    items, next_cursor = await svc.merge_log(identity, limit=limit, cursor=cursor)
    return MergePage(items=[MergeRecord.model_validate(i) for i in items], next_cursor=next_cursor)
