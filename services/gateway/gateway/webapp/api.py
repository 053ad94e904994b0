"""The web app's pages (thin: read the form or query, call the use case, render).

Pages are not API routes: they are left out of the OpenAPI document (so the
authorization matrix, which reads it, sees the API alone); every one of them reaches data
only through the API (gateway.webapp.client), as the logged-in user.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData
from starlette.staticfiles import StaticFiles
from tribune_shared.app import ID_PATTERN
from tribune_shared.logging import get_logger

from gateway.settings import GatewaySettings
from gateway.webapp.client import ApiClient, Caller
from gateway.webapp.i18n import (
    LANG_NAMES,
    LANGS,
    Lang,
    format_cents,
    format_date,
    format_int,
    format_percent,
    negotiate,
    translator,
)
from gateway.webapp.screens import MENU, notice_of
from gateway.webapp.screens_service import ScreensService
from gateway.webapp.security import (
    APP_PATH,
    CSRF_FIELD,
    KEY_COOKIE,
    LANG_COOKIE,
    LANG_COOKIE_SECONDS,
    PAGE_HEADERS,
    SESSION_COOKIE,
    CookieRules,
    CsrfTokens,
    decode_session,
    encode_session,
    new_form_key,
    safe_next,
    valid_form_key,
)
from gateway.webapp.service import (
    PageError,
    SearchFilters,
    SignedOut,
    UserSession,
    WebappService,
)

log = get_logger(__name__)

HERE = Path(__file__).parent
STATIC_PATH = APP_PATH + "/static"
_ID = re.compile(ID_PATTERN)
#: what a search field may hold before the API is even asked (it has its own limits)
MAX_QUERY_CHARS = 200
#: the error pages a status maps to (anything else: the 503 one)
ERROR_PAGES = (400, 403, 404, 503)

router = APIRouter(include_in_schema=False)


class Webapp:
    """Everything the pages share: the templates, the use cases, the cookie rules."""

    def __init__(self, settings: GatewaySettings, app: FastAPI) -> None:
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
        )
        self.settings = settings
        self.csrf = CsrfTokens(settings.jwt_secret, settings.webapp_csrf_ttl_seconds)
        self.cookies = CookieRules(secure=settings.webapp_cookie_secure)
        self.service = WebappService(
            ApiClient(app, settings.upstream_timeout_seconds),
            settings.webapp_page_size,
            messages_days=settings.webapp_messages_days,
        )
        self.screens = ScreensService(
            self.service,
            rows_shown=settings.webapp_import_rows_shown,
            parallel_calls=settings.webapp_parallel_calls,
            sample_size=settings.webapp_segment_sample,
        )


def install_webapp(app: FastAPI, settings: GatewaySettings) -> None:
    """The pages at /app (and / sending there) and their static files."""
    # the work screens' routes use this module's Visit: imported here, not at the top
    from gateway.webapp.duplicates_api import router as duplicates_router
    from gateway.webapp.screens_api import router as screens_router

    app.state.webapp = Webapp(settings, app)
    app.include_router(router)
    app.include_router(screens_router)
    app.include_router(duplicates_router)
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="webapp-static")


@dataclass
class Visit:
    """One page request: the browser's language, form key and session."""

    request: Request
    webapp: Webapp
    lang: Lang
    form_key: str
    new_key: bool
    session: UserSession | None
    #: cookies to set or clear on the answer
    set_session: str | None = None
    clear_session: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def t(self) -> Callable[..., str]:
        return translator(self.lang)

    def csrf_token(self) -> str:
        return self.webapp.csrf.sign(self.form_key)

    def checked(self, form: FormData) -> bool:
        token = form.get(CSRF_FIELD)
        cookie_key = self.request.cookies.get(KEY_COOKIE)
        return isinstance(token, str) and self.webapp.csrf.check(token, cookie_key)

    def finish(self, response: Response) -> Response:
        """The page's headers and the cookies this visit changed."""
        for name, value in PAGE_HEADERS.items():
            response.headers[name] = value
        cookies = self.webapp.cookies
        if self.new_key:
            cookies.set(response, KEY_COOKIE, self.form_key)
        if self.clear_session:
            cookies.clear(response, SESSION_COOKIE)
        elif self.set_session is not None:
            cookies.set(response, SESSION_COOKIE, self.set_session)
        elif self.session is not None and self.session.renewed:
            cookies.set(response, SESSION_COOKIE, encode_session(self.session.tokens))
        return response

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        other: Lang = "en" if self.lang == "fr" else "fr"
        here = self.request.url.path + (
            "?" + self.request.url.query if self.request.url.query else ""
        )
        html = self.webapp.templates.get_template(template).render(
            t=self.t,
            lang=self.lang,
            other_lang=other,
            other_lang_name=LANG_NAMES[other],
            here=here,
            csrf_field=CSRF_FIELD,
            csrf_token=self.csrf_token(),
            static=STATIC_PATH,
            fmt_int=lambda v: format_int(int(v or 0), self.lang),
            fmt_cents=lambda v: format_cents(int(v or 0), self.lang),
            fmt_percent=lambda v: format_percent(float(v or 0), self.lang),
            fmt_date=lambda v: format_date(v, self.lang),
            me=self.extra.get("me"),
            menu=MENU.get(str((self.extra.get("me") or {}).get("role")), ()),
            **context,
        )
        return self.finish(HTMLResponse(html, status_code=status))

    def error(self, status: int) -> Response:
        shown = status if status in ERROR_PAGES else 503
        return self.render("error.html", status=shown, status_code=shown)

    def redirect(self, target: str) -> Response:
        return self.finish(RedirectResponse(target, status_code=303))


def valid_id(value: str) -> bool:
    """An id the API could know (anything else is the 404 page without asking it)."""
    return len(value) <= 64 and bool(_ID.match(value))


def visit(request: Request) -> Visit:
    webapp: Webapp = request.app.state.webapp
    lang = negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
    key = request.cookies.get(KEY_COOKIE)
    new_key = not valid_form_key(key)
    tokens = decode_session(request.cookies.get(SESSION_COOKIE))
    client = request.client
    caller = Caller(
        client=(client.host, client.port) if client else ("127.0.0.1", 0),
        user_agent=request.headers.get("user-agent"),
        scheme=request.url.scheme,
    )
    return Visit(
        request=request,
        webapp=webapp,
        lang=lang,
        form_key=new_form_key() if new_key else str(key),
        new_key=new_key,
        session=UserSession(tokens, caller) if tokens else None,
    )


def _login_page(v: Visit, target: str) -> str:
    return f"{APP_PATH}/login?next=" + _quote(target)


def _quote(value: str) -> str:
    return quote(value, safe="")


async def signed_in(v: Visit, build: Callable[[UserSession], Awaitable[Response]]) -> Response:
    """A page for logged-in users: to the login page without a session, or once it ended
    (the cookie is cleared); the API's refusals as error pages."""
    here = v.request.url.path + ("?" + v.request.url.query if v.request.url.query else "")
    if v.session is None:
        return v.redirect(_login_page(v, here))
    try:
        return await build(v.session)
    except SignedOut:
        v.clear_session = True
        return v.redirect(_login_page(v, here) + "&expired=1")
    except PageError as exc:
        return v.error(exc.status)


# ---------------------------------------------------------------- session pages


@router.get("/")
async def root() -> Response:
    return RedirectResponse(APP_PATH, status_code=307)


@router.get(APP_PATH + "/login")
async def login_form(request: Request) -> Response:
    v = visit(request)
    notice = None
    if request.query_params.get("expired"):
        notice = "login.expired"
    elif request.query_params.get("out"):
        notice = "login.logged_out"
    return v.render(
        "login.html",
        error=None,
        notice=notice,
        email="",
        next=safe_next(request.query_params.get("next")),
    )


@router.post(APP_PATH + "/login")
async def login(request: Request) -> Response:
    v = visit(request)
    form = await request.form()
    email = str(form.get("email") or "").strip()[:254]
    password = str(form.get("password") or "")[:1024]
    target = safe_next(str(form.get("next") or ""))
    if not v.checked(form):
        v.new_key = True
        v.form_key = new_form_key()
        return v.render(
            "login.html",
            status=400,
            error=("error.400.text", {}),
            notice=None,
            email=email,
            next=target,
        )
    result = await v.webapp.service.login(
        Caller(
            client=(request.client.host, request.client.port) if request.client else ("", 0),
            user_agent=request.headers.get("user-agent"),
            scheme=request.url.scheme,
        ),
        email,
        password,
    )
    if result.tokens is None:
        status = {"rate_limited": 429, "invalid": 422, "unavailable": 503}.get(
            result.error or "", 401
        )
        message = ("login." + (result.error or "bad_credentials"), {"seconds": result.retry_after})
        response = v.render(
            "login.html", status=status, error=message, notice=None, email=email, next=target
        )
        if result.retry_after:
            response.headers["Retry-After"] = str(result.retry_after)
        return response
    # a new form key at each login: a key planted before it is worth nothing after
    v.form_key, v.new_key = new_form_key(), True
    v.set_session = encode_session(result.tokens)
    return v.redirect(target)


@router.post(APP_PATH + "/logout")
async def logout(request: Request) -> Response:
    v = visit(request)
    form = await request.form()
    if not v.checked(form):
        return v.error(400)
    if v.session is not None:
        await v.webapp.service.logout(v.session)
    v.clear_session = True
    v.form_key, v.new_key = new_form_key(), True
    return v.redirect(APP_PATH + "/login?out=1")


@router.get(APP_PATH + "/lang/{lang}")
async def switch_language(request: Request, lang: str) -> Response:
    v = visit(request)
    target = safe_next(request.query_params.get("next"))
    response = v.redirect(target)
    if lang in LANGS:
        v.webapp.cookies.set(response, LANG_COOKIE, lang, max_age=LANG_COOKIE_SECONDS)
    return response


# ---------------------------------------------------------------- pages


def _param(request: Request, name: str) -> str | None:
    value = (request.query_params.get(name) or "").strip()
    return value[:MAX_QUERY_CHARS] or None


@router.get(APP_PATH)
async def dashboard(request: Request) -> Response:
    v = visit(request)
    federation_id = _param(request, "federation_id")
    if federation_id is not None and not _ID.match(federation_id):
        return v.error(404)

    async def build(session: UserSession) -> Response:
        board = await v.webapp.service.dashboard(session, federation_id)
        v.extra["me"] = board.me
        return v.render(
            "dashboard.html", board=board, messages_days=v.webapp.settings.webapp_messages_days
        )

    return await signed_in(v, build)


@router.get(APP_PATH + "/contacts")
async def contacts(request: Request) -> Response:
    v = visit(request)
    filters = SearchFilters(
        q=_param(request, "q"),
        tag=_param(request, "tag"),
        postcode=_param(request, "postcode"),
        commune_insee=_param(request, "commune_insee"),
        has_email=request.query_params.get("has_email") == "on",
        has_phone=request.query_params.get("has_phone") == "on",
    )
    cursor = _param(request, "cursor")

    async def build(session: UserSession) -> Response:
        v.extra["me"] = await v.webapp.service.me(session)
        page = await v.webapp.service.search(session, filters, cursor)
        next_query = None
        if page.next_cursor:
            query = {k: value for k, value in request.query_params.items() if k != "cursor"}
            next_query = urlencode({**query, "cursor": page.next_cursor})
        searched = bool(filters.params()) or cursor is not None
        return v.render(
            "contacts.html",
            status=422 if page.errors else 200,
            filters=filters,
            page=page,
            searched=searched,
            next_query=next_query,
            cursor=cursor,
        )

    return await signed_in(v, build)


@router.get(APP_PATH + "/people/{contact_id}")
async def person(request: Request, contact_id: str) -> Response:
    v = visit(request)

    async def build(session: UserSession) -> Response:
        if not _ID.match(contact_id) or len(contact_id) > 64:
            raise PageError(404)
        v.extra["me"] = await v.webapp.service.me(session)
        found = await v.webapp.service.person(session, contact_id)
        return v.render(
            "person.html",
            person=found.view,
            payments=found.payments,
            notice=notice_of(request.query_params.get("done")),
        )

    return await signed_in(v, build)


async def _stream(request: Request, api_path: str, names: tuple[str, ...]) -> Response:
    """An API Server-Sent Events stream for the page's EventSource (which cannot send a
    bearer token), opened as the cookie's user with the query parameters ``names``."""
    v = visit(request)
    if v.session is None:
        return v.finish(Response(status_code=401))
    params = {name: value for name in names if (value := _param(request, name))}
    try:
        opened = await v.webapp.service.stream(
            v.session, api_path, params, request.headers.get("last-event-id")
        )
    except SignedOut:
        v.clear_session = True
        return v.finish(Response(status_code=401))
    if opened.status != 200:
        async for _ in opened.body:
            pass
        return v.finish(Response(status_code=opened.status))
    response = StreamingResponse(
        opened.body,
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )
    return v.finish(response)


@router.get(APP_PATH + "/live/memberships")
async def live_memberships(request: Request) -> Response:
    """The live figures' stream (members, dues, donations) for the dashboard."""
    return await _stream(request, "/api/v1/live/memberships/stream", ("federation_id",))


@router.get(APP_PATH + "/live/events")
async def live_events(request: Request) -> Response:
    """The live events of the user's subtree (gateway.live_events) for the dashboard: the
    sections an event changes are fetched again."""
    return await _stream(request, "/api/v1/events/stream", ("federation_id",))
