"""The kernel's id ranges: bounded range reads on the local store (contacts' audiences,
messaging's claims)."""

from __future__ import annotations

from tribune_shared.store import ID_BOUNDARIES, ID_RANGES, next_boundary


def test_the_id_space_is_cut_in_256_ranges_that_cover_every_string() -> None:
    assert len(ID_BOUNDARIES) == 255 and list(ID_BOUNDARIES) == sorted(ID_BOUNDARIES)
    assert next_boundary("") == "01"
    assert next_boundary("00ff") == "01"
    assert next_boundary("7f") == "80"  # a boundary starts its own range
    assert next_boundary("7f3a9c") == "80"
    assert next_boundary("Z-legacy") == "a0"  # upper case sorts between digits and a-f
    assert next_boundary("fe99") == "ff"
    assert next_boundary("ff") is None and next_boundary("zz") is None  # the last range
    # the end of a window of several ranges
    assert ID_RANGES == 256
    assert next_boundary("7f3a", 2) == "81" and next_boundary("", 255) == "ff"
    assert next_boundary("", ID_RANGES) is None and next_boundary("fe", 2) is None
