"""Messaging rules: who may be reached, and which projected consent state wins."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from messaging.domain import (
    ConsentState,
    ConsentStatus,
    ContentLimits,
    Recipient,
    check_channel,
    check_content,
    check_sendable,
    consent_version,
    is_newer,
    refusal,
)
from tribune_shared.errors import InvalidField, Refused
from tribune_shared.events.contracts import Channel

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = ContentLimits(subject_max_chars=200, text_max_chars=100_000)


def recipient(email: str | None = "ana@example.org") -> Recipient:
    return Recipient(
        contact_id="c1", federation_id="paris", federation_path="/root/paris/", email=email
    )


def granted(at: datetime = T0) -> ConsentState:
    return ConsentState(ConsentStatus.granted, at)


def revoked(at: datetime = T0) -> ConsentState:
    return ConsentState(ConsentStatus.revoked, at)


# ---------------------------------------------------------------- who may be reached


def test_granted_consent_allows_the_email():
    assert refusal(recipient(), granted(), Channel.email, "news") is None
    check_sendable(recipient(), granted(), Channel.email, "news")  # does not raise


def test_no_consent_refuses_with_the_purpose_named():
    with pytest.raises(Refused) as exc:
        check_sendable(recipient(), None, Channel.email, "news")
    assert exc.value.status_code == 409
    assert exc.value.message == "no email consent for purpose 'news'"
    assert exc.value.body()["rule"] == "no_consent"


def test_revoked_consent_refuses():
    with pytest.raises(Refused) as exc:
        check_sendable(recipient(), revoked(), Channel.email, "news")
    assert exc.value.message == "email consent for purpose 'news' was revoked"
    assert exc.value.body()["rule"] == "consent_revoked"


@pytest.mark.parametrize("email", [None, ""])
def test_contact_without_email_is_refused_before_consent_is_considered(email):
    found = refusal(recipient(email), granted(), Channel.email, "news")
    assert found is not None
    assert found.reason == "contact has no email address"


@pytest.mark.parametrize("channel", [Channel.sms, Channel.phone, Channel.post])
def test_only_email_is_supported(channel):
    with pytest.raises(InvalidField) as exc:
        check_channel(channel)
    assert exc.value.status_code == 422
    assert exc.value.body()["detail"] == [{"field": "channel", "reason": "not supported yet"}]


def test_email_channel_is_accepted():
    check_channel(Channel.email)


# ---------------------------------------------------------------- content


@pytest.mark.parametrize(
    ("subject", "text", "field", "reason"),
    [
        ("   ", "hello", "subject", "must not be blank"),
        ("Hi\r\nBcc: everyone@example.org", "hello", "subject", "must be a single line"),
        ("Hi\nthere", "hello", "subject", "must be a single line"),
        # every line boundary the email package refuses in a header (was a 500)
        ("Hi\u2028there", "hello", "subject", "must be a single line"),
        ("Hi\x85there", "hello", "subject", "must be a single line"),
        ("Hi\u2029there", "hello", "subject", "must be a single line"),
        ("Hi\x0bthere", "hello", "subject", "must be a single line"),
        ("Hi there\n", "hello", "subject", "must be a single line"),
        ("Hi\x00there", "hello", "subject", "must not contain control characters"),
        ("Hi", " \n\t", "text", "must not be blank"),
    ],
)
def test_bad_content_is_refused_with_field_and_reason(subject, text, field, reason):
    with pytest.raises(InvalidField) as exc:
        check_content(subject, text, LIMITS)
    assert exc.value.body()["detail"] == [{"field": field, "reason": reason}]


def test_configured_limits_tighten_the_content():
    tight = ContentLimits(subject_max_chars=10, text_max_chars=20)
    check_content("x" * 10, "y" * 20, tight)
    with pytest.raises(InvalidField) as exc:
        check_content("x" * 11, "y", tight)
    assert exc.value.field == "subject"
    with pytest.raises(InvalidField) as exc:
        check_content("x", "y" * 21, tight)
    assert exc.value.field == "text"


# ---------------------------------------------------------------- out-of-order delivery


def project(events: list[tuple[ConsentStatus, datetime]]) -> ConsentStatus | None:
    """What the projection holds after applying ``events`` in this arrival order."""
    stored: tuple[int, ConsentStatus] | None = None
    for status, at in events:
        version = consent_version(status, at)
        if is_newer(stored[0] if stored else None, version):
            stored = (version, status)
    return stored[1] if stored else None


def test_a_late_grant_does_not_undo_a_newer_revocation():
    grant = (ConsentStatus.granted, T0)
    revoke = (ConsentStatus.revoked, T0 + timedelta(seconds=5))
    assert project([grant, revoke]) is ConsentStatus.revoked
    assert project([revoke, grant]) is ConsentStatus.revoked


def test_a_late_revocation_does_not_undo_a_newer_grant():
    revoke = (ConsentStatus.revoked, T0)
    regrant = (ConsentStatus.granted, T0 + timedelta(minutes=1))
    assert project([revoke, regrant]) is ConsentStatus.granted
    assert project([regrant, revoke]) is ConsentStatus.granted


def test_the_latest_fact_wins_in_every_arrival_order():
    facts = [
        (ConsentStatus.granted, T0),
        (ConsentStatus.revoked, T0 + timedelta(microseconds=1)),
        (ConsentStatus.granted, T0 + timedelta(hours=1)),
        (ConsentStatus.revoked, T0 + timedelta(days=2)),
    ]
    for order in itertools.permutations(facts):
        assert project(list(order)) is ConsentStatus.revoked
    for order in itertools.permutations(facts[:3]):
        assert project(list(order)) is ConsentStatus.granted


def test_grant_and_revocation_at_the_same_instant_resolve_to_revoked():
    facts = [(ConsentStatus.granted, T0), (ConsentStatus.revoked, T0)]
    assert project(facts) is ConsentStatus.revoked
    assert project(facts[::-1]) is ConsentStatus.revoked


def test_a_replayed_event_changes_nothing():
    version = consent_version(ConsentStatus.granted, T0)
    assert is_newer(None, version)
    assert not is_newer(version, version)


def test_versions_keep_microsecond_order_and_accept_naive_utc():
    at = datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=UTC)
    assert consent_version(ConsentStatus.granted, at) > consent_version(
        ConsentStatus.revoked, at - timedelta(microseconds=1)
    )
    naive = at.replace(tzinfo=None)
    assert consent_version(ConsentStatus.granted, naive) == consent_version(
        ConsentStatus.granted, at
    )


def test_contact_versions_apply_only_when_newer():
    assert is_newer(None, 1)
    assert is_newer(1, 2)
    assert not is_newer(2, 1)
    assert not is_newer(2, 2)


def test_standing_is_the_best_of_a_persons_memberships_on_the_day():
    from datetime import date

    from messaging.domain import MembershipState, Standing, standing_of

    today = date(2027, 3, 1)
    active = MembershipState.active
    assert standing_of([], today) is None  # never a member
    assert standing_of([(active, date(2027, 12, 31))], today) is Standing.up_to_date
    assert standing_of([(active, date(2027, 3, 1))], today) is Standing.up_to_date  # last day
    assert standing_of([(active, date(2027, 2, 28))], today) is Standing.grace
    assert standing_of([(MembershipState.lapsed, None)], today) is Standing.lapsed
    assert standing_of([(MembershipState.cancelled, None)], today) is Standing.lapsed
    both = [(MembershipState.lapsed, None), (active, date(2027, 6, 30))]
    assert standing_of(both, today) is Standing.up_to_date


def test_a_lapse_or_cancellation_wins_over_an_activation_of_the_same_day():
    from datetime import date

    from messaging.domain import MembershipState, membership_version

    day = date(2027, 1, 15)
    activated = membership_version(MembershipState.active, day)
    assert membership_version(MembershipState.lapsed, day) > activated
    assert membership_version(MembershipState.cancelled, day) > activated
    # a renewal the next day wins over the lapse
    assert membership_version(MembershipState.active, date(2027, 1, 16)) > membership_version(
        MembershipState.lapsed, day
    )
