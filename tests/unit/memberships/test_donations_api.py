"""The donations bodies at the HTTP boundary: the pre-capture check and elections."""

from __future__ import annotations

import pytest
from memberships.donations.api import CheckIn, ElectionIn, ElectionPatch
from pydantic import ValidationError

CHECK = {"contact_id": "c-1", "amount_cents": 500_000, "method": "card"}
ELECTION = {
    "name": "Municipales 2026",
    "starts_on": "2025-09-01",
    "ends_on": "2026-03-22",
    "candidate": {"name": "Camille Martin"},
    "financial_agent": {"kind": "individual", "name": "Jean Dupont"},
}


def fields_in_error(model, body) -> set[str]:
    with pytest.raises(ValidationError) as exc:
        model.model_validate(body)
    return {".".join(map(str, e["loc"])) for e in exc.value.errors()}


def test_a_check_is_a_gift_by_default_and_the_declaration_is_normalised():
    check = CheckIn.model_validate(
        {**CHECK, "donor": {"natural_person": True, "nationality": "fr"}}
    )
    assert check.purpose == "donation"
    assert check.paid_at is None
    assert check.donor is not None and check.donor.declaration().nationality == "FR"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount_cents": 0}, "amount_cents"),
        ({"amount_cents": "100"}, "amount_cents"),
        ({"method": "bitcoin"}, "method"),
        ({"purpose": "gift"}, "purpose"),
        ({"contact_id": "a b"}, "contact_id"),
        ({"election_id": "e/1"}, "election_id"),
        ({"paid_at": "2026-01-01T10:00:00"}, "paid_at"),
        ({"donor": {"natural_person": True, "nationality": "FRA"}}, "donor.nationality"),
        ({"donor": {"nationality": "FR"}}, "donor.natural_person"),
        ({"amount": 1}, "amount"),
    ],
)
def test_a_bad_check_names_the_field(changes, field):
    assert fields_in_error(CheckIn, {**CHECK, **changes}) == {field}


def test_an_election_needs_its_candidate_and_financial_agent():
    assert fields_in_error(ElectionIn, {**ELECTION, "candidate": None}) == {"candidate"}
    missing = {k: v for k, v in ELECTION.items() if k != "financial_agent"}
    assert fields_in_error(ElectionIn, missing) == {"financial_agent"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": ""}, "name"),
        ({"starts_on": "01/09/2025"}, "starts_on"),
        ({"financial_agent": {"kind": "company", "name": "X"}}, "financial_agent.kind"),
        ({"financial_agent": {"kind": "individual", "name": ""}}, "financial_agent.name"),
        ({"federation_id": "../lyon"}, "federation_id"),
        ({"ceiling_cents": 1}, "ceiling_cents"),
    ],
)
def test_a_bad_election_names_the_field(changes, field):
    assert fields_in_error(ElectionIn, {**ELECTION, **changes}) == {field}


def test_a_patch_changes_only_what_it_names():
    patch = ElectionPatch.model_validate({"ends_on": "2026-06-30"})
    assert patch.model_dump(exclude_unset=True) == {"ends_on": patch.ends_on}
    assert fields_in_error(ElectionPatch, {"federation_id": "lyon"}) == {"federation_id"}
