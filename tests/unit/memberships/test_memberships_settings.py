"""Settings: the webhook secret is a secret, plans are checked, limits are bounded."""

from __future__ import annotations

import json

import pytest
from memberships.domain import PlanKind
from memberships.settings import MembershipsSettings
from pydantic import ValidationError
from tribune_shared.settings import DEV_SECRET

STRONG = "a-strong-secret-of-32-characters!"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith(("MEMBERSHIPS_", "TRIBUNE_")):
            monkeypatch.delenv(key)
    # unset would be production, which refuses the development defaults these tests use
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")


def test_defaults_match_the_french_rules():
    s = MembershipsSettings()
    assert (s.http_port, s.worker_port) == (8103, 8203)
    assert s.webhook_tolerance_seconds == 300
    assert s.cash_limit_cents == 15_000
    assert s.default_plan == "annual"
    assert s.plan("annual").kind is PlanKind.calendar
    assert "webhook_secret" in MembershipsSettings.secret_fields
    assert "identity_secret" in MembershipsSettings.secret_fields


@pytest.mark.parametrize("secret", [DEV_SECRET, "short"])
def test_production_refuses_a_default_or_short_webhook_secret(monkeypatch, secret):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "production")
    monkeypatch.setenv("TRIBUNE_IDENTITY_SECRET", STRONG)
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_SECRET", secret)
    with pytest.raises(ValidationError, match="MEMBERSHIPS_WEBHOOK_SECRET"):
        MembershipsSettings()


def test_production_accepts_strong_secrets(monkeypatch):
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "production")
    monkeypatch.setenv("TRIBUNE_IDENTITY_SECRET", STRONG)
    monkeypatch.setenv("TRIBUNE_VAULT_KEK", STRONG + "kek")
    monkeypatch.setenv("MEMBERSHIPS_WEBHOOK_SECRET", STRONG + "x")
    assert MembershipsSettings().webhook_secret == STRONG + "x"


def test_plans_come_from_json(monkeypatch):
    plans = {"monthly": {"kind": "rolling", "days": 30, "grace_days": 7}}
    monkeypatch.setenv("MEMBERSHIPS_PLANS", json.dumps(plans))
    monkeypatch.setenv("MEMBERSHIPS_DEFAULT_PLAN", "monthly")
    plan = MembershipsSettings().plan("monthly")
    assert (plan.kind, plan.days, plan.grace_days) == (PlanKind.rolling, 30, 7)


def test_the_default_plan_must_exist(monkeypatch):
    monkeypatch.setenv("MEMBERSHIPS_DEFAULT_PLAN", "lifetime")
    with pytest.raises(ValidationError, match="lifetime"):
        MembershipsSettings()


@pytest.mark.parametrize(
    "plan",
    [{"kind": "rolling"}, {"kind": "calendar", "days": 365}, {"kind": "weekly"}],
)
def test_inconsistent_plans_are_refused(monkeypatch, plan):
    monkeypatch.setenv("MEMBERSHIPS_PLANS", json.dumps({"annual": plan}))
    with pytest.raises(ValidationError):
        MembershipsSettings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEMBERSHIPS_WEBHOOK_TOLERANCE_SECONDS", "0"),
        ("MEMBERSHIPS_CASH_LIMIT_CENTS", "-1"),
        ("MEMBERSHIPS_MAX_AMOUNT_CENTS", "0"),
        ("MEMBERSHIPS_TIMEZONE", "Mars/Olympus"),
    ],
)
def test_out_of_bounds_values_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        MembershipsSettings()
