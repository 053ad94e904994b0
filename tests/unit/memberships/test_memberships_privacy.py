"""Erasure in memberships: what the law keeps is pseudonymised, and the answer says so."""

from __future__ import annotations

from memberships.privacy import DELETED, PSEUDONYMISED, legal_reasons, new_pseudonym
from memberships.receipts.store import RECEIPTS
from memberships.store import MEMBERSHIPS, PAYMENTS


def test_each_erased_person_gets_a_fresh_pseudonym_leading_back_to_no_one():
    a, b = new_pseudonym(), new_pseudonym()
    assert a != b
    assert a.startswith("pseudonym-") and len(a) > 30


def test_payments_are_kept_pseudonymised_and_memberships_deleted():
    assert (MEMBERSHIPS, "contact_id") in DELETED
    assert [(c, f) for c, f, _ in PSEUDONYMISED] == [
        (PAYMENTS, "contact_id"),
        (RECEIPTS, "contact_id"),
    ]


def test_receipts_are_kept_for_the_tax_law_retention_period():
    [reason] = legal_reasons({RECEIPTS: 2})
    assert reason.startswith("receipts: 2 ")
    assert "L102 E" in reason and "six years" in reason


def test_the_answer_names_what_was_kept_and_the_law_that_requires_it():
    [reason] = legal_reasons({PAYMENTS: 3})
    assert reason.startswith("payments: 3 ")
    assert "pseudonymised" in reason and "political-finance law" in reason
    assert legal_reasons({PAYMENTS: 0}) == []  # nothing kept, nothing to say
