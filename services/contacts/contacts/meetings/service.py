"""Use cases of meetings: the API's (create, change, cancel, registrations, check-in,
a person's attendance), ``record_rsvps`` (contacts.submissions calls it in its
transaction) and the worker's reminder job."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.errors import Conflict, InvalidFields, NotFound, Refused
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import MeetingReminderRequestedV1
from tribune_shared.federations import FederationDirectory
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import DuplicateKeyError, Store

from contacts.domain import aware, decode_time_cursor, encode_time_cursor, search_terms
from contacts.meetings.domain import (
    MeetingLimits,
    MeetingProblems,
    Rsvp,
    admit,
    attendance_summary,
    clean_meeting,
    kept_on_merge,
    places_left,
    promotable,
    registration_id,
    reminder_due,
    reminder_horizon,
    reminder_marker,
)
from contacts.meetings.store import MeetingStore
from contacts.settings import ContactsSettings
from contacts.store import search_filter

log = get_logger(__name__)

REMINDERS_REQUESTED = Counter(
    "tribune_meeting_reminders_requested_total",
    "Meeting reminders requested from messaging (one per person, meeting and offset)",
)

#: the meeting fields an operator sets (create and PATCH)
MEETING_FIELDS = ("title", "kind", "starts_at", "ends_at", "address", "commune_insee", "capacity")


def _now_ms() -> datetime:
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _problems(exc: MeetingProblems) -> InvalidFields:
    return InvalidFields(exc.problems)


def registration_doc(
    meeting: dict[str, Any],
    contact_id: str,
    status: str,
    *,
    source: str,
    at: datetime,
    by: str | None,
    submission_id: str | None = None,
    contact_federation_path: str | None = None,
) -> dict[str, Any]:
    """A registration (one per person and meeting) holds a copy of the meeting's kind and
    start: a person's history and attendance summary read registrations alone."""
    return {
        "_id": registration_id(meeting["_id"], contact_id),
        "meeting_id": meeting["_id"],
        "contact_id": contact_id,
        "federation_id": meeting["federation_id"],
        "federation_path": meeting["federation_path"],
        "contact_federation_path": contact_federation_path,
        "kind": meeting["kind"],
        "starts_at": meeting["starts_at"],
        "status": status,
        "source": source,
        "submission_id": submission_id,
        "registered_at": at,
        "registered_by": by,
        "checked_in_at": None,
        "checked_in_by": None,
    }


async def record_rsvps(store: Store, session: AsyncClientSession, rsvps: list[Rsvp]) -> None:
    """Register people who answered an RSVP form, in the caller's transaction (the
    submissions handler's). Idempotent: a person registering twice (or a redelivered batch)
    keeps their one registration. Capacity: places go in order of arrival within the batch;
    beyond the capacity the person is waitlisted (promoted first come, first served when a
    place frees up). A meeting that no longer exists is skipped (logged)."""
    meetings = MeetingStore(store)
    unique: dict[str, Rsvp] = {}
    for rsvp in rsvps:
        unique.setdefault(registration_id(rsvp.meeting_id, rsvp.contact_id), rsvp)
    existing = await meetings.registrations_by_ids(list(unique), session)
    arriving: dict[str, list[Rsvp]] = {}
    for key, rsvp in unique.items():
        if key not in existing:
            arriving.setdefault(rsvp.meeting_id, []).append(rsvp)
    if not arriving:
        return
    found = await meetings.by_ids(list(arriving), session)
    now = _now_ms()
    docs: list[dict[str, Any]] = []
    for meeting_id, group in arriving.items():
        meeting = found.get(meeting_id)
        if meeting is None:
            log.warning("meetings.rsvp_unknown_meeting", meeting_id=meeting_id, rsvps=len(group))
            continue
        statuses = admit(meeting.get("capacity"), meeting.get("registered", 0), len(group))
        for rsvp, status in zip(group, statuses, strict=True):
            docs.append(
                registration_doc(
                    meeting,
                    rsvp.contact_id,
                    status,
                    source="form",
                    at=now,
                    by=None,
                    submission_id=rsvp.submission_id,
                    contact_federation_path=rsvp.federation_path,
                )
            )
        await meetings.count_in(
            meeting_id,
            statuses.count("registered"),
            statuses.count("waitlisted"),
            session,
        )
    await meetings.insert_registrations(docs, session)


async def promote_waiting(
    meetings: MeetingStore, meeting: dict[str, Any], now: datetime, session: AsyncClientSession
) -> int:
    """The waiting list takes the places free in ``meeting``, first come first served: how
    many were promoted."""
    count = promotable(
        meeting.get("capacity"), meeting.get("registered", 0), meeting.get("waitlisted", 0)
    )
    waiting = await meetings.first_waiting(meeting["_id"], count, session)
    ids = [w["_id"] for w in waiting]
    if ids:
        await meetings.promote(ids, now, session)
        await meetings.count_in(meeting["_id"], len(ids), -len(ids), session)
    return len(ids)


async def _release(meetings: MeetingStore, meeting_ids: list[str], session) -> None:
    """Places freed in these meetings go to their waiting lists (scheduled ones only)."""
    now = _now_ms()
    for meeting_id in dict.fromkeys(meeting_ids):
        meeting = await meetings.get(meeting_id, {}, session)
        if meeting is not None and meeting["status"] == "scheduled":
            await promote_waiting(meetings, meeting, now, session)


async def erase_registrations(store: Store, contact_id: str, session: AsyncClientSession) -> int:
    """Erasure: the person's registrations and reminder markers go, and the places they
    held go to the waiting lists (in the erasure's transaction). Documents deleted."""
    meetings = MeetingStore(store)
    deleted, freed = await meetings.erase_person(contact_id, session)
    await _release(meetings, freed, session)
    return deleted


async def carry_registrations(
    store: Store, merged_id: str, survivor_id: str, session: AsyncClientSession
) -> None:
    """A merge (in its transaction): the survivor takes the merged contact's registrations
    and reminder markers. Where both were registered to one meeting (the same person
    twice), one registration is kept (``kept_on_merge``), the other leaves the counters and
    a place it held goes to the waiting list; the survivor's attendance is summarised
    again."""
    meetings = MeetingStore(store)
    merged = await meetings.registrations_of(merged_id, session)
    if merged:
        theirs = {r["meeting_id"]: r for r in await meetings.registrations_of(survivor_id, session)}
        removed: list[str] = []
        added: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        for reg in merged:
            survivor = theirs.get(reg["meeting_id"])
            removed.append(reg["_id"])
            if kept_on_merge(survivor, reg):
                added.append(
                    {
                        **reg,
                        "_id": registration_id(reg["meeting_id"], survivor_id),
                        "contact_id": survivor_id,
                        "merged_from": merged_id,
                    }
                )
                if survivor is not None:
                    removed.append(survivor["_id"])
                    dropped.append(survivor)
            else:
                dropped.append(reg)
        await meetings.uncount(dropped, session)
        await meetings.replace_registrations(removed, added, session)
        await _release(
            meetings, [d["meeting_id"] for d in dropped if d["status"] == "registered"], session
        )
        attended = await meetings.attended(survivor_id, session)
        await meetings.set_attendance(survivor_id, attendance_summary(attended), session)
    await meetings.move_markers(merged_id, survivor_id, session)


def meeting_view(doc: dict[str, Any]) -> dict[str, Any]:
    registered = doc.get("registered", 0)
    return {
        "id": doc["_id"],
        "federation_id": doc["federation_id"],
        "federation_path": doc["federation_path"],
        "kind": doc["kind"],
        "title": doc["title"],
        "starts_at": aware(doc["starts_at"]),
        "ends_at": aware(doc["ends_at"]),
        "place": {"address": doc.get("address", ""), "commune_insee": doc.get("commune_insee")},
        "capacity": doc.get("capacity"),
        "status": doc["status"],
        "registered": registered,
        "waitlisted": doc.get("waitlisted", 0),
        "places_left": places_left(doc.get("capacity"), registered),
        "version": doc["version"],
        "created_at": aware(doc["created_at"]),
        "created_by": doc["created_by"],
        "updated_at": aware(doc["updated_at"]),
        "updated_by": doc["updated_by"],
    }


def registration_view(doc: dict[str, Any], names: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "meeting_id": doc["meeting_id"],
        "contact_id": doc["contact_id"],
        "given_name": (names or {}).get("given_name", ""),
        "family_name": (names or {}).get("family_name", ""),
        "status": doc["status"],
        "source": doc["source"],
        "registered_at": aware(doc["registered_at"]),
        "checked_in_at": aware(doc["checked_in_at"]) if doc.get("checked_in_at") else None,
    }


class MeetingsService:
    def __init__(self, settings: ContactsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.meetings = MeetingStore(store)
        self.directory = FederationDirectory(store)
        self.limits = MeetingLimits(
            max_title_length=settings.meeting_max_title_length,
            max_place_length=settings.meeting_max_place_length,
            max_duration_hours=settings.meeting_max_duration_hours,
            max_capacity=settings.meeting_max_capacity,
        )

    # ------------------------------------------------------------ meetings

    async def create(
        self, identity: Identity, fields: dict[str, Any], federation_id: str | None
    ) -> dict[str, Any]:
        try:
            clean = clean_meeting(fields, self.limits)
        except MeetingProblems as exc:
            raise _problems(exc) from None
        fed_id, fed_path = await self.directory.resolve(identity, federation_id)
        now = _now_ms()
        doc = {
            "_id": uuid.uuid4().hex,
            "federation_id": fed_id,
            "federation_path": fed_path,
            **{k: clean[k] for k in MEETING_FIELDS},
            "status": "scheduled",
            "registered": 0,
            "waitlisted": 0,
            "version": 1,
            "created_at": now,
            "created_by": identity.user_id,
            "updated_at": now,
            "updated_by": identity.user_id,
        }
        await self.meetings.insert(doc)
        return meeting_view(doc)

    async def _meeting(
        self, identity: Identity, meeting_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any]:
        doc = await self.meetings.get(meeting_id, identity.scope(), session)
        if doc is None:
            raise NotFound("meeting not found")
        return doc

    async def get(self, identity: Identity, meeting_id: str) -> dict[str, Any]:
        return meeting_view(await self._meeting(identity, meeting_id))

    async def list_page(
        self,
        identity: Identity,
        *,
        since: datetime | None,
        until: datetime | None,
        kind: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Meetings of the caller's subtree in start order."""
        limit = min(limit, self.settings.meeting_page_max_size)
        conditions: dict[str, Any] = {}
        bounds: dict[str, Any] = {}
        if since is not None:
            bounds["$gte"] = since
        if until is not None:
            bounds["$lt"] = until
        if bounds:
            conditions["starts_at"] = bounds
        if kind is not None:
            conditions["kind"] = kind
        if status is not None:
            conditions["status"] = status
        after = decode_time_cursor(cursor) if cursor else None
        docs = await self.meetings.page(identity.scope(), conditions, limit=limit, after=after)
        items = [meeting_view(d) for d in docs[:limit]]
        if len(docs) <= limit:
            return items, None
        last = docs[limit - 1]
        return items, encode_time_cursor(last["starts_at"], last["_id"])

    async def update(
        self,
        identity: Identity,
        meeting_id: str,
        changes: dict[str, Any],
        version: int | None,
    ) -> dict[str, Any]:
        """Change a scheduled meeting (409 if ``version`` is not the stored one). The
        capacity may not go below the places already given (nobody is bumped); a larger
        one gives places to the waiting list in order of arrival."""

        async def change(session: AsyncClientSession) -> dict[str, Any]:
            doc = await self._meeting(identity, meeting_id, session)
            if version is not None and version != doc["version"]:
                raise Conflict(
                    "the meeting changed since you read it: read it again",
                    current_version=doc["version"],
                )
            if doc["status"] == "cancelled":
                raise Refused("the meeting is cancelled")
            merged = {k: doc.get(k) for k in MEETING_FIELDS} | changes
            try:
                clean = clean_meeting(merged, self.limits)
            except MeetingProblems as exc:
                raise _problems(exc) from None
            updates = {k: clean[k] for k in MEETING_FIELDS if clean[k] != doc.get(k)}
            if not updates:
                return doc
            capacity = clean["capacity"]
            if capacity is not None and capacity < doc.get("registered", 0):
                raise Refused(
                    f"{doc.get('registered', 0)} people already have a place: the capacity "
                    "may not be lower",
                    field="capacity",
                )
            now = _now_ms()
            updated = await self.meetings.update(
                meeting_id,
                doc["version"],
                {**updates, "updated_at": now, "updated_by": identity.user_id},
                session,
            )
            if updated is None:
                raise Conflict("the meeting changed since you read it: read it again")
            copied: dict[str, Any] = {k: updates[k] for k in ("kind", "starts_at") if k in updates}
            if copied:
                await self.meetings.reschedule(meeting_id, copied, session)
                # who already came counts this meeting at its new date or kind (rare: a
                # meeting moved after its check-ins)
                for contact_id in await self.meetings.checked_in_ids(meeting_id, session):
                    await self._summarise(contact_id, session)
            if "capacity" in updates and await self._promote(updated, now, session):
                return await self.meetings.get(meeting_id, {}, session) or updated
            return updated

        return meeting_view(await self.store.run_transaction(change, what="meetings.update"))

    async def cancel(self, identity: Identity, meeting_id: str) -> dict[str, Any]:
        """Cancel a meeting (idempotent): no more reminders, no check-in."""

        async def change(session: AsyncClientSession) -> dict[str, Any]:
            doc = await self._meeting(identity, meeting_id, session)
            if doc["status"] == "cancelled":
                return doc
            updated = await self.meetings.update(
                meeting_id,
                doc["version"],
                {"status": "cancelled", "updated_at": _now_ms(), "updated_by": identity.user_id},
                session,
            )
            if updated is None:
                raise Conflict("the meeting changed since you read it: read it again")
            return updated

        return meeting_view(await self.store.run_transaction(change, what="meetings.cancel"))

    async def _promote(self, meeting: dict[str, Any], now: datetime, session) -> int:
        return await promote_waiting(self.meetings, meeting, now, session)

    # ------------------------------------------------------------ registrations

    async def registrations(
        self,
        identity: Identity,
        meeting_id: str,
        *,
        q: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A meeting's registrations with the people's names; ``q`` searches the names
        (the check-in screen: at most ``limit`` matches, no cursor)."""
        await self._meeting(identity, meeting_id)
        limit = min(limit, self.settings.meeting_page_max_size)
        if q is not None:
            terms = search_terms(q, self.settings.default_region, self.settings.max_search_words)
            ids = await self.meetings.registrant_ids(meeting_id)
            names = await self.meetings.names(ids, search_filter(terms, names_only=True), limit)
            regs = await self.meetings.registrations_by_ids(
                [registration_id(meeting_id, cid) for cid in names]
            )
            found = [r for r in regs.values() if status is None or r["status"] == status]
            items = [registration_view(r, names.get(r["contact_id"])) for r in found]
            items.sort(key=lambda r: (r["family_name"].lower(), r["given_name"].lower()))
            return items, None
        docs = await self.meetings.registrations_page(
            meeting_id, status=status, limit=limit, after=cursor
        )
        page = docs[:limit]
        names = await self.meetings.names([d["contact_id"] for d in page], limit=limit)
        items = [registration_view(d, names.get(d["contact_id"])) for d in page]
        return items, page[-1]["_id"] if len(docs) > limit else None

    async def _contact(
        self, identity: Identity, contact_id: str, session: AsyncClientSession | None = None
    ) -> dict[str, Any]:
        contact = await self.meetings.contact(contact_id, identity.scope(), session)
        if contact is None:
            raise NotFound("contact not found", field="contact_id")
        return contact

    async def register(
        self, identity: Identity, meeting_id: str, contact_id: str
    ) -> tuple[dict[str, Any], bool]:
        """An operator registers a person of their subtree (same capacity rule as forms);
        (registration, created): registering again changes nothing."""

        async def change(session: AsyncClientSession) -> tuple[dict[str, Any], bool]:
            meeting = await self._meeting(identity, meeting_id, session)
            contact = await self._contact(identity, contact_id, session)
            key = registration_id(meeting_id, contact_id)
            existing = await self.meetings.registration(key, session)
            if existing is not None:
                return existing, False
            if meeting["status"] == "cancelled":
                raise Refused("the meeting is cancelled")
            [status] = admit(meeting.get("capacity"), meeting.get("registered", 0), 1)
            doc = registration_doc(
                meeting,
                contact_id,
                status,
                source="operator",
                at=_now_ms(),
                by=identity.user_id,
                contact_federation_path=contact["federation_path"],
            )
            await self.meetings.insert_registrations([doc], session)
            await self.meetings.count_in(
                meeting_id, int(status == "registered"), int(status == "waitlisted"), session
            )
            return doc, True

        doc, created = await self.store.run_transaction(change, what="meetings.register")
        return await self._with_names(doc), created

    async def unregister(self, identity: Identity, meeting_id: str, contact_id: str) -> None:
        """Remove a registration (idempotent); a freed place goes to the waiting list."""

        async def change(session: AsyncClientSession) -> None:
            await self._meeting(identity, meeting_id, session)
            await self._contact(identity, contact_id, session)
            doc = await self.meetings.delete_registration(
                registration_id(meeting_id, contact_id), session
            )
            if doc is None:
                return
            counter = {"registered": (-1, 0), "waitlisted": (0, -1)}.get(doc["status"])
            if counter is not None:
                await self.meetings.count_in(meeting_id, *counter, session)
            if doc.get("checked_in_at"):
                await self._summarise(contact_id, session)
            meeting = await self.meetings.get(meeting_id, {}, session)
            if meeting is not None and meeting["status"] == "scheduled":
                await self._promote(meeting, _now_ms(), session)

        await self.store.run_transaction(change, what="meetings.unregister")

    async def _with_names(self, doc: dict[str, Any]) -> dict[str, Any]:
        names = await self.meetings.names([doc["contact_id"]], limit=1)
        return registration_view(doc, names.get(doc["contact_id"]))

    # ------------------------------------------------------------ check-in

    async def _summarise(self, contact_id: str, session: AsyncClientSession) -> None:
        attended = await self.meetings.attended(contact_id, session)
        await self.meetings.set_attendance(contact_id, attendance_summary(attended), session)

    async def check_in(
        self, identity: Identity, meeting_id: str, contact_id: str
    ) -> dict[str, Any]:
        """The person came (idempotent: checking in twice keeps the first time). A person
        of the caller's subtree who had not registered is checked in as a walk-in."""

        async def change(session: AsyncClientSession) -> dict[str, Any]:
            meeting = await self._meeting(identity, meeting_id, session)
            if meeting["status"] == "cancelled":
                raise Refused("the meeting is cancelled")
            contact = await self._contact(identity, contact_id, session)
            key = registration_id(meeting_id, contact_id)
            doc = await self.meetings.registration(key, session)
            if doc is not None and doc.get("checked_in_at"):
                return doc
            now = _now_ms()
            if doc is None:
                doc = registration_doc(
                    meeting,
                    contact_id,
                    "walk_in",
                    source="walk_in",
                    at=now,
                    by=identity.user_id,
                    contact_federation_path=contact["federation_path"],
                )
                doc.update(checked_in_at=now, checked_in_by=identity.user_id)
                await self.meetings.insert_registrations([doc], session)
            else:
                changes = {"checked_in_at": now, "checked_in_by": identity.user_id}
                await self.meetings.set_registration(key, changes, session)
                doc = {**doc, **changes}
            await self._summarise(contact_id, session)
            return doc

        doc = await self.store.run_transaction(change, what="meetings.check_in")
        return await self._with_names(doc)

    async def undo_check_in(self, identity: Identity, meeting_id: str, contact_id: str) -> None:
        """Undo a check-in made by mistake (idempotent): a walk-in's registration goes."""

        async def change(session: AsyncClientSession) -> None:
            await self._meeting(identity, meeting_id, session)
            await self._contact(identity, contact_id, session)
            key = registration_id(meeting_id, contact_id)
            doc = await self.meetings.registration(key, session)
            if doc is None or not doc.get("checked_in_at"):
                return
            if doc["status"] == "walk_in":
                await self.meetings.delete_registration(key, session)
            else:
                await self.meetings.set_registration(
                    key, {"checked_in_at": None, "checked_in_by": None}, session
                )
            await self._summarise(contact_id, session)

        await self.store.run_transaction(change, what="meetings.undo_check_in")

    # ------------------------------------------------------------ a person's history

    async def attendance(self, identity: Identity, contact_id: str) -> list[dict[str, Any]]:
        """The person's meetings (registered, waitlisted or walked in), most recent first,
        with whether they came; meetings outside the caller's subtree are left out."""
        await self._contact(identity, contact_id)
        regs = await self.meetings.history(contact_id, self.settings.meeting_history_max)
        meetings = await self.meetings.by_ids(sorted({r["meeting_id"] for r in regs}))
        items = []
        for reg in regs:
            meeting = meetings.get(reg["meeting_id"])
            if meeting is None or not identity.can_see(meeting["federation_path"]):
                continue
            items.append(
                {
                    "meeting_id": meeting["_id"],
                    "title": meeting["title"],
                    "kind": meeting["kind"],
                    "starts_at": aware(meeting["starts_at"]),
                    "meeting_status": meeting["status"],
                    "status": reg["status"],
                    "registered_at": aware(reg["registered_at"]),
                    "attended": reg.get("checked_in_at") is not None,
                    "checked_in_at": aware(reg["checked_in_at"])
                    if reg.get("checked_in_at")
                    else None,
                }
            )
        return items


# ---------------------------------------------------------------- reminders


class MeetingReminders:
    """The worker's periodic job: for each scheduled meeting starting within the largest
    offset, each registered person (not the waiting list) due a reminder gets one
    ``meeting-reminder-requested``, committed with its marker (meeting, person, offset):
    a second run, or a second worker, requests nothing twice."""

    def __init__(self, settings: ContactsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.meetings = MeetingStore(store)
        self.outbox = Outbox(store)

    async def run(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        offsets = self.settings.meeting_reminder_hours
        if not offsets:
            return 0
        requested = 0
        for meeting in await self.meetings.upcoming(now, now + reminder_horizon(offsets)):
            requested += await self._meeting(meeting, offsets, now)
        if requested:
            log.info("meetings.reminders_requested", count=requested)
        return requested

    async def _meeting(self, meeting: dict[str, Any], offsets: Sequence[int], now: datetime) -> int:
        starts_at = aware(meeting["starts_at"])
        size = self.settings.meeting_reminder_batch_size
        after: str | None = None
        requested = 0
        while True:
            page = await self.meetings.registered_page(meeting["_id"], after=after, limit=size)
            if not page:
                return requested
            settled = await self.meetings.reminded(meeting["_id"], [r["contact_id"] for r in page])
            markers: list[dict[str, Any]] = []
            envelopes: list[Envelope] = []
            for reg in page:
                due = reminder_due(starts_at, offsets, now, settled.get(reg["contact_id"], ()))
                if due is None:
                    continue
                markers += [
                    {
                        "_id": reminder_marker(meeting["_id"], reg["contact_id"], h),
                        "meeting_id": meeting["_id"],
                        "contact_id": reg["contact_id"],
                        "hours_before": h,
                        "sent": h == due.hours_before,
                        "at": now,
                    }
                    for h in due.settles
                ]
                envelopes.append(self._envelope(meeting, reg["contact_id"], due.hours_before))
            if markers:

                async def write(session: AsyncClientSession, markers=markers, envelopes=envelopes):
                    await self.meetings.mark_reminded(markers, session)
                    await self.outbox.add_batch(session, envelopes)

                try:
                    await self.store.run_transaction(write, what="meetings.reminders")
                    requested += len(envelopes)
                    REMINDERS_REQUESTED.inc(len(envelopes))
                except DuplicateKeyError:
                    # another worker settled some of this page meanwhile: the next round
                    # re-reads the markers and requests only what is left
                    log.info("meetings.reminders_raced", meeting_id=meeting["_id"])
            if len(page) < size:
                return requested
            after = page[-1]["_id"]

    def _envelope(self, meeting: dict[str, Any], contact_id: str, hours: int) -> Envelope:
        place = meeting.get("address") or ""
        return new_envelope(
            MeetingReminderRequestedV1(
                meeting_id=meeting["_id"],
                contact_id=contact_id,
                title=meeting["title"],
                kind=meeting["kind"],
                starts_at=aware(meeting["starts_at"]),
                place=place,
                purpose=self.settings.meeting_reminder_purpose,
                hours_before=hours,
            ),
            producer=self.settings.service_name,
            federation_id=meeting["federation_id"],
            federation_path=meeting["federation_path"],
        )
