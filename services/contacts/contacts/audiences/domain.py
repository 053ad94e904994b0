"""Which contacts a campaign reaches (pure rules)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tribune_shared.events.contracts import Channel
from tribune_shared.store import next_boundary, subtree_filter

#: the contact field holding the address a channel sends to
ADDRESS_FIELD = {Channel.email: "email", Channel.sms: "phone"}


class AudienceError(Exception):
    """The audience cannot be resolved; the reason is shown in the campaign's state."""


def audience_scope(campaign_path: str, segment_path: str | None) -> dict[str, Any]:
    """The subtree the audience is drawn from: the campaign's federation subtree, narrowed
    to the segment's when the segment belongs to a federation below it. A segment of an
    ancestor federation (inherited down the tree) applies within the campaign's subtree;
    a segment of another branch is not the campaign's to use."""
    if segment_path is None or campaign_path.startswith(segment_path):
        return subtree_filter(campaign_path)
    if segment_path.startswith(campaign_path):
        return subtree_filter(segment_path)
    raise AudienceError("the segment belongs to another federation than the campaign's")


def has_address(channel: Channel, needs_address: bool) -> Callable[[Mapping[str, Any]], bool]:
    """Contacts without an address on the channel are left out when the campaign asks."""
    field = ADDRESS_FIELD.get(channel)
    if not needs_address or field is None:
        return lambda doc: True
    return lambda doc: doc.get(field) not in (None, "")


# ---------------------------------------------------------------- reading order
#
# The audience is read one federation path at a time, in id order, and each read is bounded
# on both sides in the (federation_path, _id) index: the kernel's ``ID_BOUNDARIES`` cut the
# id space in 256 ranges by the ids' first two characters (contact ids are random hex, so
# each range holds 1/256 of a federation's contacts; any other string falls in one too).
# Why: the local store's planner answers a page query that is open on one side (``_id >
# cursor``, sorted, limited) by reading every key after the cursor, and scans the whole
# collection when another field stands beside the path (the address, a segment's tags):
# at 100,000 contacts each page of 500 took 8 s while holding the store, so a campaign's
# resolution took ~27 minutes and stalled every other command. A read bounded on both
# sides costs what the range holds. The segment filter and the address are then applied
# to the documents read (``filter_language.evaluate``, which agrees with the query the
# filter compiles to).

@dataclass(frozen=True)
class Position:
    """Where an audience's reading stands: in federation ``path``, the ids above ``key``
    (``strict``) or from it on. ``floor``: ids at or below it were selected by an earlier
    version, which read the whole subtree in one id order (a job it left half done)."""

    path: str
    key: str = ""
    strict: bool = False
    floor: str | None = None

    def to_document(self) -> dict[str, Any]:
        return {"path": self.path, "key": self.key, "strict": self.strict, "floor": self.floor}

    @classmethod
    def start(cls, path: str, floor: str | None) -> Position:
        return cls(path, floor or "", strict=floor is not None, floor=floor)


def resume(cursor: Any, paths: Sequence[str]) -> Position | None:
    """Where a job goes on over the subtree's federation ``paths`` (sorted), from the cursor
    it saved: None when it is past the last one."""
    if isinstance(cursor, Mapping):
        saved = Position(cursor["path"], cursor["key"], cursor["strict"], cursor.get("floor"))
        if saved.path in paths:
            return saved
        floor = saved.floor
        after = saved.path
    else:  # nothing yet, or an earlier version's last id (every path below it is done)
        floor = cursor if isinstance(cursor, str) else None
        after = None
    for path in paths:
        if after is None or path > after:
            return Position.start(path, floor)
    return None


def next_position(
    position: Position, read: Sequence[Mapping[str, Any]], limit: int, paths: Sequence[str]
) -> Position | None:
    """Where reading goes after ``read`` (what the range query at ``position`` returned,
    at most ``limit``): on in the same range, the next range, or the next path."""
    if len(read) >= limit:
        return Position(position.path, read[-1]["_id"], True, position.floor)
    upper = next_boundary(position.key)
    if upper is not None:
        return Position(position.path, upper, False, position.floor)
    later = [p for p in paths if p > position.path]
    return Position.start(later[0], position.floor) if later else None
