"""HTTP routes of message templates (thin: validate, call the service).

Roles: campaign_manager and admin write; campaign_manager, secretary, viewer and admin read
(templates hold no personal data); campaign_manager, secretary and admin preview (a preview
shows a contact's data). Everything within the caller's lineage: its subtree's templates and
its ancestors' (read-only: writes are limited to the subtree); anything else is 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.app import ID_PATTERN, IdPath
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.events.contracts import Channel
from tribune_shared.limits import larger_body

from messaging.settings import SUBJECT_MAX_CHARS, TEMPLATE_PART_MAX_CHARS
from messaging.templates.domain import TEMPLATE_VARIABLES
from messaging.templates.service import TemplateService

router = APIRouter(prefix="/api/v1/templates", tags=["templates"])

may_write = require_roles(Role.campaign_manager)
may_read = require_roles(Role.campaign_manager, Role.secretary, Role.viewer)
may_preview = require_roles(Role.campaign_manager, Role.secretary)

NAME_MAX_CHARS = 200
#: a part, JSON-escaped, is far above the JSON limit
LONG_BODY = larger_body("max_text_body_bytes")
VersionPath = Annotated[int, Path(ge=1, le=1_000_000_000)]
ContactId = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
_VARIABLES = "; ".join(f"{k}: {v}" for k, v in TEMPLATE_VARIABLES.items())


async def service(request: Request) -> TemplateService:
    return request.app.state.template_service


Service = Annotated[TemplateService, Depends(service)]


class TemplateParts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(
        default=None, max_length=SUBJECT_MAX_CHARS, description="email only; one line"
    )
    html: str | None = Field(
        default=None, max_length=TEMPLATE_PART_MAX_CHARS, description="email only; escaped"
    )
    text: str | None = Field(
        default=None,
        max_length=TEMPLATE_PART_MAX_CHARS,
        description="the SMS; for an email, derived from the HTML when absent",
    )


class CreateTemplate(TemplateParts):
    name: str = Field(min_length=1, max_length=NAME_MAX_CHARS)
    channel: Channel = Field(description="email or sms")


class TemplateView(BaseModel):
    template_id: str
    name: str
    channel: Channel
    federation_id: str
    federation_path: str
    latest_version: int
    created_at: datetime
    created_by: str
    updated_at: datetime

    @classmethod
    def of(cls, doc: dict[str, Any]) -> TemplateView:
        return cls.model_validate({**doc, "template_id": doc["_id"]})


class VersionSummary(BaseModel):
    version: int
    frozen: bool = Field(description="used by a sent campaign: it never changes again")
    frozen_at: datetime | None
    created_at: datetime
    created_by: str
    updated_at: datetime


class VersionView(VersionSummary):
    template_id: str
    channel: Channel
    federation_id: str
    subject: str | None
    html: str | None
    text: str
    text_derived: bool = Field(description="the text was derived from the HTML")
    revision: int = Field(description="times the version was written (amendments)")

    @classmethod
    def of(cls, doc: dict[str, Any]) -> VersionView:
        return cls.model_validate({**doc, **doc["parts"]})


class TemplateDetail(TemplateView):
    versions: list[VersionSummary]


class TemplateCreated(BaseModel):
    template: TemplateView
    version: VersionView


class TemplateList(BaseModel):
    items: list[TemplateView]


class PreviewContact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    given_name: str | None = Field(default=None, max_length=200)
    family_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    federation_name: str | None = Field(default=None, max_length=200)


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact: PreviewContact | None = Field(default=None, description="the fields to use")
    contact_id: ContactId | None = Field(
        default=None, description="or a contact of your subtree, as messaging knows it"
    )
    origin: str | None = Field(default=None, min_length=1, max_length=1000)
    sender: str | None = Field(default=None, min_length=1, max_length=NAME_MAX_CHARS)
    campaign_name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX_CHARS)


class PreviewView(BaseModel):
    subject: str | None
    html: str | None
    text: str
    sms: dict[str, Any] | None = Field(default=None, description="SMS segments of the text")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[may_write],
    openapi_extra=LONG_BODY,
    description=f"A template of your federation and its version 1. Variables: {_VARIABLES}.",
)
async def create_template(
    body: CreateTemplate, svc: Service, identity: CurrentIdentity
) -> TemplateCreated:
    template, version = await svc.create(
        identity,
        name=body.name,
        channel=body.channel,
        subject=body.subject,
        html=body.html,
        text=body.text,
    )
    return TemplateCreated(template=TemplateView.of(template), version=VersionView.of(version))


@router.get("", dependencies=[may_read])
async def list_templates(
    svc: Service,
    identity: CurrentIdentity,
    channel: Channel | None = None,
    limit: Annotated[int | None, Query(ge=1, description="at most max_page_size")] = None,
) -> TemplateList:
    docs = await svc.list_templates(identity, channel, limit)
    return TemplateList(items=[TemplateView.of(d) for d in docs])


@router.get("/{template_id}", dependencies=[may_read])
async def get_template(
    svc: Service, identity: CurrentIdentity, template_id: IdPath
) -> TemplateDetail:
    template, versions = await svc.get(identity, template_id)
    return TemplateDetail.model_validate(
        {**TemplateView.of(template).model_dump(), "versions": versions}
    )


@router.post(
    "/{template_id}/versions",
    status_code=status.HTTP_201_CREATED,
    dependencies=[may_write],
    openapi_extra=LONG_BODY,
    description="Edit: the parts become version n+1 (every version is kept).",
)
async def add_version(
    body: TemplateParts, svc: Service, identity: CurrentIdentity, template_id: IdPath
) -> VersionView:
    doc = await svc.add_version(
        identity, template_id, subject=body.subject, html=body.html, text=body.text
    )
    return VersionView.of(doc)


@router.get("/{template_id}/versions/{version}", dependencies=[may_read])
async def get_version(
    svc: Service, identity: CurrentIdentity, template_id: IdPath, version: VersionPath
) -> VersionView:
    return VersionView.of(await svc.version(identity, template_id, version))


@router.put(
    "/{template_id}/versions/{version}",
    dependencies=[may_write],
    openapi_extra=LONG_BODY,
    description="Correct a version in place; 409 `version_frozen` once a sent campaign used it.",
)
async def amend_version(
    body: TemplateParts,
    svc: Service,
    identity: CurrentIdentity,
    template_id: IdPath,
    version: VersionPath,
) -> VersionView:
    doc = await svc.amend_version(
        identity, template_id, version, subject=body.subject, html=body.html, text=body.text
    )
    return VersionView.of(doc)


@router.post("/{template_id}/versions/{version}/preview", dependencies=[may_preview])
async def preview(
    body: PreviewRequest,
    svc: Service,
    identity: CurrentIdentity,
    template_id: IdPath,
    version: VersionPath,
) -> PreviewView:
    rendered, sms = await svc.preview(
        identity,
        template_id,
        version,
        contact=body.contact.model_dump() if body.contact else None,
        contact_id=body.contact_id,
        origin=body.origin,
        sender=body.sender,
        campaign_name=body.campaign_name,
    )
    return PreviewView(
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        sms=dict(sms) if sms is not None else None,
    )
