"""Rules of renaming and moving a federation (gateway.federations.domain)."""

from __future__ import annotations

from typing import Any

import pytest
from gateway.federations.domain import plan_change
from support import make_identity
from tribune_shared.auth import Role
from tribune_shared.errors import InvalidField


def fed(path: str, name: str | None = None, version: int | None = None) -> dict[str, Any]:
    parts = path.strip("/").split("/")
    doc: dict[str, Any] = {
        "_id": parts[-1],
        "parent_id": parts[-2] if len(parts) > 1 else None,
        "name": name or parts[-1].upper(),
        "path": path,
    }
    if version is not None:
        doc["version"] = version
    return doc


ROOT = make_identity("/r/", Role.admin)
B, D, E = fed("/r/a/b/"), fed("/r/a/b/d/", version=4), fed("/r/a/b/d/e/")
SUBTREE = [E, B, D]


def test_a_move_changes_the_federation_then_each_descendant() -> None:
    changes = plan_change(ROOT, B, SUBTREE, name=None, new_parent=fed("/r/c/"))
    assert [(c.federation_id, c.parent_id, c.path, c.previous_path) for c in changes] == [
        ("b", "c", "/r/c/b/", "/r/a/b/"),
        ("d", "b", "/r/c/b/d/", "/r/a/b/d/"),
        ("e", "d", "/r/c/b/d/e/", "/r/a/b/d/e/"),
    ]
    # each at its own next version (created before versions existed: 1)
    assert [c.version for c in changes] == [2, 5, 2]
    assert all(c.moved for c in changes)


def test_a_rename_changes_the_federation_alone() -> None:
    (change,) = plan_change(ROOT, B, SUBTREE, name="  Paris   Centre ", new_parent=None)
    assert (change.name, change.path, change.moved) == ("Paris Centre", "/r/a/b/", False)


def test_the_same_name_and_parent_change_nothing() -> None:
    assert plan_change(ROOT, B, SUBTREE, name="B", new_parent=fed("/r/a/")) == []


def test_a_move_and_a_rename_at_once() -> None:
    changes = plan_change(ROOT, B, SUBTREE, name="B2", new_parent=fed("/r/c/"))
    assert (changes[0].name, changes[0].path) == ("B2", "/r/c/b/")
    assert [c.name for c in changes[1:]] == ["D", "E"]


@pytest.mark.parametrize("parent", ["/r/a/b/", "/r/a/b/d/", "/r/a/b/d/e/"])
def test_never_under_itself_or_a_descendant(parent: str) -> None:
    with pytest.raises(InvalidField) as refused:
        plan_change(ROOT, B, SUBTREE, name=None, new_parent=fed(parent))
    assert refused.value.field == "parent_id"


def test_a_sibling_sharing_a_string_prefix_is_a_valid_new_parent() -> None:
    (change, *_) = plan_change(ROOT, B, SUBTREE, name=None, new_parent=fed("/r/a/b1/"))
    assert change.path == "/r/a/b1/b/"


def test_never_the_callers_own_federation() -> None:
    caller = make_identity("/r/a/b/", Role.admin)
    with pytest.raises(InvalidField) as refused:
        plan_change(caller, B, SUBTREE, name=None, new_parent=fed("/r/c/"))
    assert refused.value.field == "parent_id"
    # renaming it is fine
    assert plan_change(caller, B, SUBTREE, name="Bee", new_parent=None)[0].name == "Bee"


def test_a_blank_name_is_refused() -> None:
    with pytest.raises(InvalidField) as refused:
        plan_change(ROOT, B, SUBTREE, name="   ", new_parent=None)
    assert refused.value.field == "name"
