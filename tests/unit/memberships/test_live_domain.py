"""Live figures, pure: states merge in any order and any number of copies to the same
state, and the figures of a federation and of every ancestor follow real transitions only."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from memberships.live.domain import (
    FederationFigures,
    MembershipState,
    PaymentState,
    Placement,
    Standing,
    lineage,
    membership_fact,
    payment_fact,
)

PARIS = "/root/paris/"
P11 = "/root/paris/p11/"
LYON = "/root/lyon/"
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Paris")


def at(path: str, minutes: int = 0) -> Placement:
    return Placement(path.strip("/").rsplit("/", 1)[-1], path, T0 + timedelta(minutes=minutes))


def activated(ends_on: str, path: str = P11, minutes: int = 0) -> MembershipState:
    fact = membership_fact("membership-activated", {"ends_on": ends_on}, at(path, minutes))
    assert fact is not None
    return fact


def grace(ends_on: str, path: str = P11, minutes: int = 1) -> MembershipState:
    data = {"ends_on": ends_on, "grace_ends_on": "2027-03-31"}
    fact = membership_fact("membership-grace-started", data, at(path, minutes))
    assert fact is not None
    return fact


def final(kind: str, path: str = P11, minutes: int = 2) -> MembershipState:
    fact = membership_fact(f"membership-{kind}", {}, at(path, minutes))
    assert fact is not None
    return fact


def merged(*states: MembershipState) -> MembershipState:
    out = states[0]
    for s in states[1:]:
        out = out.merge(s)
    return out


def test_lineage_is_the_federation_and_every_ancestor_root_first():
    assert list(lineage(P11)) == [
        ("root", "/root/"),
        ("paris", "/root/paris/"),
        ("p11", "/root/paris/p11/"),
    ]


def test_membership_events_in_any_order_and_repeated_give_the_same_state():
    facts = [
        activated("2026-12-31"),
        grace("2026-12-31"),
        activated("2027-12-31", minutes=3),  # renewed during grace
    ]
    results = {merged(*order) for order in itertools.permutations(facts + facts[:1])}
    assert len(results) == 1
    (state,) = results
    assert state.standing is Standing.active and state.ends_on == date(2027, 12, 31)


def test_grace_of_the_same_period_comes_after_its_activation():
    assert merged(grace("2026-12-31"), activated("2026-12-31")).standing is Standing.grace


def test_lapsed_and_cancelled_are_final_whatever_arrives_later():
    late_activation = activated("2030-12-31", minutes=10)
    assert merged(final("lapsed"), late_activation).standing is Standing.lapsed
    assert merged(late_activation, final("cancelled")).standing is Standing.cancelled
    # two finals: the first that happened wins, in either order
    lapsed, cancelled = final("lapsed", minutes=2), final("cancelled", minutes=5)
    assert merged(lapsed, cancelled).standing is Standing.lapsed
    assert merged(cancelled, lapsed).standing is Standing.lapsed


def test_the_newest_placement_wins_a_contact_who_moved():
    state = merged(activated("2026-12-31", LYON, minutes=9), grace("2026-12-31", P11, minutes=1))
    assert state.placement.federation_path == LYON
    assert state.standing is Standing.grace


def test_states_survive_their_changelog_form():
    for state in (activated("2026-12-31"), final("lapsed")):
        assert MembershipState.from_json(state.to_json()) == state


def received(cents: int, purpose: str = "dues", path: str = P11, when: datetime = T0):
    data = {"amount_cents": cents, "purpose": purpose, "received_at": when.isoformat()}
    fact = payment_fact("payment-received", data, at(path), ZONE)
    assert fact is not None
    return fact


def refunded(cents: int, refund_id: str = "r1", purpose: str = "dues", path: str = P11):
    data = {"amount_cents": cents, "purpose": purpose, "refund_id": refund_id}
    fact = payment_fact("payment-refunded", data, at(path, 5), ZONE)
    assert fact is not None
    return fact


def test_a_payment_counts_its_amount_less_its_refunds_once_each_in_any_order():
    facts = [received(5000), refunded(2000, "r1"), refunded(1000, "r2"), refunded(2000, "r1")]
    results = set()
    for order in itertools.permutations(facts):
        state = order[0]
        for f in order[1:]:
            state = state.merge(f)
        results.add(state.counted_cents)
    assert results == {2000}
    assert refunded(9000).merge(received(5000)).counted_cents == 0  # never below zero
    assert refunded(1000).counted_cents == 0  # a refund of a payment not seen yet


def test_the_year_is_the_organisations_calendar_year():
    new_year_in_paris = datetime(2025, 12, 31, 23, 30, tzinfo=UTC)  # 00:30 on Jan 1 in Paris
    assert received(100, when=new_year_in_paris).year == 2026
    state = received(100)
    assert PaymentState.from_json(state.merge(refunded(10)).to_json()) == state.merge(refunded(10))


def test_figures_count_the_federation_and_every_ancestor_and_follow_transitions():
    figures = FederationFigures()
    a = activated("2026-12-31")
    assert figures.apply_membership(None, a) == {"root", "paris", "p11"}
    b = a.merge(grace("2026-12-31"))
    assert figures.apply_membership(a, b) == {"root", "paris", "p11"}
    view = figures.get("paris").view(2026)  # type: ignore[union-attr]
    assert view["members_in_good_standing"] == 1 and view["members_in_grace"] == 1
    # a duplicate, or a renewal that keeps the standing, changes no figure
    assert figures.apply_membership(b, b) == set()
    c = b.merge(final("lapsed"))
    figures.apply_membership(b, c)
    root = figures.get("root").view(2026)  # type: ignore[union-attr]
    assert (root["members_in_good_standing"], root["members_lapsed"]) == (0, 1)
    assert figures.get("lyon") is None


def test_a_move_takes_the_count_from_one_branch_to_the_other():
    figures = FederationFigures()
    before = activated("2026-12-31", P11)
    figures.apply_membership(None, before)
    after = before.merge(activated("2026-12-31", LYON, minutes=30))
    assert figures.apply_membership(before, after) == {"root", "paris", "p11", "lyon"}
    assert figures.get("paris").view(2026)["members_in_good_standing"] == 0  # type: ignore[union-attr]
    assert figures.get("lyon").view(2026)["members_in_good_standing"] == 1  # type: ignore[union-attr]
    assert figures.get("root").view(2026)["members_in_good_standing"] == 1  # type: ignore[union-attr]


def test_money_this_year_with_refunds_subtracted_per_federation_and_ancestors():
    figures = FederationFigures()
    dues, gift = received(3000), received(10_000, "donation", LYON)
    figures.apply_payment(None, dues)
    figures.apply_payment(None, gift)
    figures.apply_payment(gift, gift.merge(refunded(4000, purpose="donation", path=LYON)))
    root = figures.get("root").view(2026)  # type: ignore[union-attr]
    assert (root["dues_cents"], root["donations_cents"]) == (3000, 6000)
    assert figures.get("paris").view(2026)["donations_cents"] == 0  # type: ignore[union-attr]
    assert figures.get("root").view(2025)["dues_cents"] == 0  # type: ignore[union-attr]


def test_rebuilding_from_the_states_gives_the_figures_the_differences_gave():
    figures = FederationFigures()
    m1, m2 = activated("2026-12-31"), activated("2026-12-31", LYON)
    m1b = m1.merge(final("cancelled"))
    p = received(2500)
    for old, new in ((None, m1), (None, m2), (m1, m1b)):
        figures.apply_membership(old, new)
    figures.apply_payment(None, p)
    kept = {fid: f.view(2026) for fid, f in figures.by_federation.items()}
    versions = {fid: v.pop("version") for fid, v in kept.items()}
    changed = figures.rebuild([m1b, m2], [p])
    assert changed == set(kept)
    for fid, view in kept.items():
        again = figures.get(fid).view(2026)  # type: ignore[union-attr]
        assert again.pop("version") > versions[fid]  # streams see a change
        assert again == view


def test_the_live_app_reads_what_the_registry_grants_it():
    """Its Kafka ACLs come from the registry's stream declaration: the two must agree, or
    the live process is refused its input where ACLs are enforced (compose, Kubernetes)."""
    from memberships.live.app import LIVE_TOPICS
    from memberships.settings import MembershipsSettings
    from tribune_shared.events.contracts import STREAMS

    spec = STREAMS[MembershipsSettings().live_app_id]
    assert spec.service == "memberships"
    assert set(LIVE_TOPICS) == set(spec.reads)
