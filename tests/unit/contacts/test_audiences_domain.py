"""Who a campaign reaches and the order its audience is read in (pure rules)."""

from __future__ import annotations

import pytest
from contacts.audiences.domain import (
    AudienceError,
    Position,
    audience_scope,
    has_address,
    next_position,
    resume,
)
from tribune_shared.events.contracts import Channel

PATHS = ["/n/paris/", "/n/paris/p11/", "/n/paris/p12/"]


def test_reading_goes_on_in_a_range_then_to_the_next_then_to_the_next_path() -> None:
    here = Position("/n/paris/", "7f")
    full = [{"_id": "7f01"}, {"_id": "7f02"}]
    assert next_position(here, full, 2, PATHS) == Position("/n/paris/", "7f02", strict=True)
    assert next_position(here, full[:1], 2, PATHS) == Position("/n/paris/", "80")
    last = Position("/n/paris/", "ff")
    assert next_position(last, [], 2, PATHS) == Position("/n/paris/p11/")
    assert next_position(Position("/n/paris/p12/", "ff"), [], 2, PATHS) is None


def test_a_job_resumes_at_its_saved_position_or_the_path_after_it() -> None:
    assert resume(None, PATHS) == Position("/n/paris/")
    saved = Position("/n/paris/p11/", "3a", strict=True).to_document()
    assert resume(saved, PATHS) == Position("/n/paris/p11/", "3a", strict=True)
    # its path holds no contact any more (they moved): the next path, from its start
    gone = Position("/n/paris/p10/", "3a").to_document()
    assert resume(gone, PATHS) == Position("/n/paris/p11/")
    assert resume(Position("/n/paris/p13/").to_document(), PATHS) is None


def test_an_earlier_versions_cursor_is_a_floor_under_every_path() -> None:
    """It read the whole subtree in id order: every id up to its cursor was selected."""
    start = resume("7f3a", PATHS)
    assert start == Position("/n/paris/", "7f3a", strict=True, floor="7f3a")
    at_end = Position("/n/paris/", "ff", floor="7f3a")
    assert next_position(at_end, [], 5, PATHS) == Position(
        "/n/paris/p11/", "7f3a", strict=True, floor="7f3a"
    )


def test_an_address_is_needed_only_when_the_campaign_asks() -> None:
    needs = has_address(Channel.email, True)
    assert needs({"email": "a@b.fr"}) and not needs({"email": ""}) and not needs({})
    assert has_address(Channel.email, False)({})
    assert has_address(Channel.sms, True)({"phone": "+33612345678"})
    assert not has_address(Channel.sms, True)({"email": "a@b.fr"})


def test_the_scope_is_the_campaigns_subtree_narrowed_to_its_segments() -> None:
    assert audience_scope("/n/paris/", None) == audience_scope("/n/paris/", "/n/")
    assert audience_scope("/n/", "/n/paris/") == audience_scope("/n/paris/", None)
    with pytest.raises(AudienceError):
        audience_scope("/n/paris/", "/n/lyon/")
