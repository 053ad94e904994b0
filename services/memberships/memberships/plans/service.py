"""Which plan dues pay for, and what they should have cost; plans per federation (define,
withdraw, list what is in force) and the treasurers' reports (amount differences, split).

The recording of a payment (``memberships.service``) asks ``PlanCatalog.for_dues`` inside
its transaction; this is the one place that resolves a plan."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.errors import Conflict, InvalidField, NotFound
from tribune_shared.events import utcnow
from tribune_shared.federations import FederationDirectory
from tribune_shared.store import Store, ancestor_paths

from memberships.domain import Plan, PlanKind
from memberships.plans.domain import (
    LEVELS,
    Definition,
    LevelDepths,
    PlanTerms,
    Split,
    TermLimits,
    check_split,
    check_terms,
    definition_from_doc,
    in_force,
    nearest,
    split_amount,
    unknown_plan,
)
from memberships.plans.store import PlanStore
from memberships.settings import MembershipsSettings

#: the columns of the split report's CSV, in order
SPLIT_COLUMNS = (
    "federation_id",
    "federation_name",
    "federation_path",
    "currency",
    "payments",
    "collected_cents",
    "national_cents",
    "federation_cents",
    "section_cents",
    "unsplit_cents",
)


class PlanVersionConflict(Conflict):
    """409: the plan changed since the version the caller edited."""

    code = "plan_version_conflict"


@dataclass(frozen=True)
class PlanChoice:
    """The plan dues pay for, as it applies to the contact's federation."""

    plan: Plan
    #: what the plan (and the reduced rate, if any) costs; None: the plan sets no amount
    expected_amount_cents: int | None = None
    #: the federation whose definition applied (None: the platform's default plans)
    defined_in: str | None = None
    #: the reduced rate paid (None: the full rate)
    rate: str | None = None
    #: the version of the definition that applied (0: the platform's default)
    version: int = 0
    #: the plan's split between levels (None: nothing to split)
    split: Split | None = None
    #: where the member is: which federations receive each level's share
    federation_path: str | None = None
    depths: LevelDepths = field(default_factory=LevelDepths)

    def split_record(self, amount_cents: int) -> dict[str, Any] | None:
        """What the payment document keeps of the split: the plan's percentages and, per
        level, the receiving federation, its percentage and its cents."""
        if self.split is None or self.federation_path is None:
            return None
        return {
            "plan_version": self.version,
            "defined_in": self.defined_in,
            "percent": self.split.as_dict(),
            "levels": split_amount(self.split, amount_cents, self.federation_path, self.depths),
        }


def _year_bounds(year: int, settings: MembershipsSettings) -> tuple[datetime, datetime]:
    """[January 1, next January 1) of ``year`` in the organisation's time zone, in UTC."""
    zone = settings.zone
    start = datetime(year, 1, 1, tzinfo=zone).astimezone(UTC)
    return start, datetime(year + 1, 1, 1, tzinfo=zone).astimezone(UTC)


def encode_cursor(paid_at: datetime, payment_id: str) -> str:
    return f"{paid_at.astimezone(UTC).isoformat()}|{payment_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    moment, sep, payment_id = cursor.partition("|")
    try:
        at = datetime.fromisoformat(moment)
    except ValueError:
        at = None
    if not sep or not payment_id or at is None or at.tzinfo is None:
        raise InvalidField("not a cursor this list returned", field="after")
    return at, payment_id


class PlanCatalog:
    def __init__(self, settings: MembershipsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.repo = PlanStore(store)
        self.directory = FederationDirectory(store)
        self.limits = TermLimits(tuple(settings.plan_rate_kinds), settings.max_amount_cents)
        self.defaults: dict[str, PlanTerms] = {
            code: PlanTerms(
                code=code,
                label=d.label or code,
                kind=d.kind,
                days=d.days,
                grace_days=d.grace_days,
                amount_cents=d.amount_cents,
                rates=dict(d.rates),
                split=check_split(d.split or settings.plan_default_split),
            )
            for code, d in settings.plans.items()
        }

    def _scan_limit(self, paths: list[str]) -> int:
        # every federation of a lineage defines at most plans_max_per_federation codes
        return max(1, len(paths)) * self.settings.plans_max_per_federation

    async def _definitions(
        self, federation_path: str, code: str | None, session: AsyncClientSession | None
    ) -> list[Definition]:
        paths = ancestor_paths(federation_path)
        docs = await self.repo.definitions(paths, self._scan_limit(paths), code, session)
        return [definition_from_doc(d) for d in docs]

    # ------------------------------------------------------------ recording a payment

    async def for_dues(
        self,
        contact: dict[str, Any],
        name: str | None,
        rate: str | None,
        session: AsyncClientSession | None = None,
    ) -> PlanChoice:
        """The plan named ``name`` (default plan if None) for the contact's federation;
        InvalidField on ``plan`` or ``rate`` if unknown there."""
        code = name or self.settings.default_plan
        path = contact["federation_path"]
        defaults = {code: self.defaults[code]} if code in self.defaults else {}
        governing = nearest(await self._definitions(path, code, session), defaults, path).get(code)
        if governing is None or governing.terms is None:
            available = in_force(await self._definitions(path, None, session), self.defaults, path)
            raise unknown_plan(code, available, withdrawn=governing is not None)
        terms = governing.terms
        return PlanChoice(
            terms.plan(),
            expected_amount_cents=terms.expected_cents(rate),
            defined_in=governing.federation_id,
            rate=rate,
            version=governing.version,
            split=terms.split,
            federation_path=path,
            depths=self.settings.plan_depths,
        )

    async def for_dues_many(
        self,
        asks: Sequence[tuple[Mapping[str, Any], str | None, str | None]],
        session: AsyncClientSession | None = None,
    ) -> list[PlanChoice | InvalidField]:
        """``for_dues`` for a batch of payments (contact, plan, rate): one read of the
        definitions of every lineage concerned; each ask gets its choice or its 422."""
        if not asks:
            return []
        paths = sorted({p for c, _, _ in asks for p in ancestor_paths(c["federation_path"])})
        docs = await self.repo.definitions(paths, self._scan_limit(paths), None, session)
        definitions = [definition_from_doc(d) for d in docs]
        choices: list[PlanChoice | InvalidField] = []
        for contact, name, rate in asks:
            path = contact["federation_path"]
            code = name or self.settings.default_plan
            governing = nearest(definitions, self.defaults, path).get(code)
            try:
                if governing is None or governing.terms is None:
                    available = in_force(definitions, self.defaults, path)
                    raise unknown_plan(code, available, withdrawn=governing is not None)
                terms = governing.terms
                choices.append(
                    PlanChoice(
                        terms.plan(),
                        expected_amount_cents=terms.expected_cents(rate),
                        defined_in=governing.federation_id,
                        rate=rate,
                        version=governing.version,
                        split=terms.split,
                        federation_path=path,
                        depths=self.settings.plan_depths,
                    )
                )
            except InvalidField as refused:
                choices.append(refused)
        return choices

    # ------------------------------------------------------------ reading plans

    async def _lineage_federation(
        self, identity: Identity, federation_id: str | None
    ) -> tuple[str, str]:
        """(id, path) of a federation the caller may read plans of: of its subtree or one
        of its ancestors (plans are inherited down the tree); 404 otherwise."""
        if federation_id is None or federation_id == identity.federation_id:
            return identity.federation_id, identity.federation_path
        doc = await self.repo.federation(federation_id)
        if doc is None or not (
            identity.can_see(doc["path"]) or doc["path"] in ancestor_paths(identity.federation_path)
        ):
            raise NotFound("federation not found", field="federation_id")
        return federation_id, doc["path"]

    async def plans_in_force(
        self, identity: Identity, federation_id: str | None
    ) -> tuple[str, str, list[Definition]]:
        """The plans members of a federation may pay for, each with where it is defined."""
        fid, path = await self._lineage_federation(identity, federation_id)
        found = in_force(await self._definitions(path, None, None), self.defaults, path)
        return fid, path, list(found.values())

    async def versions(
        self, identity: Identity, code: str, federation_id: str | None, limit: int | None
    ) -> list[dict[str, Any]]:
        """The history of a federation's own definition of ``code``, newest first."""
        fid, _ = await self._lineage_federation(identity, federation_id)
        limit = self._page(limit)
        docs = await self.repo.versions(fid, code, limit)
        if not docs:
            raise NotFound("plan not found", field="code")
        return docs

    # ------------------------------------------------------------ writing plans

    async def define(
        self,
        identity: Identity,
        code: str,
        federation_id: str | None,
        *,
        label: str | None,
        kind: PlanKind,
        days: int | None,
        grace_days: int,
        amount_cents: int,
        rates: Mapping[str, int],
        split: Mapping[str, Any] | None,
        expected_version: int | None,
    ) -> tuple[Definition, bool]:
        """Define (or redefine: a new version) ``code`` at a federation of the caller's
        subtree; overrides any ancestor's definition there and below. (definition, created)."""
        fid, path = await self.directory.resolve(identity, federation_id)
        terms = check_terms(
            code,
            label=label,
            kind=kind,
            days=days,
            grace_days=grace_days,
            amount_cents=amount_cents,
            rates=rates,
            split=split if split is not None else self.settings.plan_default_split,
            limits=self.limits,
        )

        async def work(session: AsyncClientSession) -> tuple[Definition, bool]:
            current = await self.repo.current(fid, code, session)
            version = current["version"] if current else 0
            if expected_version is not None and expected_version != version:
                raise PlanVersionConflict(
                    f"the plan is at version {version}, not {expected_version}: read it again",
                    version=version,
                )
            if current is None:
                limit = self.settings.plans_max_per_federation
                if await self.repo.count_defined(fid, session) >= limit:
                    raise InvalidField(
                        f"this federation already defines {limit} plans "
                        "(MEMBERSHIPS_PLANS_MAX_PER_FEDERATION)",
                        field="code",
                    )
            doc = self._doc(identity, fid, path, code, version + 1, terms)
            await self.repo.write_version(doc, session)
            return definition_from_doc(doc), current is None

        return await self.store.run_transaction(work, what="plans.define")

    async def withdraw(
        self, identity: Identity, code: str, federation_id: str | None
    ) -> Definition:
        """Withdraw ``code`` from a federation of the caller's subtree and everything under
        it (unless a federation below defines it again). Withdrawing it again changes
        nothing; a code not in force there is 404."""
        fid, path = await self.directory.resolve(identity, federation_id)

        async def work(session: AsyncClientSession) -> Definition:
            current = await self.repo.current(fid, code, session)
            if current is not None and current.get("withdrawn"):
                return definition_from_doc(current)
            defaults = {code: self.defaults[code]} if code in self.defaults else {}
            definitions = await self._definitions(path, code, session)
            governing = nearest(definitions, defaults, path).get(code)
            if governing is None or governing.terms is None:
                raise NotFound("plan not found", field="code")
            version = current["version"] if current else 0
            doc = self._doc(identity, fid, path, code, version + 1, None)
            await self.repo.write_version(doc, session)
            return definition_from_doc(doc)

        return await self.store.run_transaction(work, what="plans.withdraw")

    @staticmethod
    def _doc(
        identity: Identity,
        federation_id: str,
        federation_path: str,
        code: str,
        version: int,
        terms: PlanTerms | None,
    ) -> dict[str, Any]:
        return {
            "code": code,
            "federation_id": federation_id,
            "federation_path": federation_path,
            "version": version,
            "withdrawn": terms is None,
            "terms": terms.as_doc() if terms else None,
            "written_at": utcnow(),
            "written_by": identity.user_id,
        }

    # ------------------------------------------------------------ the treasurers' reports

    def _page(self, limit: int | None) -> int:
        if limit is None:
            return min(50, self.settings.max_page_size)
        if limit > self.settings.max_page_size:
            raise InvalidField(f"at most {self.settings.max_page_size}", field="limit")
        return limit

    async def differences(
        self,
        identity: Identity,
        federation_id: str | None,
        year: int | None,
        limit: int | None,
        after: str | None,
    ) -> tuple[str, str, list[dict[str, Any]], str | None]:
        """Payments of the subtree whose amount differs from what their plan expected,
        newest first: (federation id, path, page, cursor of the next page or None)."""
        fid, path = await self.directory.resolve(identity, federation_id)
        page = self._page(limit)
        since, until = _year_bounds(year, self.settings) if year is not None else (None, None)
        cursor = decode_cursor(after) if after is not None else None
        docs = await self.repo.flagged_payments(path, since, until, cursor, page)
        following = None
        if len(docs) == page:
            following = encode_cursor(docs[-1]["paid_at"], docs[-1]["_id"])
        return fid, path, docs, following

    async def split_report(
        self, identity: Identity, federation_id: str | None, year: int | None
    ) -> dict[str, Any]:
        """A year's accepted dues of a subtree (paid in that calendar year, organisation
        time zone), per federation and currency, with each level's share."""
        fid, path = await self.directory.resolve(identity, federation_id)
        year = year or utcnow().astimezone(self.settings.zone).year
        since, until = _year_bounds(year, self.settings)
        rows = await self.repo.dues_by_federation(path, since, until)
        names = await self.repo.federation_names(sorted({r["federation_id"] for r in rows}))
        totals: dict[str, dict[str, Any]] = {}
        for row in rows:
            shared = sum(row[f"{level}_cents"] for level in LEVELS)
            # dues recorded before plans had splits (or without a plan) are not shared
            row["unsplit_cents"] = row["collected_cents"] - shared
            row["federation_name"] = names.get(row["federation_id"], "")
            total = totals.setdefault(
                row["currency"], {"currency": row["currency"], **dict.fromkeys(_SUMMED, 0)}
            )
            for key in _SUMMED:
                total[key] += row[key]
        rows.sort(key=lambda r: (r["federation_path"], r["currency"]))
        return {
            "federation_id": fid,
            "federation_path": path,
            "year": year,
            "rows": rows,
            "totals": [totals[c] for c in sorted(totals)],
        }


_SUMMED = (
    "payments",
    "collected_cents",
    "national_cents",
    "federation_cents",
    "section_cents",
    "unsplit_cents",
)


def split_report_csv(report: Mapping[str, Any]) -> str:
    """The split report as CSV for the accountant: one row per federation and currency,
    amounts in cents."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(SPLIT_COLUMNS)
    for row in report["rows"]:
        writer.writerow([_cell(row[c]) for c in SPLIT_COLUMNS])
    return out.getvalue()


def _cell(value: Any) -> str:
    text = str(value)
    # a name starting with = + - @ would be a formula in a spreadsheet (CSV injection)
    if text[:1] in ("=", "+", "-", "@") and not text.lstrip("-").isdigit():
        return "'" + text
    return text
