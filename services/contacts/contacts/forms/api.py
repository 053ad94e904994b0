"""HTTP routes of form definitions (back office): ``/api/v1/forms``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from tribune_shared.auth import CurrentIdentity, Role, require_roles

from contacts.forms.domain import CONTACT_FIELDS, CustomType, FormStatus
from contacts.forms.service import Form, FormsService

router = APIRouter(prefix="/api/v1/forms", tags=["forms"])

FormId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="uuid4 hex")]
may_edit = require_roles(Role.secretary, Role.campaign_manager)
Kind = Literal["petition", "signup", "volunteer", "event_rsvp"]


async def forms(request: Request) -> FormsService:
    return request.app.state.forms_service


Forms = Annotated[FormsService, Depends(forms)]


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal[CONTACT_FIELDS] = Field(  # type: ignore[valid-type]
        description="a contact field, normalised as contacts does"
    )
    required: bool = False
    label: str = Field(default="", max_length=1_000, description="default: the field's name")


class CustomFieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(max_length=40, description="lowercase letters, digits, '_'")
    label: str = Field(max_length=1_000)
    type: CustomType
    required: bool = Field(default=False, description="a required boolean must be ticked")
    choices: list[str] = Field(default_factory=list, max_length=1_000)


class ConsentBox(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["email", "sms", "phone", "post"]
    purpose: str = Field(max_length=40)
    text_version: str = Field(
        max_length=1_000, description="a consent text version of the federation or an ancestor"
    )


class FormFields(BaseModel):
    """What PATCH may change (every field optional; those sent are checked)."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=1_000)
    intro: str | None = Field(default=None, max_length=100_000)
    thank_you: str | None = Field(default=None, max_length=100_000)
    fields: list[FieldSpec] | None = Field(default=None, max_length=1_000)
    custom_fields: list[CustomFieldSpec] | None = Field(default=None, max_length=1_000)
    consents: list[ConsentBox] | None = Field(
        default=None, max_length=1_000, description="one unticked box per channel and purpose"
    )
    goal: int | None = Field(default=None, ge=1, description="petitions: the counter's goal")
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    tags: list[str] | None = Field(default=None, max_length=1_000)
    reference: str | None = Field(default=None, max_length=1_000)
    allowed_origins: list[str] | None = Field(
        default=None, max_length=1_000, description="sites that may embed it or post to it"
    )
    meeting_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    proof_of_work_bits: int | None = Field(
        default=None, ge=0, le=64, description="ask the browser for a proof of work (bits)"
    )


class FormCreate(FormFields):
    kind: Kind
    title: str = Field(max_length=1_000)
    fields: list[FieldSpec] = Field(max_length=1_000)
    federation_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="the caller's by default"
    )


class FormPatch(FormFields):
    version: int | None = Field(default=None, ge=1, description="409 if it changed since")


class FormPage(BaseModel):
    items: list[Form]
    next_cursor: str | None


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[may_edit])
async def create_form(body: FormCreate, svc: Forms, identity: CurrentIdentity) -> Form:
    """Define a form in the caller's federation (or one of its subtree)."""
    raw = body.model_dump(mode="python", exclude_unset=True)
    return await svc.create(identity, raw)


@router.get("")
async def list_forms(
    svc: Forms,
    identity: CurrentIdentity,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
    status: Annotated[FormStatus | None, Query(description="default: open and closed")] = None,
    kind: Kind | None = None,
) -> FormPage:
    """Forms of the caller's subtree."""
    items, next_cursor = await svc.list_page(
        identity, limit=limit, cursor=cursor, status=status, kind=kind
    )
    return FormPage(items=items, next_cursor=next_cursor)


@router.get("/{form_id}")
async def get_form(form_id: FormId, svc: Forms, identity: CurrentIdentity) -> Form:
    return await svc.get(identity, form_id)


@router.patch("/{form_id}", dependencies=[may_edit])
async def update_form(
    form_id: FormId, body: FormPatch, svc: Forms, identity: CurrentIdentity
) -> Form:
    raw = body.model_dump(mode="python", exclude_unset=True)
    version = raw.pop("version", None)
    return await svc.update(identity, form_id, raw, version)


@router.post("/{form_id}/close", dependencies=[may_edit])
async def close_form(form_id: FormId, svc: Forms, identity: CurrentIdentity) -> Form:
    """No more submissions: the page says the form is closed."""
    return await svc.set_status(identity, form_id, FormStatus.closed)


@router.post("/{form_id}/archive", dependencies=[may_edit])
async def archive_form(form_id: FormId, svc: Forms, identity: CurrentIdentity) -> Form:
    """Gone from the public side (404) and from the default list; its submissions stay."""
    return await svc.set_status(identity, form_id, FormStatus.archived)
