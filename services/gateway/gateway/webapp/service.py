"""What each page of the web app needs, fetched from the gateway's API as the user.

Nothing here decides who may see what: a part the API refuses (403) is left out of the
page, an object it does not find (404, also for another federation's) is the 404 page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from gateway.webapp.client import ApiAnswer, ApiClient, Caller, StreamAnswer
from gateway.webapp.security import SessionTokens

#: import jobs still at work (the dashboard shows them)
ACTIVE_IMPORTS = ("queued", "running")
#: campaigns on the dashboard (the latest first)
DASHBOARD_CAMPAIGNS = 5


class SignedOut(Exception):
    """The session is over (logged out, expired, revoked): the user logs in again."""


class PageError(Exception):
    """The API refused what the page asked: the page shows the error of that status."""

    def __init__(self, status: int, fields: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(status)
        self.status = status
        self.fields = list(fields)


@dataclass(frozen=True)
class LoginResult:
    tokens: SessionTokens | None
    #: why it failed: bad_credentials, rate_limited, invalid, unavailable
    error: str | None = None
    retry_after: int | None = None


@dataclass
class UserSession:
    """The browser's API tokens for one page; ``renewed`` when a refresh replaced them
    (the page then sends the new cookie)."""

    tokens: SessionTokens
    caller: Caller
    renewed: bool = False


@dataclass(frozen=True)
class Dashboard:
    me: dict[str, Any]
    federations: list[dict[str, Any]]
    federation_id: str
    #: the live figures (memberships.live); None when the role may not read them
    figures: dict[str, Any] | None
    contacts_count: int | None
    imports: list[dict[str, Any]] | None
    campaigns: list[dict[str, Any]] | None
    #: consent rates per channel and purpose (consent), message totals per channel
    #: (messaging); None when the role may not read them or the service does not answer
    consents: dict[str, Any] | None = None
    messages: dict[str, Any] | None = None


@dataclass(frozen=True)
class SearchFilters:
    q: str | None = None
    tag: str | None = None
    postcode: str | None = None
    commune_insee: str | None = None
    has_email: bool = False
    has_phone: bool = False

    def params(self) -> dict[str, str]:
        found = {
            "q": self.q,
            "tag": self.tag,
            "postcode": self.postcode,
            "commune_insee": self.commune_insee,
            "has_email": "true" if self.has_email else None,
            "has_phone": "true" if self.has_phone else None,
        }
        return {k: v for k, v in found.items() if v}


@dataclass(frozen=True)
class SearchPage:
    items: list[dict[str, Any]]
    next_cursor: str | None
    errors: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Person:
    view: dict[str, Any]
    payments: list[dict[str, Any]] | None


def _fields(answer: ApiAnswer) -> list[tuple[str, str]]:
    """(field, reason) pairs of a 422."""
    body = answer.body if isinstance(answer.body, dict) else {}
    found = []
    for item in body.get("detail") or []:
        if isinstance(item, dict):
            found.append((str(item.get("field", "")), str(item.get("reason", ""))))
    return found


class WebappService:
    def __init__(self, api: ApiClient, page_size: int, *, messages_days: int = 30) -> None:
        self.api = api
        self.page_size = page_size
        self.messages_days = messages_days

    def messages_since(self) -> datetime:
        """Where the dashboard's message totals start (``webapp_messages_days`` ago)."""
        return datetime.now(UTC) - timedelta(days=self.messages_days)

    # ------------------------------------------------------------ session
    async def login(self, caller: Caller, email: str, password: str) -> LoginResult:
        if not email or not password:
            return LoginResult(None, "invalid")
        answer = await self.api.request(
            caller,
            "POST",
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": email, "password": password},
        )
        if answer.ok and isinstance(answer.body, dict):
            return LoginResult(
                SessionTokens(answer.body["access_token"], answer.body.get("refresh_token"))
            )
        if answer.status == 429:
            retry = answer.headers.get("retry-after", "")
            return LoginResult(None, "rate_limited", int(retry) if retry.isdigit() else 60)
        if answer.status in (401, 403):
            return LoginResult(None, "bad_credentials")
        if answer.status == 422:
            return LoginResult(None, "invalid")
        return LoginResult(None, "unavailable")

    async def logout(self, session: UserSession) -> None:
        """Ends the session in the gateway (its refresh and access tokens stop working);
        an already ended session is fine."""
        refresh = session.tokens.refresh_token
        body = {"refresh_token": refresh} if refresh else None
        try:
            await self.call(session, "POST", "/api/v1/auth/logout", json=body)
        except SignedOut:
            pass

    async def _refresh(self, session: UserSession) -> bool:
        if not session.tokens.refresh_token:
            return False
        answer = await self.api.request(
            session.caller,
            "POST",
            "/api/v1/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": session.tokens.refresh_token},
        )
        if not answer.ok or not isinstance(answer.body, dict):
            return False
        session.tokens = SessionTokens(
            answer.body["access_token"], answer.body.get("refresh_token")
        )
        session.renewed = True
        return True

    async def call(
        self,
        session: UserSession,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | Sequence[str]] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, IO[bytes], str]] | None = None,
    ) -> ApiAnswer:
        """One API call as the user; an expired access token is renewed once with the
        session's refresh token (rotated: the page sends the new cookie)."""
        answer = await self._as_user(session, method, path, params, json, data, files)
        if answer.status == 401:
            if not await self._refresh(session):
                raise SignedOut
            for _, file, _ in (files or {}).values():
                file.seek(0)  # the first try read it
            answer = await self._as_user(session, method, path, params, json, data, files)
            if answer.status == 401:
                raise SignedOut
        return answer

    async def _as_user(
        self,
        session: UserSession,
        method: str,
        path: str,
        params: Mapping[str, str | Sequence[str]] | None,
        json: Any,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, IO[bytes], str]] | None = None,
    ) -> ApiAnswer:
        return await self.api.request(
            session.caller,
            method,
            path,
            token=session.tokens.access_token,
            params=params,
            json=json,
            data=data,
            files=files,
        )

    async def stream(
        self,
        session: UserSession,
        path: str,
        params: Mapping[str, str] | None,
        last_event_id: str | None,
        accept: str = "text/event-stream",
    ) -> StreamAnswer:
        opened = await self.api.stream(
            session.caller,
            path,
            token=session.tokens.access_token,
            params=params,
            last_event_id=last_event_id,
            accept=accept,
        )
        if opened.status != 401:
            return opened
        await _drain(opened)
        if not await self._refresh(session):
            raise SignedOut
        return await self.api.stream(
            session.caller,
            path,
            token=session.tokens.access_token,
            params=params,
            last_event_id=last_event_id,
            accept=accept,
        )

    async def me(self, session: UserSession) -> dict[str, Any]:
        answer = await self.call(session, "GET", "/api/v1/me")
        if not answer.ok:
            raise PageError(answer.status)
        return answer.body

    # ------------------------------------------------------------ pages
    async def dashboard(self, session: UserSession, federation_id: str | None) -> Dashboard:
        me = await self.me(session)
        chosen = federation_id or me["federation_id"]
        params = {"federation_id": chosen}
        federations, figures, count, imports, campaigns, consents, messages = await asyncio.gather(
            self.call(session, "GET", "/api/v1/federations"),
            self.call(session, "GET", "/api/v1/live/memberships", params=params),
            self.call(
                session,
                "POST",
                "/api/v1/segments/preview",
                json={"filter": {"op": "federation", "federation_id": chosen}, "size": 0},
            ),
            self.call(session, "GET", "/api/v1/contacts/imports", params={"limit": "20"}),
            self.call(
                session,
                "GET",
                "/api/v1/campaigns",
                params={"limit": str(DASHBOARD_CAMPAIGNS)},
            ),
            self.call(session, "GET", "/api/v1/consents/rates", params=params),
            self.call(
                session,
                "GET",
                "/api/v1/messages/totals",
                params={**params, "since": self.messages_since().isoformat()},
            ),
        )
        if figures.status == 404 and federation_id is not None:
            # not a federation of the caller's subtree (or not known yet): as the API says
            raise PageError(404)
        subtree = federations.body if federations.ok and isinstance(federations.body, list) else []
        return Dashboard(
            me=me,
            federations=subtree,
            federation_id=chosen,
            figures=figures.body if figures.ok else None,
            contacts_count=count.body.get("count") if count.ok else None,
            imports=[
                job
                for job in imports.body.get("items", [])
                if job.get("status") in ACTIVE_IMPORTS
                and _in_subtree(job.get("federation_id"), chosen, subtree)
            ]
            if imports.ok
            else None,
            campaigns=[
                c
                for c in campaigns.body.get("items", [])
                if _in_subtree(c.get("federation_id"), chosen, subtree)
            ]
            if campaigns.ok
            else None,
            consents=consents.body if consents.ok else None,
            messages=messages.body if messages.ok else None,
        )

    async def search(
        self, session: UserSession, filters: SearchFilters, cursor: str | None
    ) -> SearchPage:
        params = {**filters.params(), "limit": str(self.page_size)}
        if cursor:
            params["cursor"] = cursor
        answer = await self.call(session, "GET", "/api/v1/contacts", params=params)
        if answer.status == 422:
            return SearchPage([], None, _fields(answer))
        if not answer.ok:
            raise PageError(answer.status)
        return SearchPage(answer.body.get("items", []), answer.body.get("next_cursor"))

    async def person(self, session: UserSession, contact_id: str) -> Person:
        view, payments = await asyncio.gather(
            self.call(session, "GET", f"/api/v1/people/{contact_id}"),
            self.call(session, "GET", "/api/v1/payments", params={"contact_id": contact_id}),
        )
        if not view.ok:
            raise PageError(view.status)
        if not isinstance(view.body, dict) or view.body.get("contact") is None:
            raise PageError(503)  # contacts did not answer: nothing to show the rest against
        return Person(
            view=view.body,
            payments=payments.body.get("items") if payments.ok else None,
        )


def _in_subtree(federation_id: str | None, chosen: str, subtree: list[dict[str, Any]]) -> bool:
    """Whether a job of ``federation_id`` belongs under the federation shown (the API
    already gave only the caller's subtree; this narrows it to the one chosen)."""
    paths = {f["id"]: f["path"] for f in subtree}
    if federation_id is None or chosen not in paths:
        return False
    return paths.get(federation_id, "").startswith(paths[chosen])


async def _drain(answer: StreamAnswer) -> None:
    async for _ in answer.body:
        pass
