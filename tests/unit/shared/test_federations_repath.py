"""Re-pathing rules of a federation move (tribune_shared.federations)."""

from __future__ import annotations

from pymongo import ASCENDING
from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.events.contracts import FederationCreatedV1, FederationUpdatedV1
from tribune_shared.federations import (
    FEDERATIONS,
    PathField,
    moved_path,
    path_fields,
    version_of,
)
from tribune_shared.store import IndexSpec


def test_the_moved_federation_takes_the_new_parents_path() -> None:
    assert moved_path("/a0/b1/", "/a0/b1/", "/a0/c2/b1/") == "/a0/c2/b1/"


def test_children_follow_their_moved_parent() -> None:
    assert moved_path("/a0/b1/d3/", "/a0/b1/", "/a0/c2/b1/") == "/a0/c2/b1/d3/"
    assert moved_path("/a0/b1/d3/e4/", "/a0/b1/", "/a0/c2/b1/") == "/a0/c2/b1/d3/e4/"


def test_a_sibling_sharing_a_string_prefix_stays_where_it_is() -> None:
    assert moved_path("/a0/b10/", "/a0/b1/", "/a0/c2/b1/") is None
    assert moved_path("/a0/b10/x/", "/a0/b1/", "/a0/c2/b1/") is None


def test_the_parent_and_other_branches_stay_where_they_are() -> None:
    assert moved_path("/a0/", "/a0/b1/", "/a0/c2/b1/") is None
    assert moved_path("/a0/c2/", "/a0/b1/", "/a0/c2/b1/") is None


def test_a_move_up_the_tree_shortens_the_path() -> None:
    assert moved_path("/a0/c2/b1/d3/", "/a0/c2/b1/", "/a0/b1/") == "/a0/b1/d3/"


def test_a_rewritten_path_is_not_rewritten_again() -> None:
    once = moved_path("/a0/b1/d3/", "/a0/b1/", "/a0/c2/b1/")
    assert once is not None
    assert moved_path(once, "/a0/b1/", "/a0/c2/b1/") is None


def test_collections_are_those_indexed_by_path_plus_extras() -> None:
    specs = [
        IndexSpec("consents", [("federation_path", ASCENDING), ("at", ASCENDING)]),
        IndexSpec("consents", [("contact_id", ASCENDING)]),
        IndexSpec("ledger", [("contact_id", ASCENDING)]),
        IndexSpec(FEDERATIONS, [("federation_path", ASCENDING)]),
        IndexSpec("texts", [("version", ASCENDING), ("federation_path", ASCENDING)]),
    ]
    found = path_fields(specs, ContactDirectory.indexes, extra=[PathField("ledger")])
    assert found == (
        PathField("consents"),
        PathField("texts"),
        PathField("contacts"),
        PathField("ledger"),
    )


def test_a_creation_without_a_version_is_version_one() -> None:
    created = FederationCreatedV1(federation_id="b1", parent_id="a0", name="B", path="/a0/b1/")
    assert version_of(created) == 1
    updated = FederationUpdatedV1(
        federation_id="b1", parent_id="c2", name="B", path="/a0/c2/b1/", version=3
    )
    assert version_of(updated) == 3
