"""The consent rates of a subtree (consent.domain.consent_rates)."""

from __future__ import annotations

from consent.domain import consent_rates


def test_counts_by_channel_and_purpose_with_the_share_of_people_who_granted():
    rows = [
        {"channel": "email", "purpose": "news", "status": "granted", "n": 30},
        {"channel": "email", "purpose": "news", "status": "pending", "n": 5},
        {"channel": "email", "purpose": "news", "status": "revoked", "n": 10},
        {"channel": "sms", "purpose": "news", "status": "granted", "n": 7},
    ]
    rates = consent_rates(100, rows)
    assert rates == [
        {
            "channel": "email",
            "purpose": "news",
            "granted": 30,
            "revoked": 10,
            "pending": 5,
            "rate": 0.3,
        },
        {
            "channel": "sms",
            "purpose": "news",
            "granted": 7,
            "revoked": 0,
            "pending": 0,
            "rate": 0.07,
        },
    ]


def test_pending_is_no_consent_and_nobody_known_gives_a_zero_rate():
    rows = [{"channel": "email", "purpose": "news", "status": "pending", "n": 4}]
    assert consent_rates(10, rows)[0]["rate"] == 0
    assert consent_rates(0, [{**rows[0], "status": "granted"}])[0]["rate"] == 0.0


def test_an_unknown_status_is_not_counted_as_granted():
    rows = [{"channel": "email", "purpose": "news", "status": "weird", "n": 4}]
    assert consent_rates(10, rows)[0]["granted"] == 0
