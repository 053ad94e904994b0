"""contacts.store's upsert under a race: two concurrent upserts of a new counter (a user's
first two reads of a window, made at once by a back-office page) may leave the loser
with no document; it runs again and gets the winner's, instead of failing the read."""

from __future__ import annotations

from typing import Any

import pytest
from contacts.store import ReadCounters


class RacingCollection:
    """find_one_and_update answering nothing once (the lost race), then the document."""

    def __init__(self, lost: int) -> None:
        self.lost = lost
        self.calls = 0

    async def find_one_and_update(self, query: dict[str, Any], update: dict[str, Any], **_):
        self.calls += 1
        if self.calls <= self.lost:
            return None
        return {"_id": query["_id"], "pages": 0, "contacts": 2}


class FakeStore:
    def __init__(self, collection: RacingCollection) -> None:
        self.collection = collection

    def __getitem__(self, name: str) -> RacingCollection:
        return self.collection


async def test_a_lost_race_reads_the_winners_counter():
    collection = RacingCollection(lost=1)
    totals = await ReadCounters(FakeStore(collection)).add("u:1", {}, pages=0, contacts=1)
    assert totals == (0, 2) and collection.calls == 2


async def test_a_counter_that_never_comes_is_an_error_not_a_zero():
    collection = RacingCollection(lost=3)
    with pytest.raises(AssertionError):  # never read as an empty counter
        await ReadCounters(FakeStore(collection)).add("u:1", {}, pages=0, contacts=1)
    assert collection.calls == 3
