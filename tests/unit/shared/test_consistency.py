"""Consistency tokens: parsed strictly, merged newest first within bounds, and a request
records only what it wrote."""

from __future__ import annotations

import asyncio

import pytest
from tribune_shared.consistency import (
    HEADER,
    NotYetApplied,
    Written,
    merge,
    parse,
    record,
    recording,
    render,
    wait_applied,
)
from tribune_shared.errors import InvalidFields

NOW = 1_800_000_000_000


def entry(event_id: str, at_ms: int = NOW, event_type: str = "contact-created") -> Written:
    return Written(at_ms, event_type, event_id)


def test_a_token_round_trips_and_blank_entries_are_ignored():
    entries = [entry("a" * 32), entry("b" * 32, NOW - 5, "consent-granted")]
    assert parse(render(entries) + ", ") == entries


@pytest.mark.parametrize(
    "raw",
    ["contact-created", "contact-created.abc", "Contact.abc.1", "contact-created.a b.1", "x.y.z"],
)
def test_a_malformed_entry_is_a_422_naming_the_header(raw):
    with pytest.raises(InvalidFields) as err:
        parse(raw)
    assert err.value.problems[0][0] == HEADER


def test_an_oversized_header_is_refused_before_parsing():
    with pytest.raises(InvalidFields, match="longer than"):
        parse("a" * 50_000)


def test_merge_keeps_the_newest_distinct_entries_within_the_horizon_and_the_bound():
    old = entry("old", NOW - 700_000)
    tokens = [entry(f"e{i}", NOW - i) for i in range(10)]
    merged = merge(
        tokens[:6], [*tokens[4:], old, tokens[0]], max_entries=5, horizon_seconds=600, now_ms=NOW
    )
    assert [e.event_id for e in merged] == ["e0", "e1", "e2", "e3", "e4"]


def test_only_events_written_inside_a_request_are_recorded():
    record("contact-created", "outside")  # no request: nothing to record into
    with recording() as written:
        record("contact-created", "inside")
    assert [w.event_id for w in written] == ["inside"]


async def test_waiting_returns_once_every_entry_is_applied_or_names_what_is_missing():
    applied: set[str] = {"a"}

    async def check(ids: list[str]) -> set[str]:
        return applied & set(ids)

    async def apply_b_later() -> None:
        await asyncio.sleep(0.05)
        applied.add("b")

    later = asyncio.create_task(apply_b_later())
    await wait_applied(check, [entry("a"), entry("b")], timeout=2, poll_seconds=0.01)
    await later
    with pytest.raises(NotYetApplied) as err:
        await wait_applied(check, [entry("a"), entry("c")], timeout=0.05, poll_seconds=0.01)
    assert [e.event_id for e in err.value.missing] == ["c"]
