"""Meetings over the real store: the API (create, change, cancel, tenancy), RSVPs through
``record_rsvps`` (idempotent, capacity and waiting list), check-in with walk-ins and undo,
a person's attendance, the "came to at least one meeting this year" segment, reminders
requested once, and erasure."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from contacts.filter_language import compile_filter, evaluate, parse_filter
from contacts.meetings.domain import Rsvp, attendance_summary
from contacts.meetings.service import MeetingReminders, record_rsvps
from contacts.meetings.store import MEETINGS, REGISTRATIONS, MeetingStore
from contacts.privacy import ContactsPrivacyStore
from contacts.settings import ContactsSettings
from support import run_with_store, signed_headers
from tribune_shared.auth import Role
from tribune_shared.outbox import OUTBOX, unpack_batch
from tribune_shared.store import Store, subtree_filter

pytestmark = pytest.mark.integration

PARIS = "/root/paris/"
P11 = "/root/paris/p11/"
LYON = "/root/lyon/"
CONTACTS = "/api/v1/contacts"
MEETINGS_URL = "/api/v1/meetings"
SEGMENTS = "/api/v1/segments"
ORIGIN = {"kind": "event", "detail": "réunion"}


def headers(settings, path: str = PARIS, role: Role = Role.secretary):
    return signed_headers(settings, path, role)


def person(client, settings, family_name: str, path: str = PARIS, **fields) -> str:
    r = client.post(
        CONTACTS,
        json={"origin": ORIGIN, "given_name": "Ada", "family_name": family_name, **fields},
        headers=headers(settings, path),
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def new_meeting(client, settings, path: str = PARIS, **body) -> dict[str, Any]:
    start = body.pop("starts_at", datetime.now(UTC) + timedelta(days=7))
    payload = {
        "title": "Réunion publique",
        "kind": "meeting",
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=2)).isoformat(),
        "place": {"address": "Salle des fêtes", "commune_insee": "75111"},
        **body,
    }
    r = client.post(MEETINGS_URL, json=payload, headers=headers(settings, path))
    assert r.status_code == 201, r.text
    return r.json()


def rsvp(settings, *pairs: tuple[str, str]) -> None:
    """The submissions handler's call: one batch in one transaction."""

    async def work(store: Store) -> None:
        rsvps = [
            Rsvp(
                meeting_id=m,
                contact_id=c,
                submission_id=f"s-{c}",
                federation_id="paris",
                federation_path=PARIS,
            )
            for m, c in pairs
        ]
        await store.run_transaction(lambda s: record_rsvps(store, s, rsvps))

    run_with_store(settings, work)


def registrations(client, settings, meeting_id: str, **params) -> list[dict[str, Any]]:
    r = client.get(
        f"{MEETINGS_URL}/{meeting_id}/registrations", params=params, headers=headers(settings)
    )
    assert r.status_code == 200, r.text
    return r.json()["items"]


def statuses(client, settings, meeting_id: str) -> dict[str, str]:
    return {r["contact_id"]: r["status"] for r in registrations(client, settings, meeting_id)}


# ---------------------------------------------------------------- the meetings


def test_meetings_are_created_changed_and_cancelled_within_the_subtree(contacts_api):
    client, settings = contacts_api
    meeting = new_meeting(client, settings, capacity=30, kind="canvassing")
    assert (meeting["status"], meeting["places_left"], meeting["federation_id"]) == (
        "scheduled",
        30,
        "paris",
    )
    url = f"{MEETINGS_URL}/{meeting['id']}"
    lyon = new_meeting(client, settings, LYON)

    # a viewer of Paris reads; Lyon's meeting is not found from Paris
    r = client.get(url, headers=headers(settings, role=Role.viewer))
    assert r.status_code == 200 and r.json()["kind"] == "canvassing"
    assert client.get(f"{MEETINGS_URL}/{lyon['id']}", headers=headers(settings)).status_code == 404
    listed = client.get(MEETINGS_URL, headers=headers(settings)).json()["items"]
    assert [m["id"] for m in listed] == [meeting["id"]]
    # a section below sees none of its parent's meetings
    assert client.get(url, headers=headers(settings, P11)).status_code == 404

    # bad input: 422 naming the field, nothing changed
    r = client.patch(url, json={"ends_at": "2020-01-01T00:00:00+00:00"}, headers=headers(settings))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "ends_at"
    r = client.post(
        MEETINGS_URL,
        json={
            "title": " ",
            "starts_at": "2026-06-01T18:00:00",
            "ends_at": "2026-06-01T20:00:00+02:00",
        },
        headers=headers(settings),
    )
    assert r.status_code == 422
    assert {d["field"] for d in r.json()["detail"]} == {"title", "starts_at"}
    assert client.get(url, headers=headers(settings)).json()["version"] == 1

    # a viewer may not write
    r = client.patch(url, json={"title": "X"}, headers=headers(settings, role=Role.viewer))
    assert r.status_code == 403

    r = client.patch(url, json={"title": "Porte-à-porte", "version": 1}, headers=headers(settings))
    assert r.status_code == 200 and (r.json()["title"], r.json()["version"]) == (
        "Porte-à-porte",
        2,
    )
    r = client.patch(url, json={"title": "Y", "version": 1}, headers=headers(settings))
    assert r.status_code == 409

    r = client.post(f"{url}/cancel", headers=headers(settings))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.post(f"{url}/cancel", headers=headers(settings)).status_code == 200
    listed = client.get(
        MEETINGS_URL, params={"status": "scheduled"}, headers=headers(settings)
    ).json()
    assert listed["items"] == []


def test_meetings_are_listed_in_start_order_page_by_page(contacts_api):
    client, settings = contacts_api
    start = datetime(2026, 9, 1, 18, tzinfo=UTC)
    ids = [
        new_meeting(client, settings, starts_at=start + timedelta(days=d))["id"] for d in (3, 1, 2)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "since": start.isoformat()}
        if cursor:
            params["cursor"] = cursor
        page = client.get(MEETINGS_URL, params=params, headers=headers(settings)).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[1], ids[2], ids[0]]


# ---------------------------------------------------------------- RSVPs and capacity


def test_rsvps_fill_the_places_then_the_waiting_list_once_each(contacts_api):
    client, settings = contacts_api
    meeting = new_meeting(client, settings, capacity=2)
    mid = meeting["id"]
    a, b, c, d = (person(client, settings, n) for n in ("A", "B", "C", "D"))

    rsvp(settings, (mid, a), (mid, b), (mid, a), (mid, c))  # A twice in the batch
    rsvp(settings, (mid, a), (mid, b))  # redelivered / registering again
    assert statuses(client, settings, mid) == {a: "registered", b: "registered", c: "waitlisted"}
    got = client.get(f"{MEETINGS_URL}/{mid}", headers=headers(settings)).json()
    assert (got["registered"], got["waitlisted"], got["places_left"]) == (2, 1, 0)

    async def counts(store: Store):
        return await MeetingStore(store).registered_count(mid)

    figures = run_with_store(settings, counts)
    assert (figures["capacity"], figures["registered"], figures["waitlisted"]) == (2, 2, 1)

    # a form's meeting_id is checked within a scope
    async def visible(store: Store):
        meetings = MeetingStore(store)
        return (
            await meetings.get(mid, subtree_filter(PARIS)) is not None,
            await meetings.get(mid, subtree_filter(LYON)) is not None,
        )

    assert run_with_store(settings, visible) == (True, False)

    # an operator adds D by hand: waitlisted too (same rule), 200 when done again
    r = client.post(
        f"{MEETINGS_URL}/{mid}/registrations", json={"contact_id": d}, headers=headers(settings)
    )
    assert r.status_code == 201 and r.json()["status"] == "waitlisted"
    r = client.post(
        f"{MEETINGS_URL}/{mid}/registrations", json={"contact_id": d}, headers=headers(settings)
    )
    assert r.status_code == 200

    # A cancels: the first on the waiting list (C) gets the place
    r = client.delete(f"{MEETINGS_URL}/{mid}/registrations/{a}", headers=headers(settings))
    assert r.status_code == 204
    assert statuses(client, settings, mid) == {b: "registered", c: "registered", d: "waitlisted"}
    # a larger capacity gives D a place; a lower one than the places given is refused
    r = client.patch(f"{MEETINGS_URL}/{mid}", json={"capacity": 3}, headers=headers(settings))
    assert r.status_code == 200 and r.json()["waitlisted"] == 0
    assert statuses(client, settings, mid)[d] == "registered"
    r = client.patch(f"{MEETINGS_URL}/{mid}", json={"capacity": 1}, headers=headers(settings))
    assert r.status_code == 409

    # an operator may not register somebody of Lyon from Paris
    lyon = person(client, settings, "L", LYON)
    r = client.post(
        f"{MEETINGS_URL}/{mid}/registrations", json={"contact_id": lyon}, headers=headers(settings)
    )
    assert r.status_code == 404


def test_concurrent_rsvp_batches_never_exceed_the_capacity(contacts_api):
    client, settings = contacts_api
    mid = new_meeting(client, settings, capacity=3)["id"]
    people = [person(client, settings, f"P{i}") for i in range(8)]

    async def work(store: Store) -> None:
        async def batch(ids: list[str]) -> None:
            rsvps = [Rsvp(mid, c, f"s-{c}", "paris", PARIS) for c in ids]
            await store.run_transaction(lambda s: record_rsvps(store, s, rsvps))

        await asyncio.gather(*(batch(people[i : i + 2]) for i in range(0, 8, 2)))

    run_with_store(settings, work)
    got = statuses(client, settings, mid)
    assert len(got) == 8
    assert sorted(got.values()).count("registered") == 3


# ---------------------------------------------------------------- check-in and attendance


def test_check_in_walk_ins_attendance_and_the_segment(contacts_api):
    client, settings = contacts_api
    now = datetime.now(UTC)
    this_year = datetime(now.year, 1, 1, tzinfo=UTC)
    today = new_meeting(client, settings, starts_at=now - timedelta(hours=1))
    old = new_meeting(client, settings, starts_at=this_year - timedelta(days=400))
    came, absent, walk_in, old_timer, never = (
        person(client, settings, n, email=f"{n.lower()}@example.org")
        for n in ("Martin", "Durand", "Petit", "Ancien", "Jamais")
    )
    rsvp(settings, (today["id"], came), (today["id"], absent), (old["id"], old_timer))
    url = f"{MEETINGS_URL}/{today['id']}"

    # the check-in screen searches the registrations by name
    found = registrations(client, settings, today["id"], q="mart")
    assert [(r["contact_id"], r["family_name"]) for r in found] == [(came, "Martin")]

    for contact_id in (came, came, walk_in):  # twice: the same check-in
        r = client.post(
            f"{url}/check-ins", json={"contact_id": contact_id}, headers=headers(settings)
        )
        assert r.status_code == 200, r.text
    r = client.post(
        f"{MEETINGS_URL}/{old['id']}/check-ins",
        json={"contact_id": old_timer},
        headers=headers(settings),
    )
    assert r.status_code == 200
    regs = {r["contact_id"]: r for r in registrations(client, settings, today["id"])}
    assert regs[walk_in]["status"] == "walk_in" and regs[walk_in]["checked_in_at"]
    assert regs[came]["checked_in_at"] and regs[absent]["checked_in_at"] is None

    # the person's history
    r = client.get(
        f"{MEETINGS_URL}/attendance", params={"contact_id": came}, headers=headers(settings)
    )
    assert r.status_code == 200
    assert r.json()["attended"] == 1 and r.json()["items"][0]["meeting_id"] == today["id"]
    r = client.get(
        f"{MEETINGS_URL}/attendance", params={"contact_id": came}, headers=headers(settings, LYON)
    )
    assert r.status_code == 404

    # an edit of the person keeps their attendance
    version = client.get(f"{CONTACTS}/{came}", headers=headers(settings)).json()["version"]
    r = client.patch(
        f"{CONTACTS}/{came}",
        json={"given_name": "Adèle", "version": version},
        headers=headers(settings),
    )
    assert r.status_code == 200, r.text

    segment = {"op": "attended", "kind": "meeting", "since": this_year.isoformat()}

    def matched() -> set[str]:
        r = client.post(
            f"{SEGMENTS}/preview", json={"filter": segment, "size": 50}, headers=headers(settings)
        )
        assert r.status_code == 200, r.text
        return {c["id"] for c in r.json()["sample"]}

    assert matched() == {came, walk_in}  # not the absent one, not last year's
    segment_ever = {"op": "attended", "at_least": 1}
    r = client.post(
        f"{SEGMENTS}/preview", json={"filter": segment_ever, "size": 50}, headers=headers(settings)
    )
    assert {c["id"] for c in r.json()["sample"]} == {came, walk_in, old_timer}

    # last year's meeting moved into this year: who came to it counts at its new date
    moved = now - timedelta(hours=3)
    r = client.patch(
        f"{MEETINGS_URL}/{old['id']}",
        json={"starts_at": moved.isoformat(), "ends_at": (moved + timedelta(hours=1)).isoformat()},
        headers=headers(settings),
    )
    assert r.status_code == 200, r.text
    assert matched() == {came, walk_in, old_timer}

    # undo: the walk-in is no registration any more, and out of the segment
    r = client.delete(f"{url}/check-ins/{walk_in}", headers=headers(settings))
    assert r.status_code == 204
    assert client.delete(f"{url}/check-ins/{walk_in}", headers=headers(settings)).status_code == 204
    assert walk_in not in statuses(client, settings, today["id"])
    assert matched() == {came, old_timer}
    assert never not in matched()

    # a cancelled meeting takes no check-in
    client.post(f"{url}/cancel", headers=headers(settings))
    r = client.post(f"{url}/check-ins", json={"contact_id": absent}, headers=headers(settings))
    assert r.status_code == 409


# ---------------------------------------------------------------- reminders


def reminders_in_outbox(settings: ContactsSettings) -> list[dict[str, Any]]:
    async def work(store: Store) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async for row in store[OUTBOX].find({}).sort("seq"):
            if row.get("batch") is not None:
                events += [e.model_dump(mode="json") for e in unpack_batch(row)]
            else:
                events.append(row["envelope"])
        return [e for e in events if e["type"] == "meeting-reminder-requested"]

    return run_with_store(settings, work)


def test_reminders_are_requested_once_per_person_and_offset(contacts_api, monkeypatch):
    client, settings = contacts_api
    now = datetime.now(UTC)
    soon = new_meeting(client, settings, starts_at=now + timedelta(hours=10), capacity=2)
    later = new_meeting(client, settings, starts_at=now + timedelta(days=3))
    a, b, c = (person(client, settings, n) for n in ("A", "B", "C"))
    rsvp(settings, (soon["id"], a), (soon["id"], b), (soon["id"], c), (later["id"], a))

    monkeypatch.setenv("CONTACTS_MEETING_REMINDER_HOURS", "[24, 2]")
    monkeypatch.setenv("CONTACTS_MEETING_REMINDER_BATCH_SIZE", "1")
    job_settings = ContactsSettings()

    async def run(store: Store, at: datetime) -> int:
        jobs = [MeetingReminders(job_settings, store) for _ in range(3)]
        done = await asyncio.gather(*(j.run(at) for j in jobs))
        # a job that lost a race leaves the rest to the next round
        return sum(done) + await MeetingReminders(job_settings, store).run(at)

    run_with_store(settings, lambda store: run(store, now))
    requested = reminders_in_outbox(settings)
    # A and B have places (C waits); the meeting in three days is not due yet
    assert sorted(e["key"] for e in requested) == sorted([a, b])
    assert {e["data"]["hours_before"] for e in requested} == {24}
    assert requested[0]["data"]["purpose"] == settings.meeting_reminder_purpose
    assert requested[0]["data"]["meeting_id"] == soon["id"]

    run_with_store(settings, lambda store: run(store, now + timedelta(minutes=5)))
    assert len(reminders_in_outbox(settings)) == 2  # nothing twice

    # 1 h 30 before: the 2-hour reminder, once
    run_with_store(settings, lambda store: run(store, now + timedelta(hours=8, minutes=30)))
    requested = reminders_in_outbox(settings)
    assert sorted(e["data"]["hours_before"] for e in requested) == [2, 2, 24, 24]

    # a cancelled meeting reminds nobody
    client.post(f"{MEETINGS_URL}/{later['id']}/cancel", headers=headers(settings))
    run_with_store(settings, lambda store: run(store, now + timedelta(days=2, hours=12)))
    assert len(reminders_in_outbox(settings)) == 4


# ---------------------------------------------------------------- erasure


def test_erasure_deletes_the_registrations_and_frees_the_place(contacts_api):
    client, settings = contacts_api
    mid = new_meeting(client, settings, capacity=5)["id"]
    a, b = person(client, settings, "A"), person(client, settings, "B")
    rsvp(settings, (mid, a), (mid, b))
    client.post(
        f"{MEETINGS_URL}/{mid}/check-ins", json={"contact_id": a}, headers=headers(settings)
    )

    async def erase(store: Store) -> tuple[int, int]:
        await store.run_transaction(lambda s: ContactsPrivacyStore(store).erase(a, s))
        left = await store[REGISTRATIONS].count_documents({"contact_id": a})
        meeting = await store[MEETINGS].find_one({"_id": mid})
        return left, meeting["registered"]

    assert run_with_store(settings, erase) == (0, 1)
    assert statuses(client, settings, mid) == {b: "registered"}


def test_erasure_gives_the_freed_place_to_the_waiting_list(contacts_api):
    client, settings = contacts_api
    mid = new_meeting(client, settings, capacity=1)["id"]
    a, b = person(client, settings, "A"), person(client, settings, "B")
    rsvp(settings, (mid, a), (mid, b))
    assert statuses(client, settings, mid) == {a: "registered", b: "waitlisted"}

    run_with_store(
        settings,
        lambda store: store.run_transaction(lambda s: ContactsPrivacyStore(store).erase(a, s)),
    )

    assert statuses(client, settings, mid) == {b: "registered"}
    meeting = client.get(f"{MEETINGS_URL}/{mid}", headers=headers(settings)).json()
    assert (meeting["registered"], meeting["waitlisted"]) == (1, 0)


# ---------------------------------------------------------------- merges


def merge(client, settings, survivor: str, merged: str) -> None:
    r = client.post(
        f"{CONTACTS}/{survivor}/merge", json={"merged_id": merged}, headers=headers(settings)
    )
    assert r.status_code == 200, r.text


def test_a_merge_carries_the_registrations_and_the_attendance_to_the_survivor(contacts_api):
    client, settings = contacts_api
    past = new_meeting(client, settings, starts_at=datetime.now(UTC) - timedelta(hours=1))
    upcoming = new_meeting(client, settings, capacity=3)
    survivor = person(client, settings, "Dupont")
    merged = person(client, settings, "Dupond")
    rsvp(settings, (past["id"], merged), (upcoming["id"], merged))
    r = client.post(
        f"{MEETINGS_URL}/{past['id']}/check-ins",
        json={"contact_id": merged},
        headers=headers(settings),
    )
    assert r.status_code in (200, 201), r.text

    merge(client, settings, survivor, merged)

    assert statuses(client, settings, upcoming["id"]) == {survivor: "registered"}
    assert statuses(client, settings, past["id"]) == {survivor: "registered"}
    r = client.get(
        f"{MEETINGS_URL}/attendance", params={"contact_id": survivor}, headers=headers(settings)
    )
    assert r.status_code == 200, r.text
    assert [m["meeting_id"] for m in r.json()["items"] if m["attended"]] == [past["id"]]
    assert r.json()["attended"] == 1
    meeting = client.get(f"{MEETINGS_URL}/{upcoming['id']}", headers=headers(settings)).json()
    assert meeting["registered"] == 1  # moved, not counted twice


def test_a_person_registered_twice_keeps_one_place_and_the_other_goes_to_the_list(
    contacts_api,
):
    client, settings = contacts_api
    mid = new_meeting(client, settings, capacity=2)["id"]
    survivor = person(client, settings, "Martin")
    merged = person(client, settings, "Martin", given_name="Adèle")
    waiting = person(client, settings, "Petit")
    rsvp(settings, (mid, survivor), (mid, merged), (mid, waiting))
    assert statuses(client, settings, mid)[waiting] == "waitlisted"

    merge(client, settings, survivor, merged)

    assert statuses(client, settings, mid) == {survivor: "registered", waiting: "registered"}
    meeting = client.get(f"{MEETINGS_URL}/{mid}", headers=headers(settings)).json()
    assert (meeting["registered"], meeting["waitlisted"]) == (2, 0)


# ---------------------------------------------------------------- the attended node on the store


def test_the_store_and_evaluate_agree_on_attendance(isolated_env):
    """The compiled ``attended`` query run by the real store selects exactly what
    ``evaluate`` selects, on summaries built the way check-in builds them."""
    settings = ContactsSettings()
    rng = random.Random(14)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    docs = []
    for i in range(150):
        marks = [
            (rng.choice(["meeting", "canvassing"]), t0 + timedelta(days=rng.randrange(500)))
            for _ in range(rng.choice([0, 0, 1, 2, 3, 6]))
        ]
        doc: dict[str, Any] = {"_id": f"a{i:03d}"}
        if marks:
            doc["attendance"] = attendance_summary(marks)
        docs.append(doc)

    async def scenario(store: Store) -> int:
        collection = store["attendance_agreement"]
        await collection.insert_many([dict(d) for d in docs])
        checked = 0
        for _ in range(60):
            node: dict[str, Any] = {
                "op": "attended",
                "kind": rng.choice(["meeting", "canvassing", "any"]),
                "at_least": rng.choice([1, 2, 3, 5]),
            }
            if rng.random() < 0.8:
                node["since"] = (t0 + timedelta(days=rng.randrange(500))).isoformat()
            flt = parse_filter(node if rng.random() < 0.8 else {"op": "not", "filter": node})
            found = {d["_id"] async for d in collection.find(compile_filter(flt), {"_id": 1})}
            assert found == {d["_id"] for d in docs if evaluate(flt, d)}, node
            checked += 0 < len(found) < len(docs)
        return checked

    assert run_with_store(settings, scenario) > 20
