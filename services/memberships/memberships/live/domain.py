"""Live figures, pure: the absolute state of each membership and payment as its events
tell it, and the per-federation figures derived from those states.

Kafka gives no order across topics, and faust may hand an event twice (after a
rebalance). So each membership and payment keeps an absolute state that every event
*merges* into (commutative, idempotent: any order, any number of copies, same state), and
the figures of a federation change only by the difference between a state's old and new
contribution: a duplicate changes no state, hence no figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from tribune_shared.store import ancestor_paths

Purpose = Literal["dues", "donation"]


class Standing(StrEnum):
    """What a membership counts as in the figures (``pending`` counts nowhere)."""

    active = "active"
    grace = "grace"
    lapsed = "lapsed"
    cancelled = "cancelled"


#: lapsed and cancelled are final (memberships.domain): nothing moves a membership out
FINAL = frozenset({Standing.lapsed, Standing.cancelled})


@dataclass(frozen=True)
class Placement:
    """The federation an aggregate was in, as of the latest event that said so."""

    federation_id: str
    federation_path: str
    #: when that event happened (the newest placement wins: a contact who moved)
    at: datetime

    def newest(self, other: Placement) -> Placement:
        if (other.at, other.federation_path) > (self.at, self.federation_path):
            return other
        return self


# ---------------------------------------------------------------- memberships


@dataclass(frozen=True)
class MembershipState:
    standing: Standing
    #: end of the paid period the standing refers to (None: final without a period)
    ends_on: date | None
    placement: Placement
    #: when the final status happened (the first of two finals wins)
    final_at: datetime | None = None

    def _order(self) -> tuple[int, date, int]:
        """Which of two non-final states is later: the longer paid period, and for the
        same period grace after active (the period ended unrenewed)."""
        return (0, self.ends_on or date.min, 1 if self.standing is Standing.grace else 0)

    def merge(self, other: MembershipState) -> MembershipState:
        placement = self.placement.newest(other.placement)
        mine, theirs = self.standing in FINAL, other.standing in FINAL
        if mine and theirs:
            assert self.final_at is not None and other.final_at is not None
            first = (self.final_at, self.standing) <= (other.final_at, other.standing)
            winner = self if first else other
        elif mine or theirs:
            winner = self if mine else other
        else:
            winner = self if self._order() >= other._order() else other
        return replace(winner, placement=placement)

    def to_json(self) -> dict[str, Any]:
        return {
            "standing": self.standing.value,
            "ends_on": self.ends_on.isoformat() if self.ends_on else None,
            "federation_id": self.placement.federation_id,
            "federation_path": self.placement.federation_path,
            "at": self.placement.at.isoformat(),
            "final_at": self.final_at.isoformat() if self.final_at else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MembershipState:
        return cls(
            standing=Standing(raw["standing"]),
            ends_on=date.fromisoformat(raw["ends_on"]) if raw.get("ends_on") else None,
            placement=Placement(
                raw["federation_id"], raw["federation_path"], datetime.fromisoformat(raw["at"])
            ),
            final_at=datetime.fromisoformat(raw["final_at"]) if raw.get("final_at") else None,
        )


def membership_fact(
    event_type: str, data: dict[str, Any], placement: Placement
) -> MembershipState | None:
    """The state one membership event states (None: not a membership fact)."""
    if event_type == "membership-activated":
        return MembershipState(Standing.active, date.fromisoformat(data["ends_on"]), placement)
    if event_type == "membership-grace-started":
        return MembershipState(Standing.grace, date.fromisoformat(data["ends_on"]), placement)
    if event_type in ("membership-lapsed", "membership-cancelled"):
        standing = Standing.lapsed if event_type == "membership-lapsed" else Standing.cancelled
        return MembershipState(standing, None, placement, final_at=placement.at)
    return None


# ---------------------------------------------------------------- payments


@dataclass(frozen=True)
class PaymentState:
    placement: Placement
    #: set by payment-received: what the payment counts as, and in which year
    purpose: Purpose | None = None
    amount_cents: int = 0
    year: int | None = None
    received: bool = False
    #: refund id -> refunded cents (payment-refunded; one refund counted once)
    refunds: tuple[tuple[str, int], ...] = ()

    def merge(self, other: PaymentState) -> PaymentState:
        received = self if self.received else other
        refunds = tuple(sorted(dict(self.refunds + other.refunds).items()))
        return PaymentState(
            # the payment counts where it was received (a refund may be filed elsewhere)
            placement=received.placement
            if received.received
            else self.placement.newest(other.placement),
            purpose=received.purpose or self.purpose or other.purpose,
            amount_cents=received.amount_cents,
            year=received.year,
            received=received.received,
            refunds=refunds,
        )

    @property
    def counted_cents(self) -> int:
        """What the payment adds to its year's totals: nothing before it is known as
        received; its amount less its refunds (never below zero) after."""
        if not self.received:
            return 0
        return max(0, self.amount_cents - sum(cents for _, cents in self.refunds))

    def to_json(self) -> dict[str, Any]:
        return {
            "federation_id": self.placement.federation_id,
            "federation_path": self.placement.federation_path,
            "at": self.placement.at.isoformat(),
            "purpose": self.purpose,
            "amount_cents": self.amount_cents,
            "year": self.year,
            "received": self.received,
            "refunds": [list(r) for r in self.refunds],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PaymentState:
        return cls(
            placement=Placement(
                raw["federation_id"], raw["federation_path"], datetime.fromisoformat(raw["at"])
            ),
            purpose=raw.get("purpose"),
            amount_cents=int(raw.get("amount_cents") or 0),
            year=raw.get("year"),
            received=bool(raw.get("received")),
            refunds=tuple((str(r), int(c)) for r, c in raw.get("refunds") or ()),
        )


def payment_fact(
    event_type: str, data: dict[str, Any], placement: Placement, zone: ZoneInfo
) -> PaymentState | None:
    """The state one payment event states (None: not a payment fact). The year is the
    calendar year of the payment in the organisation's time zone (as the yearly ceiling
    and the receipts count it); a refund counts against the payment's year."""
    if event_type == "payment-received":
        received_at = datetime.fromisoformat(data["received_at"])
        return PaymentState(
            placement,
            purpose=data["purpose"],
            amount_cents=int(data["amount_cents"]),
            year=received_at.astimezone(zone).year,
            received=True,
        )
    if event_type == "payment-refunded":
        return PaymentState(
            placement,
            purpose=data["purpose"],
            refunds=((data["refund_id"], int(data["amount_cents"])),),
        )
    return None


# ---------------------------------------------------------------- figures


@dataclass
class Figures:
    """One federation's live figures (its whole subtree)."""

    federation_id: str
    federation_path: str
    active: int = 0
    grace: int = 0
    lapsed: int = 0
    cancelled: int = 0
    #: year -> (dues cents, donations cents)
    money: dict[int, list[int]] = field(default_factory=dict)
    #: bumped on every change (the stream sends a federation's figures when it moves)
    version: int = 0

    def view(self, year: int) -> dict[str, Any]:
        dues, donations = self.money.get(year, (0, 0))
        return {
            "federation_id": self.federation_id,
            "federation_path": self.federation_path,
            "members_in_good_standing": self.active + self.grace,
            "members_in_grace": self.grace,
            "members_lapsed": self.lapsed,
            "members_cancelled": self.cancelled,
            "year": year,
            "dues_cents": dues,
            "donations_cents": donations,
            "version": self.version,
        }


def empty_view(federation_id: str, federation_path: str, year: int) -> dict[str, Any]:
    return Figures(federation_id, federation_path).view(year)


@lru_cache(maxsize=100_000)
def lineage(federation_path: str) -> tuple[tuple[str, str], ...]:
    """(id, path) of a federation and every ancestor, root first (a path is the ids of
    its federations: "/root/paris/"). Cached: every event of a burst asks it for the same
    few federations (it was a third of an event's cost)."""
    return tuple(
        (path.strip("/").rsplit("/", 1)[-1], path) for path in ancestor_paths(federation_path)
    )


class FederationFigures:
    """Figures per federation AND every ancestor, kept by the differences of the states'
    contributions (``apply_membership`` / ``apply_payment``) or rebuilt from the states
    (after faust recovered its tables)."""

    def __init__(self) -> None:
        self.by_federation: dict[str, Figures] = {}

    def get(self, federation_id: str) -> Figures | None:
        return self.by_federation.get(federation_id)

    def _touch(self, placement: Placement) -> Iterator[Figures]:
        for fid, path in lineage(placement.federation_path):
            figures = self.by_federation.get(fid)
            if figures is None:
                figures = self.by_federation[fid] = Figures(fid, path)
            yield figures

    def _count(self, state: MembershipState, sign: int) -> set[str]:
        touched = set()
        for figures in self._touch(state.placement):
            name = state.standing.value
            setattr(figures, name, getattr(figures, name) + sign)
            touched.add(figures.federation_id)
        return touched

    def _add_money(self, state: PaymentState, sign: int) -> set[str]:
        cents = state.counted_cents
        if not cents or state.year is None or state.purpose is None:
            return set()
        slot = 0 if state.purpose == "dues" else 1
        touched = set()
        for figures in self._touch(state.placement):
            totals = figures.money.setdefault(state.year, [0, 0])
            totals[slot] += sign * cents
            touched.add(figures.federation_id)
        return touched

    def _bump(self, federation_ids: set[str]) -> set[str]:
        for fid in federation_ids:
            self.by_federation[fid].version += 1
        return federation_ids

    def apply_membership(self, old: MembershipState | None, new: MembershipState) -> set[str]:
        """A membership moved from ``old`` to ``new``: the federations whose figures
        changed (none when nothing counted changed: a duplicate, a renewal)."""
        if old is not None and (old.standing, old.placement.federation_path) == (
            new.standing,
            new.placement.federation_path,
        ):
            return set()
        touched = self._count(old, -1) if old is not None else set()
        return self._bump(touched | self._count(new, +1))

    def apply_payment(self, old: PaymentState | None, new: PaymentState) -> set[str]:
        if old is not None and _money_key(old) == _money_key(new):
            return set()
        touched = self._add_money(old, -1) if old is not None else set()
        return self._bump(touched | self._add_money(new, +1))

    def rebuild(
        self, memberships: Iterable[MembershipState], payments: Iterable[PaymentState]
    ) -> set[str]:
        """Start again from the states (faust recovered its tables from their changelogs):
        the figures are a function of the states alone."""
        before = self.by_federation
        self.by_federation = {}
        for m in memberships:
            self._count(m, +1)
        for p in payments:
            self._add_money(p, +1)
        for fid, old in before.items():  # a federation left with nothing reads zeros
            self.by_federation.setdefault(fid, Figures(fid, old.federation_path))
        for fid, figures in self.by_federation.items():
            figures.version = (before[fid].version if fid in before else 0) + 1
        return set(self.by_federation)


def _money_key(state: PaymentState) -> tuple[Any, ...]:
    return (state.counted_cents, state.year, state.purpose, state.placement.federation_path)
