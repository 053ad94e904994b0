from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict
from tribune_shared.settings import DEV_SECRET, MIN_SECRET_LENGTH, Environment, ServiceSettings

from memberships.domain import Plan, PlanKind
from memberships.plans.domain import LevelDepths, split_problems
from memberships.receipts.settings import ReceiptsSettings


class PlanDefinition(BaseModel):
    """One membership plan as configured (``MEMBERSHIPS_PLANS`` is a JSON object of these)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: PlanKind
    #: length of a rolling period, in days (required for rolling plans)
    days: int | None = Field(default=None, ge=1, le=3660)
    #: days after the paid period during which the member is still in good standing
    grace_days: int = Field(default=30, ge=0, le=366)
    # The root's default terms (memberships.plans): a federation's own plan of the same
    # code overrides them in its subtree.
    label: str | None = Field(default=None, min_length=1, max_length=200)
    #: the full rate; None: the plan states no amount and payments are not checked
    amount_cents: int | None = Field(default=None, ge=1, le=1_000_000_000)
    #: reduced rate kind (one of MEMBERSHIPS_PLAN_RATE_KINDS) -> its amount
    rates: dict[str, int] = Field(default_factory=dict, max_length=20)
    #: percent per level (national, federation, section); None: MEMBERSHIPS_PLAN_DEFAULT_SPLIT
    split: dict[str, int] | None = None

    @model_validator(mode="after")
    def _days_match_kind(self) -> PlanDefinition:
        if self.kind is PlanKind.rolling and self.days is None:
            raise ValueError("a rolling plan needs 'days'")
        if self.kind is PlanKind.calendar and self.days is not None:
            raise ValueError("a calendar plan has no 'days' (it ends on December 31)")
        if self.rates and self.amount_cents is None:
            raise ValueError("reduced 'rates' need the plan's 'amount_cents'")
        if any(not 1 <= c <= (self.amount_cents or 0) for c in self.rates.values()):
            raise ValueError("a reduced rate is between 1 cent and the plan's 'amount_cents'")
        if self.split is not None and (problems := split_problems(self.split)):
            raise ValueError("; ".join(f"{f}: {r}" for f, r in problems))
        return self


def _default_plans() -> dict[str, PlanDefinition]:
    return {
        "annual": PlanDefinition(kind=PlanKind.calendar, grace_days=90),
        "rolling-year": PlanDefinition(kind=PlanKind.rolling, days=365, grace_days=30),
    }


class MembershipsSettings(ServiceSettings):
    service_name = "memberships"
    secret_fields: ClassVar[tuple[str, ...]] = (*ServiceSettings.secret_fields, "webhook_secret")
    model_config = SettingsConfigDict(env_prefix="MEMBERSHIPS_", extra="ignore")

    http_port: int = 8103
    worker_port: int = 8203

    #: shared secret of the payment webhook (HMAC-SHA256 of "<timestamp>." + raw body)
    webhook_secret: str = DEV_SECRET
    #: how far the webhook timestamp may be from now (replay window), in seconds
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    #: largest webhook body accepted, in bytes
    webhook_max_body_bytes: int = Field(default=16_384, ge=256, le=1_048_576)
    # The webhook's recording path (memberships.payments.recording): payments arriving at
    # once share transactions, every legal rule checked across the batch.
    webhook_batch_max_size: int = Field(
        default=200,
        ge=1,
        le=2000,
        description="payments recorded in one shared transaction at most (1: one each)",
    )
    webhook_batch_max_wait_seconds: float = Field(
        default=0.0,
        ge=0,
        le=1.0,
        description="how long a batch waits to fill before its transaction starts "
        "(0: it starts as soon as a slot is free; payments arriving meanwhile wait)",
    )
    webhook_batch_max_in_flight: int = Field(
        default=2,
        ge=1,
        le=32,
        description="batch transactions one API process runs at once",
    )

    # Provider webhooks (memberships.providers): unset secret = that provider is refused.
    stripe_webhook_secret: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Stripe endpoint signing secret (whsec_...); unset: Stripe webhooks refused",
    )
    stripe_tolerance_seconds: int = Field(
        default=300, ge=1, le=3600, description="largest |now - t| of a Stripe-Signature"
    )
    stripe_max_body_bytes: int = Field(
        default=65_536, ge=1024, le=1_048_576, description="largest Stripe event body"
    )
    stripe_dispute_reversal: Literal["lost", "created"] = Field(
        default="lost",
        description="a dispute reverses the payment when it is lost (default) or when opened",
    )
    helloasso_signature_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="HelloAsso notification URL's signatureKey; unset: HelloAsso refused",
    )
    helloasso_allowed_ips: list[IPvAnyNetwork] = Field(
        default_factory=list,
        max_length=64,
        description="HelloAsso's published sender addresses; empty: the address is not checked",
    )
    helloasso_max_body_bytes: int = Field(
        default=65_536, ge=1024, le=1_048_576, description="largest HelloAsso notification"
    )

    plans: dict[str, PlanDefinition] = Field(default_factory=_default_plans, min_length=1)
    default_plan: str = Field(default="annual", min_length=1, max_length=64)
    # Plans per federation (memberships.plans).
    plan_rate_kinds: list[str] = Field(
        default_factory=lambda: ["students", "unemployed", "couples"],
        max_length=20,
        description="the kinds of reduced rate a plan may offer",
    )
    plan_default_split: dict[str, int] = Field(
        default_factory=lambda: {"national": 100, "federation": 0, "section": 0},
        description="percent of dues per level when a plan states no split (sum 100)",
    )
    plan_federation_depth: int = Field(
        default=2, ge=2, le=20, description="tree depth of the federation level (root = 1)"
    )
    plan_section_depth: int = Field(
        default=3, ge=3, le=21, description="tree depth of the section level (below it too)"
    )
    plans_max_per_federation: int = Field(
        default=50, ge=1, le=1000, description="plan codes one federation may define"
    )
    #: French rule: gifts above 150 EUR may not be paid in cash
    cash_limit_cents: int = Field(default=15_000, ge=0, le=100_000_000)
    #: largest single payment accepted (French yearly ceiling per person: 7,500 EUR)
    max_amount_cents: int = Field(default=750_000, ge=1, le=1_000_000_000)
    #: the organisation's time zone: the calendar day of a payment and of "today"
    timezone: str = Field(default="Europe/Paris", min_length=1, max_length=64)

    # ------------------------------------------------ payments (memberships.payments)
    manual_backdate_days: int = Field(
        default=373,
        ge=0,
        le=3660,
        description="how old a treasurer's entry may be dated (a cheque is valid 1 year + 8 days)",
    )
    slip_max_cheques: int = Field(
        default=300, ge=1, le=5000, description="most cheques on one remittance slip"
    )
    schedule_tolerance_days: int = Field(
        default=7,
        ge=0,
        le=90,
        description="days after a recurring due date before it counts as missed",
    )
    schedule_check_interval_seconds: float = Field(
        default=3600, gt=0, le=86_400, description="how often the worker looks for missed dues"
    )
    schedule_batch_size: int = Field(
        default=200, ge=1, le=5000, description="schedules checked per transaction"
    )

    # ------------------------------------------------ legal gift rules (memberships.donations)
    yearly_ceiling_cents: int = Field(
        default=750_000,
        ge=1,
        le=1_000_000_000,
        description="a natural person's gifts and dues to the party per calendar year, "
        "elected officials' dues excluded (loi n° 88-227 art. 11-4: 7,500 EUR)",
    )
    campaign_ceiling_cents: int = Field(
        default=460_000,
        ge=1,
        le=1_000_000_000,
        description="a donor's gifts to the campaign accounts of one election "
        "(code électoral L52-8: 4,600 EUR)",
    )
    donor_nationalities: list[str] = Field(
        default_factory=lambda: ["FR"],
        min_length=1,
        max_length=300,
        description="nationalities (ISO 3166-1 alpha-2) that may give wherever they live; "
        "anyone residing in France may give too",
    )
    donor_declaration_for_dues: bool = Field(
        default=False,
        description="dues need the donor's declaration too (gifts always do; a declaration "
        "given with dues is always checked)",
    )

    # ------------------------------------------------------------ live figures (memberships.live)
    live_port: int = Field(
        default=8105, ge=1, le=65535, description="HTTP port of the live figures process"
    )
    live_app_id: str = Field(
        default="memberships-live",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="faust app id: its consumer group and the prefix of its changelog topics",
    )
    # Measured (bench/memberships_live.py, 10,000 payments): faust's producer sends each
    # state change's changelog record at once by default, one produce request per few
    # records; gathering them for 20 ms took faust from about 1,000-1,400 to 1,750
    # events/s. The figures themselves change in memory at once: only the changelog
    # (what a restarted app reads back) waits.
    live_changelog_linger_seconds: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="how long faust gathers changelog records before sending them",
    )
    live_stream_heartbeat_seconds: float = Field(
        default=15,
        gt=0,
        le=300,
        description="an idle figures stream sends a comment this often (below the gateway's "
        "upstream read timeout, which would otherwise cut it)",
    )
    live_stream_min_interval_seconds: float = Field(
        default=0.1,
        ge=0,
        le=60,
        description="figures are pushed at most this often per stream (a burst of payments "
        "becomes one push per interval, with the latest figures)",
    )
    live_stream_max_seconds: float = Field(
        default=3600,
        ge=1,
        le=86_400,
        description="a stream ends after this long (the browser's EventSource reconnects, "
        "and the caller's identity is checked again)",
    )
    live_stream_max_clients: int = Field(
        default=500, ge=1, le=100_000, description="concurrent figure streams (503 beyond)"
    )

    # ------------------------------------------------------------ lifecycle (memberships.lifecycle)
    sweep_interval_seconds: float = Field(
        default=300,
        ge=0.05,
        le=86_400,
        description="how often each worker sweeps memberships (grace, lapse, reminders)",
    )
    sweep_batch_size: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="memberships one sweep transaction changes (with their events)",
    )
    sweep_max_batches: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="batches of one sweep round; the rest waits for the next round",
    )
    renewal_reminder_days: list[int] = Field(
        default_factory=lambda: [30, 7],
        max_length=10,
        description="days before the end of a paid period a renewal reminder is requested "
        "(each once per period; empty: none)",
    )
    roll_default_limit: int = Field(
        default=100, ge=1, le=10_000, description="members per page of the roll by default"
    )
    roll_export_batch_size: int = Field(
        default=1000, ge=1, le=10_000, description="members read per round trip by the CSV"
    )
    cancel_reason_max_chars: int = Field(
        default=500, ge=1, le=5000, description="longest reason given for a cancellation"
    )
    receipts: ReceiptsSettings = Field(
        default_factory=ReceiptsSettings,
        description="tax receipts and legal reports (JSON: issuer, retention, CNCCFP columns)",
    )

    @field_validator("renewal_reminder_days")
    @classmethod
    def _reminder_days(cls, value: list[int]) -> list[int]:
        if any(not 1 <= d <= 366 for d in value):
            raise ValueError("each reminder is 1 to 366 days before the end")
        if len(set(value)) != len(value):
            raise ValueError("names each number of days once")
        return sorted(value, reverse=True)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _strong_provider_secrets(self) -> MembershipsSettings:
        # Optional secrets (a provider may be unused), but one that is set must be strong
        # outside development, like the secret_fields.
        if self.environment is Environment.development:
            return self
        weak = [
            name
            for name in ("stripe_webhook_secret", "helloasso_signature_key")
            if (value := getattr(self, name)) is not None and len(value) < MIN_SECRET_LENGTH
        ]
        if weak:
            raise ValueError(
                "; ".join(self.env_names(n) for n in weak)
                + f": a provider's secret must be at least {MIN_SECRET_LENGTH} characters"
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def day_at(self, timestamp: float) -> date:
        """The organisation's calendar day at a Unix time (what "today" means here)."""
        return datetime.fromtimestamp(timestamp, self.zone).date()

    @model_validator(mode="after")
    def _default_plan_exists(self) -> MembershipsSettings:
        if self.default_plan not in self.plans:
            raise ValueError(
                f"MEMBERSHIPS_DEFAULT_PLAN {self.default_plan!r} is not one of the plans "
                f"({', '.join(sorted(self.plans))})"
            )
        return self

    @model_validator(mode="after")
    def _plan_terms_are_consistent(self) -> MembershipsSettings:
        kinds = set(self.plan_rate_kinds)
        for kind in kinds:
            if not kind or len(kind) > 64 or not kind.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"MEMBERSHIPS_PLAN_RATE_KINDS: {kind!r} is not a rate name")
        for name, definition in self.plans.items():
            if unknown := sorted(set(definition.rates) - kinds):
                raise ValueError(
                    f"MEMBERSHIPS_PLANS {name!r}: unknown reduced rates {', '.join(unknown)} "
                    "(see MEMBERSHIPS_PLAN_RATE_KINDS)"
                )
        if problems := split_problems(self.plan_default_split):
            raise ValueError(
                "MEMBERSHIPS_PLAN_DEFAULT_SPLIT: " + "; ".join(f"{f}: {r}" for f, r in problems)
            )
        if self.plan_section_depth <= self.plan_federation_depth:
            raise ValueError(
                "MEMBERSHIPS_PLAN_SECTION_DEPTH must be deeper than "
                "MEMBERSHIPS_PLAN_FEDERATION_DEPTH"
            )
        return self

    @property
    def plan_depths(self) -> LevelDepths:
        return LevelDepths(self.plan_federation_depth, self.plan_section_depth)

    def plan(self, name: str) -> Plan:
        definition = self.plans[name]
        return Plan(
            name=name, kind=definition.kind, days=definition.days, grace_days=definition.grace_days
        )
