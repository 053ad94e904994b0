"""The figures stream (Server-Sent Events): the figures at once, then the latest figures
once per burst of changes, a comment when idle, and an end after its maximum time."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from memberships.live.app import LiveFigures
from memberships.live.domain import Placement, membership_fact
from memberships.live.service import LiveService
from memberships.settings import MembershipsSettings
from tribune_shared.store import Store

P11 = "/root/paris/p11/"


@pytest.fixture
def service(monkeypatch) -> LiveService:
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")
    settings = MembershipsSettings(
        live_stream_heartbeat_seconds=0.05,
        live_stream_min_interval_seconds=0.05,
        live_stream_max_seconds=1,
        live_stream_max_clients=1,
    )
    return LiveService(settings, Store(settings), LiveFigures(settings))


def frames(chunks: list[bytes]) -> list[dict]:
    out = []
    for chunk in chunks:
        for line in chunk.decode().splitlines():
            if line.startswith("data: "):
                out.append(json.loads(line.removeprefix("data: ")))
    return out


def join(service: LiveService, n: int) -> None:
    """``n`` new members of p11, announced as the agent does."""
    for i in range(n):
        fact = membership_fact(
            "membership-activated",
            {"ends_on": "2026-12-31"},
            Placement("p11", P11, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i)),
        )
        assert fact is not None
        service.live.watchers.notify(service.live.figures.apply_membership(None, fact))


async def test_the_stream_sends_the_figures_then_the_latest_once_per_burst(service):
    stream = service._events("paris", "/root/paris/")
    first = await anext(stream)
    assert service.streams == 1
    assert first.startswith(b"retry: ")
    assert frames([first])[0]["members_in_good_standing"] == 0
    join(service, 50)  # a burst: one push with the figures after it, not fifty
    pushed = frames([await anext(stream)])
    assert [f["members_in_good_standing"] for f in pushed] == [50]
    assert await anext(stream) == b": keep-alive\n\n"  # idle: a comment keeps it open
    rest = [chunk async for chunk in stream]  # ends after live_stream_max_seconds
    assert frames(rest) == []
    assert service.live.watchers.count == 0
    assert service.streams == 0  # the client limit counts running streams only


async def test_a_change_elsewhere_wakes_no_stream(service):
    stream = service._events("lyon", "/root/lyon/")
    await anext(stream)
    join(service, 3)  # p11's figures: lyon's stream only sees its heartbeat
    assert await asyncio.wait_for(anext(stream), timeout=1) == b": keep-alive\n\n"
    await stream.aclose()


def test_a_crashed_agent_makes_the_process_not_ready(monkeypatch):
    """/ready fails when an agent stopped counting (the orchestrator replaces the process)."""
    monkeypatch.setenv("TRIBUNE_ENVIRONMENT", "development")
    live = LiveFigures(MembershipsSettings())
    live.recovered = True
    assert live.ready
    agent = next(iter(live.app.agents.values()))
    agent._crash(RuntimeError("a bug in the agent"))
    assert not live.ready
