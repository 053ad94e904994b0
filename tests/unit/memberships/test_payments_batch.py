"""The rules of a batch of payments decided together (the webhook's shared transactions):
the legal ceilings across the payments of one person in one batch, provider retries inside
a batch, what dues do to a membership, and the batcher that gives each request its own
answer."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from memberships.domain import Membership, MembershipStatus, Plan, PlanKind
from memberships.donations.rules import Election, Gift, Limits, Rule
from memberships.payments.batcher import Batcher
from memberships.payments.domain import (
    BatchLedger,
    campaign_totals,
    dues_paid,
    first_of_each,
    party_totals,
)
from memberships.payments.notice import DonorDeclaration
from tribune_shared.errors import InvalidField

FRENCH = DonorDeclaration(natural_person=True, nationality="FR")
DAY = date(2026, 5, 4)
PARIS = ZoneInfo("Europe/Paris")
ELECTION = Election("e-1", "Municipales 2026", date(2025, 9, 1), date(2026, 5, 15))
S = MembershipStatus


def gift(amount_cents: int, **changes) -> Gift:
    fields = {
        "amount_cents": amount_cents,
        "method": "card",
        "purpose": "donation",
        "paid_on": DAY,
        "donor": FRENCH,
    }
    fields.update(changes)
    return Gift(**fields)


def rules(assessment) -> list[Rule]:
    return [r.rule for r in assessment.refusals]


# ---------------------------------------------------------------- ceilings inside a batch


def test_two_gifts_of_one_person_in_one_batch_may_not_exceed_the_ceiling_together() -> None:
    ledger = BatchLedger(Limits())
    first = ledger.admit("ada", gift(500_000))
    second = ledger.admit("ada", gift(500_000))
    assert first.accepted
    assert rules(second) == [Rule.yearly_ceiling]
    # the reason names what the batch's first gift already used
    assert "5,000.00 EUR already given" in second.refusals[0].reason
    assert "2,500.00 EUR remain" in second.refusals[0].reason


def test_the_batch_adds_to_what_the_store_holds_at_the_cent() -> None:
    ledger = BatchLedger(Limits(), party={("ada", 2026): 250_000})
    assert ledger.admit("ada", gift(400_000)).accepted
    assert ledger.admit("ada", gift(100_000)).accepted  # exactly 7,500.00
    assert rules(ledger.admit("ada", gift(1))) == [Rule.yearly_ceiling]  # 7,500.01
    assert ledger.party[("ada", 2026)] == 750_000


def test_a_refused_gift_counts_nowhere_so_a_later_one_still_fits() -> None:
    ledger = BatchLedger(Limits())
    assert rules(ledger.admit("ada", gift(800_000))) == [Rule.yearly_ceiling]
    assert ledger.admit("ada", gift(750_000)).accepted
    cash = ledger.admit("bob", gift(20_000, method="cash"))
    assert rules(cash) == [Rule.cash_limit]
    assert ("bob", 2026) not in ledger.party


def test_people_and_years_are_counted_apart() -> None:
    ledger = BatchLedger(Limits())
    assert ledger.admit("ada", gift(750_000)).accepted
    assert ledger.admit("bob", gift(750_000)).accepted
    assert ledger.admit("ada", gift(750_000, paid_on=date(2027, 1, 1))).accepted
    assert not ledger.admit("ada", gift(1)).accepted


def test_dues_of_an_elected_official_stay_outside_the_ceiling_in_a_batch() -> None:
    ledger = BatchLedger(Limits())
    assert ledger.admit("ada", gift(750_000)).accepted
    elected = gift(50_000, purpose="dues", elected_official=True)
    assert ledger.admit("ada", elected).accepted
    assert ledger.party[("ada", 2026)] == 750_000
    assert rules(ledger.admit("ada", gift(100, purpose="dues"))) == [Rule.yearly_ceiling]


def test_campaign_gifts_of_a_batch_share_the_election_ceiling_not_the_party_one() -> None:
    ledger = BatchLedger(Limits(), party={("ada", 2026): 750_000})
    assert ledger.admit("ada", gift(300_000, election=ELECTION)).accepted
    second = ledger.admit("ada", gift(160_001, election=ELECTION))
    assert rules(second) == [Rule.campaign_ceiling]
    assert ledger.admit("ada", gift(160_000, election=ELECTION)).accepted  # 4,600.00
    assert ledger.campaign[("ada", "e-1")] == 460_000


# ---------------------------------------------------------------- stored totals


def test_stored_payments_count_in_their_local_year_and_only_when_accepted() -> None:
    payments = [
        # 2026-12-31 23:30 in Paris: still 2026
        {"contact_id": "ada", "paid_at": datetime(2026, 12, 31, 22, 30, tzinfo=UTC)},
        # 2027-01-01 00:30 in Paris (23:30 UTC the day before): 2027
        {"contact_id": "ada", "paid_at": datetime(2026, 12, 31, 23, 30, tzinfo=UTC)},
        {"contact_id": "ada", "paid_at": datetime(2026, 6, 1, tzinfo=UTC), "status": "refunded"},
        {"contact_id": "ada", "paid_at": datetime(2026, 6, 1, tzinfo=UTC), "election_id": "e-1"},
        {"contact_id": "bob", "paid_at": datetime(2026, 6, 1, tzinfo=UTC)},
    ]
    for p in payments:
        p.setdefault("amount_cents", 1_000)
        p.setdefault("purpose", "donation")
    assert party_totals(payments, PARIS) == {
        ("ada", 2026): 1_000,
        ("ada", 2027): 1_000,
        ("bob", 2026): 1_000,
    }
    assert campaign_totals(payments) == {("ada", "e-1"): 1_000}


# ---------------------------------------------------------------- retries in a batch


def test_a_retry_in_the_same_batch_is_answered_from_its_original() -> None:
    keys = [("stripe", "pi_1"), ("stripe", "pi_2"), ("stripe", "pi_1"), ("hello", "pi_1")]
    assert first_of_each(keys) == [0, 1, 0, 3]
    assert first_of_each([]) == []


# ---------------------------------------------------------------- dues


ANNUAL = Plan("annual", PlanKind.calendar, grace_days=90)
NOW = datetime(2026, 5, 4, 10, tzinfo=UTC)


def test_first_dues_start_a_membership() -> None:
    change = dues_paid(
        None, ANNUAL, DAY, contact_id="ada", payment_id="p1", new_membership_id="m1", now=NOW
    )
    assert change.membership.status is S.active
    assert (change.membership.starts_on, change.membership.ends_on) == (DAY, date(2026, 12, 31))
    [(written, history)] = change.writes
    assert written.membership_id == "m1"
    assert [h["status"] for h in history] == ["pending", "active"]
    assert history[-1]["payment_id"] == "p1"
    assert [type(e).__name__ for e in change.events] == ["MembershipActivatedV1"]


def test_dues_after_the_grace_lapse_the_old_membership_and_start_a_new_one() -> None:
    old = Membership(
        "m0", "ada", "annual", S.active, date(2024, 1, 1), date(2024, 12, 31), grace_days=90
    )
    change = dues_paid(
        old, ANNUAL, DAY, contact_id="ada", payment_id="p1", new_membership_id="m1", now=NOW
    )
    assert [(m.membership_id, m.status) for m, _ in change.writes] == [
        ("m0", S.lapsed),
        ("m1", S.active),
    ]
    assert [type(e).__name__ for e in change.events] == [
        "MembershipLapsedV1",
        "MembershipActivatedV1",
    ]


def test_two_dues_of_one_person_in_a_batch_buy_two_periods() -> None:
    first = dues_paid(
        None, ANNUAL, DAY, contact_id="ada", payment_id="p1", new_membership_id="m1", now=NOW
    )
    second = dues_paid(
        first.membership,
        ANNUAL,
        DAY,
        contact_id="ada",
        payment_id="p2",
        new_membership_id="unused",
        now=NOW,
    )
    assert second.membership.membership_id == "m1"
    assert second.membership.ends_on == date(2027, 12, 31)


# ---------------------------------------------------------------- the batcher


async def test_each_caller_gets_its_own_result_or_error_from_a_shared_batch() -> None:
    seen: list[list[int]] = []

    async def decide(items: list[int]) -> list[int | Exception]:
        seen.append(list(items))
        await asyncio.sleep(0)
        return [InvalidField("odd", field="n") if i % 2 else i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(decide, max_batch=4, max_in_flight=1)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)), return_exceptions=True)
    await batcher.close()
    assert [r if isinstance(r, int) else "odd" for r in results] == [
        0 if i == 0 else ("odd" if i % 2 else i * 10) for i in range(10)
    ]
    assert sorted(i for batch in seen for i in batch) == list(range(10))
    assert max(len(b) for b in seen) <= 4
    assert len(seen) < 10  # shared, not one call each


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_runs() -> None:
    calls = 0

    async def decide(items: list[int]) -> list[int | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store down")
        return list(items)

    batcher: Batcher[int, int] = Batcher(decide, max_batch=100)
    first = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in first)
    assert await batcher.submit(3) == 3
    await batcher.close()
    with pytest.raises(RuntimeError):
        await batcher.submit(4)


def test_batcher_limits_are_checked() -> None:
    async def decide(items: list[int]) -> list[int | Exception]:
        return list(items)

    with pytest.raises(ValueError):
        Batcher(decide, max_batch=0)
