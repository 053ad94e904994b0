from __future__ import annotations

from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from tribune_shared.settings import DEV_SECRET, ServiceSettings

from memberships.domain import Plan, PlanKind


class PlanDefinition(BaseModel):
    """One membership plan as configured (``MEMBERSHIPS_PLANS`` is a JSON object of these)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: PlanKind
    #: length of a rolling period, in days (required for rolling plans)
    days: int | None = Field(default=None, ge=1, le=3660)
    #: days after the paid period during which the member is still in good standing
    grace_days: int = Field(default=30, ge=0, le=366)

    @model_validator(mode="after")
    def _days_match_kind(self) -> PlanDefinition:
        if self.kind is PlanKind.rolling and self.days is None:
            raise ValueError("a rolling plan needs 'days'")
        if self.kind is PlanKind.calendar and self.days is not None:
            raise ValueError("a calendar plan has no 'days' (it ends on December 31)")
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

    plans: dict[str, PlanDefinition] = Field(default_factory=_default_plans, min_length=1)
    default_plan: str = Field(default="annual", min_length=1, max_length=64)
    #: French rule: gifts above 150 EUR may not be paid in cash
    cash_limit_cents: int = Field(default=15_000, ge=0, le=100_000_000)
    #: largest single payment accepted (French yearly ceiling per person: 7,500 EUR)
    max_amount_cents: int = Field(default=750_000, ge=1, le=1_000_000_000)
    #: the organisation's time zone: the calendar day of a payment and of "today"
    timezone: str = Field(default="Europe/Paris", min_length=1, max_length=64)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @model_validator(mode="after")
    def _default_plan_exists(self) -> MembershipsSettings:
        if self.default_plan not in self.plans:
            raise ValueError(
                f"MEMBERSHIPS_DEFAULT_PLAN {self.default_plan!r} is not one of the plans "
                f"({', '.join(sorted(self.plans))})"
            )
        return self

    def plan(self, name: str) -> Plan:
        definition = self.plans[name]
        return Plan(
            name=name, kind=definition.kind, days=definition.days, grace_days=definition.grace_days
        )
