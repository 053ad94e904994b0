from datetime import UTC, datetime, timedelta

import pytest
from consent.domain import ConsentStatus, LedgerEntry, check_purpose, current_status, needs_entry
from tribune_shared.errors import InvalidField
from tribune_shared.events.contracts import Channel

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def entry(status, minutes, channel=Channel.email, purpose="news"):
    return LedgerEntry(
        contact_id="c1",
        channel=channel,
        purpose=purpose,
        status=status,
        source="form",
        actor="u1",
        recorded_at=T0 + timedelta(minutes=minutes),
    )


def test_current_state_is_the_latest_entry_for_that_channel_and_purpose():
    history = [
        entry(ConsentStatus.granted, 0),
        entry(ConsentStatus.revoked, 5),
        entry(ConsentStatus.granted, 3, channel=Channel.sms),
    ]
    assert current_status(history, Channel.email, "news") is ConsentStatus.revoked
    assert current_status(history, Channel.sms, "news") is ConsentStatus.granted
    assert current_status(history, Channel.email, "fundraising") is None


def test_granting_twice_or_revoking_twice_records_nothing_new():
    assert not needs_entry(ConsentStatus.granted, ConsentStatus.granted)
    assert not needs_entry(ConsentStatus.revoked, ConsentStatus.revoked)
    assert needs_entry(ConsentStatus.granted, ConsentStatus.revoked)
    assert needs_entry(None, ConsentStatus.granted)


def test_an_objection_is_recorded_even_without_prior_consent():
    assert needs_entry(None, ConsentStatus.revoked)


def test_unknown_purpose_is_refused_with_the_field():
    check_purpose("news", ["news"])
    with pytest.raises(InvalidField) as err:
        check_purpose("spam", ["news", "campaigns"])
    assert err.value.field == "purpose"
    assert "news, campaigns" in err.value.message
