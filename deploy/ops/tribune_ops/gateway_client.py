"""The gateway's HTTP API as the admin commands use it (users, federations, the contacts
import): log in, call, follow an import, log out.

Why through the gateway's API and not its store or service functions: the API is where the
rules live (nobody gives a role above their own, a DPO needs a second confirmation, a
subtree's ids only, a sibling's name is refused...), where every account change and every
refusal is written to the access audit, and where a federation change publishes its events
through the outbox. Calling it means the CLI does exactly what the back office does, as the
operator's own account, and holds no database URL, no identity secret and no second copy of
a rule. The one thing the API cannot do is the first administrator: the gateway makes it at
its first start (``GATEWAY_ADMIN_EMAIL`` / ``GATEWAY_ADMIN_PASSWORD``, see the gateway's
README), and the CLI logs in as that account (or any administrator) afterwards.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: called with the bytes sent since the last call (an upload's progress bar advances)
Sent = Callable[[int], None]

UPLOAD_CHUNK = 256 * 1024
IMPORT_ENDED = frozenset({"done", "failed", "cancelled"})
#: how much of a rejected.csv is read at most to show its first rows
REJECTED_READ_MAX_BYTES = 4 * 1024 * 1024


class AdminSettings(BaseSettings):
    """Where the gateway is and whom the CLI acts as (env ``TRIBUNE_OPS_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="TRIBUNE_OPS_", extra="ignore")

    gateway_url: str = Field(
        default="http://127.0.0.1:8000",
        min_length=8,
        max_length=2000,
        description="the gateway's base URL (the one clients use)",
    )
    admin_email: str | None = Field(
        default=None, max_length=254, description="the account the admin commands act as"
    )
    admin_password: SecretStr | None = Field(
        default=None, description="its password (asked at a terminal when unset)"
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="an API key (secretary or admin) for `tribune import` instead of a login; "
        "keys never reach the gateway's own routes (users, federations)",
    )
    gateway_ca_file: str | None = Field(
        default=None, description="CA bundle the gateway's certificate is checked against"
    )
    gateway_timeout_seconds: float = Field(
        default=30, gt=0, le=600, description="how long one call to the gateway may take"
    )
    gateway_retry_max_seconds: float = Field(
        default=30,
        ge=0,
        le=600,
        description="how long a call answered 503 with Retry-After (nothing applied: a "
        "service not caught up with your last change yet, or briefly unreachable) is retried",
    )
    import_poll_seconds: float = Field(
        default=1.0, ge=0.05, le=60, description="how often a followed import is read"
    )
    import_follow_max_seconds: float = Field(
        default=24 * 3600,
        gt=0,
        le=7 * 24 * 3600,
        description="stop following an import after this long (it goes on in the worker)",
    )


class GatewayError(Exception):
    """The gateway refused a call: its status, and what its error body says."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


class GatewayUnreachable(Exception):
    """No answer from the gateway (connection refused, DNS, TLS, timeout)."""


def error_of(status: int, body: Any, fallback: str) -> GatewayError:
    """A gateway answer's error body (``{"error", "detail": str | [{field, reason}]}``)
    as one message naming the fields."""
    if not isinstance(body, Mapping):
        return GatewayError(status, fallback[:300] or f"HTTP {status}")
    detail = body.get("detail")
    field = None
    if isinstance(detail, list) and detail:
        problems = [d for d in detail if isinstance(d, Mapping)]
        field = str(problems[0].get("field")) if problems else None
        message = "; ".join(f"{d.get('field')}: {d.get('reason')}" for d in problems)
        message = message or str(detail)
    else:
        message = str(detail or body.get("error") or fallback or f"HTTP {status}")
    if body.get("existing_id"):  # a conflict names what is in the way
        message += f" (existing: {body['existing_id']})"
    return GatewayError(status, message, field)


def retry_after(answer: httpx.Response) -> float | None:
    """How long to wait before trying again, for a 503 that says when (the gateway and
    the services answer 503 only when nothing was applied); None: do not retry."""
    if answer.status_code != 503:
        return None
    try:
        return min(60.0, max(0.1, float(answer.headers.get("retry-after", ""))))
    except ValueError:
        return None


def rejected_rows(text: str, limit: int) -> list[dict[str, str]]:
    """The first ``limit`` rows of an import's rejected.csv (row number, reason, then the
    row as it was): ``{"row", "reason"}``. Its cells are made safe against formula
    injection (a leading ``'``), which is taken off again here."""
    body = text.removeprefix("\ufeff")
    if not body.strip():
        return []
    first_line = body.split("\n", 1)[0]
    delimiter = max((";", ",", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(body), delimiter=delimiter)
    next(reader, None)  # the header
    rows: list[dict[str, str]] = []
    for record in reader:
        if len(rows) >= limit:
            break
        if len(record) >= 2:
            rows.append({"row": _unsafe(record[0]), "reason": _unsafe(record[1])})
    return rows


def _unsafe(cell: str) -> str:
    return cell[1:] if cell[:2] in ("'=", "'+", "'-", "'@") else cell


class Gateway:
    """One logged-in conversation with the gateway (``async with``): a bearer token from
    a login (its session ended on exit) or an API key."""

    def __init__(
        self,
        settings: AdminSettings,
        *,
        password: str | None = None,
        use_api_key: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.password = password
        self.use_api_key = use_api_key and settings.api_key is not None
        self._headers: dict[str, str] = {}
        self._refresh: str | None = None
        self.client = httpx.AsyncClient(
            base_url=settings.gateway_url.rstrip("/"),
            timeout=settings.gateway_timeout_seconds,
            verify=settings.gateway_ca_file or True,
            transport=transport,
            trust_env=False,  # an HTTP proxy of the environment is not asked to carry tokens
        )

    async def __aenter__(self) -> Gateway:
        try:
            if self.use_api_key:
                assert self.settings.api_key is not None
                self._headers = {"X-API-Key": self.settings.api_key.get_secret_value()}
            else:
                await self._login()
        except BaseException:
            await self.client.aclose()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._refresh is not None:  # end the CLI's session: nothing left to steal
                try:
                    await self.client.post(
                        "/api/v1/auth/logout",
                        json={"refresh_token": self._refresh},
                        headers=self._headers,
                    )
                except httpx.HTTPError:
                    pass  # the session expires on its own
        finally:
            await self.client.aclose()

    async def _login(self) -> None:
        email = self.settings.admin_email
        if not email or self.password is None:
            raise GatewayError(0, "no account to log in with (TRIBUNE_OPS_ADMIN_EMAIL)")
        body = await self._call(
            "POST",
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": email, "password": self.password},
            auth=False,
        )
        self._headers = {"Authorization": f"Bearer {body['access_token']}"}
        self._refresh = body.get("refresh_token")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        sent = {**(self._headers if auth else {}), **(headers or {})}
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.settings.gateway_retry_max_seconds
        while True:
            attempt = dict(kwargs)
            if callable(attempt.get("content")):  # a body streamed anew at each attempt
                attempt["content"] = attempt["content"]()
            try:
                answer = await self.client.request(method, path, headers=sent, **attempt)
            except httpx.TimeoutException as exc:
                raise GatewayUnreachable(f"{self.settings.gateway_url}: no answer in time") from exc
            except httpx.HTTPError as exc:
                raise GatewayUnreachable(f"{self.settings.gateway_url}: {exc!r}") from exc
            wait = retry_after(answer)
            if wait is None or loop.time() + wait > give_up:
                break
            await asyncio.sleep(wait)
        if answer.status_code >= 400:
            try:
                body = answer.json()
            except ValueError:
                body = None
            raise error_of(answer.status_code, body, answer.text)
        if "json" in answer.headers.get("content-type", ""):
            return answer.json()
        return answer.text

    # ------------------------------------------------------------ users

    async def users(
        self,
        *,
        role: str | None = None,
        active: bool | None = None,
        q: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Users of the caller's subtree by email, at most ``limit`` (pages followed)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(items) < limit:
            params: dict[str, Any] = {"limit": min(1000, limit - len(items))}
            for name, value in (("role", role), ("q", q), ("cursor", cursor)):
                if value is not None:
                    params[name] = value
            if active is not None:
                params["active"] = str(active).lower()
            page = await self._call("GET", "/api/v1/users", params=params)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return items[:limit]

    async def user(self, who: str) -> dict[str, Any]:
        """A user of the caller's subtree by id, or by email (exactly, any case)."""
        if "@" not in who:
            return await self._call("GET", f"/api/v1/users/{who}")
        for user in await self.users(q=who, limit=1000):
            if user["email"].lower() == who.lower():
                return user
        raise GatewayError(404, f"no user {who!r} in your subtree", "user")

    async def create_user(
        self, email: str, password: str, role: str, federation_id: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"email": email, "password": password, "role": role}
        if federation_id:
            body["federation_id"] = federation_id
        return await self._confirmed("POST", "/api/v1/users", body)

    async def change_user(self, user_id: str, **changes: Any) -> dict[str, Any]:
        return await self._confirmed("PATCH", f"/api/v1/users/{user_id}", changes)

    async def reset_password(self, user_id: str, password: str) -> dict[str, Any]:
        return await self._confirmed(
            "POST", f"/api/v1/users/{user_id}/password", {"new_password": password}
        )

    async def _confirmed(self, method: str, path: str, body: dict[str, Any]) -> Any:
        """A change that may grant the DPO role's powers: the gateway then asks for the
        operator's own password (422 on confirm_password), given only when asked."""
        try:
            return await self._call(method, path, json=body)
        except GatewayError as exc:
            if exc.status != 422 or exc.field != "confirm_password" or self.password is None:
                raise
        return await self._call(method, path, json={**body, "confirm_password": self.password})

    # ------------------------------------------------------------ federations

    async def federations(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/api/v1/federations")

    async def federation(self, who: str) -> dict[str, Any]:
        """A federation of the caller's subtree by id, or by name when one alone has it."""
        tree = await self.federations()
        for federation in tree:
            if federation["id"] == who:
                return federation
        named = [f for f in tree if f["name"].casefold() == who.casefold()]
        if len(named) == 1:
            return named[0]
        if named:
            paths = ", ".join(f"{f['id']} ({f['path']})" for f in named)
            raise GatewayError(422, f"{len(named)} federations are named {who!r}: {paths}")
        raise GatewayError(404, f"no federation {who!r} in your subtree", "federation")

    async def create_federation(self, name: str, parent_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if parent_id:
            body["parent_id"] = parent_id
        return await self._call("POST", "/api/v1/federations", json=body)

    async def change_federation(self, federation_id: str, **changes: Any) -> dict[str, Any]:
        return await self._call("PATCH", f"/api/v1/federations/{federation_id}", json=changes)

    # ------------------------------------------------------------ imports

    async def upload(
        self, path: Path, size: int, params: Sequence[tuple[str, str]], sent: Sent
    ) -> dict[str, Any]:
        """Upload a CSV as the body of ``POST /api/v1/contacts/imports`` (streamed, with its
        length: the gateway refuses a body over its limit before it is sent)."""

        done = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal done
            if done:  # sent again (a 503 with Retry-After): the bar starts over
                sent(-done)
                done = 0
            with path.open("rb") as handle:
                while chunk := await asyncio.to_thread(handle.read, UPLOAD_CHUNK):
                    yield chunk
                    done += len(chunk)
                    sent(len(chunk))

        return await self._call(
            "POST",
            "/api/v1/contacts/imports",
            params=[*params, ("filename", path.name)],
            content=chunks,
            headers={"Content-Type": "text/csv", "Content-Length": str(size)},
        )

    async def import_job(self, job_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/api/v1/contacts/imports/{job_id}")

    async def follow(
        self, job: dict[str, Any], seen: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Read the job every ``import_poll_seconds`` until it ends (``seen`` after each
        read); the job as last read (still running if following took too long)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.settings.import_follow_max_seconds
        while job["status"] not in IMPORT_ENDED and loop.time() < give_up:
            await asyncio.sleep(self.settings.import_poll_seconds)
            job = await self.import_job(job["id"])
            seen(job)
        return job

    async def rejected(self, job: dict[str, Any], limit: int) -> list[dict[str, str]]:
        """The first ``limit`` rejected rows of a job, read from the start of its
        rejected.csv only (it may hold a hundred thousand rows)."""
        if limit <= 0 or not job["counts"].get("rejected"):
            return []
        link = job.get("links", {}).get("rejected_csv") or (
            f"/api/v1/contacts/imports/{job['id']}/rejected.csv"
        )
        head = bytearray()
        cut = False  # stopped before the end: the last line may be partial
        try:
            async with self.client.stream("GET", link, headers=self._headers) as answer:
                if answer.status_code >= 400:
                    await answer.aread()
                    raise error_of(answer.status_code, None, answer.text)
                async for chunk in answer.aiter_bytes():
                    head += chunk
                    # a row holds at most one line per record, but quoted cells may hold
                    # line breaks: read on until the rows asked for are surely complete
                    if head.count(b"\n") > limit + 1 or len(head) > REJECTED_READ_MAX_BYTES:
                        cut = True
                        break
        except httpx.HTTPError as exc:
            raise GatewayUnreachable(f"{self.settings.gateway_url}: {exc!r}") from exc
        text = head.decode("utf-8", errors="replace")
        if cut:
            text = text.rpartition("\n")[0]
        return rejected_rows(text, limit)
