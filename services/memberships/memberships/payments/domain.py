"""Payment rules free of I/O: what dues do to a membership, the legal ceilings across a
batch of payments, provider retries inside a batch, reversals (refunds, chargebacks) and
the standing they take back, recurring schedules and their due dates, remittance slips of
cheques."""

from __future__ import annotations

import calendar
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from tribune_shared.errors import InvalidField, Refused
from tribune_shared.events import Envelope, new_envelope
from tribune_shared.events.contracts import (
    DonationReceivedV1,
    EventContract,
    MembershipActivatedV1,
    MembershipLapsedV1,
    PaymentReceivedV1,
)
from tribune_shared.spreadsheet import BOM, encode_rows, neutralise

from memberships.domain import (
    OPEN_STATUSES,
    Membership,
    MembershipStatus,
    Plan,
    check_transition,
    lapsed_on,
    new_membership,
    pay_dues,
    settle,
)
from memberships.donations.rules import (
    Assessment,
    Gift,
    Limits,
    assess,
    campaign_total,
    counted_total,
    counts_toward_party_ceiling,
)
from memberships.payments.notice import PaymentNotice

# ---------------------------------------------------------------- dues paid


def history_entry(status: MembershipStatus, at: datetime, **extra: Any) -> dict[str, Any]:
    return {"status": status.value, "at": at, **extra}


@dataclass(frozen=True)
class DuesPaid:
    """What dues paid on a day do to a person's membership."""

    #: the membership after the payment (active)
    membership: Membership
    #: each membership state to store, in order, with the history entries it adds (time
    #: first settled the old one: grace or lapsed; then the one the dues pay for)
    writes: tuple[tuple[Membership, tuple[dict[str, Any], ...]], ...]
    #: membership-lapsed (the old one ran out meanwhile), then membership-activated
    events: tuple[EventContract, ...]


def dues_paid(
    current: Membership | None,
    plan: Plan,
    paid_on: date,
    *,
    contact_id: str,
    payment_id: str,
    new_membership_id: str,
    now: datetime,
) -> DuesPaid:
    """Activate or renew the person's ``current`` membership; a lapsed or cancelled one (or
    none) is closed and a new one (``new_membership_id``) starts. The one rule both the
    single and the batched recording apply, so they cannot disagree."""
    writes: list[tuple[Membership, tuple[dict[str, Any], ...]]] = []
    events: list[EventContract] = []
    if current is not None:
        settled = settle(current, paid_on)
        if settled.status is not current.status:
            writes.append((settled, (history_entry(settled.status, now),)))
            if settled.status is MembershipStatus.lapsed:
                events.append(
                    MembershipLapsedV1(
                        membership_id=settled.membership_id,
                        contact_id=settled.contact_id,
                        lapsed_on=lapsed_on(settled),
                    )
                )
        current = settled
    history = []
    if current is None or current.status not in OPEN_STATUSES:
        current = new_membership(new_membership_id, contact_id, plan)
        history.append(history_entry(current.status, now))
    paid = pay_dues(current, plan, paid_on)
    assert paid.starts_on is not None and paid.ends_on is not None
    history.append(
        history_entry(paid.status, now, payment_id=payment_id, ends_on=paid.ends_on.isoformat())
    )
    writes.append((paid, tuple(history)))
    events.append(
        MembershipActivatedV1(
            membership_id=paid.membership_id,
            contact_id=paid.contact_id,
            plan=paid.plan,
            starts_on=paid.starts_on,
            ends_on=paid.ends_on,
        )
    )
    return DuesPaid(paid, tuple(writes), tuple(events))


# ---------------------------------------------------------------- a batch of payments


def first_of_each(keys: Sequence[Hashable]) -> list[int]:
    """For each item, the index of the first item with the same key (itself if first). A
    provider's retry arriving in the same batch as its original is answered from it."""
    seen: dict[Hashable, int] = {}
    return [seen.setdefault(key, i) for i, key in enumerate(keys)]


def local_year(moment: datetime, zone: ZoneInfo) -> int:
    if moment.tzinfo is None:  # stored as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).year


def party_totals(
    payments: Iterable[Mapping[str, Any]], zone: ZoneInfo
) -> dict[tuple[str, int], int]:
    """(person, calendar year) -> what their stored payments count towards the party's
    yearly ceiling (the year is the payment's local day's)."""
    grouped: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for p in payments:
        grouped.setdefault((p["contact_id"], local_year(p["paid_at"], zone)), []).append(p)
    return {key: counted_total(docs) for key, docs in grouped.items()}


def campaign_totals(payments: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """(person, election) -> what their stored gifts to the election's account add up to."""
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for p in payments:
        if p.get("election_id"):
            grouped.setdefault((p["contact_id"], p["election_id"]), []).append(p)
    return {key: campaign_total(docs, key[1]) for key, docs in grouped.items()}


@dataclass
class BatchLedger:
    """The legal totals while a batch of payments is decided in order: what the store
    holds, plus every payment of the batch accepted before. So two gifts of one person in
    one batch are checked together, exactly as if recorded one after the other."""

    limits: Limits
    #: (person, year) -> counted towards the party ceiling
    party: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (person, election) -> given to the election's account
    campaign: dict[tuple[str, str], int] = field(default_factory=dict)

    def admit(self, contact_id: str, gift: Gift) -> Assessment:
        """Assess ``gift`` against the totals so far; an accepted one counts from now on."""
        election_id = gift.election.election_id if gift.election else None
        counts = counts_toward_party_ceiling(
            gift.purpose, elected_official=gift.elected_official, election_id=election_id
        )
        party_key = (contact_id, gift.paid_on.year)
        campaign_key = (contact_id, election_id) if election_id is not None else None
        assessment = assess(
            gift,
            self.limits,
            party_given_cents=self.party.get(party_key, 0) if counts else None,
            campaign_given_cents=self.campaign.get(campaign_key, 0) if campaign_key else None,
        )
        if assessment.accepted:
            if counts:
                self.party[party_key] = self.party.get(party_key, 0) + gift.amount_cents
            if campaign_key is not None:
                self.campaign[campaign_key] = self.campaign.get(campaign_key, 0) + gift.amount_cents
        return assessment


# ---------------------------------------------------------------- reversals

ReversalKind = Literal["refund", "chargeback"]
#: the status a reversal gives a payment
REVERSED_STATUS: dict[str, str] = {"refund": "refunded", "chargeback": "charged_back"}
#: what may be reversed: accepted money, and captured money the law refused
REVERSIBLE = frozenset({"accepted", "flagged_for_refund"})


class AlreadyReversed(Refused):
    """The payment was already refunded or charged back (409): money goes back once."""

    code = "already_reversed"


def check_reversible(payment: Mapping[str, Any], kind: str, amount_cents: int) -> str:
    """The payment's status after the reversal; AlreadyReversed or InvalidField otherwise."""
    if payment["status"] not in REVERSIBLE:
        raise AlreadyReversed(
            f"payment already {payment['status'].replace('_', ' ')}",
            payment_id=payment["_id"],
            status=payment["status"],
        )
    if amount_cents != payment["amount_cents"]:
        raise InvalidField(
            f"only the full amount ({payment['amount_cents']} cents) can be reversed",
            field="amount_cents",
        )
    return REVERSED_STATUS[kind]


@dataclass(frozen=True)
class StandingReversal:
    """What a reversal does to the membership the dues paid for."""

    ends_on_before: date | None
    ends_on_after: date | None
    #: nothing paid is left: the membership is cancelled
    cancelled: bool
    membership: Membership


def _day(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value


def reverse_standing(
    membership: Membership, history: Sequence[Mapping[str, Any]], payment_id: str
) -> StandingReversal | None:
    """Take back the period ``payment_id`` bought, from the membership's history.

    Each dues payment stacks a period on the membership; a reversal removes the LAST period
    still held: when the reversed payment is the latest, ``ends_on`` goes back to what it was
    before it; when later dues were paid on top of it, the member keeps one period less (the
    later payment now stands for the earlier period). A membership left with no paid period
    is cancelled. Closed memberships (lapsed, cancelled) and payments the history does not
    know are left alone (None)."""
    if membership.status not in (MembershipStatus.active, MembershipStatus.grace):
        return None
    befores: list[tuple[str, date | None]] = []  # per period still held: ends_on before it
    current: date | None = None
    for entry in history:
        if entry.get("payment_id") and entry.get("ends_on"):
            befores.append((entry["payment_id"], current))
            current = _day(entry["ends_on"])
        elif entry.get("reversed_payment_id"):
            if befores:
                befores.pop()
            current = _day(entry.get("ends_on"))
        elif "ends_on" in entry:  # a missed schedule moved the end (grace started)
            current = _day(entry["ends_on"])
    reversed_ids = {e["reversed_payment_id"] for e in history if e.get("reversed_payment_id")}
    paid = {e["payment_id"] for e in history if e.get("payment_id") and e.get("ends_on")}
    if payment_id not in paid - reversed_ids or not befores:
        return None
    _, before = befores[-1]
    if before is None or (membership.starts_on is not None and before < membership.starts_on):
        check_transition(membership.status, MembershipStatus.cancelled)
        return StandingReversal(
            membership.ends_on,
            None,
            True,
            replace(membership, status=MembershipStatus.cancelled),
        )
    return StandingReversal(membership.ends_on, before, False, replace(membership, ends_on=before))


# ---------------------------------------------------------------- schedules


class Interval(StrEnum):
    monthly = "monthly"
    quarterly = "quarterly"
    yearly = "yearly"


MONTHS = {Interval.monthly: 1, Interval.quarterly: 3, Interval.yearly: 12}


class ScheduleStatus(StrEnum):
    active = "active"
    paused = "paused"
    cancelled = "cancelled"


OPEN_SCHEDULES = frozenset({ScheduleStatus.active, ScheduleStatus.paused})
PAST_TENSE = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}
SCHEDULE_ACTIONS: dict[str, tuple[frozenset[ScheduleStatus], ScheduleStatus]] = {
    "pause": (frozenset({ScheduleStatus.active}), ScheduleStatus.paused),
    "resume": (frozenset({ScheduleStatus.paused}), ScheduleStatus.active),
    "cancel": (OPEN_SCHEDULES, ScheduleStatus.cancelled),
}


def schedule_target(current: ScheduleStatus, action: str) -> ScheduleStatus:
    """The status ``action`` gives a schedule; Refused (409) if it cannot from ``current``."""
    allowed, target = SCHEDULE_ACTIONS[action]
    if current not in allowed:
        raise Refused(
            f"a {current.value} schedule cannot be {PAST_TENSE[action]}",
            status=current.value,
        )
    return target


def add_interval(day: date, interval: Interval, anchor_day: int, times: int = 1) -> date:
    """``day`` moved by ``times`` intervals, on the schedule's day of the month (clamped to
    the month's length: a schedule due on the 31st is due on February's last day)."""
    months = day.year * 12 + day.month - 1 + MONTHS[interval] * times
    year, month = divmod(months, 12)
    month += 1
    return date(year, month, min(anchor_day, calendar.monthrange(year, month)[1]))


def missed_dues(
    next_due_on: date, interval: Interval, anchor_day: int, today: date, tolerance_days: int
) -> tuple[list[date], date]:
    """The due dates passed by more than ``tolerance_days`` without payment (oldest first)
    and the next due date after them."""
    missed: list[date] = []
    due = next_due_on
    while due + timedelta(days=tolerance_days) < today:
        missed.append(due)
        due = add_interval(due, interval, anchor_day)
    return missed, due


def resumed_due(next_due_on: date, interval: Interval, anchor_day: int, today: date) -> date:
    """A resumed schedule is next due on its first due date from today on (the dues of
    the pause are not claimed)."""
    due = next_due_on
    while due < today:
        due = add_interval(due, interval, anchor_day)
    return due


def grace_after_miss(membership: Membership, missed_due_on: date) -> Membership | None:
    """A missed dues payment starts the grace period at once: the paid period ends the day
    before the missed due date (so ``status_on`` gives grace from that date on, and the
    grace days count from it). None if the membership is not open or its paid period
    already ended before the missed date."""
    open_ = membership.status in (MembershipStatus.active, MembershipStatus.grace)
    if not open_ or membership.ends_on is None:
        return None
    new_end = missed_due_on - timedelta(days=1)
    if membership.ends_on <= new_end:
        return None
    if membership.status is MembershipStatus.active:
        check_transition(membership.status, MembershipStatus.grace)
    return replace(membership, status=MembershipStatus.grace, ends_on=new_end)


# ---------------------------------------------------------------- manual entries


def check_manual_day(paid_on: date, today: date, backdate_days: int) -> None:
    """A treasurer's entry is dated between ``backdate_days`` ago (a cheque is valid one year
    and eight days: Code monétaire et financier, art. L131-59) and today."""
    if paid_on > today:
        raise InvalidField("the payment date is in the future", field="paid_on")
    if paid_on < today - timedelta(days=backdate_days):
        raise InvalidField(
            f"the payment date is more than {backdate_days} days ago", field="paid_on"
        )


# ---------------------------------------------------------------- remittance slips

SLIP_COLUMNS = (
    "slip_number",
    "line",
    "payment_id",
    "cheque_number",
    "drawer_bank",
    "drawer",
    "paid_on",
    "amount_cents",
    "amount",
    "currency",
)


def euros(cents: int) -> str:
    """1234567 -> "12 345,67" (French notation, no currency sign: core PDF fonts are
    Latin-1 and lack the euro sign)."""
    whole, rest = divmod(cents, 100)
    return f"{whole:,}".replace(",", " ") + f",{rest:02d}"


@dataclass(frozen=True)
class SlipLine:
    payment_id: str
    cheque_number: str
    bank: str
    drawer: str
    paid_on: date
    amount_cents: int


def slip_lines(
    payments: Iterable[Mapping[str, Any]], drawer_of: Mapping[str, str]
) -> list[SlipLine]:
    """The cheques of a slip, in the order they were received."""
    lines = [
        SlipLine(
            payment_id=p["payment_id"],
            cheque_number=p["cheque_number"],
            bank=p.get("bank", ""),
            drawer=drawer_of.get(p["payment_id"], ""),
            paid_on=_day(p["paid_on"]) or date.min,
            amount_cents=p["amount_cents"],
        )
        for p in payments
    ]
    return sorted(lines, key=lambda line: (line.paid_on, line.payment_id))


def slip_csv(number: int, lines: Sequence[SlipLine], currency: str) -> str:
    rows: list[list[str]] = [list(SLIP_COLUMNS)]
    for i, line in enumerate(lines, start=1):
        values = [
            str(number),
            str(i),
            line.payment_id,
            line.cheque_number,
            line.bank,
            line.drawer,
            line.paid_on.isoformat(),
            str(line.amount_cents),
            euros(line.amount_cents),
            currency,
        ]
        rows.append([neutralise(v) for v in values])
    return BOM + encode_rows(rows)


def payment_events(
    producer: str,
    payment_id: str,
    notice: PaymentNotice,
    contact: Mapping[str, Any],
    membership_events: Sequence[EventContract],
) -> list[Envelope]:
    """What recording a payment publishes: payment-received, then what it caused, each
    caused by it: the membership's events (dues) or donation-received (a gift). One rule
    for the one-payment path and the webhook's batches."""

    def envelope(event: EventContract, causation: Envelope | None = None) -> Envelope:
        return new_envelope(
            event,
            producer=producer,
            federation_id=contact["federation_id"],
            federation_path=contact["federation_path"],
            causation=causation,
        )

    received = envelope(
        PaymentReceivedV1(
            payment_id=payment_id,
            provider=notice.provider,
            provider_payment_id=notice.provider_payment_id,
            contact_id=notice.contact_id,
            amount_cents=notice.amount_cents,
            currency=notice.currency,
            method=notice.method,
            purpose=notice.purpose,
            received_at=notice.paid_at,
        )
    )
    if notice.purpose == "dues":
        return [received, *(envelope(e, received) for e in membership_events)]
    donation = DonationReceivedV1(
        donation_id=payment_id,
        contact_id=notice.contact_id,
        amount_cents=notice.amount_cents,
        currency=notice.currency,
        method=notice.method,
        received_at=notice.paid_at,
    )
    return [received, envelope(donation, received)]
