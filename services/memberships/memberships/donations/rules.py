"""French political-finance rules on gifts and dues, free of I/O.

Sources (quoted in the service README):

- loi n° 88-227 du 11 mars 1988, art. 11-4 (parties): only a natural person of French
  nationality or residing in France may give; a person's gifts and dues to parties are
  at most 7,500 EUR a year, dues of elected officials excluded; legal persons may not
  give; a gift above 150 EUR is paid by cheque, transfer, debit or card, never cash.
- code électoral, art. L52-8 (campaigns): the same conditions for a gift to a
  candidate, at most 4,600 EUR per donor for one election; L52-4: the candidate's
  financial agent collects the funds during the campaign's financing period.

Every refusal names its rule (``Rule``) and says why, so a payer hears it before any
money is captured (``assess`` answers the pre-capture check with every reason at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from memberships.payments.notice import DonorDeclaration

Purpose = Literal["dues", "donation"]


class Rule(StrEnum):
    """The legal rule a payment breaks (the ``rule`` of ``GiftRefused``)."""

    yearly_ceiling = "yearly_ceiling"
    cash_limit = "cash_limit"
    natural_person = "natural_person"
    donor_declaration = "donor_declaration"
    nationality_or_residence = "nationality_or_residence"
    campaign_ceiling = "campaign_ceiling"
    campaign_period = "campaign_period"


@dataclass(frozen=True)
class Limits:
    """Every limit the rules apply (from ``MembershipsSettings``)."""

    yearly_ceiling_cents: int = 750_000
    cash_limit_cents: int = 15_000
    campaign_ceiling_cents: int = 460_000
    #: nationalities (ISO 3166-1 alpha-2) that may give wherever they live
    donor_nationalities: frozenset[str] = frozenset({"FR"})
    #: dues must come with the donor's declaration too (gifts always do)
    declaration_required_for_dues: bool = False


@dataclass(frozen=True)
class Election:
    """A candidate's campaign account: gifts to it are accepted within its period only."""

    election_id: str
    name: str
    #: the financing period (code électoral L52-4), both days included
    starts_on: date
    ends_on: date


@dataclass(frozen=True)
class Gift:
    """A payment as the rules see it (a gift, or dues)."""

    amount_cents: int
    method: str
    purpose: Purpose
    #: the calendar day of the payment, in the organisation's time zone
    paid_on: date
    donor: DonorDeclaration | None = None
    elected_official: bool = False
    #: the campaign account it goes to (None: the party)
    election: Election | None = None


@dataclass(frozen=True)
class Refusal:
    rule: Rule
    reason: str
    #: the input at fault, if one is
    field: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule.value, "reason": self.reason, "field": self.field}


@dataclass(frozen=True)
class Room:
    """How much a person may still give under one ceiling (before this payment)."""

    ceiling_cents: int
    given_cents: int

    @property
    def remaining_cents(self) -> int:
        return max(self.ceiling_cents - self.given_cents, 0)


@dataclass(frozen=True)
class Assessment:
    refusals: list[Refusal] = field(default_factory=list)
    #: the party's yearly ceiling (None: the payment does not count towards it)
    party_room: Room | None = None
    #: the election's ceiling (None: not a campaign gift)
    campaign_room: Room | None = None

    @property
    def accepted(self) -> bool:
        return not self.refusals


def euros(cents: int) -> str:
    """12345 -> "123.45 EUR" (the unit a payer reads)."""
    return f"{cents // 100:,}.{cents % 100:02d} EUR"


# ---------------------------------------------------------------- what counts where


def counts_toward_party_ceiling(
    purpose: str, *, elected_official: bool, election_id: str | None
) -> bool:
    """Gifts and dues count, except dues of elected officials (art. 11-4, al. 2) and gifts
    to a campaign account (another ceiling, another law: L52-8)."""
    if election_id is not None:
        return False
    return not (purpose == "dues" and elected_official)


def counted_total(payments: Iterable[Mapping[str, Any]]) -> int:
    """The party-ceiling total of accepted payment documents (any other status, dues of
    elected officials and campaign gifts are left out)."""
    return sum(
        p["amount_cents"]
        for p in payments
        if p.get("status", "accepted") == "accepted"
        and counts_toward_party_ceiling(
            p["purpose"],
            elected_official=bool(p.get("elected_official")),
            election_id=p.get("election_id"),
        )
    )


def campaign_total(payments: Iterable[Mapping[str, Any]], election_id: str) -> int:
    """What accepted gifts to this election's account add up to."""
    return sum(
        p["amount_cents"]
        for p in payments
        if p.get("status", "accepted") == "accepted" and p.get("election_id") == election_id
    )


def year_bounds(year: int, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[January 1st, next January 1st) of ``year`` in the organisation's time zone: the
    ceiling is per calendar year, and a payment at 23:30 on December 31 in Paris belongs
    to that year whatever its UTC date."""
    return (
        datetime.combine(date(year, 1, 1), time(), zone),
        datetime.combine(date(year + 1, 1, 1), time(), zone),
    )


# ---------------------------------------------------------------- the rules


def check_declaration(gift: Gift, limits: Limits) -> list[Refusal]:
    """Natural persons of an accepted nationality or residing in France (art. 11-4, al. 1
    and 3; L52-8, al. 1 and 2). Gifts need the declaration; dues only if configured (a
    member is a person the party knows; a declaration given with dues is checked)."""
    donor = gift.donor
    if donor is None:
        if gift.purpose == "donation" or limits.declaration_required_for_dues:
            what = "gift" if gift.purpose == "donation" else "payment of dues"
            return [
                Refusal(
                    Rule.donor_declaration,
                    f"Donor declaration missing: a {what} needs the donor's declaration "
                    "(natural_person, nationality, resides_in_france) before it can be "
                    "accepted (loi n° 88-227 art. 11-4; code électoral L52-8)",
                    "donor",
                )
            ]
        return []
    refusals = []
    if not donor.natural_person:
        refusals.append(
            Refusal(
                Rule.natural_person,
                "Natural persons only: a company, an association or any other legal person "
                "may not give to a party or a candidate (loi n° 88-227 art. 11-4; code "
                "électoral L52-8)",
                "donor.natural_person",
            )
        )
    nationality = (donor.nationality or "").upper()
    if nationality not in limits.donor_nationalities and not donor.resides_in_france:
        accepted = ", ".join(sorted(limits.donor_nationalities))
        refusals.append(
            Refusal(
                Rule.nationality_or_residence,
                f"Nationality or residence: the donor must be of nationality {accepted} or "
                "reside in France; the declaration says "
                f"nationality {nationality or 'not given'}, not residing in France "
                "(loi n° 88-227 art. 11-4; code électoral L52-8)",
                "donor",
            )
        )
    return refusals


def check_cash(gift: Gift, limits: Limits) -> list[Refusal]:
    """No cash above the limit (150 EUR in France), for gifts and dues."""
    if gift.method == "cash" and gift.amount_cents > limits.cash_limit_cents:
        return [
            Refusal(
                Rule.cash_limit,
                f"Cash limit: {euros(gift.amount_cents)} may not be paid in cash (at most "
                f"{euros(limits.cash_limit_cents)}); pay by cheque, transfer, debit or card "
                "(loi n° 88-227 art. 11-4; code électoral L52-8)",
                "method",
            )
        ]
    return []


def check_party_ceiling(gift: Gift, room: Room, year: int) -> list[Refusal]:
    """A person's gifts and dues of a calendar year, this one included, within the ceiling
    (7,500.00 EUR accepted, 7,500.01 EUR refused)."""
    if gift.amount_cents <= room.remaining_cents:
        return []
    return [
        Refusal(
            Rule.yearly_ceiling,
            f"Yearly ceiling: a person's gifts and dues to the party may not exceed "
            f"{euros(room.ceiling_cents)} in {year}; {euros(room.given_cents)} already "
            f"given, {euros(room.remaining_cents)} remain, {euros(gift.amount_cents)} asked "
            "(loi n° 88-227 art. 11-4)",
            "amount_cents",
        )
    ]


def check_campaign(gift: Gift, room: Room | None) -> list[Refusal]:
    """Within the election's financing period, and at most the ceiling per donor for the
    election (4,600 EUR, code électoral L52-8)."""
    election = gift.election
    if election is None:
        return []
    refusals = []
    if not election.starts_on <= gift.paid_on <= election.ends_on:
        refusals.append(
            Refusal(
                Rule.campaign_period,
                f"Campaign period: gifts to the campaign account of {election.name} are "
                f"collected from {election.starts_on.isoformat()} to "
                f"{election.ends_on.isoformat()}, not on {gift.paid_on.isoformat()} "
                "(code électoral L52-4)",
                "paid_at",
            )
        )
    if room is not None and gift.amount_cents > room.remaining_cents:
        refusals.append(
            Refusal(
                Rule.campaign_ceiling,
                f"Campaign ceiling: a donor's gifts for {election.name} may not exceed "
                f"{euros(room.ceiling_cents)}; {euros(room.given_cents)} already given, "
                f"{euros(room.remaining_cents)} remain, {euros(gift.amount_cents)} asked "
                "(code électoral L52-8)",
                "amount_cents",
            )
        )
    return refusals


def assess(
    gift: Gift,
    limits: Limits,
    *,
    party_given_cents: int | None = None,
    campaign_given_cents: int | None = None,
) -> Assessment:
    """Every rule at once: the refusals (in the order a payer fixes them: who, how, how
    much) and the room left under each ceiling that applies. ``party_given_cents`` is
    what already counts towards the party ceiling this year (required when the gift
    counts towards it), ``campaign_given_cents`` what the donor gave to the election."""
    refusals = [*check_declaration(gift, limits), *check_cash(gift, limits)]
    party_room = campaign_room = None
    election_id = gift.election.election_id if gift.election else None
    if counts_toward_party_ceiling(
        gift.purpose, elected_official=gift.elected_official, election_id=election_id
    ):
        if party_given_cents is None:
            raise ValueError("this payment counts towards the yearly ceiling: give its total")
        party_room = Room(limits.yearly_ceiling_cents, party_given_cents)
        refusals += check_party_ceiling(gift, party_room, gift.paid_on.year)
    if gift.election is not None:
        if campaign_given_cents is None:
            raise ValueError("a campaign gift needs what the donor gave to the election")
        campaign_room = Room(limits.campaign_ceiling_cents, campaign_given_cents)
        refusals += check_campaign(gift, campaign_room)
    return Assessment(refusals, party_room, campaign_room)
