"""HTTP routes of meetings and canvassing sessions: the meetings, their registrations, the
check-in on the day (a phone in the back office), and a person's attendance."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.app import IdPath, IdQuery
from tribune_shared.auth import CurrentIdentity, Role, require_roles

from contacts.meetings.service import MeetingsService

router = APIRouter(prefix="/api/v1/meetings", tags=["meetings"])

MeetingId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="uuid4 hex")]
ContactId = IdPath
#: secretaries and campaign managers organise meetings and check people in (admin too)
may_edit = require_roles(Role.secretary, Role.campaign_manager)
Kind = Literal["meeting", "canvassing"]


async def meetings(request: Request) -> MeetingsService:
    return request.app.state.meetings_service


Meetings = Annotated[MeetingsService, Depends(meetings)]


class Place(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(default="", max_length=5_000, description="as people read it")
    commune_insee: str | None = Field(default=None, max_length=10, description="INSEE code")


class PlaceOut(BaseModel):
    address: str
    commune_insee: str | None


class MeetingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind = "meeting"
    title: str = Field(max_length=5_000)
    starts_at: datetime = Field(description="with its time zone")
    ends_at: datetime = Field(description="with its time zone, after starts_at")
    place: Place = Field(default_factory=Place)
    capacity: int | None = Field(
        default=None, ge=1, description="places; beyond, people are waitlisted"
    )
    federation_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="the caller's by default"
    )


class MeetingPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind | None = None
    title: str | None = Field(default=None, max_length=5_000)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    place: Place | None = None
    capacity: int | None = Field(default=None, ge=1, description="null: leave as is")
    unlimited: bool = Field(default=False, description="remove the capacity")
    version: int | None = Field(default=None, ge=1, description="409 if it changed since")


class Meeting(BaseModel):
    id: str
    federation_id: str
    federation_path: str
    kind: Kind
    title: str
    starts_at: datetime
    ends_at: datetime
    place: PlaceOut
    capacity: int | None
    status: Literal["scheduled", "cancelled"]
    registered: int = Field(description="people with a place")
    waitlisted: int
    places_left: int | None = Field(description="null: no capacity")
    version: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class MeetingPage(BaseModel):
    items: list[Meeting]
    next_cursor: str | None


class Registration(BaseModel):
    meeting_id: str
    contact_id: str
    given_name: str
    family_name: str
    status: Literal["registered", "waitlisted", "walk_in"]
    source: Literal["form", "operator", "walk_in"]
    registered_at: datetime
    checked_in_at: datetime | None


class RegistrationPage(BaseModel):
    items: list[Registration]
    next_cursor: str | None


class ContactRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class Attendance(BaseModel):
    meeting_id: str
    title: str
    kind: Kind
    starts_at: datetime
    meeting_status: Literal["scheduled", "cancelled"]
    status: Literal["registered", "waitlisted", "walk_in"]
    registered_at: datetime
    attended: bool
    checked_in_at: datetime | None


class AttendanceList(BaseModel):
    contact_id: str
    items: list[Attendance]
    attended: int = Field(description="meetings the person was checked in at (listed ones)")


Limit = Annotated[int, Query(ge=1, le=1_000, description="bounded by the settings")]


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[may_edit])
async def create_meeting(body: MeetingCreate, svc: Meetings, identity: CurrentIdentity) -> Meeting:
    fields = body.model_dump(exclude={"place", "federation_id"})
    fields.update(address=body.place.address, commune_insee=body.place.commune_insee)
    return Meeting.model_validate(await svc.create(identity, fields, body.federation_id))


@router.get("")
async def list_meetings(
    svc: Meetings,
    identity: CurrentIdentity,
    since: Annotated[datetime | None, Query(description="starting at or after")] = None,
    until: Annotated[datetime | None, Query(description="starting before")] = None,
    kind: Kind | None = None,
    status: Literal["scheduled", "cancelled"] | None = None,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> MeetingPage:
    """Meetings of the caller's subtree, in start order."""
    items, next_cursor = await svc.list_page(
        identity, since=since, until=until, kind=kind, status=status, limit=limit, cursor=cursor
    )
    return MeetingPage(items=[Meeting.model_validate(i) for i in items], next_cursor=next_cursor)


@router.get("/attendance")
async def attendance(
    svc: Meetings, identity: CurrentIdentity, contact_id: IdQuery
) -> AttendanceList:
    """A person's meetings, most recent first, and whether they came (their history)."""
    items = [Attendance.model_validate(i) for i in await svc.attendance(identity, contact_id)]
    return AttendanceList(
        contact_id=contact_id, items=items, attended=sum(i.attended for i in items)
    )


@router.get("/{meeting_id}")
async def get_meeting(meeting_id: MeetingId, svc: Meetings, identity: CurrentIdentity) -> Meeting:
    return Meeting.model_validate(await svc.get(identity, meeting_id))


@router.patch("/{meeting_id}", dependencies=[may_edit])
async def update_meeting(
    meeting_id: MeetingId, body: MeetingPatch, svc: Meetings, identity: CurrentIdentity
) -> Meeting:
    changes = body.model_dump(
        exclude={"place", "version", "unlimited", "capacity"}, exclude_none=True
    )
    if body.place is not None:
        changes.update(address=body.place.address, commune_insee=body.place.commune_insee)
    if body.unlimited:
        changes["capacity"] = None
    elif body.capacity is not None:
        changes["capacity"] = body.capacity
    return Meeting.model_validate(await svc.update(identity, meeting_id, changes, body.version))


@router.post("/{meeting_id}/cancel", dependencies=[may_edit])
async def cancel_meeting(
    meeting_id: MeetingId, svc: Meetings, identity: CurrentIdentity
) -> Meeting:
    """Cancel the meeting (idempotent): no reminder goes out any more."""
    return Meeting.model_validate(await svc.cancel(identity, meeting_id))


@router.get("/{meeting_id}/registrations")
async def list_registrations(
    meeting_id: MeetingId,
    svc: Meetings,
    identity: CurrentIdentity,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description="names")] = None,
    status: Literal["registered", "waitlisted", "walk_in"] | None = None,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> RegistrationPage:
    """Who registered, with their names (the check-in screen searches them with ``q``)."""
    items, next_cursor = await svc.registrations(
        identity, meeting_id, q=q, status=status, limit=limit, cursor=cursor
    )
    return RegistrationPage(
        items=[Registration.model_validate(i) for i in items], next_cursor=next_cursor
    )


@router.post("/{meeting_id}/registrations", dependencies=[may_edit])
async def add_registration(
    meeting_id: MeetingId,
    body: ContactRef,
    response: Response,
    svc: Meetings,
    identity: CurrentIdentity,
) -> Registration:
    """Register a person by hand (201; 200 if already registered: nothing changes)."""
    doc, created = await svc.register(identity, meeting_id, body.contact_id)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return Registration.model_validate(doc)


@router.delete(
    "/{meeting_id}/registrations/{contact_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[may_edit],
)
async def remove_registration(
    meeting_id: MeetingId, contact_id: ContactId, svc: Meetings, identity: CurrentIdentity
) -> Response:
    await svc.unregister(identity, meeting_id, contact_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{meeting_id}/check-ins", dependencies=[may_edit])
async def check_in(
    meeting_id: MeetingId, body: ContactRef, svc: Meetings, identity: CurrentIdentity
) -> Registration:
    """The person came (idempotent); somebody who had not registered comes in as a
    walk-in."""
    return Registration.model_validate(await svc.check_in(identity, meeting_id, body.contact_id))


@router.delete(
    "/{meeting_id}/check-ins/{contact_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[may_edit],
)
async def undo_check_in(
    meeting_id: MeetingId, contact_id: ContactId, svc: Meetings, identity: CurrentIdentity
) -> Response:
    await svc.undo_check_in(identity, meeting_id, contact_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
