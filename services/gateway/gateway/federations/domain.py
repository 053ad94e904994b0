"""Rules of renaming and moving a federation, free of I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tribune_shared.auth import Identity
from tribune_shared.errors import InvalidField

from gateway import domain


@dataclass(frozen=True)
class FederationChange:
    """One federation whose name or path a change gives a new value (a move changes the
    path of the federation and of every descendant)."""

    federation_id: str
    parent_id: str | None
    name: str
    path: str
    previous_path: str
    #: the federation's version after the change (the one before it + 1)
    version: int

    @property
    def moved(self) -> bool:
        return self.path != self.previous_path


def version_of(doc: dict[str, Any]) -> int:
    """Federations created before versions existed are at version 1."""
    return int(doc.get("version", 1))


def moved_path(path: str, old_prefix: str, new_prefix: str) -> str:
    """A path of the moved subtree at its new place."""
    if not path.startswith(old_prefix):
        raise ValueError(f"{path!r} is not under {old_prefix!r}")
    return new_prefix + path[len(old_prefix) :]


def plan_change(
    identity: Identity,
    target: dict[str, Any],
    subtree: Sequence[dict[str, Any]],
    *,
    name: str | None,
    new_parent: dict[str, Any] | None,
) -> list[FederationChange]:
    """What renaming ``target`` to ``name`` and moving it under ``new_parent`` changes:
    the target first, then its descendants (``subtree``: the target and every federation
    under it), only those whose name or path changes. Raises InvalidField (422) for a move
    the tree forbids: under itself or a descendant (a cycle), or of the caller's own
    federation (nobody moves their own root out from under themselves)."""
    new_name = domain.normalize_name(name) if name is not None else target["name"]
    old_path = target["path"]
    new_path = old_path
    parent_id = target["parent_id"]
    if new_parent is not None and new_parent["_id"] != target["parent_id"]:
        if target["_id"] == identity.federation_id or target["parent_id"] is None:
            raise InvalidField("you may not move your own federation", field="parent_id")
        if domain.in_subtree(old_path, new_parent["path"]):
            raise InvalidField(
                "a federation cannot move under itself or one of its descendants",
                field="parent_id",
            )
        parent_id = new_parent["_id"]
        new_path = domain.federation_path(new_parent["path"], target["_id"])
    changes: list[FederationChange] = []
    if new_name != target["name"] or new_path != old_path:
        changes.append(
            FederationChange(
                target["_id"], parent_id, new_name, new_path, old_path, version_of(target) + 1
            )
        )
    if new_path != old_path:
        for doc in sorted(subtree, key=lambda d: d["path"]):
            if doc["_id"] == target["_id"]:
                continue
            changes.append(
                FederationChange(
                    doc["_id"],
                    doc["parent_id"],
                    doc["name"],
                    moved_path(doc["path"], old_path, new_path),
                    doc["path"],
                    version_of(doc) + 1,
                )
            )
    return changes
