"""The bulk-read counter's local pre-budget: a process tells the store a user's reads once
it has gathered a share of a limit, and at once when a read would pass a limit; the
refusal and the export trail are decided on the store's totals (fakes of the counter
and the trail: the store's own behaviour is tested in tests/integration)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import contacts.bulk_reads as bulk_reads
import pytest
from contacts.bulk_reads import BulkReads
from contacts.settings import ContactsSettings
from support import make_identity
from tribune_shared.auth import Role
from tribune_shared.errors import TooManyRequests
from tribune_shared.store import Store


class SharedCounter:
    """The store's counter documents, shared by every process (one per test)."""

    def __init__(self) -> None:
        self.totals: dict[str, Counter[str]] = {}
        self.writes = 0

    async def add(
        self, key: str, first: dict[str, Any], *, pages: int, contacts: int
    ) -> tuple[int, int]:
        self.writes += 1
        total = self.totals.setdefault(key, Counter())
        total["pages"] += pages
        total["contacts"] += contacts
        return total["pages"], total["contacts"]


class Trail:
    def __init__(self) -> None:
        self.entries: list[tuple[int, int]] = []

    async def bulk_read(self, trail_id: str, first: dict[str, Any], **totals: Any) -> None:
        self.entries.append((totals["pages"], totals["rows"]))


def process(counter: SharedCounter, trail: Trail | None = None, **limits: Any) -> BulkReads:
    """One API process's bulk-read counting (limits: 100 pages, 1,000 contacts, 5 %)."""
    settings = ContactsSettings(**limits)
    reads = BulkReads(settings, Store(settings))
    reads.counters = counter  # type: ignore[assignment]
    reads.audit = trail or Trail()  # type: ignore[assignment]
    return reads


async def test_single_reads_reach_the_store_once_per_share_of_the_limit():
    counter = SharedCounter()
    reads = process(counter)
    viewer = make_identity(role=Role.viewer)
    await reads.count(viewer, pages=0, contacts=1)  # the first read learns the store's total
    assert counter.writes == 1
    for _ in range(49):
        await reads.count(viewer, pages=0, contacts=1)
    assert counter.writes == 1  # 49 gathered: under 5 % of 1,000
    await reads.count(viewer, pages=0, contacts=1)
    assert counter.writes == 2
    assert sum(t["contacts"] for t in counter.totals.values()) == 51  # nothing lost


async def test_a_read_past_the_limit_is_refused_on_the_stores_total_exactly():
    counter = SharedCounter()
    reads = process(counter)
    viewer = make_identity(role=Role.viewer)
    for _ in range(1_000):
        await reads.count(viewer, pages=0, contacts=1)
    assert counter.writes < 30  # not one write per read
    with pytest.raises(TooManyRequests) as refused:
        await reads.count(viewer, pages=0, contacts=1)  # the 1,001st
    assert refused.value.extra["reason"] == "bulk_read_limit"
    # another user is not concerned
    await reads.count(make_identity(role=Role.viewer), pages=0, contacts=1)


async def test_processes_share_the_stores_total_and_overshoot_at_most_their_shares():
    counter = SharedCounter()
    one, two = process(counter), process(counter)
    viewer = make_identity(role=Role.viewer)
    answered = 0
    with pytest.raises(TooManyRequests):
        for turn in range(2_000):
            await (one if turn % 2 else two).count(viewer, pages=0, contacts=1)
            answered += 1
    assert 1_000 <= answered <= 1_000 + 2 * 50  # at most each process's share beyond


async def test_an_export_role_reads_on_and_each_limits_worth_is_recorded_once():
    counter, trail = SharedCounter(), Trail()
    reads = process(counter, trail)
    secretary = make_identity(role=Role.secretary)
    for _ in range(2_500):
        await reads.count(secretary, pages=0, contacts=1)
    # past 1,000 and past 2 x 1,001: two trail writes, with the store's exact totals
    assert trail.entries == [(0, 1_001), (0, 2_002)]
    assert counter.writes < 80


async def test_a_failed_sync_keeps_the_reads_already_answered():
    counter = SharedCounter()
    reads = process(counter)
    viewer = make_identity(role=Role.viewer)
    await reads.count(viewer, pages=0, contacts=1)
    for _ in range(10):
        await reads.count(viewer, pages=0, contacts=1)  # gathered here

    async def down(*args: Any, **kwargs: Any) -> tuple[int, int]:
        raise ConnectionError("store down")

    working = counter.add
    counter.add = down  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await reads.count(viewer, pages=5, contacts=0)  # a page of 5: syncs, fails
    counter.add = working  # type: ignore[method-assign]
    await reads.count(viewer, pages=5, contacts=0)
    [total] = counter.totals.values()
    assert (total["pages"], total["contacts"]) == (5, 11)  # the failed read not counted


async def test_a_new_window_starts_from_nothing_and_forgets_the_ended_ones(monkeypatch):
    now = datetime(2026, 3, 1, 10, 59, tzinfo=UTC)
    monkeypatch.setattr(bulk_reads, "utcnow", lambda: now)
    counter = SharedCounter()
    reads = process(counter)
    viewer = make_identity(role=Role.viewer)
    for _ in range(1_000):
        await reads.count(viewer, pages=0, contacts=1)
    with pytest.raises(TooManyRequests):
        await reads.count(viewer, pages=0, contacts=1)
    now += timedelta(minutes=2)  # the next hour's window
    await reads.count(viewer, pages=0, contacts=1)
    assert [t.window_start.hour for t in reads.tallies.values()] == [11]
    assert sorted(t["contacts"] for t in counter.totals.values()) == [1, 1_001]
