"""Which consents a surviving contact takes over from a duplicate merged into it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consent.domain import carried_over

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def state(channel: str, purpose: str, status: str, minutes: int = 0) -> dict:
    return {
        "channel": channel,
        "purpose": purpose,
        "status": status,
        "updated_at": T0 + timedelta(minutes=minutes),
    }


def keys(docs: list[dict]) -> list[tuple[str, str, str]]:
    return [(d["channel"], d["purpose"], d["status"]) for d in docs]


def test_what_the_survivor_never_decided_is_taken_over():
    merged = [state("email", "news", "granted"), state("sms", "news", "revoked")]
    assert keys(carried_over(merged, [])) == [
        ("email", "news", "granted"),
        ("sms", "news", "revoked"),
    ]


def test_the_latest_decision_of_the_person_wins():
    survivor = [state("email", "news", "granted", 0), state("email", "campaigns", "revoked", 9)]
    merged = [state("email", "news", "revoked", 5), state("email", "campaigns", "granted", 1)]
    # a later revocation under the duplicate wins; an older grant does not undo a refusal
    assert keys(carried_over(merged, survivor)) == [("email", "news", "revoked")]


def test_at_the_same_instant_a_refusal_wins():
    survivor = [state("email", "news", "granted", 3)]
    assert keys(carried_over([state("email", "news", "revoked", 3)], survivor)) == [
        ("email", "news", "revoked")
    ]
    survivor = [state("email", "news", "revoked", 3)]
    assert carried_over([state("email", "news", "granted", 3)], survivor) == []


def test_same_state_and_pending_requests_change_nothing():
    survivor = [state("email", "news", "granted", 0)]
    merged = [state("email", "news", "granted", 5), state("sms", "news", "pending", 5)]
    assert carried_over(merged, survivor) == []
