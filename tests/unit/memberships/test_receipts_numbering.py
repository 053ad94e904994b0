"""Receipt numbers: one gap-free series per year of the payment."""

from __future__ import annotations

from datetime import date

import pytest
from memberships.receipts.numbering import Series, allocated, format_number, gaps, series_for


def test_a_payment_is_numbered_in_the_series_of_its_own_year():
    assert series_for(date(2025, 12, 31)) == Series(2025)
    assert series_for(date(2026, 1, 1)) == Series(2026)


def test_numbers_are_the_year_then_the_zero_padded_sequence():
    assert format_number(Series(2026), 42, 6) == "2026-000042"
    assert format_number(Series(2026), 1_234_567, 6) == "2026-1234567"  # grows, never wraps
    with pytest.raises(ValueError):
        format_number(Series(2026), 0, 6)


def test_an_increment_by_the_batch_size_gives_the_batch_the_numbers_ending_at_the_counter():
    assert list(allocated(last=10, count=3)) == [8, 9, 10]
    assert list(allocated(last=1, count=1)) == [1]
    with pytest.raises(ValueError):
        allocated(last=2, count=3)


def test_gaps_are_found_between_one_and_the_highest_number():
    assert gaps([1, 2, 3]) == []
    assert gaps([3, 1]) == [2]
    assert gaps([]) == []
