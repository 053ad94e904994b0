"""Plans per federation, free of I/O: what a plan says, which definition applies where in
the tree, what dues should cost, and how they are split between the levels.

Inheritance: a plan (a ``code``) defined at a federation applies to every federation under
it, unless a nearer federation redefines that code (an override) or withdraws it. The
platform's plans (``MEMBERSHIPS_PLANS``) stand at the root when no federation of the
lineage defines the code. Each (federation, code) keeps its versions; the latest applies to
the payments recorded after it (a payment keeps what its version expected).

Split: dues are shared between three levels in percentages summing to 100. A federation's
depth in the tree says its level: the root is the national level, the ancestor at
``federation_depth`` the federation, the one at ``section_depth`` the section (anything
deeper belongs to its section). A payment placed above a level hands that level's share to
the level above it (a member of a federation without section: the section's share goes to
the federation; a member of the national level: everything goes to the national level).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tribune_shared.errors import InvalidField, InvalidFields
from tribune_shared.store import ancestor_paths

from memberships.domain import Plan, PlanKind

#: the three levels dues are shared between, from the top
LEVELS = ("national", "federation", "section")
#: what a plan code looks like (it is stored on memberships and payments)
CODE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_CODE = re.compile(CODE_PATTERN)
LABEL_MAX_CHARS = 200


# ---------------------------------------------------------------- split


@dataclass(frozen=True)
class Split:
    """Percentages of the dues for each level (whole numbers, summing to 100)."""

    national: int
    federation: int
    section: int

    def as_dict(self) -> dict[str, int]:
        return {"national": self.national, "federation": self.federation, "section": self.section}


def split_problems(values: Mapping[str, Any], prefix: str = "split") -> list[tuple[str, str]]:
    """What is wrong with a split given as ``{level: percent}`` (empty: nothing)."""
    problems: list[tuple[str, str]] = []
    unknown = sorted(set(values) - set(LEVELS))
    if unknown:
        problems.append((prefix, f"unknown levels {', '.join(unknown)}; levels: {_levels()}"))
    for level in LEVELS:
        value = values.get(level, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append((f"{prefix}.{level}", "must be a whole number of percent"))
        elif not 0 <= value <= 100:
            problems.append((f"{prefix}.{level}", "must be between 0 and 100"))
    if not problems:
        total = sum(int(values.get(level, 0)) for level in LEVELS)
        if total != 100:
            problems.append((prefix, f"the levels must sum to 100 percent, not {total}"))
    return problems


def check_split(values: Mapping[str, Any], prefix: str = "split") -> Split:
    """A split from ``{level: percent}`` (a missing level is 0); 422 on every problem."""
    problems = split_problems(values, prefix)
    if problems:
        raise InvalidFields(problems)
    return Split(**{level: int(values.get(level, 0)) for level in LEVELS})


def _levels() -> str:
    return ", ".join(LEVELS)


@dataclass(frozen=True)
class LevelDepths:
    """Which depth of the tree (the root is 1) is the federation level and the section
    level (configured: MEMBERSHIPS_PLAN_FEDERATION_DEPTH, MEMBERSHIPS_PLAN_SECTION_DEPTH)."""

    federation: int = 2
    section: int = 3

    def __post_init__(self) -> None:
        if not 2 <= self.federation < self.section:
            raise ValueError("the federation level lies below the root and above the section")


def level_paths(federation_path: str, depths: LevelDepths) -> dict[str, str | None]:
    """The federation receiving each level's share of dues placed at ``federation_path``
    (None: there is no such level above the payment)."""
    lineage = ancestor_paths(federation_path)
    return {
        "national": lineage[0] if lineage else None,
        "federation": lineage[depths.federation - 1] if len(lineage) >= depths.federation else None,
        "section": lineage[depths.section - 1] if len(lineage) >= depths.section else None,
    }


def split_amount(
    split: Split, amount_cents: int, federation_path: str, depths: LevelDepths
) -> dict[str, dict[str, Any]]:
    """``amount_cents`` shared between the levels of ``federation_path``: for each level its
    receiving federation's path, its percentage (after a missing level's share went up) and
    its cents. The section and federation shares are rounded down; the national level takes
    the rest, so the shares always add up to the amount."""
    paths = level_paths(federation_path, depths)
    percent = split.as_dict()
    if paths["section"] is None:  # no section: its share goes to the federation
        percent["federation"] += percent["section"]
        percent["section"] = 0
    if paths["federation"] is None:  # no federation either: everything is national
        percent["national"] += percent["federation"]
        percent["federation"] = 0
    section = amount_cents * percent["section"] // 100
    federation = amount_cents * percent["federation"] // 100
    cents = {
        "national": amount_cents - federation - section,
        "federation": federation,
        "section": section,
    }
    return {
        level: {"path": paths[level], "percent": percent[level], "cents": cents[level]}
        for level in LEVELS
    }


# ---------------------------------------------------------------- terms of a plan


@dataclass(frozen=True)
class PlanTerms:
    """What a plan says: its period, grace, amount, reduced rates and split."""

    code: str
    label: str
    kind: PlanKind
    days: int | None
    grace_days: int
    #: None: the plan sets no amount (nothing to check the payment against)
    amount_cents: int | None
    #: reduced rate kind -> its amount
    rates: Mapping[str, int] = field(default_factory=dict)
    split: Split = Split(100, 0, 0)

    def plan(self) -> Plan:
        """The period rules the membership lifecycle applies."""
        return Plan(name=self.code, kind=self.kind, days=self.days, grace_days=self.grace_days)

    def expected_cents(self, rate: str | None) -> int | None:
        """What dues at ``rate`` (None: the full rate) should cost; 422 on ``rate`` if the
        plan has no such reduced rate."""
        if rate is None:
            return self.amount_cents
        if rate not in self.rates:
            offered = ", ".join(sorted(self.rates)) or "none"
            raise InvalidField(
                f"unknown rate {rate!r} for plan {self.code!r}; its reduced rates: {offered}",
                field="rate",
            )
        return self.rates[rate]

    def as_doc(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind.value,
            "days": self.days,
            "grace_days": self.grace_days,
            "amount_cents": self.amount_cents,
            "rates": dict(self.rates),
            "split": self.split.as_dict(),
        }


def terms_from_doc(code: str, doc: Mapping[str, Any]) -> PlanTerms:
    return PlanTerms(
        code=code,
        label=doc["label"],
        kind=PlanKind(doc["kind"]),
        days=doc.get("days"),
        grace_days=doc["grace_days"],
        amount_cents=doc.get("amount_cents"),
        rates=dict(doc.get("rates") or {}),
        split=Split(**doc["split"]),
    )


@dataclass(frozen=True)
class TermLimits:
    """The bounds a plan's terms are checked against (from the settings)."""

    rate_kinds: tuple[str, ...]
    max_amount_cents: int


def check_terms(
    code: str,
    *,
    label: str | None,
    kind: PlanKind,
    days: int | None,
    grace_days: int,
    amount_cents: int | None,
    rates: Mapping[str, int],
    split: Mapping[str, Any],
    limits: TermLimits,
    amount_required: bool = True,
) -> PlanTerms:
    """A plan's terms, checked as a whole: every problem at once (422 field + reason)."""
    problems: list[tuple[str, str]] = []
    if not _CODE.fullmatch(code):
        problems.append(("code", "lower-case letters, digits, '-' or '_', at most 64"))
    label = (label or code).strip()
    if not label:
        problems.append(("label", "must not be blank"))
    elif len(label) > LABEL_MAX_CHARS:
        problems.append(("label", f"must be at most {LABEL_MAX_CHARS} characters"))
    if kind is PlanKind.rolling and days is None:
        problems.append(("days", "a rolling plan needs its length in days"))
    if kind is PlanKind.calendar and days is not None:
        problems.append(("days", "a calendar plan has no days: it ends on December 31"))
    if days is not None and not 1 <= days <= 3660:
        problems.append(("days", "must be between 1 and 3660"))
    if not 0 <= grace_days <= 366:
        problems.append(("grace_days", "must be between 0 and 366"))
    if amount_cents is None:
        if amount_required:
            problems.append(("amount_cents", "a plan states its amount"))
        if rates:
            problems.append(("rates", "reduced rates need the plan's full amount"))
    elif not 1 <= amount_cents <= limits.max_amount_cents:
        problems.append(("amount_cents", f"must be between 1 and {limits.max_amount_cents} cents"))
    for rate, cents in sorted(rates.items()):
        if rate not in limits.rate_kinds:
            known = ", ".join(limits.rate_kinds) or "none configured"
            problems.append((f"rates.{rate}", f"unknown kind of reduced rate (known: {known})"))
        elif not 1 <= cents <= limits.max_amount_cents:
            problems.append(
                (f"rates.{rate}", f"must be between 1 and {limits.max_amount_cents} cents")
            )
        elif amount_cents is not None and cents > amount_cents:
            problems.append((f"rates.{rate}", "a reduced rate may not exceed the full amount"))
    problems.extend(split_problems(split))
    if problems:
        raise InvalidFields(problems)
    return PlanTerms(
        code=code,
        label=label,
        kind=kind,
        days=days,
        grace_days=grace_days,
        amount_cents=amount_cents,
        rates=dict(sorted(rates.items())),
        split=Split(**{level: int(split.get(level, 0)) for level in LEVELS}),
    )


# ---------------------------------------------------------------- inheritance


@dataclass(frozen=True)
class Definition:
    """A code as one federation defines it (or withdraws it: ``terms`` None), or as the
    platform's settings define it (``federation_path`` None: the root's defaults)."""

    code: str
    federation_id: str | None
    federation_path: str | None
    version: int
    terms: PlanTerms | None

    @property
    def withdrawn(self) -> bool:
        return self.terms is None

    @property
    def depth(self) -> int:
        """0 for the platform's defaults, under any federation's own definition."""
        return len(ancestor_paths(self.federation_path)) if self.federation_path else 0


def definition_from_doc(doc: Mapping[str, Any]) -> Definition:
    terms = None if doc.get("withdrawn") else terms_from_doc(doc["code"], doc["terms"])
    return Definition(
        code=doc["code"],
        federation_id=doc["federation_id"],
        federation_path=doc["federation_path"],
        version=doc["version"],
        terms=terms,
    )


def nearest(
    definitions: Iterable[Definition], defaults: Mapping[str, PlanTerms], federation_path: str
) -> dict[str, Definition]:
    """For each code, the definition that governs ``federation_path``: that of the nearest
    federation of its lineage (itself first), else the platform's default. Withdrawals are
    kept (a withdrawn code is not in force: see ``in_force``). Definitions outside the
    lineage are ignored."""
    lineage = set(ancestor_paths(federation_path))
    chosen: dict[str, Definition] = {
        code: Definition(code, None, None, 0, terms) for code, terms in defaults.items()
    }
    for d in definitions:
        if d.federation_path not in lineage:
            continue
        current = chosen.get(d.code)
        if current is None or d.depth > current.depth:
            chosen[d.code] = d
    return chosen


def in_force(
    definitions: Iterable[Definition], defaults: Mapping[str, PlanTerms], federation_path: str
) -> dict[str, Definition]:
    """The plans a member of ``federation_path`` may pay for, by code (sorted)."""
    governing = nearest(definitions, defaults, federation_path)
    return {code: d for code, d in sorted(governing.items()) if not d.withdrawn}


def unknown_plan(code: str, available: Iterable[str], withdrawn: bool) -> InvalidField:
    """The 422 on ``plan`` for dues naming a plan not in force in the member's federation."""
    listed = ", ".join(sorted(available)) or "none"
    why = "withdrawn in this federation" if withdrawn else "unknown plan"
    return InvalidField(f"{why}: {code!r}; expected one of {listed}", field="plan")
