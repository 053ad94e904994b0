"""What the revocation feed remembers and how a remembered "no" meets the view's consent
(messaging.revocations, messaging.domain.consent_after): pure, no Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from messaging import revocations
from messaging.domain import ConsentState, ConsentStatus, consent_after
from messaging.revocations import RevocationFeed, what_it_says
from messaging.settings import MessagingSettings
from tribune_shared.events import new_envelope
from tribune_shared.events.contracts import (
    Channel,
    ConsentGrantedV1,
    ConsentRevokedV1,
    ErasureRequestedV1,
    EventContract,
    SuppressionAddedV1,
)

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
GRANTED = ConsentState(status=ConsentStatus.granted, changed_at=T0)


def envelope(event: EventContract):
    return new_envelope(event, producer="consent", federation_id="paris", federation_path="/p/")


def revoked(contact_id: str, at: datetime, purpose: str = "news"):
    return envelope(
        ConsentRevokedV1(
            contact_id=contact_id,
            channel=Channel.email,
            purpose=purpose,
            source="link",
            revoked_at=at,
        )
    )


@pytest.mark.parametrize(
    ("consent", "revoked_at", "expected"),
    [
        (GRANTED, None, GRANTED),  # nothing seen: the view decides
        (GRANTED, T0 + timedelta(seconds=1), ConsentStatus.revoked),
        (GRANTED, T0, ConsentStatus.revoked),  # a revocation wins a tie
        (GRANTED, T0 - timedelta(seconds=1), GRANTED),  # granted again since
        (None, T0, ConsentStatus.revoked),  # the view has not even the grant yet
    ],
)
def test_a_revocation_seen_first_overrides_the_views_consent_unless_granted_since(
    consent, revoked_at, expected
):
    decided = consent_after(consent, revoked_at)
    if isinstance(expected, ConsentState):
        assert decided == expected
    else:
        assert decided is not None and decided.status is expected
        assert decided.changed_at == revoked_at


def test_each_kind_of_no_is_remembered_under_the_guards_key():
    assert what_it_says(revoked("ana", T0)) == ("ana:email:news", T0)
    suppressed = SuppressionAddedV1(
        address_hash="h1", kind="email", reason="objection", suppressed_at=T0
    )
    assert what_it_says(envelope(suppressed)) == ("h1", T0)
    erased = ErasureRequestedV1(request_id="r1", contact_id="bob", requested_at=T0)
    assert what_it_says(envelope(erased)) == ("bob", T0)
    granted = ConsentGrantedV1(
        contact_id="ana", channel=Channel.email, purpose="news", source="form", granted_at=T0
    )
    assert what_it_says(envelope(granted)) is None


def test_the_feed_keeps_the_latest_no_and_forgets_after_its_memory(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(revocations.time, "monotonic", lambda: clock[0])
    feed = RevocationFeed(MessagingSettings(revocation_feed_memory_seconds=60))
    later = T0 + timedelta(minutes=5)
    assert feed.remember([revoked("ana", later), revoked("ana", T0)]) == 2
    assert feed.said_at("ana:email:news") == later  # an older one read after does not win
    assert feed.knows("ana:email:news") and not feed.knows("bob:email:news")
    assert not feed.knows(None)
    clock[0] += 61
    assert feed.said_at("ana:email:news") is None


def test_the_feed_holds_at_most_its_bound_forgetting_what_it_read_first(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(revocations.time, "monotonic", lambda: clock[0])
    feed = RevocationFeed(MessagingSettings(revocation_feed_max_entries=100))
    for i in range(101):
        clock[0] += 1
        feed.remember([revoked(f"c{i}", T0)])
    assert len(feed._said) <= 100
    assert feed.knows("c100:email:news") and not feed.knows("c0:email:news")
