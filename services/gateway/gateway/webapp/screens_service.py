"""What the work screens need (CSV imports, privacy requests, users, federations, segments,
campaigns), fetched from the gateway's API as the user, and the changes their forms make
through it.

As for the first pages (gateway.webapp.service): nothing here decides who may do what. A
page the API refuses (403) is the 403 page, an object it does not find (404, another
federation's too) the 404 page, a refused change (409, 422) the same page again with the
API's reasons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from gateway.webapp.client import ApiAnswer, StreamAnswer
from gateway.webapp.screens import (
    IssueReader,
    IssueRows,
    TreeNode,
    UserChangeForm,
    federation_tree,
    field_errors,
)
from gateway.webapp.service import PageError, UserSession, WebappService

IMPORTS = "/api/v1/contacts/imports"


@dataclass(frozen=True)
class Outcome:
    """What the API made of a change: done (with its answer), or refused with a status
    and the reasons to show next to the form."""

    status: int
    body: Any
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Upload:
    """The import form: the file (spooled by the form parser) and the import's options."""

    filename: str
    file: IO[bytes]
    content_type: str
    origin_kind: str
    origin_detail: str
    duplicates: str
    federation_id: str | None
    tag: str | None


@dataclass(frozen=True)
class ImportJobPage:
    job: dict[str, Any]
    rejected: IssueRows | None
    flagged: IssueRows | None


def _body(answer: ApiAnswer) -> Any:
    if not answer.ok:
        raise PageError(answer.status)
    return answer.body


def _outcome(answer: ApiAnswer) -> Outcome:
    return Outcome(
        answer.status, answer.body, [] if answer.ok else field_errors(answer.body) or [("", "")]
    )


class ScreensService:
    def __init__(
        self, base: WebappService, *, rows_shown: int, parallel_calls: int, sample_size: int
    ) -> None:
        self.base = base
        self.page_size = base.page_size
        self.rows_shown = rows_shown
        self.parallel_calls = parallel_calls
        self.sample_size = sample_size

    async def _get(
        self, session: UserSession, path: str, params: Mapping[str, str] | None = None
    ) -> ApiAnswer:
        return await self.base.call(session, "GET", path, params=params)

    async def federations(self, session: UserSession) -> list[TreeNode]:
        """The caller's subtree as a tree (every page's federation lists)."""
        answer = await self._get(session, "/api/v1/federations")
        return federation_tree(answer.body if answer.ok and isinstance(answer.body, list) else [])

    # ------------------------------------------------------------ CSV imports
    async def imports(
        self, session: UserSession, cursor: str | None
    ) -> tuple[dict[str, Any], list[TreeNode]]:
        params = {"limit": str(self.page_size), **({"cursor": cursor} if cursor else {})}
        page, tree = await asyncio.gather(
            self._get(session, IMPORTS, params), self.federations(session)
        )
        return _body(page), tree

    async def upload(self, session: UserSession, upload: Upload) -> Outcome:
        """POST the file as a multipart form to the contacts import API (streamed from
        the spooled file), with the options as the form's other fields."""
        data: dict[str, str] = {
            "origin_kind": upload.origin_kind,
            "origin_detail": upload.origin_detail,
            "duplicates": upload.duplicates,
        }
        if upload.federation_id:
            data["federation_id"] = upload.federation_id
        if upload.tag:
            data["tag"] = upload.tag
        answer = await self.base.call(
            session,
            "POST",
            IMPORTS,
            data=data,
            files={"file": (upload.filename, upload.file, upload.content_type)},
        )
        return _outcome(answer)

    async def import_job(self, session: UserSession, job_id: str) -> ImportJobPage:
        job = _body(await self._get(session, f"{IMPORTS}/{job_id}"))
        counts = job.get("counts") or {}
        delimiter = str((job.get("file") or {}).get("delimiter") or ",")
        rejected, flagged = await asyncio.gather(
            self._issues(session, job_id, "rejected", delimiter, counts.get("rejected", 0)),
            self._issues(session, job_id, "flagged", delimiter, counts.get("flagged", 0)),
        )
        return ImportJobPage(job, rejected, flagged)

    async def _issues(
        self, session: UserSession, job_id: str, kind: str, delimiter: str, count: int
    ) -> IssueRows | None:
        """The first rows of the job's rejected.csv or flagged.csv (only what is shown is
        read: the stream is left once enough lines came)."""
        if not count:
            return None
        opened = await self.issues_csv(session, job_id, kind)
        reader = IssueReader(delimiter, flagged=kind == "flagged", limit=self.rows_shown)
        if opened.status != 200:
            await _drain(opened)
            return None
        ended = True
        async for chunk in opened.body:
            if reader.feed(chunk):
                ended = False
                break
        await opened.body.aclose()  # type: ignore[attr-defined]
        return reader.result(ended)

    async def issues_csv(self, session: UserSession, job_id: str, kind: str) -> StreamAnswer:
        return await self.base.stream(
            session, f"{IMPORTS}/{job_id}/{kind}.csv", None, None, accept="text/csv"
        )

    async def cancel_import(self, session: UserSession, job_id: str) -> Outcome:
        return _outcome(await self.base.call(session, "POST", f"{IMPORTS}/{job_id}/cancel"))

    # ------------------------------------------------------------ privacy requests
    async def privacy_requests(
        self, session: UserSession, filters: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        params = {**filters, "limit": str(self.page_size)}
        body = _body(await self._get(session, "/api/v1/privacy/requests", params))
        return list(body.get("items", []))

    async def privacy_request(self, session: UserSession, request_id: str) -> dict[str, Any]:
        return dict(_body(await self._get(session, f"/api/v1/privacy/requests/{request_id}")))

    # ------------------------------------------------------------ users
    async def users(
        self, session: UserSession, filters: Mapping[str, str], cursor: str | None
    ) -> tuple[dict[str, Any], list[TreeNode]]:
        params = {**filters, "limit": str(self.page_size), **({"cursor": cursor} if cursor else {})}
        page, tree = await asyncio.gather(
            self._get(session, "/api/v1/users", params), self.federations(session)
        )
        return _body(page), tree

    async def user(
        self, session: UserSession, user_id: str
    ) -> tuple[dict[str, Any], list[TreeNode]]:
        found, tree = await asyncio.gather(
            self._get(session, f"/api/v1/users/{user_id}"), self.federations(session)
        )
        return _body(found), tree

    async def change_user(
        self, session: UserSession, user_id: str, form: UserChangeForm
    ) -> Outcome:
        body = form.body()
        if body is None:
            return Outcome(422, None, [("action", "unknown")])
        return _outcome(
            await self.base.call(session, "PATCH", f"/api/v1/users/{user_id}", json=body)
        )

    # ------------------------------------------------------------ federations
    async def create_federation(
        self, session: UserSession, name: str, parent_id: str | None
    ) -> Outcome:
        body: dict[str, Any] = {"name": name}
        if parent_id:
            body["parent_id"] = parent_id
        return _outcome(await self.base.call(session, "POST", "/api/v1/federations", json=body))

    async def federation(
        self, session: UserSession, federation_id: str
    ) -> tuple[dict[str, Any], list[TreeNode]]:
        found, tree = await asyncio.gather(
            self._get(session, f"/api/v1/federations/{federation_id}"),
            self.federations(session),
        )
        return _body(found), tree

    async def change_federation(
        self, session: UserSession, federation_id: str, name: str | None, parent_id: str | None
    ) -> Outcome:
        body = {k: v for k, v in (("name", name), ("parent_id", parent_id)) if v}
        if not body:
            return Outcome(422, None, [("name", "nothing to change")])
        return _outcome(
            await self.base.call(
                session, "PATCH", f"/api/v1/federations/{federation_id}", json=body
            )
        )

    # ------------------------------------------------------------ segments
    async def segments(
        self, session: UserSession, cursor: str | None
    ) -> tuple[dict[str, Any], dict[str, int | None]]:
        """A page of segments and each one's size now (one preview each: the API has no
        batch preview; at most ``parallel_calls`` at once)."""
        params = {"limit": str(self.page_size), **({"cursor": cursor} if cursor else {})}
        page = _body(await self._get(session, "/api/v1/segments", params))
        gate = asyncio.Semaphore(self.parallel_calls)

        async def size(segment_id: str) -> int | None:
            async with gate:
                answer = await self._get(
                    session, f"/api/v1/segments/{segment_id}/preview", {"size": "0"}
                )
            return answer.body.get("count") if answer.ok else None

        ids = [s["id"] for s in page.get("items", [])]
        sizes = await _gather_all([size(i) for i in ids])
        return page, dict(zip(ids, sizes, strict=True))

    async def segment(
        self, session: UserSession, segment_id: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        found = _body(await self._get(session, f"/api/v1/segments/{segment_id}"))
        preview = await self._get(
            session, f"/api/v1/segments/{segment_id}/preview", {"size": str(self.sample_size)}
        )
        return found, preview.body if preview.ok else None

    async def change_segment(
        self, session: UserSession, segment_id: str, body: Mapping[str, Any]
    ) -> Outcome:
        return _outcome(
            await self.base.call(session, "PATCH", f"/api/v1/segments/{segment_id}", json=body)
        )

    async def create_segment(self, session: UserSession, body: Mapping[str, Any]) -> Outcome:
        """POST /api/v1/segments: 201 with the new segment (its id to go to)."""
        return _outcome(await self.base.call(session, "POST", "/api/v1/segments", json=body))

    async def preview_filter(self, session: UserSession, flt: Any) -> Outcome:
        """How many of the caller's contacts a filter not saved yet matches, and a sample
        (POST /api/v1/segments/preview)."""
        body = {"filter": flt, "size": self.sample_size}
        return _outcome(
            await self.base.call(session, "POST", "/api/v1/segments/preview", json=body)
        )

    async def delete_segment(self, session: UserSession, segment_id: str) -> Outcome:
        return _outcome(await self.base.call(session, "DELETE", f"/api/v1/segments/{segment_id}"))

    # ------------------------------------------------------------ campaigns
    async def campaigns(self, session: UserSession, before: str | None) -> dict[str, Any]:
        params = {"limit": str(self.page_size), **({"before": before} if before else {})}
        return dict(_body(await self._get(session, "/api/v1/campaigns", params)))

    async def campaign(self, session: UserSession, campaign_id: str) -> dict[str, Any]:
        return dict(_body(await self._get(session, f"/api/v1/campaigns/{campaign_id}")))

    async def campaign_action(self, session: UserSession, campaign_id: str, action: str) -> Outcome:
        return _outcome(
            await self.base.call(session, "POST", f"/api/v1/campaigns/{campaign_id}/{action}")
        )


async def _gather_all(calls: list[Awaitable[int | None]]) -> list[int | None]:
    return list(await asyncio.gather(*calls))


async def _drain(answer: StreamAnswer) -> None:
    async for _ in answer.body:
        pass
