"""Plans per federation, pure rules: inheritance down the tree (override, withdrawal, the
platform's defaults at the root), terms (period, rates, split) checked as a whole, what a
rate costs, and how dues are split between national, federation and section levels."""

from __future__ import annotations

import pytest
from memberships.domain import PlanKind, amount_check
from memberships.plans.domain import (
    Definition,
    LevelDepths,
    PlanTerms,
    Split,
    TermLimits,
    check_split,
    check_terms,
    definition_from_doc,
    in_force,
    level_paths,
    nearest,
    split_amount,
    unknown_plan,
)
from tribune_shared.errors import InvalidField, InvalidFields

ROOT, PARIS, P11, P11A, LYON = (
    "/root/",
    "/root/paris/",
    "/root/paris/p11/",
    "/root/paris/p11/a/",
    "/root/lyon/",
)
LIMITS = TermLimits(rate_kinds=("students", "unemployed", "couples"), max_amount_cents=750_000)


def terms(code: str = "annual", amount: int | None = 3000, **changes) -> PlanTerms:
    values = dict(
        code=code,
        label=code.title(),
        kind=PlanKind.calendar,
        days=None,
        grace_days=90,
        amount_cents=amount,
        rates={"students": 1000},
        split=Split(50, 30, 20),
    )
    values.update(changes)
    return PlanTerms(**values)


def defined(path: str, code: str = "annual", version: int = 1, **changes) -> Definition:
    fid = path.strip("/").rsplit("/", 1)[-1]
    return Definition(code, fid, path, version, terms(code, **changes))


def withdrawn(path: str, code: str = "annual", version: int = 1) -> Definition:
    fid = path.strip("/").rsplit("/", 1)[-1]
    return Definition(code, fid, path, version, None)


DEFAULTS = {"annual": terms("annual", amount=None, rates={})}


# ---------------------------------------------------------------- inheritance


def test_the_platforms_plans_stand_at_the_root_when_no_federation_defines_them():
    found = in_force([], DEFAULTS, P11)
    assert list(found) == ["annual"]
    assert found["annual"].federation_id is None  # the platform's default
    assert found["annual"].terms.amount_cents is None


def test_a_plan_defined_at_a_federation_applies_to_its_whole_subtree_only():
    paris = defined(PARIS, amount=4000)
    for path in (PARIS, P11, P11A):
        assert in_force([paris], DEFAULTS, path)["annual"].federation_id == "paris"
    # a sibling and the root keep the platform's default
    assert in_force([paris], DEFAULTS, LYON)["annual"].federation_id is None
    assert in_force([paris], DEFAULTS, ROOT)["annual"].federation_id is None


def test_the_nearest_definition_overrides_the_ancestors():
    national = defined(ROOT, amount=3000)
    paris = defined(PARIS, amount=4000)
    section = defined(P11, amount=4500)
    definitions = [section, national, paris]  # order does not matter
    assert in_force(definitions, DEFAULTS, P11A)["annual"].terms.amount_cents == 4500
    assert in_force(definitions, DEFAULTS, P11)["annual"].terms.amount_cents == 4500
    assert in_force(definitions, DEFAULTS, PARIS)["annual"].terms.amount_cents == 4000
    assert in_force(definitions, DEFAULTS, LYON)["annual"].terms.amount_cents == 3000


def test_a_new_code_adds_to_the_inherited_ones():
    found = in_force([defined(PARIS, "students-only")], DEFAULTS, P11)
    assert list(found) == ["annual", "students-only"]


def test_a_withdrawal_removes_the_plan_from_that_subtree_and_a_nearer_definition_restores_it():
    definitions = [defined(ROOT, amount=3000), withdrawn(PARIS)]
    assert "annual" not in in_force(definitions, DEFAULTS, PARIS)
    assert "annual" not in in_force(definitions, DEFAULTS, P11A)
    assert "annual" in in_force(definitions, DEFAULTS, LYON)
    restored = [*definitions, defined(P11, amount=2500)]
    assert in_force(restored, DEFAULTS, P11A)["annual"].terms.amount_cents == 2500
    assert "annual" not in in_force(restored, DEFAULTS, PARIS)


def test_a_federation_may_withdraw_a_platform_default():
    governing = nearest([withdrawn(PARIS)], DEFAULTS, P11)["annual"]
    assert governing.withdrawn
    assert in_force([withdrawn(PARIS)], DEFAULTS, P11) == {}


def test_definitions_outside_the_lineage_are_ignored():
    # a descendant's definition never climbs up
    assert in_force([defined(P11, amount=1)], DEFAULTS, PARIS)["annual"].federation_id is None


def test_a_stored_withdrawal_reads_back_as_one():
    doc = {
        "code": "annual",
        "federation_id": "paris",
        "federation_path": PARIS,
        "version": 3,
        "withdrawn": True,
        "terms": None,
    }
    d = definition_from_doc(doc)
    assert d.withdrawn and d.version == 3 and d.depth == 2


def test_dues_naming_a_plan_not_in_force_are_refused_on_plan():
    error = unknown_plan("lifetime", ["annual", "reduced"], withdrawn=False)
    assert error.field == "plan" and error.status_code == 422
    assert "unknown plan" in error.message and "annual, reduced" in error.message
    assert "withdrawn" in unknown_plan("annual", [], withdrawn=True).message


# ---------------------------------------------------------------- rates and the amount check


def test_the_full_rate_and_each_reduced_rate_have_their_amount():
    t = terms(rates={"students": 1000, "couples": 5000})
    assert t.expected_cents(None) == 3000
    assert t.expected_cents("students") == 1000
    assert t.expected_cents("couples") == 5000


def test_a_rate_the_plan_does_not_offer_is_refused_on_rate():
    with pytest.raises(InvalidField) as error:
        terms(rates={"students": 1000}).expected_cents("unemployed")
    assert error.value.field == "rate"
    assert "students" in error.value.message  # says what the plan offers


def test_a_plan_without_amount_expects_nothing():
    assert terms(amount=None, rates={}).expected_cents(None) is None


@pytest.mark.parametrize(
    ("rate", "paid", "flagged", "difference"),
    [(None, 3000, False, 0), ("students", 1000, False, 0), ("students", 999, True, -1),
     (None, 1000, True, -2000), (None, 3500, True, 500)],
)  # fmt: skip
def test_the_amount_paid_is_checked_against_the_plan_rate_included(rate, paid, flagged, difference):
    check = amount_check(terms().expected_cents(rate), paid)
    assert check["flagged"] is flagged
    assert check["difference_cents"] == difference


# ---------------------------------------------------------------- terms


def check(**changes):
    values = dict(
        label="Adhésion",
        kind=PlanKind.calendar,
        days=None,
        grace_days=30,
        amount_cents=3000,
        rates={"students": 1000},
        split={"national": 50, "federation": 30, "section": 20},
        limits=LIMITS,
    )
    values.update(changes)
    return check_terms("annual", **values)


def test_valid_terms_are_kept():
    t = check()
    assert t.split == Split(50, 30, 20)
    assert t.rates == {"students": 1000}
    assert t.plan().kind is PlanKind.calendar and t.plan().name == "annual"


def test_a_rolling_plan_lasts_its_days():
    t = check(kind=PlanKind.rolling, days=365)
    assert t.plan().days == 365


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": PlanKind.rolling}, "days"),
        ({"days": 30}, "days"),
        ({"amount_cents": 0}, "amount_cents"),
        ({"amount_cents": 750_001}, "amount_cents"),
        ({"amount_cents": None}, "amount_cents"),
        ({"rates": {"pensioners": 100}}, "rates.pensioners"),
        ({"rates": {"students": 3001}}, "rates.students"),
        ({"rates": {"students": 0}}, "rates.students"),
        ({"grace_days": 400}, "grace_days"),
        ({"label": " "}, "label"),
        ({"split": {"national": 50, "federation": 30}}, "split"),
        ({"split": {"national": 120, "federation": -20}}, "split.national"),
        ({"split": {"national": 100, "region": 0}}, "split"),
    ],
)
def test_bad_terms_are_refused_with_the_field(changes, field):
    with pytest.raises(InvalidFields) as error:
        check(**changes)
    assert field in [f for f, _ in error.value.problems]


def test_every_problem_is_reported_at_once():
    with pytest.raises(InvalidFields) as error:
        check(kind=PlanKind.rolling, rates={"students": 5000}, split={"national": 10})
    fields = {f for f, _ in error.value.problems}
    assert fields == {"days", "rates.students", "split"}


def test_a_bad_code_is_refused():
    with pytest.raises(InvalidFields) as error:
        check_terms(
            "Annual Plan",
            label=None,
            kind=PlanKind.calendar,
            days=None,
            grace_days=0,
            amount_cents=100,
            rates={},
            split={"national": 100},
            limits=LIMITS,
        )
    assert [f for f, _ in error.value.problems] == ["code"]


# ---------------------------------------------------------------- split


def test_a_split_must_sum_to_100():
    assert check_split({"national": 100}) == Split(100, 0, 0)
    with pytest.raises(InvalidFields) as error:
        check_split({"national": 60, "federation": 30, "section": 5})
    assert "sum to 100" in error.value.problems[0][1]
    with pytest.raises(InvalidFields):
        check_split({"national": 50.5, "federation": 49.5})


def test_levels_follow_the_depth_in_the_tree():
    depths = LevelDepths(federation=2, section=3)
    assert level_paths(P11A, depths) == {"national": ROOT, "federation": PARIS, "section": P11}
    assert level_paths(PARIS, depths) == {"national": ROOT, "federation": PARIS, "section": None}
    assert level_paths(ROOT, depths) == {"national": ROOT, "federation": None, "section": None}
    # a region level between national and federation receives nothing
    regional = LevelDepths(federation=3, section=4)
    assert level_paths(P11, regional)["federation"] == P11


def test_a_member_of_a_section_shares_dues_between_the_three_levels():
    shares = split_amount(Split(50, 30, 20), 3000, P11, LevelDepths())
    assert {lvl: s["cents"] for lvl, s in shares.items()} == {
        "national": 1500,
        "federation": 900,
        "section": 600,
    }
    assert shares["section"]["path"] == P11 and shares["federation"]["path"] == PARIS


def test_shares_are_rounded_down_and_the_national_level_takes_the_rest():
    shares = split_amount(Split(34, 33, 33), 1001, P11, LevelDepths())
    cents = {lvl: s["cents"] for lvl, s in shares.items()}
    assert cents == {"national": 341, "federation": 330, "section": 330}
    assert sum(cents.values()) == 1001


def test_a_missing_level_hands_its_share_up():
    # a member of a federation without section: the section's share goes to the federation
    shares = split_amount(Split(50, 30, 20), 1000, PARIS, LevelDepths())
    assert {lvl: (s["percent"], s["cents"]) for lvl, s in shares.items()} == {
        "national": (50, 500),
        "federation": (50, 500),
        "section": (0, 0),
    }
    # a member at the national level: everything is national
    shares = split_amount(Split(50, 30, 20), 1000, ROOT, LevelDepths())
    assert shares["national"]["cents"] == 1000 and shares["national"]["percent"] == 100


def test_level_depths_must_be_ordered():
    with pytest.raises(ValueError):
        LevelDepths(federation=3, section=3)
    with pytest.raises(ValueError):
        LevelDepths(federation=1, section=3)
