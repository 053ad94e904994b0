"""Lifecycle settings: the sweep's limits are bounded, reminder offsets are checked, and
messaging's renewal reminder text is filled in on one subject line."""

from __future__ import annotations

from datetime import date

import pytest
from memberships.settings import MembershipsSettings
from messaging.renewals.service import fill, reminder_message_id
from messaging.settings import MessagingSettings
from pydantic import ValidationError
from tribune_shared.events.contracts import MembershipRenewalRequestedV1


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith(("MEMBERSHIPS_", "MESSAGING_", "TRIBUNE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")


def test_defaults():
    s = MembershipsSettings()
    assert s.renewal_reminder_days == [30, 7]
    assert s.sweep_interval_seconds == 300 and s.sweep_batch_size == 200


def test_reminder_days_are_sorted_and_checked(monkeypatch):
    monkeypatch.setenv("MEMBERSHIPS_RENEWAL_REMINDER_DAYS", "[7, 60, 30]")
    assert MembershipsSettings().renewal_reminder_days == [60, 30, 7]
    monkeypatch.setenv("MEMBERSHIPS_RENEWAL_REMINDER_DAYS", "[]")
    assert MembershipsSettings().renewal_reminder_days == []
    for bad in ("[0]", "[400]", "[7, 7]"):
        monkeypatch.setenv("MEMBERSHIPS_RENEWAL_REMINDER_DAYS", bad)
        with pytest.raises(ValidationError, match="renewal_reminder_days"):
            MembershipsSettings()


@pytest.mark.parametrize(
    ("name", "value"),
    [("SWEEP_BATCH_SIZE", "0"), ("SWEEP_INTERVAL_SECONDS", "0"), ("ROLL_DEFAULT_LIMIT", "0")],
)
def test_limits_are_bounded(monkeypatch, name, value):
    monkeypatch.setenv(f"MEMBERSHIPS_{name}", value)
    with pytest.raises(ValidationError):
        MembershipsSettings()


def test_the_reminder_is_filled_in_on_one_subject_line():
    event = MembershipRenewalRequestedV1(
        membership_id="m1",
        contact_id="c1",
        plan="annual\r\nBcc: x",
        ends_on=date(2026, 12, 31),
        days_left=7,
    )
    s = MessagingSettings()
    assert fill(s.renewal_subject, event) == "Your membership ends on 2026-12-31"
    text = fill(s.renewal_text, event)
    assert "2026-12-31" in text and "in 7 days" in text and "annual Bcc: x" in text
    assert reminder_message_id("e1") == reminder_message_id("e1") != reminder_message_id("e2")


def test_a_multi_line_renewal_subject_is_refused(monkeypatch):
    monkeypatch.setenv("MESSAGING_RENEWAL_SUBJECT", "Renew\nnow")
    with pytest.raises(ValidationError, match="renewal_subject"):
        MessagingSettings()
