"""Recurring dues and donations: a schedule per person and purpose (amount, interval, next
due date, method, provider).

A payment that carries the schedule's id advances it by one interval (inside the payment's
own transaction: ``MembershipsService`` calls ``Schedules.advance``). The worker's periodic
check marks a due date passed by ``MEMBERSHIPS_SCHEDULE_TOLERANCE_DAYS`` without payment as
missed and moves the schedule to its next due date; a missed DUES payment starts the grace
period of the person's membership at once: its paid period now ends the day before the
missed due date (so ``Membership.status_on`` gives grace from that date, for the plan's
grace days), stored as grace with ``membership-grace-started``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

from prometheus_client import Counter
from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.errors import InvalidField, NotFound, Refused
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import MembershipGraceStartedV1
from tribune_shared.ids import sortable_id
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store
from tribune_shared.worker import BackgroundTask, periodic

from memberships.domain import Membership
from memberships.payments.domain import (
    OPEN_SCHEDULES,
    Interval,
    ScheduleStatus,
    add_interval,
    grace_after_miss,
    missed_dues,
    resumed_due,
    schedule_target,
)
from memberships.payments.notice import PaymentNotice
from memberships.payments.store import PaymentsStore, iso
from memberships.plans.service import PlanCatalog
from memberships.settings import MembershipsSettings
from memberships.store import membership_from_doc

log = get_logger(__name__)
PRODUCER = "memberships"

MISSED = Counter(
    "tribune_schedule_dues_missed_total", "Recurring due dates missed, by purpose", ["purpose"]
)


def _day(value: str) -> date:
    return date.fromisoformat(value)


class Schedules:
    def __init__(
        self,
        settings: MembershipsSettings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.repo = PaymentsStore(store)
        self.contacts = ContactDirectory(store)
        self.outbox = Outbox(store)
        self.clock = clock

    def today(self) -> date:
        return self.settings.day_at(self.clock())

    # ------------------------------------------------------------ a treasurer's schedules

    async def create(self, identity: Identity, fields: dict[str, Any]) -> dict[str, Any]:
        contact = await self.contacts.visible(identity, fields["contact_id"])
        if contact is None:
            raise NotFound("contact not found", field="contact_id")
        next_due_on: date = fields["next_due_on"]
        if next_due_on < self.today():
            raise InvalidField("the first due date is in the past", field="next_due_on")
        if fields["purpose"] == "dues":  # an unknown plan or rate: 422 now, not at payment
            await PlanCatalog(self.settings, self.store).for_dues(
                contact, fields.get("plan"), fields.get("rate")
            )
        open_one = await self.repo.schedule(
            {
                "contact_id": fields["contact_id"],
                "purpose": fields["purpose"],
                "status": {"$in": [s.value for s in OPEN_SCHEDULES]},
            }
        )
        if open_one is not None:
            raise Refused(
                "this person already has an open schedule for this purpose",
                schedule_id=open_one["_id"],
            )
        now = utcnow()
        doc = {
            "_id": sortable_id(),
            **fields,
            "next_due_on": next_due_on.isoformat(),
            # the day of the month dues fall on (a schedule due on the 31st stays on month ends)
            "anchor_day": next_due_on.day,
            "status": ScheduleStatus.active.value,
            "missed": [],
            "payments": 0,
            "last_payment_id": None,
            "federation_id": contact["federation_id"],
            "federation_path": contact["federation_path"],
            "created_by": identity.user_id,
            "created_at": now,
            "history": [{"status": "active", "at": now, "by": identity.user_id}],
        }
        await self.repo.insert_schedule(doc)
        return doc

    async def get(self, identity: Identity, schedule_id: str) -> dict[str, Any]:
        doc = await self.repo.schedule({"_id": schedule_id, **identity.scope()})
        if doc is None:
            raise NotFound("schedule not found", field="schedule_id")
        return doc

    async def page(
        self,
        identity: Identity,
        *,
        contact_id: str | None,
        status: ScheduleStatus | None,
        limit: int,
        before: str | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        query: dict[str, Any] = dict(identity.scope())
        if contact_id is not None:
            query["contact_id"] = contact_id
        if status is not None:
            query["status"] = status.value
        return await self.repo.schedules_page(
            query, limit=min(limit, self.settings.max_page_size), before=before
        )

    async def change(
        self, identity: Identity, schedule_id: str, action: str, reason: str = ""
    ) -> dict[str, Any]:
        """pause, resume or cancel (409 from a status that does not allow it)."""
        doc = await self.get(identity, schedule_id)
        current = ScheduleStatus(doc["status"])
        target = schedule_target(current, action)
        update: dict[str, Any] = {
            "$set": {"status": target.value},
            "$push": {
                "history": {
                    "status": target.value,
                    "at": utcnow(),
                    "by": identity.user_id,
                    "reason": reason,
                }
            },
        }
        if action == "resume":
            interval = Interval(doc["interval"])
            due = resumed_due(_day(doc["next_due_on"]), interval, doc["anchor_day"], self.today())
            update["$set"]["next_due_on"] = due.isoformat()
        changed = await self.repo.update_schedule(schedule_id, {"status": current.value}, update)
        if changed is None:  # changed concurrently: answer from what it is now
            now = await self.get(identity, schedule_id)
            schedule_target(ScheduleStatus(now["status"]), action)
            raise Refused("the schedule changed meanwhile; try again")
        return changed

    # ------------------------------------------------------------ payments advance it

    async def advance(
        self, notice: PaymentNotice, payment_id: str, session: AsyncClientSession
    ) -> None:
        """Called in the payment's transaction: the schedule's next due date moves by one
        interval. A schedule of someone else, of another purpose or cancelled is left alone
        (a provider's money is recorded whatever its metadata says)."""
        assert notice.schedule_id is not None
        doc = await self.repo.schedule({"_id": notice.schedule_id}, session)
        if (
            doc is None
            or doc["contact_id"] != notice.contact_id
            or doc["purpose"] != notice.purpose
            or doc["status"] not in {s.value for s in OPEN_SCHEDULES}
        ):
            log.warning(
                "schedule.payment_ignored", schedule_id=notice.schedule_id, payment_id=payment_id
            )
            return
        due = add_interval(_day(doc["next_due_on"]), Interval(doc["interval"]), doc["anchor_day"])
        await self.repo.update_schedule(
            doc["_id"],
            {},
            {
                "$set": {
                    "next_due_on": due.isoformat(),
                    "last_payment_id": payment_id,
                    "last_paid_at": notice.paid_at,
                },
                "$inc": {"payments": 1},
            },
            session,
        )

    async def advance_many(
        self, paid: Sequence[tuple[PaymentNotice, str]], session: AsyncClientSession
    ) -> None:
        """``advance`` for a batch's accepted payments (notice, payment id), in order: one
        read and one write per schedule, two payments of one schedule move it on twice."""
        ids = sorted({n.schedule_id for n, _ in paid if n.schedule_id is not None})
        if not ids:
            return
        docs = await self.repo.schedules_by_ids(ids, session)
        changed: dict[str, dict[str, Any]] = {}
        for notice, payment_id in paid:
            if notice.schedule_id is None:
                continue
            doc = docs.get(notice.schedule_id)
            if (
                doc is None
                or doc["contact_id"] != notice.contact_id
                or doc["purpose"] != notice.purpose
                or doc["status"] not in {s.value for s in OPEN_SCHEDULES}
            ):
                log.warning(
                    "schedule.payment_ignored",
                    schedule_id=notice.schedule_id,
                    payment_id=payment_id,
                )
                continue
            due = add_interval(
                _day(doc["next_due_on"]), Interval(doc["interval"]), doc["anchor_day"]
            )
            doc["next_due_on"] = due.isoformat()  # the batch's next payment starts from here
            change = changed.setdefault(doc["_id"], {"payments": 0})
            change.update(next_due_on=due.isoformat(), last_payment_id=payment_id)
            change.update(last_paid_at=notice.paid_at, payments=change["payments"] + 1)
        updates = [
            UpdateOne(
                {"_id": schedule_id},
                {
                    "$set": {k: v for k, v in change.items() if k != "payments"},
                    "$inc": {"payments": change["payments"]},
                },
            )
            for schedule_id, change in sorted(changed.items())
        ]
        await self.repo.apply_schedule_updates(updates, session)

    # ------------------------------------------------------------ missed dues (worker)

    async def check_missed(self) -> int:
        """Mark every due date passed by the tolerance without payment, batch by batch (one
        transaction each: several workers may run it, their writes conflict and the loser's
        batch runs again and finds the work done). Returns the due dates marked missed."""
        today = self.today()
        cutoff = today - timedelta(days=self.settings.schedule_tolerance_days)
        total = 0
        while True:
            found, missed = await self.store.run_transaction(
                lambda session: self._miss_batch(session, today, cutoff),
                what="memberships.schedules",
            )
            total += missed
            if found < self.settings.schedule_batch_size or not missed:
                return total

    async def _miss_batch(
        self, session: AsyncClientSession, today: date, cutoff: date
    ) -> tuple[int, int]:
        docs = await self.repo.due_schedules(cutoff, self.settings.schedule_batch_size, session)
        if not docs:
            return 0, 0
        dues_contacts = [d["contact_id"] for d in docs if d["purpose"] == "dues"]
        memberships = (
            await self.repo.current_memberships(dues_contacts, session) if dues_contacts else {}
        )
        now = utcnow()
        updates: list[UpdateOne] = []
        changes: list[tuple[Membership, dict[str, Any]]] = []
        events: list[Envelope] = []
        missed_count = 0
        for doc in docs:
            missed, next_due = missed_dues(
                _day(doc["next_due_on"]),
                Interval(doc["interval"]),
                doc["anchor_day"],
                today,
                self.settings.schedule_tolerance_days,
            )
            if not missed:
                continue
            missed_count += len(missed)
            MISSED.labels(doc["purpose"]).inc(len(missed))
            updates.append(
                UpdateOne(
                    {"_id": doc["_id"], "status": "active", "next_due_on": doc["next_due_on"]},
                    {
                        "$set": {
                            "next_due_on": next_due.isoformat(),
                            "last_missed_on": iso(missed[-1]),
                        },
                        "$push": {
                            "missed": {"$each": [{"due_on": iso(d), "at": now} for d in missed]}
                        },
                    },
                )
            )
            mdoc = memberships.get(doc["contact_id"]) if doc["purpose"] == "dues" else None
            if mdoc is None:
                continue
            membership = membership_from_doc(mdoc)
            after = grace_after_miss(membership, missed[0])
            if after is None:
                continue
            assert after.ends_on is not None and after.grace_ends_on is not None
            changes.append(
                (
                    after,
                    {
                        "status": after.status.value,
                        "at": now,
                        "reason": "schedule_missed",
                        "schedule_id": doc["_id"],
                        "missed_due_on": iso(missed[0]),
                        "ends_on": iso(after.ends_on),
                        "ends_on_before": iso(membership.ends_on),
                    },
                )
            )
            events.append(
                new_envelope(
                    MembershipGraceStartedV1(
                        membership_id=after.membership_id,
                        contact_id=after.contact_id,
                        ends_on=after.ends_on,
                        grace_ends_on=after.grace_ends_on,
                    ),
                    producer=PRODUCER,
                    federation_id=mdoc["federation_id"],
                    federation_path=mdoc["federation_path"],
                )
            )
        await self.repo.apply_schedule_updates(updates, session)
        await self.repo.change_memberships(changes, session)
        if events:
            await self.outbox.add(session, *events)
        if missed_count:
            log.info("schedules.missed", dues=missed_count, grace_started=len(events))
        return len(docs), missed_count


def schedule_check_task(schedules: Schedules) -> BackgroundTask:
    """The worker's loop looking for missed dues every ``schedule_check_interval_seconds``."""
    return periodic(
        "schedules.check",
        schedules.settings.schedule_check_interval_seconds,
        schedules.check_missed,
    )
