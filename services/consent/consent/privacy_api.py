"""HTTP routes of privacy requests (the DPO's alone) and consent's part of an access export."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from tribune_shared.app import ID_PATTERN, IdPath
from tribune_shared.auth import CurrentIdentity
from tribune_shared.errors import InvalidField
from tribune_shared.privacy import dpo_router

from consent.privacy import RequestKind, RequestStatus
from consent.privacy_service import PrivacyService

ContactId = IdPath
RequestId = IdPath

router = dpo_router("/api/v1/privacy")
person_router = dpo_router("/api/v1/consents")


async def service(request: Request) -> PrivacyService:
    return request.app.state.privacy_service


Service = Annotated[PrivacyService, Depends(service)]


class NewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: RequestKind
    contact_id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    received_at: AwareDatetime | None = Field(
        default=None, description="when the person's request arrived (default: now)"
    )
    note: str | None = Field(default=None, max_length=2000)


class ServiceCompletion(BaseModel):
    service: str
    completed_at: datetime
    kept_for_legal_reasons: list[str]


class ErasureReceipt(BaseModel):
    services: list[ServiceCompletion]
    kept_for_legal_reasons: list[str]
    key_destroyed_at: datetime | None
    keys_destroyed: list[str] = Field(
        default_factory=list,
        description="contact ids whose data key was destroyed (the person's and those merged "
        "into them): a restore of an older vault backup destroys them again",
    )
    completed_at: datetime


class Export(BaseModel):
    at: datetime
    by: str
    services: list[str]


class PrivacyRequest(BaseModel):
    request_id: str
    kind: RequestKind
    contact_id: str
    federation_id: str
    status: RequestStatus
    received_at: datetime
    deadline: datetime
    overdue: bool = Field(description="past the deadline and not answered")
    recorded_at: datetime
    recorded_by: str
    origin: str = Field(description='"dpo", or "retention:<rule>" when a clock ran out')
    action: str | None = Field(default=None, description="erasure: erase | anonymise")
    note: str | None = None
    completed_at: datetime | None = None
    expected_services: list[str] | None = None
    services: dict[str, Any] | None = Field(
        default=None, description="erasure: the services that finished, so far"
    )
    key_destroyed_at: datetime | None = None
    keys_destroyed: list[str] = Field(default_factory=list)
    receipt: ErasureReceipt | None = None
    exports: list[Export] = Field(default_factory=list)


class PrivacyRequestList(BaseModel):
    items: list[PrivacyRequest]


class ExportDone(BaseModel):
    model_config = ConfigDict(extra="forbid")

    services: list[str] = Field(max_length=20, description="services whose data was exported")


@router.post("/requests", status_code=status.HTTP_201_CREATED)
async def create_request(
    body: NewRequest, svc: Service, identity: CurrentIdentity
) -> PrivacyRequest:
    """Record an access or erasure request (an erasure starts at once: it fans out)."""
    doc = await svc.create(identity, body.kind, body.contact_id, body.received_at, body.note)
    return PrivacyRequest.model_validate(doc)


@router.get("/requests")
async def list_requests(
    svc: Service,
    identity: CurrentIdentity,
    overdue: Annotated[bool | None, Query(description="only overdue (true) or not (false)")] = None,
    kind: RequestKind | None = None,
    status: RequestStatus | None = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> PrivacyRequestList:
    if limit is not None and limit > svc.settings.max_page_size:
        raise InvalidField(f"must be at most {svc.settings.max_page_size}", field="limit")
    docs = await svc.list(identity, overdue=overdue, kind=kind, status=status, limit=limit)
    return PrivacyRequestList(items=[PrivacyRequest.model_validate(d) for d in docs])


@router.get("/requests/{request_id}")
async def get_request(
    request_id: RequestId, svc: Service, identity: CurrentIdentity
) -> PrivacyRequest:
    return PrivacyRequest.model_validate(await svc.get(identity, request_id))


@router.post("/requests/{request_id}/exported")
async def export_done(
    request_id: RequestId, body: ExportDone, svc: Service, identity: CurrentIdentity
) -> PrivacyRequest:
    """Called by the gateway once it delivered the access export: answers the request."""
    return PrivacyRequest.model_validate(
        await svc.record_export(identity, request_id, body.services)
    )


@person_router.get("/privacy/{contact_id}")
async def person_data(contact_id: ContactId, svc: Service, identity: CurrentIdentity) -> dict:
    """Everything consent holds on the person: consents with their proof, the full
    history, privacy requests (the access export's consent part)."""
    return await svc.person_data(identity, contact_id)
