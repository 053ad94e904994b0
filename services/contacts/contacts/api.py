"""HTTP routes of the contacts service (thin: validate the shape, call the service)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.client_info import ClientInfo
from tribune_shared.events.contracts import ContactAddress, ContactEmail, ContactPhone, DataOrigin

from contacts.custom_fields import CustomFieldDefinition, CustomFieldType
from contacts.domain import Contact, ContactFields, InvalidFields
from contacts.export_service import ExportRequest, ExportsService, csv_response
from contacts.field_view import ContactView
from contacts.service import PATCHABLE, ContactChanges, ContactsService, ListFilters

router = APIRouter(prefix="/api/v1/contacts", tags=["contacts"])

ContactId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="uuid4 hex")]
C = TypeVar("C", bound=Contact)
may_create = require_roles(Role.secretary)
may_update = require_roles(Role.secretary)
may_define_fields = require_roles(Role.secretary)
may_read_audit = require_roles(Role.dpo, admin=False)  # the DPO alone reads audit trails

# Hard caps on raw input size; the configured rules (ContactsSettings) are checked after
# normalisation and are stricter.
_RAW_TEXT = 1_000
_RAW_ITEMS = 100
_MAX_CUSTOM_QUERY = 20


async def service(request: Request) -> ContactsService:
    return request.app.state.contacts_service


async def exports(request: Request) -> ExportsService:
    return request.app.state.exports_service


Service = Annotated[ContactsService, Depends(service)]
Exports = Annotated[ExportsService, Depends(exports)]


class EmailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(max_length=_RAW_TEXT)
    primary: StrictBool = Field(default=False, description="exactly one (the first if none is)")


class PhoneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(max_length=64, description="any usual form; stored as E.164")


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[str] = Field(default_factory=list, max_length=_RAW_ITEMS)
    postcode: str | None = Field(default=None, max_length=32)
    commune: str | None = Field(default=None, max_length=_RAW_TEXT)
    commune_insee: str | None = Field(default=None, max_length=32, description="5 chars, 2A/2B")
    department: str | None = Field(
        default=None, max_length=32, description="derived from commune_insee or postcode if absent"
    )


CustomValues = Annotated[
    dict[str, Any],
    Field(max_length=_RAW_ITEMS, description="name -> value, per the federation's definitions"),
]


class ContactCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    given_name: str = Field(default="", max_length=_RAW_TEXT)
    family_name: str = Field(default="", max_length=_RAW_TEXT)
    email: str | None = Field(
        default=None, max_length=_RAW_TEXT, description="one address (or use emails)"
    )
    phone: str | None = Field(
        default=None, max_length=64, description="one number (or use phones); stored as E.164"
    )
    postcode: str | None = Field(default=None, max_length=32, description="or address.postcode")
    emails: list[EmailIn] | None = Field(default=None, max_length=_RAW_ITEMS)
    phones: list[PhoneIn] | None = Field(default=None, max_length=_RAW_ITEMS)
    address: AddressIn | None = None
    constituency: str | None = Field(default=None, max_length=_RAW_TEXT)
    polling_station: str | None = Field(default=None, max_length=_RAW_TEXT)
    birth_year: int | None = Field(default=None, ge=0, le=10_000)
    tags: list[str] = Field(default_factory=list, max_length=_RAW_TEXT)
    custom_fields: CustomValues = Field(default_factory=dict)
    origin: DataOrigin = Field(description="where the data came from (required by the GDPR)")
    federation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the caller's federation by default; else one of its subtree",
    )


class ContactPatch(BaseModel):
    """Only the fields given change; ``custom_fields`` merge by name (null removes one)."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(
        default=None, ge=1, description="the version you read (or send If-Match)"
    )
    given_name: str | None = Field(default=None, max_length=_RAW_TEXT)
    family_name: str | None = Field(default=None, max_length=_RAW_TEXT)
    emails: list[EmailIn] | None = Field(default=None, max_length=_RAW_ITEMS)
    phones: list[PhoneIn] | None = Field(default=None, max_length=_RAW_ITEMS)
    address: AddressIn | None = None
    constituency: str | None = Field(default=None, max_length=_RAW_TEXT)
    polling_station: str | None = Field(default=None, max_length=_RAW_TEXT)
    birth_year: int | None = Field(default=None, ge=0, le=10_000)
    tags: list[str] | None = Field(default=None, max_length=_RAW_TEXT)
    custom_fields: CustomValues | None = None
    federation_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="move to a federation of the subtree"
    )


class ContactPage(BaseModel):
    items: list[ContactView]
    next_cursor: str | None


def _emails(items: list[EmailIn] | None) -> tuple[ContactEmail, ...]:
    return tuple(ContactEmail(address=e.address, primary=e.primary) for e in items or ())


def _phones(items: list[PhoneIn] | None) -> tuple[ContactPhone, ...]:
    return tuple(ContactPhone(number=p.number) for p in items or ())


def _address(value: AddressIn | None) -> ContactAddress | None:
    return None if value is None else ContactAddress(**value.model_dump())


def _etag(response: Response, contact: C) -> C:
    response.headers["ETag"] = f'"{contact.version}"'
    return contact


# ---------------------------------------------------------------- custom fields
# (declared before /{contact_id} so "custom-fields" and "exports" are not taken for ids)


class CustomFieldCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=40, description="lowercase, digits, '_'")
    label: str = Field(default="", max_length=200)
    type: CustomFieldType
    choices: list[str] = Field(default_factory=list, max_length=1_000)
    required: bool = False
    federation_id: str | None = Field(default=None, min_length=1, max_length=64)


class CustomFieldList(BaseModel):
    items: list[CustomFieldDefinition]


@router.post(
    "/custom-fields", status_code=status.HTTP_201_CREATED, dependencies=[may_define_fields]
)
async def define_custom_field(
    body: CustomFieldCreate, svc: Service, identity: CurrentIdentity
) -> CustomFieldDefinition:
    """A typed field for the contacts of a federation (and of its descendants)."""
    return await svc.define_field(
        identity,
        name=body.name,
        label=body.label,
        type_=body.type,
        choices=body.choices,
        required=body.required,
        federation_id=body.federation_id,
    )


@router.get("/custom-fields")
async def list_custom_fields(svc: Service, identity: CurrentIdentity) -> CustomFieldList:
    """The fields of the caller's federation, its ancestors and its subtree."""
    return CustomFieldList(items=await svc.list_fields(identity))


@router.delete(
    "/custom-fields/{definition_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[may_define_fields],
)
async def delete_custom_field(
    definition_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
    svc: Service,
    identity: CurrentIdentity,
) -> Response:
    await svc.delete_field(identity, definition_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------- export


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: dict[str, Any] | None = Field(
        default=None, description="a filter of the segment language (contacts.filter_language)"
    )
    segment_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    delimiter: Literal[",", ";", "\t"] = ","


class ExportRecord(BaseModel):
    id: str
    kind: Literal["export", "bulk_read"] = Field(
        default="export",
        description="bulk_read: lists, previews and reads beyond CONTACTS_BULK_READ_* in one "
        "window (one entry per user and window)",
    )
    federation_id: str
    user_id: str
    user_email: str
    role: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str
    filter: dict[str, Any]
    segment_id: str | None = None
    expected_rows: int
    row_count: int | None = None
    pages: int | None = Field(default=None, description="pages read (bulk_read)")
    client_ip: str | None = None
    user_agent: str | None = None


class ExportPage(BaseModel):
    items: list[ExportRecord]
    next_cursor: str | None


@router.post("/exports", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
async def export_contacts(
    body: ExportBody, request: Request, exp: Exports, identity: CurrentIdentity
) -> Response:
    """CSV (UTF-8 with BOM) of the caller's contacts matching a filter or a segment;
    roles allowed by CONTACTS_EXPORT_ROLES; every export is recorded."""
    export = await exp.start(
        identity,
        ExportRequest(filter=body.filter, segment_id=body.segment_id, delimiter=body.delimiter),
        request.headers,
    )
    return csv_response(export)


@router.get("/exports", dependencies=[may_read_audit])
async def list_exports(
    exp: Exports,
    identity: CurrentIdentity,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
) -> ExportPage:
    """The export audit trail of the caller's subtree, newest first (admin, DPO)."""
    items, next_cursor = await exp.audit_page(identity, limit=limit, after=cursor)
    return ExportPage(
        items=[ExportRecord.model_validate(i) for i in items], next_cursor=next_cursor
    )


# ---------------------------------------------------------------- contacts


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[may_create])
async def create_contact(
    body: ContactCreate, svc: Service, identity: CurrentIdentity, response: Response
) -> Contact:
    raw = ContactFields(
        given_name=body.given_name,
        family_name=body.family_name,
        email=body.email,
        phone=body.phone,
        postcode=body.postcode,
        tags=tuple(body.tags),
        emails=None if body.emails is None else _emails(body.emails),
        phones=None if body.phones is None else _phones(body.phones),
        address=_address(body.address),
        constituency=body.constituency,
        polling_station=body.polling_station,
        birth_year=body.birth_year,
        custom_fields=body.custom_fields,
    )
    return _etag(response, await svc.create(identity, raw, body.origin, body.federation_id))


@router.get("/{contact_id}")
async def get_contact(
    contact_id: ContactId,
    request: Request,
    svc: Service,
    identity: CurrentIdentity,
    response: Response,
) -> ContactView:
    """The contact as your role may see it (``hidden_fields``: what it may not)."""
    client = ClientInfo.from_headers(request.headers)
    return _etag(response, await svc.get(identity, contact_id, client))


_IF_MATCH = re.compile(r'\s*(?:W/)?"?(\d{1,18})"?\s*')


def expected_version(if_match: str | None, version: int | None) -> int:
    """The version a PATCH applies to: If-Match ("3", W/"3") or the body's ``version``."""
    from_header = None
    if if_match is not None:
        match = _IF_MATCH.fullmatch(if_match)
        if not match:
            raise InvalidFields([("If-Match", 'the ETag you read, e.g. "3"')])
        from_header = int(match.group(1))
    if from_header is not None and version is not None and from_header != version:
        raise InvalidFields([("version", "If-Match and version disagree")])
    wanted = from_header if from_header is not None else version
    if wanted is None:
        raise InvalidFields([("version", "required: the version you read (or an If-Match header)")])
    return wanted


@router.patch("/{contact_id}", dependencies=[may_update])
async def update_contact(
    contact_id: ContactId,
    body: ContactPatch,
    svc: Service,
    identity: CurrentIdentity,
    response: Response,
    if_match: Annotated[str | None, Header(max_length=64)] = None,
) -> Contact:
    """Partial update of the version you read (409 if it changed since)."""
    given = body.model_fields_set
    values: dict[str, Any] = {}
    for name in PATCHABLE:
        if name not in given:
            continue
        value = getattr(body, name)
        if name in ("given_name", "family_name"):
            value = value or ""
        elif name == "emails":
            value = _emails(value)
        elif name == "phones":
            value = _phones(value)
        elif name == "address":
            value = _address(value)
        elif name == "tags":
            value = tuple(value or ())
        values[name] = value
    if "federation_id" in given and body.federation_id is None:
        raise InvalidFields([("federation_id", "a contact always belongs to a federation")])
    changes = ContactChanges(
        values=values,
        custom_fields=body.custom_fields if "custom_fields" in given else None,
        federation_id=body.federation_id,
    )
    wanted = expected_version(if_match, body.version)
    return _etag(response, await svc.update(identity, contact_id, changes, wanted))


@router.get("")
async def list_contacts(
    request: Request,
    svc: Service,
    identity: CurrentIdentity,
    limit: Annotated[int | None, Query(ge=1, description="at most max_page_size")] = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=1_000)] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="prefix of a name, email or phone"),
    ] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    tags_any: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006
    tags_all: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006
    tags_none: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006
    postcode: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006
    commune_insee: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006
    department: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006
    constituency: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006
    polling_station: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006
    federation_id: Annotated[
        str | None, Query(min_length=1, max_length=64, description="a federation's subtree")
    ] = None,
    updated_since: Annotated[datetime | None, Query()] = None,
    has_email: bool | None = None,
    has_phone: bool | None = None,
    sort: Annotated[
        str | None,
        Query(description="id, family_name, created_at or updated_at; '-' for descending"),
    ] = None,
) -> ContactPage:
    """Contacts of the caller's subtree. Repeat a list parameter for "any of" (tags_any,
    postcode...); ``cf.<name>=<value>`` filters on a custom field's value."""
    custom = {
        key.removeprefix("cf."): value
        for key, value in request.query_params.items()
        if key.startswith("cf.")
    }
    if len(custom) > _MAX_CUSTOM_QUERY:
        raise InvalidFields([("cf", f"at most {_MAX_CUSTOM_QUERY} custom field filters")])
    filters = ListFilters(
        tags_any=tags_any,
        tags_all=tags_all,
        tags_none=tags_none,
        postcode=postcode,
        commune_insee=commune_insee,
        department=department,
        constituency=constituency,
        polling_station=polling_station,
        federation_id=federation_id,
        updated_since=updated_since,
        has_email=has_email,
        has_phone=has_phone,
        custom=custom,
    )
    items, next_cursor = await svc.list_page(
        identity,
        limit=limit,
        cursor=cursor,
        q=q,
        tag=tag,
        filters=filters,
        sort=sort,
        client=ClientInfo.from_headers(request.headers),
    )
    return ContactPage(items=items, next_cursor=next_cursor)
