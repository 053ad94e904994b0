"""The rate limiter's rules: fixed windows, the local pre-budget, syncing with the shared
counter every few requests (not every one), and the 429 with Retry-After."""

from __future__ import annotations

import asyncio

import pytest
from gateway.rate_limits.domain import Counter, retry_after, sync_every, window_of
from gateway.rate_limits.service import RateLimited, RateLimiter


class SharedCounters:
    """The store's counters, shared by the replicas of a test."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.writes = 0

    async def add(self, key, count, expires_at) -> int:
        self.writes += 1
        await asyncio.sleep(0)
        self.counts[key] = self.counts.get(key, 0) + count
        return self.counts[key]


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(shared: SharedCounters, clock: Clock, **kw) -> RateLimiter:
    rl = RateLimiter(
        None,  # type: ignore[arg-type]
        window_seconds=60,
        sync_share=kw.get("share", 0.1),
        sync_seconds=kw.get("sync_seconds", 1000),
        max_principals=kw.get("max_principals", 100),
        clock=clock,
        monotonic=clock,
    )
    rl.data = shared  # type: ignore[assignment]
    return rl


def test_windows_are_aligned_and_retry_after_is_the_rest_of_the_window():
    assert window_of(119.5, 60) == (1, 120.0)
    assert retry_after(119.5, 120.0) == 1 and retry_after(61.0, 120.0) == 59
    assert sync_every(1000, 0.05) == 50 and sync_every(5, 0.05) == 1


def test_a_counter_admits_up_to_the_limit_counting_what_is_on_its_way():
    c = Counter(window=1)
    assert all(c.admit(3) for _ in range(3))
    assert not c.admit(3)
    sent = c.start_sync(0.0)
    assert sent == 3 and not c.admit(3)  # being sent still counts
    c.synced(None)  # the write failed: nothing is forgotten
    assert c.pending == 3 and not c.admit(3)


async def test_requests_are_refused_past_the_limit_with_retry_after():
    shared, clock = SharedCounters(), Clock(1_000_010.0)
    rl = limiter(shared, clock)
    for _ in range(10):
        rl.check("u1", 10)
    with pytest.raises(RateLimited) as refused:
        rl.check("u1", 10)
    assert refused.value.status_code == 429
    assert refused.value.headers["Retry-After"] == str(retry_after(clock.now, 1_000_020.0))
    rl.check("u2", 10)  # per principal
    clock.now += 60  # the next window
    rl.check("u1", 10)
    await rl.close()


async def test_the_store_is_written_once_per_share_of_the_limit_not_per_request():
    shared, clock = SharedCounters(), Clock()
    rl = limiter(shared, clock, share=0.1)
    for _ in range(100):
        rl.check("u1", 1000)
        await asyncio.sleep(0)
    await rl.close()
    # the first request syncs at once (to learn the other replicas' count), then every 100
    assert shared.writes <= 3
    assert sum(shared.counts.values()) + rl.counters["u1"].pending == 100


async def test_replicas_share_the_count_within_their_local_budget():
    shared, clock = SharedCounters(), Clock()
    one, two = limiter(shared, clock, share=0.01), limiter(shared, clock, share=0.01)
    admitted = 0
    for replica in (one, two, one, two) * 10:
        try:
            replica.check("u1", 20)
            admitted += 1
        except RateLimited:
            pass
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await one.close()
    await two.close()
    # each replica syncs every request: at most one request per replica beyond the limit
    assert 20 <= admitted <= 22


async def test_memory_is_bounded_old_windows_go_first():
    shared, clock = SharedCounters(), Clock()
    rl = limiter(shared, clock, max_principals=4)
    for i in range(4):
        rl.check(f"u{i}", 10)
    clock.now += 60
    rl.check("new", 10)
    assert set(rl.counters) == {"new"}
    await rl.close()
