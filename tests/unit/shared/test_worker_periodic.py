"""tribune_shared.worker.periodic: the one loop behind every worker's periodic job."""

from __future__ import annotations

import asyncio

from tribune_shared.worker import periodic


async def test_a_failing_round_does_not_stop_the_job_and_sigterm_does():
    rounds: list[int] = []
    stop = asyncio.Event()

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise ConnectionError("the store is down")
        if len(rounds) == 3:
            stop.set()

    job = periodic("unit.job", 0.01, work)
    assert job.__name__ == "unit_job"  # the worker names its task after it
    await asyncio.wait_for(job(stop), timeout=5)
    assert rounds == [0, 1, 2]


async def test_the_job_waits_its_interval_between_rounds_and_wakes_on_stop():
    stop = asyncio.Event()
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1

    task = asyncio.create_task(periodic("unit.slow", 3600, work)(stop))
    await asyncio.sleep(0.05)
    assert calls == 1  # one round, then waiting an hour
    stop.set()
    await asyncio.wait_for(task, timeout=5)  # the stop ends the wait at once
    assert calls == 1
