"""The legal gift rules at their boundaries (loi n° 88-227 art. 11-4, code électoral
L52-8): who may give, how, and how much."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from memberships.donations.rules import (
    Election,
    Gift,
    Limits,
    Rule,
    assess,
    campaign_total,
    counted_total,
    euros,
    year_bounds,
)
from memberships.payments.notice import DonorDeclaration

LIMITS = Limits()
FRENCH = DonorDeclaration(natural_person=True, nationality="FR")
DAY = date(2026, 5, 4)
ELECTION = Election("e-1", "Municipales 2026", date(2025, 9, 1), date(2026, 5, 15))


def gift(amount_cents: int = 10_000, **changes) -> Gift:
    fields = {
        "amount_cents": amount_cents,
        "method": "card",
        "purpose": "donation",
        "paid_on": DAY,
        "donor": FRENCH,
    }
    fields.update(changes)
    return Gift(**fields)


def rules_broken(g: Gift, given: int = 0, campaign_given: int = 0, limits=LIMITS) -> list[Rule]:
    return [
        r.rule
        for r in assess(
            g, limits, party_given_cents=given, campaign_given_cents=campaign_given
        ).refusals
    ]


# ---------------------------------------------------------------- the yearly ceiling


def test_a_gift_reaching_7500_00_eur_in_the_year_is_accepted():
    assessment = assess(gift(250_000), LIMITS, party_given_cents=500_000)
    assert assessment.accepted
    assert assessment.party_room is not None
    assert assessment.party_room.remaining_cents == 250_000


def test_one_cent_above_7500_eur_is_refused_naming_the_rule_and_the_room_left():
    [refusal] = assess(gift(250_001), LIMITS, party_given_cents=500_000).refusals
    assert refusal.rule is Rule.yearly_ceiling
    assert refusal.field == "amount_cents"
    assert "7,500.00 EUR" in refusal.reason
    assert "5,000.00 EUR already given" in refusal.reason
    assert "2,500.00 EUR remain" in refusal.reason
    assert "2026" in refusal.reason and "11-4" in refusal.reason


def test_a_single_payment_of_exactly_the_ceiling_is_accepted_and_one_cent_more_refused():
    assert rules_broken(gift(750_000)) == []
    assert rules_broken(gift(750_001)) == [Rule.yearly_ceiling]


def test_dues_count_towards_the_ceiling_like_gifts():
    assert rules_broken(gift(3_000, purpose="dues", donor=None), given=748_000) == [
        Rule.yearly_ceiling
    ]
    assert rules_broken(gift(2_000, purpose="dues", donor=None), given=748_000) == []


def test_an_elected_officials_dues_are_outside_the_ceiling():
    dues = gift(300_000, purpose="dues", elected_official=True, donor=None)
    assessment = assess(dues, LIMITS, party_given_cents=None)
    assert assessment.accepted
    assert assessment.party_room is None  # it does not count at all


def test_an_elected_officials_gift_still_counts():
    # the exception is for dues only (art. 11-4, al. 2)
    assert rules_broken(gift(10_000, elected_official=True), given=745_000) == [Rule.yearly_ceiling]


def test_the_ceiling_is_configurable():
    limits = Limits(yearly_ceiling_cents=100_000)
    assert rules_broken(gift(100_000), limits=limits) == []
    assert rules_broken(gift(100_001), limits=limits) == [Rule.yearly_ceiling]


def test_the_total_counts_only_accepted_party_payments():
    payments = [
        {"amount_cents": 100, "purpose": "donation", "status": "accepted"},
        {"amount_cents": 200, "purpose": "dues", "status": "accepted"},
        {"amount_cents": 400, "purpose": "dues", "status": "accepted", "elected_official": True},
        {"amount_cents": 800, "purpose": "donation", "status": "refunded"},
        {"amount_cents": 1600, "purpose": "donation", "status": "flagged_for_refund"},
        {"amount_cents": 3200, "purpose": "donation", "status": "charged_back"},
        {"amount_cents": 6400, "purpose": "donation", "status": "accepted", "election_id": "e"},
    ]
    assert counted_total(payments) == 300
    assert campaign_total(payments, "e") == 6400
    assert campaign_total(payments, "other") == 0


def test_the_year_is_the_organisations_calendar_year():
    paris = ZoneInfo("Europe/Paris")
    start, end = year_bounds(2026, paris)
    # 23:30 UTC on December 31, 2025 is already 2026 in Paris
    assert start == datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    assert end == datetime(2026, 12, 31, 23, 0, tzinfo=UTC)


# ---------------------------------------------------------------- cash


@pytest.mark.parametrize("purpose", ["donation", "dues"])
def test_cash_up_to_150_00_eur_is_accepted(purpose):
    assert rules_broken(gift(15_000, method="cash", purpose=purpose)) == []


@pytest.mark.parametrize("purpose", ["donation", "dues"])
def test_cash_of_150_01_eur_is_refused_on_the_method(purpose):
    [refusal] = assess(
        gift(15_001, method="cash", purpose=purpose), LIMITS, party_given_cents=0
    ).refusals
    assert refusal.rule is Rule.cash_limit
    assert refusal.field == "method"
    assert "150.01 EUR" in refusal.reason and "cheque" in refusal.reason


@pytest.mark.parametrize("method", ["card", "cheque", "transfer", "debit"])
def test_other_methods_may_exceed_the_cash_limit(method):
    assert rules_broken(gift(500_000, method=method)) == []


# ---------------------------------------------------------------- who may give


def test_a_legal_person_is_refused():
    company = DonorDeclaration(natural_person=False, nationality="FR", resides_in_france=True)
    [refusal] = assess(gift(donor=company), LIMITS, party_given_cents=0).refusals
    assert refusal.rule is Rule.natural_person
    assert "company" in refusal.reason


@pytest.mark.parametrize(
    ("declaration", "accepted"),
    [
        (DonorDeclaration(natural_person=True, nationality="FR"), True),
        (DonorDeclaration(natural_person=True, nationality="fr"), True),
        (DonorDeclaration(natural_person=True, nationality="DE", resides_in_france=True), True),
        (DonorDeclaration(natural_person=True, nationality=None, resides_in_france=True), True),
        (DonorDeclaration(natural_person=True, nationality="DE"), False),
        (DonorDeclaration(natural_person=True, nationality=None), False),
    ],
)
def test_french_nationality_or_residence_in_france(declaration, accepted):
    broken = rules_broken(gift(donor=declaration))
    assert broken == ([] if accepted else [Rule.nationality_or_residence])


def test_accepted_nationalities_are_configurable():
    limits = Limits(donor_nationalities=frozenset({"FR", "DE"}))
    german = DonorDeclaration(natural_person=True, nationality="DE")
    assert rules_broken(gift(donor=german), limits=limits) == []


def test_a_gift_without_a_declaration_says_what_is_missing():
    [refusal] = assess(gift(donor=None), LIMITS, party_given_cents=0).refusals
    assert refusal.rule is Rule.donor_declaration
    assert refusal.field == "donor"
    for missing in ("natural_person", "nationality", "resides_in_france"):
        assert missing in refusal.reason


def test_dues_without_a_declaration_are_accepted_unless_configured():
    dues = gift(3_000, purpose="dues", donor=None)
    assert rules_broken(dues) == []
    strict = Limits(declaration_required_for_dues=True)
    assert rules_broken(dues, limits=strict) == [Rule.donor_declaration]


def test_a_declaration_given_with_dues_is_checked():
    company = DonorDeclaration(natural_person=False, nationality="FR")
    assert rules_broken(gift(3_000, purpose="dues", donor=company)) == [Rule.natural_person]


def test_every_reason_is_given_at_once():
    foreign_company = DonorDeclaration(natural_person=False, nationality="US")
    broken = rules_broken(gift(15_001, method="cash", donor=foreign_company), given=740_000)
    assert broken == [
        Rule.natural_person,
        Rule.nationality_or_residence,
        Rule.cash_limit,
        Rule.yearly_ceiling,
    ]


# ---------------------------------------------------------------- campaign accounts


def test_a_campaign_gift_up_to_4600_eur_per_election_is_accepted():
    assessment = assess(
        gift(100_000, election=ELECTION),
        LIMITS,
        party_given_cents=None,
        campaign_given_cents=360_000,
    )
    assert assessment.accepted
    assert assessment.campaign_room is not None
    assert assessment.campaign_room.remaining_cents == 100_000


def test_one_cent_above_4600_eur_for_one_election_is_refused():
    [refusal] = assess(
        gift(100_001, election=ELECTION),
        LIMITS,
        party_given_cents=None,
        campaign_given_cents=360_000,
    ).refusals
    assert refusal.rule is Rule.campaign_ceiling
    assert "4,600.00 EUR" in refusal.reason and "Municipales 2026" in refusal.reason
    assert "L52-8" in refusal.reason


def test_a_campaign_gift_is_outside_the_partys_yearly_ceiling():
    # the party ceiling is reached; the campaign account is another law's
    assessment = assess(
        gift(460_000, election=ELECTION), LIMITS, party_given_cents=None, campaign_given_cents=0
    )
    assert assessment.accepted
    assert assessment.party_room is None


@pytest.mark.parametrize(
    ("day", "accepted"),
    [
        (date(2025, 8, 31), False),
        (date(2025, 9, 1), True),
        (date(2026, 5, 15), True),
        (date(2026, 5, 16), False),
    ],
)
def test_a_campaign_gift_outside_the_period_is_refused(day, accepted):
    g = gift(election=ELECTION, paid_on=day)
    broken = [
        r.rule for r in assess(g, LIMITS, party_given_cents=None, campaign_given_cents=0).refusals
    ]
    assert broken == ([] if accepted else [Rule.campaign_period])


def test_a_campaign_gift_needs_the_same_declaration_and_cash_rules():
    company = DonorDeclaration(natural_person=False, nationality="FR")
    g = gift(20_000, method="cash", donor=company, election=ELECTION)
    broken = [
        r.rule for r in assess(g, LIMITS, party_given_cents=None, campaign_given_cents=0).refusals
    ]
    assert broken == [Rule.natural_person, Rule.cash_limit]


def test_the_totals_a_rule_needs_must_be_given():
    with pytest.raises(ValueError):
        assess(gift(), LIMITS)
    with pytest.raises(ValueError):
        assess(gift(election=ELECTION), LIMITS)


def test_amounts_read_as_euros():
    assert euros(750_000) == "7,500.00 EUR"
    assert euros(15_001) == "150.01 EUR"
    assert euros(5) == "0.05 EUR"
