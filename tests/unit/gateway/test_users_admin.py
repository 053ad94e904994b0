"""User administration's pure rules: nobody gives a role above their own, moving a DPO
counts as giving the role, searches and cursors."""

from __future__ import annotations

import re

import pytest
from gateway.users.domain import (
    check_role_within,
    decode_cursor,
    encode_cursor,
    moves_dpo,
    search_pattern,
)
from support import make_identity
from tribune_shared.auth import Role
from tribune_shared.errors import Forbidden, InvalidField


@pytest.mark.parametrize("role", [Role.admin, Role.secretary, Role.viewer, Role.dpo])
def test_an_administrator_gives_any_ranked_role(role):
    check_role_within(make_identity("/r/", Role.admin), role)


@pytest.mark.parametrize(
    ("mine", "given", "allowed"),
    [
        (Role.secretary, Role.viewer, True),
        (Role.secretary, Role.treasurer, True),
        (Role.secretary, Role.admin, False),
        (Role.viewer, Role.secretary, False),
        (Role.dpo, Role.viewer, False),  # outside the ranking: gives no ranked role
    ],
)
def test_nobody_gives_a_role_above_their_own(mine, given, allowed):
    caller = make_identity("/r/", mine)
    if allowed:
        check_role_within(caller, given)
    else:
        with pytest.raises(Forbidden):
            check_role_within(caller, given)


def test_moving_a_dpo_counts_as_giving_the_role():
    dpo = {"role": "dpo", "federation_path": "/r/a/"}
    secretary = {"role": "secretary", "federation_path": "/r/a/"}
    assert moves_dpo(dpo, None, "/r/")
    assert not moves_dpo(dpo, None, "/r/a/")
    assert not moves_dpo(dpo, None, None)
    assert moves_dpo(secretary, Role.dpo, "/r/")
    assert not moves_dpo(secretary, None, "/r/")


def test_a_search_is_literal_text_and_bounded():
    assert re.search(search_pattern(" A.B "), "xa.by") is not None
    assert re.search(search_pattern("a.b"), "axb") is None
    with pytest.raises(InvalidField):
        search_pattern("   ")
    with pytest.raises(InvalidField):
        search_pattern("x" * 101)


def test_cursors_round_trip_and_garbage_is_a_422():
    assert decode_cursor(encode_cursor("anna@paris.test")) == "anna@paris.test"
    for bad in ("%%%", "", "\xff"):
        with pytest.raises(InvalidField):
            decode_cursor(bad)
