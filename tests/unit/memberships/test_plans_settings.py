"""The platform's plans (MEMBERSHIPS_PLANS) as the root's defaults, with their amount,
reduced rates and split checked at start; and what a payment keeps of its plan's split."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from memberships.domain import PlanKind
from memberships.plans.domain import LevelDepths, Split
from memberships.plans.service import (
    PlanCatalog,
    PlanChoice,
    decode_cursor,
    encode_cursor,
    split_report_csv,
)
from memberships.settings import MembershipsSettings
from pydantic import ValidationError
from tribune_shared.errors import InvalidField


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith(("MEMBERSHIPS_", "TRIBUNE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")


def test_by_default_the_platforms_plans_state_no_amount_and_go_to_the_national_level():
    s = MembershipsSettings()
    assert s.plan_rate_kinds == ["students", "unemployed", "couples"]
    catalog = PlanCatalog(s, store=None)  # type: ignore[arg-type]  # no I/O here
    annual = catalog.defaults["annual"]
    assert annual.amount_cents is None and annual.rates == {}
    assert annual.split == Split(100, 0, 0)
    assert s.plan_depths == LevelDepths(2, 3)


def test_a_platform_plan_may_carry_an_amount_rates_and_a_split(monkeypatch):
    plans = {
        "annual": {
            "kind": "calendar",
            "label": "Adhésion annuelle",
            "amount_cents": 3000,
            "rates": {"students": 1000},
            "split": {"national": 40, "federation": 40, "section": 20},
        }
    }
    monkeypatch.setenv("MEMBERSHIPS_PLANS", json.dumps(plans))
    catalog = PlanCatalog(MembershipsSettings(), store=None)  # type: ignore[arg-type]
    annual = catalog.defaults["annual"]
    assert (annual.label, annual.amount_cents, annual.kind) == (
        "Adhésion annuelle",
        3000,
        PlanKind.calendar,
    )
    assert annual.expected_cents("students") == 1000
    assert annual.split == Split(40, 40, 20)


def _plans(**annual) -> dict:
    return {"MEMBERSHIPS_PLANS": {"annual": {"kind": "calendar", **annual}}}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (_plans(rates={"students": 100}), "amount_cents"),
        (_plans(amount_cents=100, rates={"students": 200}), "reduced rate"),
        (_plans(amount_cents=100, rates={"pensioners": 50}), "pensioners"),
        (_plans(split={"national": 90}), "sum to 100"),
        ({"MEMBERSHIPS_PLAN_DEFAULT_SPLIT": {"national": 50, "federation": 40}}, "DEFAULT_SPLIT"),
        ({"MEMBERSHIPS_PLAN_RATE_KINDS": ["students", "a b"]}, "RATE_KINDS"),
        (
            {"MEMBERSHIPS_PLAN_FEDERATION_DEPTH": 3, "MEMBERSHIPS_PLAN_SECTION_DEPTH": 3},
            "SECTION_DEPTH",
        ),
    ],
)
def test_inconsistent_plan_settings_refuse_to_start(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, json.dumps(value))
    with pytest.raises(ValidationError, match=message):
        MembershipsSettings()


def test_a_payment_keeps_the_split_of_its_plan_version_and_where_each_share_goes():
    choice = PlanChoice(
        plan=MembershipsSettings().plan("annual"),
        expected_amount_cents=3000,
        defined_in="paris",
        version=4,
        split=Split(50, 30, 20),
        federation_path="/root/paris/p11/",
    )
    record = choice.split_record(3001)
    assert record is not None
    assert (record["plan_version"], record["defined_in"]) == (4, "paris")
    assert record["percent"] == {"national": 50, "federation": 30, "section": 20}
    levels = record["levels"]
    assert [levels[lvl]["cents"] for lvl in ("national", "federation", "section")] == [
        1501,
        900,
        600,
    ]
    assert levels["section"]["path"] == "/root/paris/p11/"
    # a donation, or dues without a plan split, keep none
    assert PlanChoice(plan=choice.plan).split_record(3000) is None


def test_the_flagged_list_cursor_round_trips_and_a_forged_one_is_422():
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "p-1")) == (at, "p-1")
    for bad in ("nonsense", "2026-03-01T12:00:00|", "2026-03-01T12:00:00|p-1"):
        with pytest.raises(InvalidField) as error:
            decode_cursor(bad)
        assert error.value.field == "after"


def test_the_split_csv_has_a_header_and_neutralises_formulas_in_names():
    row = {
        "federation_id": "paris",
        "federation_name": "=HYPERLINK(1)",
        "federation_path": "/root/paris/",
        "currency": "EUR",
        "payments": 2,
        "collected_cents": 6000,
        "national_cents": 3000,
        "federation_cents": 1800,
        "section_cents": 1200,
        "unsplit_cents": 0,
    }
    lines = split_report_csv({"rows": [row]}).splitlines()
    assert lines[0].startswith("federation_id,federation_name,federation_path,currency,payments")
    assert lines[1] == "paris,'=HYPERLINK(1),/root/paris/,EUR,2,6000,3000,1800,1200,0"
