"""Receipt numbers: one series per calendar year of the payment, numbered 1, 2, 3...
with no gap (pure rules; the counter itself lives in the store).

Why no gap holds: the numbers of a batch come from ONE ``$inc`` of the year's counter by
the batch size, in the same transaction as the receipts. If anything fails, the
transaction aborts and the increment with it (the numbers were never taken); two workers
numbering at once both write the counter, so their transactions conflict and one runs
again after the other committed, on the counter's new value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Series:
    """A numbering series: the calendar year the payments were made in."""

    year: int

    @property
    def key(self) -> str:
        return str(self.year)


def series_for(paid_on: date) -> Series:
    """A gift or due of a year is receipted in that year's series (a December cheque
    entered in January continues the previous year's series, the one its tax year and
    the CNCCFP list of that year use)."""
    return Series(paid_on.year)


def format_number(series: Series, seq: int, digits: int) -> str:
    """ "2026-000042": the year, then the sequence zero-padded (sorts as text)."""
    if seq < 1:
        raise ValueError("receipt sequences start at 1")
    return f"{series.key}-{seq:0{digits}d}"


def allocated(last: int, count: int) -> range:
    """The sequences a ``$inc`` by ``count`` that returned ``last`` gave: the ``count``
    numbers ending at ``last``."""
    if count < 1 or last < count:
        raise ValueError(f"counter at {last} cannot have given {count} numbers")
    return range(last - count + 1, last + 1)


def gaps(seqs: list[int]) -> list[int]:
    """The missing sequences of a series from 1 to its highest (what a treasurer, the
    tests and the bench check: must be empty)."""
    if not seqs:
        return []
    present = set(seqs)
    return [n for n in range(1, max(seqs) + 1) if n not in present]
