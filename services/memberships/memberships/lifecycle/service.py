"""Lifecycle use cases: the scheduled sweep (grace, lapse, renewal reminders), cancelling
a membership, and the roll and counts of a subtree at a day."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from prometheus_client import Counter
from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.errors import InvalidField, NotFound, Refused
from tribune_shared.events import Envelope, new_envelope, utcnow
from tribune_shared.events.contracts import (
    EventContract,
    MembershipCancelledV1,
    MembershipGraceStartedV1,
    MembershipLapsedV1,
    MembershipRenewalRequestedV1,
)
from tribune_shared.federations import FederationDirectory
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store
from tribune_shared.worker import BackgroundTask, periodic

from memberships.domain import Membership, MembershipStatus, cancel, lapsed_on, settle
from memberships.lifecycle.domain import (
    GOOD_STANDING_ON,
    reminder_due,
    reminder_key,
    state_on,
    sweep_steps,
)
from memberships.lifecycle.store import GuardedUpdate, LifecycleStore
from memberships.people.service import People
from memberships.settings import MembershipsSettings
from memberships.store import membership_from_doc

log = get_logger(__name__)
PRODUCER = "memberships"
S = MembershipStatus

TRANSITIONS = Counter(
    "tribune_membership_transitions_total",
    "Membership transitions recorded by the lifecycle (sweep and cancellations)",
    ["service", "status"],
)
REMINDERS = Counter(
    "tribune_membership_renewal_reminders_total",
    "Renewal reminders requested (requested) or passed over (skipped)",
    ["service", "outcome"],
)


@dataclass
class SweepReport:
    grace: int = 0
    lapsed: int = 0
    reminders: int = 0
    batches: int = 0


def _parse(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _envelope(doc: dict[str, Any], event: EventContract) -> Envelope:
    return new_envelope(
        event,
        producer=PRODUCER,
        federation_id=doc["federation_id"],
        federation_path=doc["federation_path"],
    )


def _transition_events(
    doc: dict[str, Any], membership: Membership, steps: list[MembershipStatus]
) -> list[Envelope]:
    events: list[Envelope] = []
    for step in steps:
        assert membership.ends_on is not None and membership.grace_ends_on is not None
        if step is S.grace:
            events.append(
                _envelope(
                    doc,
                    MembershipGraceStartedV1(
                        membership_id=membership.membership_id,
                        contact_id=membership.contact_id,
                        ends_on=membership.ends_on,
                        grace_ends_on=membership.grace_ends_on,
                    ),
                )
            )
        elif step is S.lapsed:
            events.append(
                _envelope(
                    doc,
                    MembershipLapsedV1(
                        membership_id=membership.membership_id,
                        contact_id=membership.contact_id,
                        lapsed_on=lapsed_on(membership),
                    ),
                )
            )
    return events


def _history(step: MembershipStatus, at: datetime, day: date) -> dict[str, Any]:
    """A transition time made (recorded by the sweep, or before a cancellation)."""
    return {"status": step.value, "at": at, "by": "time", "on": day.isoformat()}


def _guard(doc: dict[str, Any]) -> dict[str, Any]:
    """The membership exactly as it was read (status and period): a payment, another
    sweeper or a cancellation that changed it since makes the update miss."""
    return {"status": doc["status"], "ends_on": doc.get("ends_on")}


class LifecycleService:
    def __init__(
        self,
        settings: MembershipsSettings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.repo = LifecycleStore(store)
        self.outbox = Outbox(store)
        self.federations = FederationDirectory(store)
        self.people = People(store)
        self.clock = clock

    def today(self) -> date:
        return self.settings.day_at(self.clock())

    # ------------------------------------------------------------ the sweep

    async def sweep(self, today: date | None = None) -> SweepReport:
        """One round: every membership time has moved on is moved to grace or lapsed,
        then the renewal reminders due are requested; batch by batch, each batch with its
        events in one transaction. Safe with any number of sweepers at once."""
        day = today or self.today()
        report = SweepReport()
        size = self.settings.sweep_batch_size
        while report.batches < self.settings.sweep_max_batches:
            seen, steps = await self.store.run_transaction(
                lambda s: self._transitions_batch(s, day), what="memberships.sweep"
            )
            report.batches += 1
            for step in steps:  # counted once committed (a retried batch starts afresh)
                TRANSITIONS.labels(PRODUCER, step.value).inc()
                report.grace += step is S.grace
                report.lapsed += step is S.lapsed
            if seen < size:
                break
        offsets = self.settings.renewal_reminder_days
        while offsets and report.batches < self.settings.sweep_max_batches:
            seen, requested, skipped = await self.store.run_transaction(
                lambda s: self._reminders_batch(s, day), what="memberships.reminders"
            )
            report.batches += 1
            report.reminders += requested
            REMINDERS.labels(PRODUCER, "requested").inc(requested)
            REMINDERS.labels(PRODUCER, "skipped").inc(skipped)
            if seen < size:
                break
        if report.grace or report.lapsed or report.reminders:
            log.info(
                "lifecycle.swept",
                day=day.isoformat(),
                grace=report.grace,
                lapsed=report.lapsed,
                reminders=report.reminders,
            )
        return report

    async def _transitions_batch(
        self, session: AsyncClientSession, day: date
    ) -> tuple[int, list[MembershipStatus]]:
        """(memberships read, the transitions recorded) of one batch."""
        docs = await self.repo.due_transitions(day, self.settings.sweep_batch_size, session)
        now = utcnow()
        planned: dict[str, tuple[list[Envelope], list[MembershipStatus]]] = {}
        updates = []
        for doc in docs:
            membership = membership_from_doc(doc)
            steps = sweep_steps(membership, day)
            if not steps:
                continue
            op_id = uuid.uuid4().hex
            updates.append(
                GuardedUpdate(
                    membership.membership_id,
                    op_id,
                    _guard(doc),
                    {
                        "status": steps[-1].value,
                        "grace_ends_on": membership.grace_ends_on.isoformat()
                        if membership.grace_ends_on
                        else None,
                    },
                    [_history(s, now, day) for s in steps],
                )
            )
            planned[membership.membership_id] = (
                _transition_events(doc, membership, steps),
                steps,
            )
        applied = await self.repo.apply(updates, session)
        events = [e for mid in applied for e in planned[mid][0]]
        await self.outbox.add(session, *events)
        return len(docs), [step for mid in applied for step in planned[mid][1]]

    async def _reminders_batch(
        self, session: AsyncClientSession, day: date
    ) -> tuple[int, int, int]:
        """(memberships read, reminders requested, reminders passed over) of one batch."""
        offsets = self.settings.renewal_reminder_days
        docs = await self.repo.due_reminders(day, offsets, self.settings.sweep_batch_size, session)
        planned: dict[str, Envelope | None] = {}
        updates = []
        for doc in docs:
            membership = membership_from_doc(doc)
            reminded = list(doc.get("reminded") or [])
            decision = reminder_due(
                membership.starts_on, membership.ends_on, day, offsets, reminded
            )
            if decision is None:
                continue
            assert membership.ends_on is not None
            # keys of earlier periods are dropped: a renewal starts a fresh list
            prefix = reminder_key(membership.ends_on, 0).rsplit(":", 1)[0] + ":"
            kept = [k for k in reminded if k.startswith(prefix)]
            updates.append(
                GuardedUpdate(
                    membership.membership_id,
                    uuid.uuid4().hex,
                    {**_guard(doc), "reminded": {"$ne": decision.keys[0]}},
                    {"reminded": sorted({*kept, *decision.keys})},
                )
            )
            planned[membership.membership_id] = (
                _envelope(
                    doc,
                    MembershipRenewalRequestedV1(
                        membership_id=membership.membership_id,
                        contact_id=membership.contact_id,
                        plan=membership.plan,
                        ends_on=membership.ends_on,
                        days_left=decision.days_left,
                    ),
                )
                if decision.send
                else None
            )
        applied = await self.repo.apply(updates, session)
        events = [e for mid in applied if (e := planned[mid]) is not None]
        await self.outbox.add(session, *events)
        return len(docs), len(events), len(applied) - len(events)

    # ------------------------------------------------------------ cancel

    async def cancel(self, identity: Identity, membership_id: str, reason: str) -> dict[str, Any]:
        """Cancel a membership of the caller's subtree (404 elsewhere); 409 if it is
        already final (lapsed, by time included, or cancelled). Time's own transitions
        not recorded yet (grace) are recorded first, with their events."""
        reason = reason.strip()
        if not reason:
            raise InvalidField("must not be blank", field="reason")
        if len(reason) > self.settings.cancel_reason_max_chars:
            raise InvalidField(
                f"must be at most {self.settings.cancel_reason_max_chars} characters",
                field="reason",
            )
        day = self.today()
        return await self.store.run_transaction(
            lambda s: self._cancel_in(s, identity, membership_id, reason, day),
            what="memberships.cancel",
        )

    async def _cancel_in(
        self,
        session: AsyncClientSession,
        identity: Identity,
        membership_id: str,
        reason: str,
        day: date,
    ) -> dict[str, Any]:
        doc = await self.repo.membership_doc(membership_id, identity.scope(), session)
        if doc is None:
            raise NotFound("membership not found", field="membership_id")
        membership = membership_from_doc(doc)
        steps = sweep_steps(membership, day)
        settled = settle(membership, day)
        cancelled = cancel(settled)  # InvalidTransition (409) if lapsed or cancelled
        now = utcnow()
        history = [_history(s, now, day) for s in steps]
        history.append(
            {"status": S.cancelled.value, "at": now, "by": identity.user_id, "reason": reason}
        )
        update = GuardedUpdate(
            membership_id,
            uuid.uuid4().hex,
            _guard(doc),
            {
                "status": cancelled.status.value,
                "cancelled_on": day.isoformat(),
                "cancel_reason": reason,
                "grace_ends_on": membership.grace_ends_on.isoformat()
                if membership.grace_ends_on
                else None,
            },
            history,
        )
        if not await self.repo.apply([update], session):
            raise Refused("the membership changed meanwhile; try again")
        events = _transition_events(doc, membership, steps)
        events.append(
            _envelope(
                doc,
                MembershipCancelledV1(
                    membership_id=membership_id,
                    contact_id=membership.contact_id,
                    cancelled_on=day,
                    reason=reason,
                ),
            )
        )
        await self.outbox.add(session, *events)
        for step in [*steps, S.cancelled]:
            TRANSITIONS.labels(PRODUCER, step.value).inc()
        log.info("membership.cancelled", membership_id=membership_id, by=identity.user_id)
        return {
            "membership_id": membership_id,
            "contact_id": membership.contact_id,
            "status": S.cancelled,
            "cancelled_on": day,
            "reason": reason,
            "federation_id": doc["federation_id"],
        }

    # ------------------------------------------------------------ roll and counts

    async def _subtree(self, identity: Identity, federation_id: str | None) -> tuple[str, str]:
        return await self.federations.resolve(identity, federation_id)

    async def roll(
        self,
        identity: Identity,
        federation_id: str | None,
        on: date | None,
        after: str | None,
        limit: int | None,
    ) -> dict[str, Any]:
        """The members in good standing on ``on`` (today) in a subtree: one entry per
        person, by contact id, paged (``next_after`` names the next page)."""
        limit = limit or self.settings.roll_default_limit
        if limit > self.settings.max_page_size:
            raise InvalidField(f"must be at most {self.settings.max_page_size}", field="limit")
        fid, path = await self._subtree(identity, federation_id)
        day = on or self.today()
        items, next_after = await self._page(path, day, after, limit)
        return {"federation_id": fid, "on": day, "items": items, "next_after": next_after}

    async def _page(
        self, path: str, day: date, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        docs = await self.repo.roll_page(path, day, after, limit)
        items: list[dict[str, Any]] = []
        for doc in docs:
            if items and items[-1]["contact_id"] == doc["contact_id"]:
                continue  # one line per person (merged contacts may hold two)
            if len(items) == limit:
                break
            items.append(self._entry(doc, day))
        # the names from the people projection, one read per page (none: erased or not
        # projected yet; the contact id still identifies the member)
        names = await self.people.identities([i["contact_id"] for i in items])
        for item in items:
            person = names.get(item["contact_id"])
            item["given_name"] = person.given_name if person else None
            item["family_name"] = person.family_name if person else None
        more = len(docs) > limit
        return items, (items[-1]["contact_id"] if more and items else None)

    def _entry(self, doc: dict[str, Any], day: date) -> dict[str, Any]:
        membership = membership_from_doc(doc)
        state = state_on(membership, day, _parse(doc.get("cancelled_on")))
        assert state in GOOD_STANDING_ON
        return {
            "contact_id": membership.contact_id,
            "membership_id": membership.membership_id,
            "plan": membership.plan,
            "state": state.value,
            "starts_on": membership.starts_on,
            "ends_on": membership.ends_on,
            "grace_ends_on": membership.grace_ends_on,
            "federation_id": doc["federation_id"],
        }

    async def roll_export(
        self, identity: Identity, federation_id: str | None, on: date | None
    ) -> tuple[str, date, AsyncIterator[list[dict[str, Any]]]]:
        """(federation id, day, batches of the whole roll): the subtree is checked before
        the first byte goes out, so a refusal is a plain 404."""
        fid, path = await self._subtree(identity, federation_id)
        day = on or self.today()
        size = self.settings.roll_export_batch_size

        async def batches() -> AsyncIterator[list[dict[str, Any]]]:
            after: str | None = None
            while True:
                items, after = await self._page(path, day, after, size)
                if items:
                    yield items
                if after is None:
                    return

        return fid, day, batches()

    async def counts(
        self, identity: Identity, federation_id: str | None, on: date | None
    ) -> dict[str, Any]:
        """Memberships of a subtree by their state on ``on`` (today)."""
        fid, path = await self._subtree(identity, federation_id)
        day = on or self.today()
        counts = await self.repo.counts(path, day)
        return {
            "federation_id": fid,
            "on": day,
            "in_good_standing": counts["active"] + counts["grace"],
            **counts,
        }


def sweep_task(service: LifecycleService) -> BackgroundTask:
    """The worker's periodic sweep (``MEMBERSHIPS_SWEEP_INTERVAL_SECONDS``); every worker
    runs it, the conditional updates keep them from doing anything twice."""
    return periodic("lifecycle.sweep", service.settings.sweep_interval_seconds, service.sweep)
