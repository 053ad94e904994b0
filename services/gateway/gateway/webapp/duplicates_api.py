"""The duplicates review's pages (thin: read the query or form, call the use case, render):
the likely pairs and the latest merges, one pair's review, and the merge it posts.

Like every page they are left out of the OpenAPI document and reach data only through
the API as the logged-in user; the merge POST carries the form's anti-CSRF token.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData

from gateway.webapp.api import APP_PATH, Visit, _param, signed_in, valid_id, visit
from gateway.webapp.duplicates import (
    MergeForm,
    changed_labels,
    display_name,
    emails_of,
    field_rows,
    stale,
    valid_cursor,
)
from gateway.webapp.duplicates_service import DuplicatesService, names_of
from gateway.webapp.screens import notice_of
from gateway.webapp.screens_api import _field, _me, _next_page, _post
from gateway.webapp.service import PageError, UserSession

router = APIRouter(include_in_schema=False)


def _duplicates(v: Visit) -> DuplicatesService:
    return DuplicatesService(v.webapp.screens)


@router.get(APP_PATH + "/duplicates")
async def duplicates(request: Request) -> Response:
    v = visit(request)
    cursor = valid_cursor(request.query_params.get("cursor"))
    chosen = _param(request, "federation_id")
    federation_id = chosen if chosen and valid_id(chosen) else None

    async def build(session: UserSession) -> Response:
        await _me(v, session)
        page, log, tree = await _duplicates(v).duplicates(session, cursor, federation_id)
        return v.render(
            "duplicates.html",
            active="duplicates",
            pairs=page.get("items", []),
            partial_postcode=page.get("partial_postcode"),
            next_query=_next_page(request, "cursor", page.get("next_cursor")),
            tree=tree,
            names=names_of(tree),
            federation_id=federation_id,
            merges=None if log is None else log.get("items", []),
            display_name=display_name,
            emails_of=emails_of,
            changed_labels=changed_labels,
            notice=notice_of(request.query_params.get("done")),
        )

    return await signed_in(v, build)


async def _review_page(
    request: Request,
    v: Visit,
    session: UserSession,
    survivor_id: str,
    merged_id: str,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
    choices: dict[str, str] | None = None,
    changed: bool = False,
) -> Response:
    """The pair as it is now (after a 409: the fresh values and versions, the user's
    choices kept)."""
    if not (valid_id(survivor_id) and valid_id(merged_id)) or survivor_id == merged_id:
        raise PageError(404)
    await _me(v, session)
    survivor, merged = await _duplicates(v).pair(session, survivor_id, merged_id)
    return v.render(
        "duplicate.html",
        status=status,
        active="duplicates",
        survivor=survivor,
        merged=merged,
        rows=field_rows(survivor, merged, choices),
        display_name=display_name,
        errors=errors or [],
        changed=changed,
    )


@router.get(APP_PATH + "/duplicates/review")
async def review(request: Request) -> Response:
    v = visit(request)
    survivor_id = _param(request, "survivor") or ""
    merged_id = _param(request, "merged") or ""
    return await signed_in(
        v, lambda session: _review_page(request, v, session, survivor_id, merged_id)
    )


@router.post(APP_PATH + "/duplicates/merge")
async def merge(request: Request) -> Response:
    v = visit(request)

    async def build(session: UserSession, form: FormData) -> Response:
        names = ("survivor_id", "merged_id", "survivor_version", "merged_version")
        values = {n: _field(form, n) for n in names}
        values.update({k: _field(form, k) for k in form if k.startswith("field.")})
        merge_form = MergeForm.read(values)
        if not (valid_id(merge_form.survivor_id) and valid_id(merge_form.merged_id)):
            raise PageError(404)
        outcome = await _duplicates(v).merge(session, merge_form)
        if outcome.ok:
            return v.redirect(f"{APP_PATH}/people/{merge_form.survivor_id}?done=merged")
        if outcome.status in (403, 404):
            raise PageError(outcome.status)
        changed = stale(outcome.status, outcome.errors)
        return await _review_page(
            request, v, session, merge_form.survivor_id, merge_form.merged_id,
            status=outcome.status, errors=[] if changed else outcome.errors,
            choices=merge_form.choices, changed=changed,
        )  # fmt: skip

    return await _post(request, v, build)
