"""The work screens' pages (thin: read the form or query, call the use case, render): CSV
imports, privacy requests, users, federations, segments, campaigns.

Like every page (gateway.webapp.api) they are left out of the OpenAPI document and reach
data only through the API as the logged-in user; every POST carries the form's anti-CSRF
token (refused with the 400 page otherwise, before anything is asked of the API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, UploadFile
from tribune_shared.limits import allow_body

from gateway.webapp.api import APP_PATH, Visit, _param, signed_in, valid_id, visit
from gateway.webapp.screens import (
    ACTIVE_IMPORT_STATUSES,
    CAMPAIGN_ACTIONS,
    CAMPAIGN_FIGURES,
    DUPLICATE_MODES,
    LIVE_CAMPAIGN_STATUSES,
    ORIGIN_KINDS,
    PRIVACY_KINDS,
    PRIVACY_STATUSES,
    SEGMENT_EDITORS,
    SEGMENT_FORM_CHOICES,
    SegmentForm,
    UserChangeForm,
    move_targets,
    notice_of,
)
from gateway.webapp.screens_service import Outcome, ScreensService, Upload
from gateway.webapp.security import safe_next
from gateway.webapp.service import PageError, UserSession

router = APIRouter(include_in_schema=False)

#: the roles a user can be given (tribune_shared.auth.Role), in the order the list shows
ROLES = ("viewer", "secretary", "treasurer", "campaign_manager", "dpo", "admin")
#: a form field longer than this is not read further (the API has its own limits)
MAX_FIELD_CHARS = 1024
#: GET /api/v1/users takes a cursor up to this long
USERS_CURSOR_CHARS = 400
#: the form of an import: the file and a few options
IMPORT_FORM_FIELDS = 10


def _screens(v: Visit) -> ScreensService:
    return v.webapp.screens


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if not isinstance(value, str):
        return None
    return value.strip()[:MAX_FIELD_CHARS] or None


async def _me(v: Visit, session: UserSession) -> None:
    v.extra["me"] = await v.webapp.service.me(session)


def _next_page(request: Request, key: str, value: str | None) -> str | None:
    """The same page's query with ``key`` set to the API's next cursor."""
    if not value:
        return None
    query = {k: val for k, val in request.query_params.items() if k != key}
    return urlencode({**query, key: value})


async def _post(
    request: Request,
    v: Visit,
    build: Callable[[UserSession, FormData], Awaitable[Response]],
    *,
    max_files: int = 0,
) -> Response:
    """A form's POST: signed in, then the anti-CSRF token, then ``build``."""

    async def checked(session: UserSession) -> Response:
        form = await request.form(max_files=max_files, max_fields=IMPORT_FORM_FIELDS * 2)
        if not v.checked(form):
            return v.error(400)
        return await build(session, form)

    return await signed_in(v, checked)


# ---------------------------------------------------------------- CSV imports


def _import_form(**values: Any) -> dict[str, Any]:
    return {
        "origin_kind": "import",
        "origin_detail": "",
        "duplicates": "merge",
        "federation_id": None,
        "tag": "",
        **values,
    }


async def _imports_page(
    request: Request,
    v: Visit,
    session: UserSession,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
    form: dict[str, Any] | None = None,
) -> Response:
    await _me(v, session)
    cursor = _param(request, "cursor")
    page, tree = await _screens(v).imports(session, cursor if cursor and valid_id(cursor) else None)
    return v.render(
        "imports.html",
        status=status,
        active="imports",
        jobs=page.get("items", []),
        next_query=_next_page(request, "cursor", page.get("next_cursor")),
        tree=tree,
        form=form or _import_form(federation_id=v.extra["me"]["federation_id"]),
        errors=errors or [],
        origin_kinds=ORIGIN_KINDS,
        duplicate_modes=DUPLICATE_MODES,
        active_statuses=ACTIVE_IMPORT_STATUSES,
    )


@router.get(APP_PATH + "/imports")
async def imports(request: Request) -> Response:
    v = visit(request)
    return await signed_in(v, lambda session: _imports_page(request, v, session))


@router.post(APP_PATH + "/imports")
async def upload_import(request: Request) -> Response:
    v = visit(request)
    settings = v.webapp.settings
    if v.session is not None:
        # signed in: the file may be as large as the import API takes (the form's few
        # fields besides); without a session nothing is read (the login page)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_upload_body_bytes:
            return await signed_in(
                v,
                lambda session: _imports_page(
                    request, v, session, status=413, errors=[("file", "too_large")]
                ),
            )
        allow_body(request.scope, settings.max_upload_body_bytes)

    async def build(session: UserSession, form: FormData) -> Response:
        file = form.get("file")
        values = _import_form(
            origin_kind=_field(form, "origin_kind") or "",
            origin_detail=_field(form, "origin_detail") or "",
            duplicates=_field(form, "duplicates") or "merge",
            federation_id=_field(form, "federation_id"),
            tag=_field(form, "tag") or "",
        )
        if not isinstance(file, UploadFile) or not file.filename:
            return await _imports_page(
                request, v, session, status=422, errors=[("file", "missing")], form=values
            )
        outcome = await _screens(v).upload(
            session,
            Upload(
                filename=file.filename[:255],
                file=file.file,
                content_type=file.content_type or "text/csv",
                origin_kind=values["origin_kind"],
                origin_detail=values["origin_detail"],
                duplicates=values["duplicates"],
                federation_id=values["federation_id"],
                tag=values["tag"] or None,
            ),
        )
        await file.close()
        if outcome.ok:
            return v.redirect(f"{APP_PATH}/imports/{outcome.body['id']}")
        if outcome.status == 403:
            raise PageError(403)
        return await _imports_page(
            request, v, session, status=outcome.status, errors=outcome.errors, form=values
        )

    return await _post(request, v, build, max_files=1)


async def _import_job_page(
    request: Request,
    v: Visit,
    session: UserSession,
    job_id: str,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    await _me(v, session)
    found = await _screens(v).import_job(session, job_id)
    return v.render(
        "import.html",
        status=status,
        active="imports",
        job=found.job,
        rejected=found.rejected,
        flagged=found.flagged,
        running=found.job.get("status") in ACTIVE_IMPORT_STATUSES,
        poll_seconds=v.webapp.settings.webapp_poll_seconds,
        errors=errors or [],
        notice=notice_of(request.query_params.get("done")),
    )


@router.get(APP_PATH + "/imports/{job_id}")
async def import_job(request: Request, job_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession) -> Response:
        if not valid_id(job_id):
            raise PageError(404)
        return await _import_job_page(request, v, session, job_id)

    return await signed_in(v, build)


@router.post(APP_PATH + "/imports/{job_id}/cancel")
async def cancel_import(request: Request, job_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession, form: FormData) -> Response:
        if not valid_id(job_id):
            raise PageError(404)
        outcome = await _screens(v).cancel_import(session, job_id)
        return await _after(
            request, v, session, outcome, f"{APP_PATH}/imports/{job_id}", "cancelled",
            lambda status, errors: _import_job_page(
                request, v, session, job_id, status=status, errors=errors
            ),
        )  # fmt: skip

    return await _post(request, v, build)


@router.get(APP_PATH + "/imports/{job_id}/{kind}.csv")
async def import_issues_csv(request: Request, job_id: str, kind: str) -> Response:
    """The whole rejected (or flagged) rows file, handed on from the API as it streams."""
    v = visit(request)

    async def build(session: UserSession) -> Response:
        if not valid_id(job_id) or kind not in ("rejected", "flagged"):
            raise PageError(404)
        opened = await _screens(v).issues_csv(session, job_id, kind)
        if opened.status != 200:
            async for _ in opened.body:
                pass
            raise PageError(opened.status)
        passed = {k.decode("latin-1").lower(): val.decode("latin-1") for k, val in opened.headers}
        return v.finish(
            StreamingResponse(
                opened.body,
                media_type=passed.get("content-type", "text/csv; charset=utf-8"),
                headers={
                    "Content-Disposition": passed.get(
                        "content-disposition", f'attachment; filename="{kind}.csv"'
                    )
                },
            )
        )

    return await signed_in(v, build)


async def _after(
    request: Request,
    v: Visit,
    session: UserSession,
    outcome: Outcome,
    target: str,
    done: str,
    again: Callable[[int, list[tuple[str, str]]], Awaitable[Response]],
) -> Response:
    """After a change: to ``target`` with its notice when the API made it (POST, redirect,
    GET: a reload does not do it twice); a 404 is the 404 page; any other refusal shows
    the page again with the API's reasons (a 403 too when it names a field: a password
    that did not confirm a change), any other 403 the 403 page."""
    if outcome.ok:
        return v.redirect(f"{target}?done={done}")
    if outcome.status == 404 or (outcome.status == 403 and not outcome.errors[0][0]):
        raise PageError(outcome.status)
    return await again(outcome.status, outcome.errors)


# ---------------------------------------------------------------- privacy requests


@router.get(APP_PATH + "/privacy")
async def privacy_requests(request: Request) -> Response:
    v = visit(request)
    filters = {
        "status": s if (s := _param(request, "status")) in PRIVACY_STATUSES else None,
        "kind": k if (k := _param(request, "kind")) in PRIVACY_KINDS else None,
        "overdue": "true" if request.query_params.get("overdue") == "on" else None,
    }
    chosen = {k: str(val) for k, val in filters.items() if val}

    async def build(session: UserSession) -> Response:
        await _me(v, session)
        items = await _screens(v).privacy_requests(session, chosen)
        return v.render(
            "privacy.html",
            active="privacy",
            items=items,
            filters=filters,
            kinds=PRIVACY_KINDS,
            statuses=PRIVACY_STATUSES,
            page_size=v.webapp.settings.webapp_page_size,
        )

    return await signed_in(v, build)


@router.get(APP_PATH + "/privacy/{request_id}")
async def privacy_request(request: Request, request_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession) -> Response:
        if not valid_id(request_id):
            raise PageError(404)
        await _me(v, session)
        found = await _screens(v).privacy_request(session, request_id)
        return v.render("privacy_request.html", active="privacy", req=found)

    return await signed_in(v, build)


# ---------------------------------------------------------------- users


@router.get(APP_PATH + "/users")
async def users(request: Request) -> Response:
    v = visit(request)
    role = r if (r := _param(request, "role")) in ROLES else None
    active = _param(request, "active")
    filters = {
        "q": _param(request, "q"),
        "role": role,
        "active": active if active in ("true", "false") else None,
    }
    # the API's own opaque cursor (an email, encoded): up to its own limit
    cursor = (request.query_params.get("cursor") or "")[:USERS_CURSOR_CHARS] or None

    async def build(session: UserSession) -> Response:
        await _me(v, session)
        page, tree = await _screens(v).users(
            session, {k: str(val) for k, val in filters.items() if val}, cursor
        )
        return v.render(
            "users.html",
            active="users",
            items=page.get("items", []),
            next_query=_next_page(request, "cursor", page.get("next_cursor")),
            filters=filters,
            roles=ROLES,
            names={n.federation["id"]: n.federation["name"] for n in tree},
        )

    return await signed_in(v, build)


async def _user_page(
    request: Request,
    v: Visit,
    session: UserSession,
    user_id: str,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    await _me(v, session)
    found, tree = await _screens(v).user(session, user_id)
    return v.render(
        "user.html",
        status=status,
        active="users",
        user=found,
        tree=tree,
        roles=ROLES,
        errors=errors or [],
        notice=notice_of(request.query_params.get("done")),
        itself=found["id"] == v.extra["me"]["id"],
    )


@router.get(APP_PATH + "/users/{user_id}")
async def user(request: Request, user_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession) -> Response:
        if not valid_id(user_id):
            raise PageError(404)
        return await _user_page(request, v, session, user_id)

    return await signed_in(v, build)


@router.post(APP_PATH + "/users/{user_id}")
async def change_user(request: Request, user_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession, form: FormData) -> Response:
        if not valid_id(user_id):
            raise PageError(404)
        change = UserChangeForm(
            action=_field(form, "action") or "",
            role=_field(form, "role"),
            federation_id=_field(form, "federation_id"),
            confirm_password=_field(form, "confirm_password"),
        )
        outcome = await _screens(v).change_user(session, user_id, change)
        return await _after(
            request, v, session, outcome, f"{APP_PATH}/users/{user_id}", "saved",
            lambda status, errors: _user_page(
                request, v, session, user_id, status=status, errors=errors
            ),
        )  # fmt: skip

    return await _post(request, v, build)


# ---------------------------------------------------------------- federations


async def _federations_page(
    request: Request,
    v: Visit,
    session: UserSession,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
    name: str = "",
) -> Response:
    await _me(v, session)
    tree = await _screens(v).federations(session)
    return v.render(
        "federations.html",
        status=status,
        active="federations",
        tree=tree,
        errors=errors or [],
        name=name,
        notice=notice_of(request.query_params.get("done")),
    )


@router.get(APP_PATH + "/federations")
async def federations(request: Request) -> Response:
    v = visit(request)
    return await signed_in(v, lambda session: _federations_page(request, v, session))


@router.post(APP_PATH + "/federations")
async def create_federation(request: Request) -> Response:
    v = visit(request)

    async def build(session: UserSession, form: FormData) -> Response:
        name = _field(form, "name") or ""
        outcome = await _screens(v).create_federation(session, name, _field(form, "parent_id"))
        if outcome.ok:
            return v.redirect(f"{APP_PATH}/federations?done=created")
        if outcome.status == 403:
            raise PageError(403)
        return await _federations_page(
            request, v, session, status=outcome.status, errors=outcome.errors, name=name
        )

    return await _post(request, v, build)


async def _federation_page(
    request: Request,
    v: Visit,
    session: UserSession,
    federation_id: str,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    await _me(v, session)
    found, tree = await _screens(v).federation(session, federation_id)
    return v.render(
        "federation.html",
        status=status,
        active="federations",
        federation=found,
        targets=move_targets(tree, found),
        errors=errors or [],
        notice=notice_of(request.query_params.get("done")),
    )


@router.get(APP_PATH + "/federations/{federation_id}")
async def federation(request: Request, federation_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession) -> Response:
        if not valid_id(federation_id):
            raise PageError(404)
        return await _federation_page(request, v, session, federation_id)

    return await signed_in(v, build)


@router.post(APP_PATH + "/federations/{federation_id}")
async def change_federation(request: Request, federation_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession, form: FormData) -> Response:
        if not valid_id(federation_id):
            raise PageError(404)
        outcome = await _screens(v).change_federation(
            session, federation_id, _field(form, "name"), _field(form, "parent_id")
        )
        return await _after(
            request, v, session, outcome, f"{APP_PATH}/federations/{federation_id}", "saved",
            lambda status, errors: _federation_page(
                request, v, session, federation_id, status=status, errors=errors
            ),
        )  # fmt: skip

    return await _post(request, v, build)


# ---------------------------------------------------------------- segments


@router.get(APP_PATH + "/segments")
async def segments(request: Request) -> Response:
    v = visit(request)
    cursor = _param(request, "cursor")

    async def build(session: UserSession) -> Response:
        await _me(v, session)
        page, sizes = await _screens(v).segments(
            session, cursor if cursor and valid_id(cursor) else None
        )
        return v.render(
            "segments.html",
            active="segments",
            items=page.get("items", []),
            sizes=sizes,
            next_query=_next_page(request, "cursor", page.get("next_cursor")),
            notice=notice_of(request.query_params.get("done")),
            editors=SEGMENT_EDITORS,
        )

    return await signed_in(v, build)


def _segment_form(form: FormData) -> SegmentForm:
    """The segment form as posted (the new segment's and the edit form's: one form)."""
    names = ("name", "description", "tags_match", "tags", "geo_field", "geo_values")
    values = {n: _field(form, n) for n in (*names, "has_email", "has_phone", "version")}
    raw_json = form.get("filter_json")
    values["filter_json"] = raw_json if isinstance(raw_json, str) else None
    return SegmentForm.read(values)


async def _new_segment_page(
    v: Visit,
    session: UserSession,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
    form: SegmentForm | None = None,
    preview: dict[str, Any] | None = None,
) -> Response:
    """The new segment's form: empty, or what the user typed with the size it would have
    now (preview) or the API's reasons next to their fields."""
    await _me(v, session)
    return v.render(
        "segment_new.html",
        status=status,
        active="segments",
        form=form or SegmentForm(),
        errors=errors or [],
        preview=preview,
        **SEGMENT_FORM_CHOICES,
    )


# registered before /segments/{segment_id}: "new" is not a segment
@router.get(APP_PATH + "/segments/new")
async def new_segment(request: Request) -> Response:
    v = visit(request)
    return await signed_in(v, lambda session: _new_segment_page(v, session))


@router.post(APP_PATH + "/segments/new")
async def create_segment(request: Request) -> Response:
    """Creates the segment (or, with the preview button, only shows its size now): to the
    new segment's page when the API made it; a 422 or 409 shows the typed values with each
    reason at its field; a 403 (a role the API does not let create) is the 403 page."""
    v = visit(request)

    async def build(session: UserSession, form: FormData) -> Response:
        typed = _segment_form(form)
        try:
            body = typed.create_body()
        except ValueError:
            return await _new_segment_page(
                v, session, status=422, form=typed,
                errors=[("filter_json", v.t("segment.not_json"))],
            )  # fmt: skip
        if _field(form, "action") == "preview":
            outcome = await _screens(v).preview_filter(session, body["filter"])
            if outcome.ok:
                return await _new_segment_page(v, session, form=typed, preview=outcome.body)
        else:
            outcome = await _screens(v).create_segment(session, body)
            made = outcome.body.get("id") if isinstance(outcome.body, dict) else None
            if outcome.ok and isinstance(made, str) and valid_id(made):
                return v.redirect(f"{APP_PATH}/segments/{made}?done=segment_created")
        if outcome.ok:
            raise PageError(503)  # made, but no id to go to: not the answer the API gives
        if outcome.status in (403, 404):
            raise PageError(outcome.status)
        return await _new_segment_page(
            v, session, status=outcome.status, form=typed,
            errors=typed.errors_by_field(outcome.errors),
        )  # fmt: skip

    return await _post(request, v, build)


async def _segment_page(
    request: Request,
    v: Visit,
    session: UserSession,
    segment_id: str,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
    form: SegmentForm | None = None,
    changed: bool = False,
) -> Response:
    """The segment as it is now, its size, and (for the roles the API lets change it) the
    edit form: the segment's values, or the ones the user typed when the API refused
    them (``errors`` then name the form's fields)."""
    await _me(v, session)
    found, preview = await _screens(v).segment(session, segment_id)
    if form is not None:
        # the user's values, but always the version read now
        form = replace(form, version=found.get("version"))
    return v.render(
        "segment.html",
        status=status,
        active="segments",
        segment=found,
        preview=preview,
        form=form or SegmentForm.of_segment(found),
        errors=errors or [],
        changed=changed,
        editors=SEGMENT_EDITORS,
        **SEGMENT_FORM_CHOICES,
        notice=notice_of(request.query_params.get("done")),
    )


@router.get(APP_PATH + "/segments/{segment_id}")
async def segment(request: Request, segment_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession) -> Response:
        if not valid_id(segment_id):
            raise PageError(404)
        return await _segment_page(request, v, session, segment_id)

    return await signed_in(v, build)


@router.post(APP_PATH + "/segments/{segment_id}")
async def change_segment(request: Request, segment_id: str) -> Response:
    """PATCH with the version read: a 409 shows the segment as it is now (the form then
    holds its fresh values), a 422 the typed values with each reason at its field."""
    v = visit(request)

    async def build(session: UserSession, form: FormData) -> Response:
        if not valid_id(segment_id):
            raise PageError(404)
        edited = _segment_form(form)
        try:
            body = edited.patch_body()
        except ValueError:
            return await _segment_page(
                request, v, session, segment_id, status=422, form=edited,
                errors=[("filter_json", v.t("segment.not_json"))],
            )  # fmt: skip
        outcome = await _screens(v).change_segment(session, segment_id, body)
        if outcome.ok:
            return v.redirect(f"{APP_PATH}/segments/{segment_id}?done=saved")
        if outcome.status in (403, 404):
            raise PageError(outcome.status)
        errors = edited.errors_by_field(outcome.errors)
        if outcome.status == 409 and not any(f for f, _ in errors):
            # changed by someone else since it was read: shown as it is now
            return await _segment_page(request, v, session, segment_id, status=409, changed=True)
        return await _segment_page(
            request, v, session, segment_id, status=outcome.status, errors=errors, form=edited
        )

    return await _post(request, v, build)


@router.post(APP_PATH + "/segments/{segment_id}/delete")
async def delete_segment(request: Request, segment_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession, form: FormData) -> Response:
        if not valid_id(segment_id):
            raise PageError(404)
        if _field(form, "confirm") != "yes":
            # a deleted segment is not undone: the box must be ticked
            return await _segment_page(
                request, v, session, segment_id, status=422,
                errors=[("confirm", v.t("segment.delete_unconfirmed"))],
            )  # fmt: skip
        outcome = await _screens(v).delete_segment(session, segment_id)
        return await _after(
            request, v, session, outcome, f"{APP_PATH}/segments", "deleted",
            lambda status, errors: _segment_page(
                request, v, session, segment_id, status=status, errors=errors
            ),
        )  # fmt: skip

    return await _post(request, v, build)


# ---------------------------------------------------------------- campaigns


def _campaigns_live(items: list[dict[str, Any]]) -> bool:
    return any(c.get("status") in LIVE_CAMPAIGN_STATUSES for c in items)


@router.get(APP_PATH + "/campaigns")
async def campaigns(request: Request) -> Response:
    v = visit(request)
    before = _param(request, "before")

    async def build(session: UserSession) -> Response:
        await _me(v, session)
        page = await _screens(v).campaigns(session, before if before and valid_id(before) else None)
        items = page.get("items", [])
        return v.render(
            "campaigns.html",
            active="campaigns",
            items=items,
            next_query=_next_page(request, "before", page.get("next_before")),
            figures=CAMPAIGN_FIGURES,
            live=_campaigns_live(items),
            poll_seconds=v.webapp.settings.webapp_poll_seconds,
            notice=notice_of(request.query_params.get("done")),
        )

    return await signed_in(v, build)


async def _campaign_page(
    request: Request,
    v: Visit,
    session: UserSession,
    campaign_id: str,
    *,
    status: int = 200,
    errors: list[tuple[str, str]] | None = None,
) -> Response:
    await _me(v, session)
    found = await _screens(v).campaign(session, campaign_id)
    return v.render(
        "campaign.html",
        status=status,
        active="campaigns",
        campaign=found,
        figures=CAMPAIGN_FIGURES,
        live=_campaigns_live([found]),
        poll_seconds=v.webapp.settings.webapp_poll_seconds,
        errors=errors or [],
        notice=notice_of(request.query_params.get("done")),
    )


@router.get(APP_PATH + "/campaigns/{campaign_id}")
async def campaign(request: Request, campaign_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession) -> Response:
        if not valid_id(campaign_id):
            raise PageError(404)
        return await _campaign_page(request, v, session, campaign_id)

    return await signed_in(v, build)


@router.post(APP_PATH + "/campaigns/{campaign_id}/{action}")
async def campaign_action(request: Request, campaign_id: str, action: str) -> Response:
    v = visit(request)

    async def build(session: UserSession, form: FormData) -> Response:
        if not valid_id(campaign_id) or action not in CAMPAIGN_ACTIONS:
            raise PageError(404)
        if action == "launch" and _field(form, "confirm") != "yes":
            # sending to a whole audience is not undone: the box must be ticked
            return await _campaign_page(
                request, v, session, campaign_id, status=422,
                errors=[("confirm", v.t("campaign.launch_unconfirmed"))],
            )  # fmt: skip
        outcome = await _screens(v).campaign_action(session, campaign_id, action)
        back = safe_next(_field(form, "next"), f"{APP_PATH}/campaigns/{campaign_id}")
        back = back.split("?", 1)[0]
        done = {"launch": "launched", "pause": "paused", "resume": "resumed"}[action]
        return await _after(
            request, v, session, outcome, back, done,
            lambda status, errors: _campaign_page(
                request, v, session, campaign_id, status=status, errors=errors
            ),
        )  # fmt: skip

    return await _post(request, v, build)
