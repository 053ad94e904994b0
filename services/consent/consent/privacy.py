"""Privacy requests and retention: the rules, free of I/O.

GDPR art. 12(3): an access or erasure request is answered "within one month of receipt"
(EU regulation 1182/71: the same day of the following month, or that month's last day if
it has no such day). Retention clocks decide when a person's data is due for erasure.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tribune_shared.errors import InvalidField


class RequestKind(StrEnum):
    access = "access"
    erasure = "erasure"


class RequestStatus(StrEnum):
    open = "open"  # access: waiting for the export
    in_progress = "in_progress"  # erasure: fanned out, waiting for every service
    completed = "completed"


# ---------------------------------------------------------------- deadlines


def add_months(moment: datetime, months: int) -> datetime:
    """Same day ``months`` later, clamped to the month's last day (Jan 31 + 1 = Feb 28/29)."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def deadline(received_at: datetime, months: int) -> datetime:
    """When the answer is due at the latest."""
    return add_months(received_at, months)


def is_overdue(request: Mapping[str, Any], now: datetime) -> bool:
    """Past its deadline and not answered yet."""
    return request["status"] != RequestStatus.completed and request["deadline"] < now


def check_received_at(received_at: datetime, now: datetime, months: int) -> None:
    """A request is recorded when it was received: not in the future, and not so old that
    its deadline had long passed when it was recorded (a typo, most likely)."""
    if received_at.tzinfo is None:
        raise InvalidField("must carry a time zone", field="received_at")
    if received_at > now:
        raise InvalidField("must not be in the future", field="received_at")
    if add_months(received_at, 12) < now:
        raise InvalidField("must be within the last 12 months", field="received_at")


# ---------------------------------------------------------------- erasure receipt


def completions_missing(expected: Iterable[str], done: Mapping[str, Any]) -> list[str]:
    return [s for s in expected if s not in done]


def receipt(
    expected: Iterable[str],
    done: Mapping[str, Mapping[str, Any]],
    *,
    key_destroyed_at: datetime | None,
    completed_at: datetime,
    keys_destroyed: Iterable[str] = (),
) -> dict[str, Any]:
    """What the DPO keeps as proof: each service and when it finished, what it had to keep
    (pseudonymised) and why, when the person's data key was destroyed, and whose keys were
    (the person's and those of contacts merged into them: what a restore of an older backup
    must destroy again)."""
    services = [
        {
            "service": s,
            "completed_at": done[s]["completed_at"],
            "kept_for_legal_reasons": list(done[s].get("kept_for_legal_reasons", [])),
        }
        for s in expected
    ]
    return {
        "services": services,
        "kept_for_legal_reasons": [
            f"{entry['service']}: {reason}"
            for entry in services
            for reason in entry["kept_for_legal_reasons"]
        ],
        "key_destroyed_at": key_destroyed_at,
        "keys_destroyed": list(keys_destroyed),
        "completed_at": completed_at,
    }


# ---------------------------------------------------------------- retention


class RetentionRule(BaseModel):
    """A retention clock: when it runs out for a person, their data is erased.

    - ``unanswered_prospect``: a first message was sent, no consent was ever granted, and
      ``after_months`` passed since that message (e.g. rented files: 2 months);
    - ``inactive``: nothing happened with the person (created, consent given or withdrawn,
      payment, membership, click) for ``after_months`` (e.g. 36 months).

    ``origins`` limits a rule to contacts whose data came from those origins (empty: all).
    ``action``: ``erase`` or ``anonymise``; both fan out an erasure (nothing identifying is
    left anywhere; legal records stay pseudonymised), the request records which was asked.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")
    clock: Literal["unanswered_prospect", "inactive"]
    after_months: int = Field(ge=1, le=240)
    action: Literal["erase", "anonymise"] = "erase"
    origins: list[str] = Field(default_factory=list)

    @field_validator("origins")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


DEFAULT_RETENTION_RULES = (
    RetentionRule(
        name="unanswered-prospect",
        clock="unanswered_prospect",
        after_months=2,
        origins=["rented_file"],
    ),
    RetentionRule(name="inactive-contact", clock="inactive", after_months=36),
)


def clock_started_at(rule: RetentionRule, clock: Mapping[str, Any]) -> datetime | None:
    """When the rule's clock started for this person (None: it does not run)."""
    if rule.origins and clock.get("origin_kind") not in rule.origins:
        return None
    if rule.clock == "unanswered_prospect":
        if clock.get("consented_at") is not None:
            return None
        return clock.get("first_message_at")
    return clock.get("last_activity_at") or clock.get("created_at")


def retention_due(rule: RetentionRule, clock: Mapping[str, Any], now: datetime) -> bool:
    """True when the person's data must go now under ``rule``."""
    if clock.get("erased"):
        return False
    started = clock_started_at(rule, clock)
    return started is not None and add_months(started, rule.after_months) <= now


def retention_cutoff(rule: RetentionRule, now: datetime) -> datetime:
    """Clocks that started at or before this instant may be due: a coarse store filter,
    a few days wide because month ends clamp (``retention_due`` decides)."""
    return add_months(now, -rule.after_months) + timedelta(days=4)
