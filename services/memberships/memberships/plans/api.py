"""HTTP routes of plans per federation (thin: validate, call the catalog).

Reads (the plans in force, a definition's versions): every role, for the caller's subtree
and its ancestors (a federation sees the plans it inherits). Writes (define, withdraw) and
the treasurers' reports (amount differences, split): treasurer and admin, own subtree.
Anything else is 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.app import ID_PATTERN
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.events.contracts import PaymentMethod

from memberships.domain import PlanKind
from memberships.plans.domain import CODE_PATTERN, LABEL_MAX_CHARS, Definition
from memberships.plans.service import PlanCatalog, split_report_csv

router = APIRouter(prefix="/api/v1/memberships/plans", tags=["plans"])

may_manage = require_roles(Role.treasurer)

CodePath = Annotated[str, Path(min_length=1, max_length=64, pattern=CODE_PATTERN)]
FederationQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        pattern=ID_PATTERN,
        description="default: the caller's federation",
    ),
]
YearQuery = Annotated[int | None, Query(ge=1900, le=2999, description="calendar year")]


async def catalog(request: Request) -> PlanCatalog:
    return request.app.state.memberships_service.plans


Catalog = Annotated[PlanCatalog, Depends(catalog)]


# ---------------------------------------------------------------- plans


class SplitIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    national: int = Field(default=0, ge=0, le=100, strict=True)
    federation: int = Field(default=0, ge=0, le=100, strict=True)
    section: int = Field(default=0, ge=0, le=100, strict=True)


class PlanIn(BaseModel):
    """A plan's terms at a federation (every field of the version: a change restates them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    federation_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=ID_PATTERN,
        description="a federation of your subtree; default: yours",
    )  # fmt: skip
    label: str | None = Field(default=None, min_length=1, max_length=LABEL_MAX_CHARS)
    kind: PlanKind = Field(description="calendar: ends on December 31; rolling: lasts `days`")
    days: int | None = Field(default=None, ge=1, le=3660, description="rolling plans only")
    grace_days: int = Field(default=30, ge=0, le=366)
    amount_cents: int = Field(gt=0, strict=True, description="the full rate")
    rates: dict[str, Annotated[int, Field(gt=0, strict=True)]] = Field(
        default_factory=dict,
        max_length=20,
        description="reduced rate kind (MEMBERSHIPS_PLAN_RATE_KINDS) -> amount in cents",
    )
    split: SplitIn | None = Field(
        default=None,
        description="percent of the dues per level (sum 100); "
        "default: MEMBERSHIPS_PLAN_DEFAULT_SPLIT",
    )
    expected_version: int | None = Field(
        default=None, ge=0, description="the version you edited (0: none yet); 409 if it moved"
    )


class WithdrawIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    federation_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=ID_PATTERN,
        description="a federation of your subtree; default: yours",
    )  # fmt: skip


class DefinedIn(BaseModel):
    federation_id: str
    federation_path: str


class PlanView(BaseModel):
    code: str
    label: str
    kind: PlanKind
    days: int | None
    grace_days: int
    amount_cents: int | None = Field(description="None: a platform default stating no amount")
    rates: dict[str, int]
    split: dict[str, int] = Field(description="percent per level: national, federation, section")
    version: int = Field(description="of the definition in force (0: the platform's default)")
    defined_in: DefinedIn | None = Field(description="None: the platform's default plans")
    inherited: bool = Field(description="defined by an ancestor (or the platform)")

    @classmethod
    def of(cls, d: Definition, federation_id: str) -> PlanView:
        assert d.terms is not None
        t = d.terms
        where = None
        if d.federation_id is not None and d.federation_path is not None:
            where = DefinedIn(federation_id=d.federation_id, federation_path=d.federation_path)
        return cls(
            code=d.code,
            label=t.label,
            kind=t.kind,
            days=t.days,
            grace_days=t.grace_days,
            amount_cents=t.amount_cents,
            rates=dict(t.rates),
            split=t.split.as_dict(),
            version=d.version,
            defined_in=where,
            inherited=d.federation_id != federation_id,
        )


class PlanList(BaseModel):
    federation_id: str
    federation_path: str
    items: list[PlanView]


class Withdrawal(BaseModel):
    code: str
    federation_id: str
    federation_path: str
    version: int
    withdrawn: Literal[True] = True


class PlanVersionView(BaseModel):
    code: str
    federation_id: str
    version: int
    withdrawn: bool
    terms: dict[str, Any] | None
    written_at: datetime
    written_by: str


class PlanVersionList(BaseModel):
    items: list[PlanVersionView]


@router.get("")
async def list_plans(
    svc: Catalog, identity: CurrentIdentity, federation_id: FederationQuery = None
) -> PlanList:
    """The plans a federation's members may pay for, each with where it is defined (the
    nearest federation of its lineage, or the platform's defaults)."""
    fid, path, found = await svc.plans_in_force(identity, federation_id)
    return PlanList(
        federation_id=fid, federation_path=path, items=[PlanView.of(d, fid) for d in found]
    )


@router.put(
    "/{code}",
    dependencies=[may_manage],
    status_code=status.HTTP_200_OK,
    responses={201: {"description": "the federation's first definition of this code"}},
)
async def define_plan(
    code: CodePath, body: PlanIn, svc: Catalog, identity: CurrentIdentity, response: Response
) -> PlanView:
    """Define ``code`` at a federation (overriding an ancestor's there and below), or
    change it: a new version, which applies to payments recorded after it."""
    definition, created = await svc.define(
        identity,
        code,
        body.federation_id,
        label=body.label,
        kind=body.kind,
        days=body.days,
        grace_days=body.grace_days,
        amount_cents=body.amount_cents,
        rates=body.rates,
        split=body.split.model_dump() if body.split else None,
        expected_version=body.expected_version,
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    assert definition.federation_id is not None
    return PlanView.of(definition, definition.federation_id)


@router.post("/{code}/withdraw", dependencies=[may_manage])
async def withdraw_plan(
    code: CodePath, body: WithdrawIn, svc: Catalog, identity: CurrentIdentity
) -> Withdrawal:
    """Withdraw ``code`` from a federation and its subtree (a federation below may define
    it again). Dues naming it there are then refused (422 on ``plan``)."""
    d = await svc.withdraw(identity, code, body.federation_id)
    assert d.federation_id is not None and d.federation_path is not None
    return Withdrawal(
        code=d.code, federation_id=d.federation_id, federation_path=d.federation_path,
        version=d.version,
    )  # fmt: skip


@router.get("/{code}/versions")
async def plan_versions(
    code: CodePath,
    svc: Catalog,
    identity: CurrentIdentity,
    federation_id: FederationQuery = None,
    limit: Annotated[int | None, Query(ge=1, description="at most max_page_size")] = None,
) -> PlanVersionList:
    """Every version of a federation's own definition of ``code``, newest first."""
    docs = await svc.versions(identity, code, federation_id, limit)
    return PlanVersionList(items=[PlanVersionView.model_validate(d) for d in docs])


# ---------------------------------------------------------------- treasurers' reports


class DifferenceView(BaseModel):
    payment_id: str
    contact_id: str
    federation_id: str
    federation_path: str
    provider: str
    method: PaymentMethod
    status: str
    paid_at: datetime
    currency: str
    plan: str | None
    rate: str | None
    amount_cents: int
    expected_cents: int | None
    difference_cents: int | None = Field(description="paid - expected (negative: paid less)")

    @classmethod
    def of(cls, doc: dict[str, Any]) -> DifferenceView:
        check = doc.get("amount_check") or {}
        return cls.model_validate(
            {
                **doc,
                "payment_id": doc["_id"],
                "status": doc.get("status", "accepted"),
                "rate": doc.get("rate"),
                "expected_cents": check.get("expected_cents"),
                "difference_cents": check.get("difference_cents"),
            }
        )


class DifferenceList(BaseModel):
    federation_id: str
    federation_path: str
    items: list[DifferenceView]
    next: str | None = Field(description="pass as `after` for the next page; None: no more")


@router.get("/reports/differences", dependencies=[may_manage])
async def amount_differences(
    svc: Catalog,
    identity: CurrentIdentity,
    federation_id: FederationQuery = None,
    year: YearQuery = None,
    limit: Annotated[int | None, Query(ge=1, description="at most max_page_size")] = None,
    after: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> DifferenceList:
    """Dues of the subtree whose amount differs from what their plan (and rate) expected,
    newest first."""
    fid, path, docs, following = await svc.differences(identity, federation_id, year, limit, after)
    return DifferenceList(
        federation_id=fid,
        federation_path=path,
        items=[DifferenceView.of(d) for d in docs],
        next=following,
    )


class SplitRow(BaseModel):
    federation_id: str
    federation_name: str
    federation_path: str
    currency: str
    payments: int
    collected_cents: int
    national_cents: int
    federation_cents: int
    section_cents: int
    unsplit_cents: int = Field(description="dues recorded without a split (before plans had one)")


class SplitTotal(BaseModel):
    currency: str
    payments: int
    collected_cents: int
    national_cents: int
    federation_cents: int
    section_cents: int
    unsplit_cents: int


class SplitReport(BaseModel):
    federation_id: str
    federation_path: str
    year: int
    rows: list[SplitRow] = Field(description="per federation of the subtree and currency")
    totals: list[SplitTotal] = Field(description="per currency")


@router.get("/reports/split", dependencies=[may_manage])
async def split_report(
    svc: Catalog,
    identity: CurrentIdentity,
    federation_id: FederationQuery = None,
    year: YearQuery = None,
) -> SplitReport:
    """Accepted dues of the subtree paid in ``year`` (default this year) and their split
    into national, federation and section shares."""
    return SplitReport.model_validate(await svc.split_report(identity, federation_id, year))


@router.get(
    "/reports/split.csv",
    dependencies=[may_manage],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
async def split_report_as_csv(
    svc: Catalog,
    identity: CurrentIdentity,
    federation_id: FederationQuery = None,
    year: YearQuery = None,
) -> Response:
    """The split report as CSV (amounts in cents), for the accountant."""
    report = await svc.split_report(identity, federation_id, year)
    name = f"dues-split-{report['year']}-{report['federation_id']}.csv"
    return Response(
        split_report_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
