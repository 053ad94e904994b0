"""Messaging honours what consent decides beyond a purpose's consent: the suppression list,
the tracking consent, and the transactional confirmation email."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from messaging.composer import build_transactional_email
from messaging.domain import (
    ConsentState,
    ConsentStatus,
    Recipient,
    check_purpose,
    refusal,
    tracking_allowed,
)
from messaging.settings import MessagingSettings
from support import on_the_wire
from tribune_shared.errors import InvalidField
from tribune_shared.events.contracts import Channel

AT = datetime(2026, 1, 1, tzinfo=UTC)
ANA = Recipient(
    contact_id="ana", federation_id="paris", federation_path="/root/paris/", email="ana@x.org"
)
GRANTED = ConsentState(ConsentStatus.granted, AT)


def test_a_suppressed_address_is_refused_whatever_the_consent():
    found = refusal(ANA, GRANTED, Channel.email, "news", suppressed=True)
    assert found is not None and found.rule == "suppressed"
    assert refusal(ANA, GRANTED, Channel.email, "news") is None


def test_tracking_needs_a_granted_tracking_consent():
    assert tracking_allowed(GRANTED)
    assert not tracking_allowed(None)
    assert not tracking_allowed(ConsentState(ConsentStatus.revoked, AT))


def test_tracking_is_not_a_message_purpose():
    check_purpose("news", "tracking")
    with pytest.raises(InvalidField) as refused:
        check_purpose("tracking", "tracking")
    assert refused.value.field == "purpose"


def test_the_confirmation_email_carries_no_unsubscribe():
    mail = build_transactional_email(
        message_id="m1",
        mail_from="Parti <news@parti.example.org>",
        recipient=ANA,
        subject="Please confirm",
        text="Open https://x.example/confirm?token=t",
        date=AT,
    )
    received = on_the_wire(mail)
    assert "List-Unsubscribe" not in received
    assert received["Auto-Submitted"] == "auto-generated"
    assert "https://x.example/confirm?token=t" in received.get_content()


def test_the_confirmation_text_must_hold_the_link(monkeypatch):
    monkeypatch.setenv("MESSAGING_CONFIRMATION_TEXT", "Please confirm.")
    with pytest.raises(ValueError, match="url"):
        MessagingSettings()
