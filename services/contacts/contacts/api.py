"""HTTP routes of the contacts service (thin: validate the shape, call the service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.events.contracts import DataOrigin

from contacts.domain import Contact, ContactFields
from contacts.service import ContactsService

router = APIRouter(prefix="/api/v1/contacts", tags=["contacts"])

ContactId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="uuid4 hex")]
may_create = require_roles(Role.secretary)

# Hard caps on raw input size; the configured rules (ContactsSettings) are checked after
# normalisation and are stricter.
_RAW_TEXT = 1_000


def service(request: Request) -> ContactsService:
    return request.app.state.contacts_service


Service = Annotated[ContactsService, Depends(service)]


class ContactCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    given_name: str = Field(default="", max_length=_RAW_TEXT)
    family_name: str = Field(default="", max_length=_RAW_TEXT)
    email: str | None = Field(default=None, max_length=_RAW_TEXT)
    phone: str | None = Field(
        default=None, max_length=64, description="any usual form; stored as E.164"
    )
    postcode: str | None = Field(default=None, max_length=32)
    tags: list[str] = Field(default_factory=list, max_length=_RAW_TEXT)
    origin: DataOrigin = Field(description="where the data came from (required by the GDPR)")
    federation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the caller's federation by default; else one of its subtree",
    )


class ContactPage(BaseModel):
    items: list[Contact]
    next_cursor: str | None


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[may_create])
async def create_contact(body: ContactCreate, svc: Service, identity: CurrentIdentity) -> Contact:
    raw = ContactFields(
        given_name=body.given_name,
        family_name=body.family_name,
        email=body.email,
        phone=body.phone,
        postcode=body.postcode,
        tags=tuple(body.tags),
    )
    return await svc.create(identity, raw, body.origin, body.federation_id)


@router.get("/{contact_id}")
async def get_contact(contact_id: ContactId, svc: Service, identity: CurrentIdentity) -> Contact:
    return await svc.get(identity, contact_id)


@router.get("")
async def list_contacts(
    svc: Service,
    identity: CurrentIdentity,
    limit: Annotated[int | None, Query(ge=1, description="at most max_page_size")] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="prefix of a name, email or phone"),
    ] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> ContactPage:
    items, next_cursor = await svc.list_page(identity, limit=limit, cursor=cursor, q=q, tag=tag)
    return ContactPage(items=items, next_cursor=next_cursor)
