"""Which plan dues pay for, and what they should have cost.

The recording of a payment (``memberships.service``) asks ``PlanCatalog.for_dues`` inside
its transaction; this is the one place that resolves a plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.errors import InvalidField
from tribune_shared.store import Store

from memberships.domain import Plan
from memberships.settings import MembershipsSettings


@dataclass(frozen=True)
class PlanChoice:
    """The plan dues pay for, as it applies to the contact's federation."""

    plan: Plan
    #: what the plan (and the reduced rate, if any) costs; None: the plan sets no amount
    expected_amount_cents: int | None = None
    #: the federation whose definition applied (None: the platform's default plans)
    defined_in: str | None = None


class PlanCatalog:
    def __init__(self, settings: MembershipsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store

    async def for_dues(
        self,
        contact: dict[str, Any],
        name: str | None,
        rate: str | None,
        session: AsyncClientSession | None = None,
    ) -> PlanChoice:
        """The plan named ``name`` (default plan if None) for the contact's federation;
        InvalidField on ``plan`` or ``rate`` if unknown there."""
        name = name or self.settings.default_plan
        if name not in self.settings.plans:
            raise InvalidField(
                f"unknown plan; expected one of {', '.join(sorted(self.settings.plans))}",
                field="plan",
            )
        if rate is not None:
            raise InvalidField("this plan has no reduced rates", field="rate")
        return PlanChoice(self.settings.plan(name))
