"""Public routes of forms (no identity; the gateway's public prefix ``/api/v1/public/forms``):

- ``GET /{form_id}``: the page (HTML; ``?lang=en`` or Accept-Language for English);
- ``GET /{form_id}.json``: the definition, for sites that post themselves (CORS);
- ``POST /{form_id}``: a submission, ``application/x-www-form-urlencoded`` (the page: the
  answer is a page) or ``application/json`` (a site: the answer is JSON), CORS;
- ``OPTIONS /{form_id}``: the CORS preflight of a site's JSON post;
- ``GET /{form_id}/counter``: a petition's live counter (CORS);
- ``GET /static/{name}``: the page's stylesheet and script.

A refusal changes nothing and says why: on the page (shown again with the person's values
and what to fix) or as JSON (422 with field and reason, 429 with Retry-After, 413).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tribune_shared.client_info import CLIENT_IP_HEADER, ClientInfo
from tribune_shared.errors import (
    InvalidField,
    InvalidFields,
    NotFound,
    PayloadTooLarge,
    Refused,
    TooManyRequests,
)
from tribune_shared.limits import BodyTooLarge, read_body

from contacts.forms import pages
from contacts.forms.domain import (
    Availability,
    Language,
    RawSubmission,
    Refusal,
    cors_headers,
    pick_language,
    preflight_headers,
)
from contacts.forms.service import (
    PUBLIC_PREFIX,
    NotAvailable,
    PublicForm,
    PublicForms,
    RateLimited,
    SubmissionRefused,
)

router = APIRouter(prefix=PUBLIC_PREFIX, tags=["public"])

FormId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="uuid4 hex")]
Lang = Annotated[Literal["fr", "en"] | None, Query(description="page language")]
#: refusals answered with a fresh page token (the old one can no longer pass)
_NEW_TOKEN = frozenset(
    {
        Refusal.token_missing,
        Refusal.token_invalid,
        Refusal.token_expired,
        Refusal.texts_changed,
        Refusal.proof_of_work,
    }
)
_UNAVAILABLE = {
    Availability.closed: "this form is closed",
    Availability.ended: "this form has ended",
    Availability.not_yet_open: "this form is not open yet",
}
_STATIC_TYPES = {"form.css": "text/css; charset=utf-8", "form.js": "text/javascript; charset=utf-8"}


def _public(request: Request) -> PublicForms:
    return request.app.state.public_forms


def _lang(request: Request, lang: str | None) -> Language:
    return pick_language(lang, request.headers.get("accept-language"))


# ---------------------------------------------------------------- static files


@router.get("/static/{name}", include_in_schema=True)
async def static_file(
    name: Annotated[str, Path(pattern=r"^form\.(css|js)$")],
) -> Response:
    """The page's stylesheet and script (their URL carries a hash of their content)."""
    return Response(
        pages.STATIC[name],
        media_type=_STATIC_TYPES[name],
        headers={
            "Cache-Control": "public, max-age=86400",
            "X-Content-Type-Options": "nosniff",
        },
    )


# ---------------------------------------------------------------- the definition (JSON)


class ConsentChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(max_length=20)
    purpose: str = Field(max_length=40)


class JsonSubmission(BaseModel):
    """What a site posts: the token of ``.json``, the answers, the ticked boxes."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(default=None, max_length=4096, description="from the .json")
    answers: dict[str, str | int | None] = Field(default_factory=dict, max_length=50)
    custom: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=200)
    consents: list[ConsentChoice] = Field(default_factory=list, max_length=50)
    pow_nonce: str | None = Field(default=None, max_length=20)
    #: the honeypot: leave it out or empty
    website: str = Field(default="", max_length=1_000)


def _definition(svc: PublicForms, form: PublicForm, signatures: int | None) -> dict[str, Any]:
    doc = form.doc
    return {
        "id": form.id,
        "kind": doc["kind"],
        "title": doc["title"],
        "intro": doc.get("intro", ""),
        "thank_you": doc.get("thank_you", ""),
        "availability": svc.availability(form).value,
        "starts_at": doc.get("starts_at"),
        "ends_at": doc.get("ends_at"),
        "goal": doc.get("goal"),
        "signatures": signatures,
        "fields": doc["fields"],
        "custom_fields": doc.get("custom_fields", []),
        "consents": [
            {
                k: box[k]
                for k in ("channel", "purpose", "text_version", "text_sha256", "title", "body")
            }
            for box in form.boxes
        ],
        "token": svc.page_token(form),
        "min_fill_seconds": svc.settings.forms_min_fill_seconds,
        "proof_of_work": (
            {"bits": form.bits, "hash": "sha256", "input": "<token>:<pow_nonce>"}
            if form.bits
            else None
        ),
        "submit": {
            "method": "POST",
            "url": f"{PUBLIC_PREFIX}/{form.id}",
            "content_type": "application/json",
        },
    }


@router.get("/{form_id}.json")
async def form_definition(form_id: FormId, request: Request) -> JSONResponse:
    """The form for a site that renders and posts it itself: fields, the exact consent
    texts (with their SHA-256), a page token to send back, and the proof of work asked."""
    svc = _public(request)
    form = await svc.form(form_id)
    signatures = await _signatures(svc, form)
    headers = {**cors_headers(request.headers.get("origin"), form.doc["allowed_origins"])}
    headers["Cache-Control"] = "no-store"
    return JSONResponse(
        json.loads(json.dumps(_definition(svc, form, signatures), default=_iso)),
        headers=headers,
    )


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def _signatures(svc: PublicForms, form: PublicForm) -> int | None:
    return await svc.signatures(form.id) if form.doc["kind"] == "petition" else None


@router.get("/{form_id}/counter")
async def form_counter(form_id: FormId, request: Request) -> JSONResponse:
    """A petition's signatures (each person counted once) and its goal."""
    svc = _public(request)
    form = await svc.form(form_id)
    if form.doc["kind"] != "petition":
        raise NotFound("only a petition has a counter")
    headers = cors_headers(request.headers.get("origin"), form.doc["allowed_origins"])
    headers["Cache-Control"] = f"public, max-age={int(svc.settings.forms_counter_cache_seconds)}"
    return JSONResponse(
        {"signatures": await svc.signatures(form.id), "goal": form.doc.get("goal")},
        headers=headers,
    )


@router.options("/{form_id}")
async def preflight(form_id: FormId, request: Request) -> Response:
    """CORS preflight of a site posting JSON: allowed for the form's allowed origins."""
    svc = _public(request)
    form = await svc.form(form_id)
    headers = preflight_headers(request.headers.get("origin"), form.doc["allowed_origins"])
    if "Access-Control-Allow-Origin" not in headers:
        return JSONResponse(
            {"error": "forbidden", "detail": "this origin may not post to this form"},
            status_code=403,
            headers=headers,
        )
    return Response(status_code=204, headers=headers)


# ---------------------------------------------------------------- the page


def _html(body: str, form: PublicForm, status_code: int = 200, **extra: str) -> HTMLResponse:
    return HTMLResponse(
        body,
        status_code=status_code,
        headers={**pages.page_headers(form.doc["allowed_origins"]), **extra},
    )


@router.get("/{form_id}", response_class=HTMLResponse)
async def form_page(form_id: FormId, request: Request, lang: Lang = None) -> HTMLResponse:
    """The form as a page people fill in (and sites embed in an iframe)."""
    svc = _public(request)
    language = _lang(request, lang)
    try:
        form = await svc.form(form_id)
    except NotFound:
        return HTMLResponse(
            pages.not_found_page(language),
            status_code=404,
            headers=pages.page_headers(()),
        )
    state = svc.availability(form)
    if state is not Availability.open:
        return _html(pages.unavailable_page(form.doc, state, language), form)
    return _html(
        pages.form_page(
            form.doc,
            form.boxes,
            lang=language,
            token=svc.page_token(form),
            bits=form.bits,
            signatures=await _signatures(svc, form),
        ),
        form,
    )


# ---------------------------------------------------------------- a submission


def _read_page_post(body: bytes) -> tuple[RawSubmission, dict[str, str]]:
    """The page's urlencoded form (and the values to show again)."""
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=300
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidField("not a form this page sent", field="body") from None
    values: dict[str, str] = {}
    custom: dict[str, str] = {}
    ticked: set[tuple[str, str]] = set()
    for name, value in pairs:
        if name == "consent":
            channel, _, purpose = value.partition(":")
            ticked.add((channel, purpose))
        elif name.startswith("c_"):
            custom[name[2:]] = value
        else:
            values.setdefault(name, value)
    raw = RawSubmission(
        answers={k: v for k, v in values.items() if not k.startswith("_") and k != "website"},
        custom=custom,
        ticked=frozenset(ticked),
        token=values.get("_token") or None,
        pow_nonce=values.get("_pow_nonce") or None,
        honeypot=values.get("website", ""),
    )
    return raw, custom


def _read_json_post(body: bytes) -> RawSubmission:
    try:
        # pydantic's own JSON parser: one pass from bytes to the model, no dict between
        sent = JsonSubmission.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] in ("json_invalid", "model_type"):
            raise InvalidField("must be a JSON object", field="body") from None
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        raise InvalidField(error["msg"], field=where) from None
    return RawSubmission(
        answers=sent.answers,
        custom=sent.custom,
        ticked=frozenset((c.channel, c.purpose) for c in sent.consents),
        token=sent.token,
        pow_nonce=sent.pow_nonce,
        honeypot=sent.website,
    )


@router.post(
    "/{form_id}",
    status_code=202,
    responses={
        202: {"description": "accepted and queued (JSON), or the thank-you page (HTML: 200)"},
        409: {"description": "the form is closed, ended or not open yet"},
        413: {"description": "the body is larger than forms_submission_max_bytes"},
        422: {"description": "a field to fix, or an abuse rule (field and reason)"},
        429: {"description": "too many submissions (Retry-After)"},
    },
)
async def submit(form_id: FormId, request: Request, lang: Lang = None) -> Response:
    """Sign, sign up, volunteer or register. The page's form answers with a page; a
    site's JSON with JSON (202 ``{submission_id, status: "queued"}``). Accepted submissions
    are queued and applied to people by contacts' worker."""
    svc = _public(request)
    form = await svc.form(form_id)
    is_json = request.headers.get("content-type", "").startswith("application/json")
    origin = request.headers.get("origin")
    cors = cors_headers(origin, form.doc["allowed_origins"]) if is_json else {}
    language = _lang(request, lang)
    try:
        return await _submit(svc, form, request, is_json, language, cors)
    except (InvalidField, Refused, TooManyRequests, PayloadTooLarge) as error:
        if not is_json:
            raise
        return JSONResponse(
            error.body(), status_code=error.status_code, headers={**error.headers, **cors}
        )


async def _submit(
    svc: PublicForms,
    form: PublicForm,
    request: Request,
    is_json: bool,
    lang: Language,
    cors: dict[str, str],
) -> Response:
    try:
        with svc.admitted(form.id, request.headers.get(CLIENT_IP_HEADER)):
            return await _take(svc, form, request, is_json, lang, cors)
    except RateLimited as limited:
        # "form" (its bucket) and "busy" (this process's admission bound) read the same
        # to the person: the form is receiving many answers, try again in N seconds
        key = "too_many" if limited.scope == "client" else "too_many_form"
        message = pages.word(key, lang, seconds=limited.retry_after)
        if is_json:
            raise TooManyRequests(
                message, retry_after=limited.retry_after, scope=limited.scope
            ) from None
        return _html(
            pages.message_page(form.doc["title"], message, lang),
            form,
            429,
            **{"Retry-After": str(limited.retry_after)},
        )


async def _take(
    svc: PublicForms,
    form: PublicForm,
    request: Request,
    is_json: bool,
    lang: Language,
    cors: dict[str, str],
) -> Response:
    limit = svc.settings.forms_submission_max_bytes
    try:
        body = await read_body(request, limit)
    except BodyTooLarge:
        message = pages.word("too_large", lang, limit=limit)
        if is_json:
            raise PayloadTooLarge(message, limit=limit) from None
        return _html(pages.message_page(form.doc["title"], message, lang), form, 413)
    values: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    try:
        if is_json:
            raw = _read_json_post(body)
        else:
            raw, custom = _read_page_post(body)
            values = dict(raw.answers)
    except InvalidField:
        if is_json:
            raise
        message = pages.word("unreadable", lang)
        return _html(pages.message_page(form.doc["title"], message, lang), form, 422)

    def again(status_code: int, *, errors=(), notice=None, new_token=False) -> HTMLResponse:
        token = raw.token if raw.token and not new_token else svc.page_token(form)
        return _html(
            pages.form_page(
                form.doc,
                form.boxes,
                lang=lang,
                token=token,
                bits=form.bits,
                values=values,
                custom=custom,
                ticked=raw.ticked,
                errors=errors,
                notice=notice,
            ),
            form,
            status_code,
        )

    page = f"{PUBLIC_PREFIX}/{form.id}"
    try:
        accepted = await svc.submit(form, raw, ClientInfo.from_headers(request.headers), page)
    except NotAvailable as closed:
        if is_json:
            raise Refused(_UNAVAILABLE[closed.state], rule=f"form_{closed.state.value}") from None
        return _html(pages.unavailable_page(form.doc, closed.state, lang), form, 409)
    except SubmissionRefused as refused:
        message = pages.word(refused.refusal, lang)
        if is_json:
            raise InvalidField(
                pages.word(refused.refusal, "en"), field=_refusal_field(refused.refusal)
            ) from None
        return again(422, notice=message, new_token=refused.refusal in _NEW_TOKEN)
    except InvalidFields as invalid:
        if is_json:
            raise
        return again(422, errors=invalid.problems)
    signatures = await _signatures(svc, form)
    if is_json:
        return JSONResponse(
            {
                "submission_id": accepted.submission_id,
                "status": "queued",
                "repeated": accepted.repeated,
                "thank_you": form.doc.get("thank_you", ""),
                "signatures": signatures,
            },
            status_code=202,
            headers=cors,
        )
    email_box = any(
        box["channel"] == "email" and (box["channel"], box["purpose"]) in raw.ticked
        for box in form.boxes
    )
    return _html(
        pages.thank_you_page(form.doc, lang, signatures=signatures, email_box=email_box), form
    )


def _refusal_field(refusal: Refusal) -> str:
    return {
        Refusal.honeypot: "website",
        Refusal.proof_of_work: "pow_nonce",
        Refusal.too_fast: "token",
    }.get(refusal, "token")
