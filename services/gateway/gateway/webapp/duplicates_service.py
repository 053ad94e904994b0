"""What the duplicates review needs, fetched from the contacts API as the user, and the
merge its form makes through it.

Nothing here decides who may merge: the API does (a 403 is the 403 page, a contact out of
the caller's subtree a 404 page, a stale read the review again with the fresh values).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from gateway.webapp.duplicates import MergeForm
from gateway.webapp.screens import TreeNode
from gateway.webapp.screens_service import Outcome, ScreensService, _body, _outcome
from gateway.webapp.service import UserSession

CONTACTS = "/api/v1/contacts"


class DuplicatesService:
    def __init__(self, screens: ScreensService) -> None:
        self.screens = screens
        self.base = screens.base
        self.page_size = screens.page_size

    async def duplicates(
        self, session: UserSession, cursor: str | None, federation_id: str | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None, list[TreeNode]]:
        """A page of likely pairs, the latest merges (None when the role may not read the
        log) and the federations to narrow the list to."""
        params: dict[str, str] = {"limit": str(self.page_size)}
        if cursor:
            params["cursor"] = cursor
        if federation_id:
            params["federation_id"] = federation_id
        pairs, log, tree = await asyncio.gather(
            self.base.call(session, "GET", f"{CONTACTS}/duplicates", params=params),
            self.base.call(
                session, "GET", f"{CONTACTS}/merges", params={"limit": str(self.page_size)}
            ),
            self.screens.federations(session),
        )
        return _body(pairs), log.body if log.ok else None, tree

    async def pair(
        self, session: UserSession, survivor_id: str, merged_id: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both contacts as the user may read them now (a 404 page if either is not in
        the caller's subtree)."""
        survivor, merged = await asyncio.gather(
            self.base.call(session, "GET", f"{CONTACTS}/{survivor_id}"),
            self.base.call(session, "GET", f"{CONTACTS}/{merged_id}"),
        )
        return dict(_body(survivor)), dict(_body(merged))

    async def merge(self, session: UserSession, form: MergeForm) -> Outcome:
        return _outcome(
            await self.base.call(
                session, "POST", f"{CONTACTS}/{form.survivor_id}/merge", json=form.body()
            )
        )


def names_of(tree: list[TreeNode]) -> Mapping[str, str]:
    return {n.federation["id"]: str(n.federation.get("name", "")) for n in tree}
