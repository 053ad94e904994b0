"""HTTP routes of the gateway (thin: validate, call the service or forward)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response, status
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, Field
from tribune_shared.app import ID_PATTERN, IdPath
from tribune_shared.auth import Identity, Role
from tribune_shared.errors import (
    DomainError,
    Forbidden,
    InvalidField,
    ServiceUnavailable,
    Unauthorized,
)
from tribune_shared.logging import get_logger

from gateway.api_keys.domain import API_KEY_HEADER, KEY_PREFIX
from gateway.api_keys.service import ApiKeyService
from gateway.audit import AccessAction, AccessEntry
from gateway.consistency import USER_STATE_KEY
from gateway.proxy import Proxy
from gateway.routing import ROUTES, Route
from gateway.security import AccessToken
from gateway.service import BEARER_CHALLENGE, AccessAudit, GatewayService, identity_of
from gateway.sessions.domain import EndReason
from gateway.sessions.service import RefreshTokenReused

log = get_logger(__name__)

TOKEN_URL = "/api/v1/auth/token"
oauth2 = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


# Coroutines, trivial as they are: FastAPI runs a plain function dependency in a worker
# thread, a thread hand-off per dependency and request (measured: ~10% of the gateway's
# CPU per forwarded request).


async def service(request: Request) -> GatewayService:
    return request.app.state.gateway_service


async def proxy(request: Request) -> Proxy:
    return request.app.state.proxy


async def access_audit(request: Request) -> AccessAudit:
    return request.app.state.access_audit


Service = Annotated[GatewayService, Depends(service)]
Forwarder = Annotated[Proxy, Depends(proxy)]
Audit = Annotated[AccessAudit, Depends(access_audit)]


async def client_identity(
    request: Request, svc: Service, token: Annotated[str | None, Depends(oauth2)]
) -> Identity:
    """The authenticated client, or 401: a user's Bearer access token, or an
    integration's API key (``X-API-Key``, or ``Authorization: Bearer trk_...``), which
    acts as the identity it was made for (gateway.api_keys) on the routes it may call."""
    key = request.headers.get(API_KEY_HEADER)
    if key is None and token is not None and token.startswith(KEY_PREFIX):
        key = token
    settings = request.app.state.settings
    if key is not None:
        keys: ApiKeyService = request.app.state.api_keys
        identity = await keys.identity_for_key(key, request.scope["path"])
        limit = settings.rate_limit_api_key_requests
    elif not token:
        raise Unauthorized("not authenticated", headers=BEARER_CHALLENGE)
    else:
        identity = await svc.identity_for_token(token)
        limit = settings.rate_limit_user_requests
    # (an app assembled without one, as some unit tests do, has no limits)
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None and settings.rate_limit_enabled:
        limiter.check(identity.user_id, limit)
    # for gateway.consistency.RememberTokens: whose token the answer carries
    setattr(request.state, USER_STATE_KEY, identity.user_id)
    return identity


ClientIdentity = Annotated[Identity, Depends(client_identity)]


async def admin(identity: ClientIdentity) -> Identity:
    if identity.role is not Role.admin:
        raise Forbidden(f"role {identity.role} may not do this")
    return identity


async def account_manager(identity: ClientIdentity) -> Identity:
    """Administrators manage accounts; a DPO may grant the DPO role (the service checks
    each change: gateway.domain.check_account_change)."""
    if identity.role not in (Role.admin, Role.dpo):
        raise Forbidden(f"role {identity.role} may not manage users")
    return identity


Admin = Annotated[Identity, Depends(admin)]
AccountManager = Annotated[Identity, Depends(account_manager)]
#: what an access audit entry says about a user account a call changed: (its id, what
#: changed); given the call's result, or None when the call was refused
AccountChange = Callable[[Any], tuple[str | None, dict[str, str]]]
FederationId = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
ContactId = IdPath
OptionalId = Annotated[str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)]


async def audited(
    request: Request,
    identity: Identity,
    audit: AccessAudit,
    call: Callable[[], Awaitable[Any]],
    subject: Callable[[Any], str | None] | None = None,
    *,
    account: AccountChange | None = None,
    ok_status: int = status.HTTP_200_OK,
) -> Any:
    """Answer the call and leave its access audit entry (gateway.audit); ``subject`` names
    the person from the answer when the path does not, ``account`` the user account it
    changed and how. A read whose entry cannot be written is refused (503): nobody sees
    personal data unaudited; a write already happened, so its answer is given and the
    failure logged."""
    try:
        result = await call()
    except DomainError as exc:
        target, changes = account(None) if account is not None else (None, None)
        await _record(
            request,
            identity,
            audit,
            exc.status_code,
            refuse=False,
            target_user_id=target,
            changes=changes,
        )
        raise
    code = result.status_code if isinstance(result, Response) else ok_status
    refuse = request.method in ("GET", "HEAD")
    about = subject(result) if subject is not None else None
    target, changes = account(result) if account is not None else (None, None)
    try:
        await _record(
            request,
            identity,
            audit,
            code,
            refuse=refuse,
            contact_id=about,
            target_user_id=target,
            changes=changes,
        )
    except ServiceUnavailable:
        if isinstance(result, Response) and result.background is not None:
            await result.background()  # release the upstream answer
        raise
    return result


async def _record(
    request: Request,
    identity: Identity,
    audit: AccessAudit,
    code: int,
    *,
    refuse: bool,
    contact_id: str | None = None,
    target_user_id: str | None = None,
    changes: dict[str, str] | None = None,
) -> None:
    try:
        await audit.record(
            identity,
            request.method,
            request.url.path,
            request.query_params,
            code,
            client_ip(request),
            request.headers.get("user-agent"),
            contact_id=contact_id,
            target_user_id=target_user_id,
            changes=changes,
            # a read waits for its entry (refused without one); a write is answered anyway
            wait=refuse,
        )
    except Exception as exc:
        log.error("audit.write_failed", path=request.url.path, error=repr(exc))
        if refuse:
            raise ServiceUnavailable("the access audit is unavailable; try again later") from exc


def client_ip(request: Request) -> str | None:
    """The client's address: the direct peer, or what a trusted proxy says it forwarded
    for (gateway.main.install_door sets it before anything reads it)."""
    return request.client.host if request.client else None


# ---------------------------------------------------------------- models


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the token expires")
    refresh_token: str | None = Field(
        default=None,
        description="exchange it (grant_type=refresh_token) for a new access token and a new "
        "refresh token; each works once: a used one presented again ends the session",
    )
    refresh_expires_in: int | None = Field(
        default=None, description="seconds until the refresh token expires unused"
    )

    @classmethod
    def of(cls, issued: AccessToken) -> TokenResponse:
        return cls(
            access_token=issued.token,
            expires_in=issued.expires_in,
            refresh_token=issued.refresh_token,
            refresh_expires_in=issued.refresh_expires_in,
        )


class UserOut(BaseModel):
    id: str
    email: str
    role: Role
    federation_id: str
    federation_path: str
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, doc: dict[str, Any]) -> UserOut:
        return cls.model_validate({**doc, "id": doc["_id"]})


class MeOut(UserOut):
    federation_name: str | None


class NewFederation(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    parent_id: FederationId | None = Field(
        default=None, description="defaults to the caller's federation"
    )


class FederationOut(BaseModel):
    id: str
    name: str
    parent_id: str | None
    path: str
    created_at: datetime

    @classmethod
    def of(cls, doc: dict[str, Any]) -> FederationOut:
        return cls.model_validate({**doc, "id": doc["_id"]})


Password = Annotated[str, Field(min_length=1, max_length=1024)]
ConfirmPassword = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=1024,
        description="your own current password: required for a change that grants the DPO "
        "role (creating or promoting a DPO, reactivating one, setting a DPO's password)",
    ),
]


class NewUser(BaseModel):
    email: str = Field(min_length=3, max_length=254)
    password: Password
    role: Role
    federation_id: FederationId | None = Field(
        default=None, description="defaults to the caller's federation"
    )
    confirm_password: ConfirmPassword = None


class UserChange(BaseModel):
    active: bool | None = Field(
        default=None, description="false: the user is refused at once and their sessions end"
    )
    role: Role | None = Field(default=None, description="never above the caller's own")
    federation_id: FederationId | None = Field(
        default=None, description="move the user to this federation of the caller's subtree"
    )
    confirm_password: ConfirmPassword = None


class PasswordReset(BaseModel):
    new_password: Password
    confirm_password: ConfirmPassword = None


class PasswordChange(BaseModel):
    current_password: Password
    new_password: Password


class PersonView(BaseModel):
    contact: dict[str, Any] | None
    consents: dict[str, Any] | list[Any] | None
    memberships: dict[str, Any] | list[Any] | None
    messages: dict[str, Any] | list[Any] | None
    unavailable: list[str] = Field(description="services that could not answer")


# ---------------------------------------------------------------- gateway's own routes

router = APIRouter(prefix="/api/v1")


@router.post(TOKEN_URL.removeprefix("/api/v1"), tags=["auth"])
async def token(
    request: Request,
    svc: Service,
    audit: Audit,
    grant_type: Annotated[Literal["password", "refresh_token"], Form()] = "password",
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    refresh_token: Annotated[str | None, Form()] = None,
) -> TokenResponse:
    """OAuth2 password flow (``grant_type=password``, the default): ``username`` is the
    email (at most 254 characters); attempts are limited per email and per client network
    (429 with Retry-After). Opens a session: the answer holds a refresh token too.

    OAuth2 refresh (``grant_type=refresh_token``): a new access token and a new refresh
    token of the same session; the one presented is retired. A retired refresh token
    presented again revokes its whole session (it was copied: whoever holds it now logs
    in again) and is recorded in the access audit."""
    if grant_type == "refresh_token":
        if not refresh_token:
            raise InvalidField("required for grant_type refresh_token", field="refresh_token")
        try:
            return TokenResponse.of(await svc.refresh(refresh_token))
        except RefreshTokenReused as exc:
            await _record_reuse(request, svc, audit, exc)
            raise
    if username is None:
        raise InvalidField("required", field="username")
    if password is None:
        raise InvalidField("required", field="password")
    return TokenResponse.of(await svc.login(username, password, client_ip(request)))


async def _record_reuse(
    request: Request, svc: GatewayService, audit: AccessAudit, exc: RefreshTokenReused
) -> None:
    """The access audit entry of a replayed refresh token: the account whose session it
    revoked (the presenter is unknown: it may be the thief)."""
    user = await svc.data.find_user(exc.user_id)
    if user is None:
        return
    await _record(
        request,
        identity_of(user),
        audit,
        exc.status_code,
        refuse=False,
        target_user_id=exc.user_id,
        changes={"session": EndReason.reuse.value, "session_id": exc.session_id},
    )


@router.get("/me", tags=["auth"])
async def me(identity: ClientIdentity, svc: Service) -> MeOut:
    doc = await svc.me(identity)
    return MeOut.model_validate({**doc, "id": doc["_id"]})


@router.post("/me/password", tags=["auth"])
async def change_password(
    request: Request, body: PasswordChange, identity: ClientIdentity, svc: Service, audit: Audit
) -> TokenResponse:
    """Change your own password, given the current one (403 if it is not right; tries
    count as logins). Every token issued before stops working: use the one returned."""
    issued = await audited(
        request,
        identity,
        audit,
        lambda: svc.change_password(
            identity, body.current_password, body.new_password, client_ip(request)
        ),
        account=lambda _: (identity.user_id, {"password": "changed"}),
    )
    return TokenResponse.of(issued)


@router.post("/federations", status_code=status.HTTP_201_CREATED, tags=["federations"])
async def create_federation(body: NewFederation, identity: Admin, svc: Service) -> FederationOut:
    return FederationOut.of(await svc.create_federation(identity, body.name, body.parent_id))


@router.get("/federations", tags=["federations"])
async def list_federations(identity: ClientIdentity, svc: Service) -> list[FederationOut]:
    """The caller's federation and everything below it."""
    return [FederationOut.of(d) for d in await svc.federations(identity)]


UserId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


@router.post("/users", status_code=status.HTTP_201_CREATED, tags=["users"])
async def create_user(
    request: Request, body: NewUser, identity: AccountManager, svc: Service, audit: Audit
) -> UserOut:
    """An account in the caller's subtree (administrators). A DPO account is made only by
    a DPO or a national administrator, with ``confirm_password``. Audited."""
    doc = await audited(
        request,
        identity,
        audit,
        lambda: svc.create_user(
            identity,
            body.email,
            body.password,
            body.role,
            body.federation_id,
            confirm_password=body.confirm_password,
            client_ip=client_ip(request),
        ),
        account=lambda doc: _created(body, doc),
        ok_status=status.HTTP_201_CREATED,
    )
    return UserOut.of(doc)


def _created(body: NewUser, doc: dict[str, Any] | None) -> tuple[str | None, dict[str, str]]:
    """The account created (or refused) and how: its role, and the federation it went to
    (refused: the one asked for, if any)."""
    changes = {"role": body.role.value}
    if federation := doc["federation_id"] if doc else body.federation_id:
        changes["federation_id"] = federation
    return (doc["_id"] if doc else None), changes


@router.patch("/users/{user_id}", tags=["users"])
async def update_user(
    request: Request,
    user_id: UserId,
    body: UserChange,
    identity: AccountManager,
    svc: Service,
    audit: Audit,
) -> UserOut:
    """Deactivate, reactivate or change the role of a user of the caller's subtree (not
    oneself). Refused at once on this gateway replica, within
    ``GATEWAY_USER_CACHE_SECONDS`` on the others. Promoting to DPO or reactivating a DPO:
    a DPO or a national administrator, with ``confirm_password``. Audited."""
    changes = {
        k: str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in (
            ("role", body.role),
            ("active", body.active),
            ("federation_id", body.federation_id),
        )
        if v is not None
    }
    doc = await audited(
        request,
        identity,
        audit,
        lambda: svc.update_user(
            identity,
            user_id,
            active=body.active,
            role=body.role,
            federation_id=body.federation_id,
            confirm_password=body.confirm_password,
            client_ip=client_ip(request),
        ),
        account=lambda _: (user_id, changes),
    )
    return UserOut.of(doc)


@router.post("/users/{user_id}/password", tags=["users"])
async def reset_password(
    request: Request,
    user_id: UserId,
    body: PasswordReset,
    identity: AccountManager,
    svc: Service,
    audit: Audit,
) -> UserOut:
    """Set the password of a user of the caller's subtree (not oneself: ``POST
    /api/v1/me/password``); their tokens stop working at once. A DPO's: a DPO or a
    national administrator, with ``confirm_password``. Audited."""
    doc = await audited(
        request,
        identity,
        audit,
        lambda: svc.reset_password(
            identity,
            user_id,
            body.new_password,
            confirm_password=body.confirm_password,
            client_ip=client_ip(request),
        ),
        account=lambda _: (user_id, {"password": "reset"}),
    )
    return UserOut.of(doc)


@router.get("/people/{contact_id}", tags=["people"], response_model=PersonView)
async def person(
    request: Request, contact_id: ContactId, identity: ClientIdentity, fwd: Forwarder, audit: Audit
) -> Response:
    """One person as every service sees them; a service that is down degrades its part."""
    return await audited(
        request, identity, audit, lambda: fwd.person(request, identity, contact_id)
    )


class AccessLogPage(BaseModel):
    items: list[AccessEntry]
    next_cursor: str | None


@router.get("/audit/access", tags=["audit"])
async def access_log(
    request: Request,
    identity: ClientIdentity,
    audit: Audit,
    contact_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)
    ] = None,
    user_id: Annotated[str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)] = None,
    action: AccessAction | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f]{25}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AccessLogPage:
    """Who viewed, changed or exported personal data through the gateway, when, from where
    (the DPO alone; users of the DPO's subtree; newest first). Reading it is audited too."""
    if identity.role is not Role.dpo:
        raise Forbidden(f"role {identity.role} may not read the access audit")

    async def read() -> AccessLogPage:
        items, next_cursor = await audit.read(
            identity,
            contact_id=contact_id,
            user_id=user_id,
            action=action,
            since=since,
            until=until,
            cursor=cursor,
            limit=min(limit, request.app.state.settings.max_page_size),
        )
        return AccessLogPage(items=items, next_cursor=next_cursor)

    return await audited(request, identity, audit, read)


# ---------------------------------------------------------------- forwarded routes

_ANY_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {}}, "multipart/form-data": {"schema": {}}},
    }
}


def _forwarder(route: Route, with_path: bool) -> Callable[..., Awaitable[Response]]:
    """The endpoint of one forwarded prefix (``path`` is declared so OpenAPI shows it)."""
    if route.public and with_path:

        async def forward_public_path(request: Request, fwd: Forwarder, path: str) -> Response:
            return await fwd.forward(route, request, None)

        return forward_public_path
    if route.public:

        async def forward_public(request: Request, fwd: Forwarder) -> Response:
            return await fwd.forward(route, request, None)

        return forward_public
    if with_path:

        async def forward_path(
            request: Request, identity: ClientIdentity, fwd: Forwarder, audit: Audit, path: str
        ) -> Response:
            return await audited(
                request, identity, audit, lambda: fwd.forward(route, request, identity)
            )

        return forward_path

    async def forward(
        request: Request, identity: ClientIdentity, fwd: Forwarder, audit: Audit
    ) -> Response:
        return await audited(
            request, identity, audit, lambda: fwd.forward(route, request, identity)
        )

    return forward


def forwarding_router() -> APIRouter:
    """One explicit route per prefix and method, so OpenAPI lists every forwarded part."""
    forwarded = APIRouter()
    for route in ROUTES:
        methods = route.forwarded_methods
        owner = f"the {route.service} service"
        for suffix in ("", "/{path:path}"):
            endpoint = _forwarder(route, with_path=bool(suffix))
            shown = suffix.replace(":path", "")
            for method in methods:
                op = f"{method.lower()}_{route.tag.replace('-', '_')}{'_path' if suffix else ''}"
                forwarded.add_api_route(
                    route.prefix + suffix,
                    endpoint,
                    methods=[method],
                    name=op,
                    operation_id=op,
                    tags=[route.tag],
                    summary=f"{method} {route.prefix}{shown} (forwarded to {owner})",
                    description=(
                        f"Public: forwarded to {owner} with its raw body, signature headers "
                        "and the client's address (no login)."
                        if route.public
                        else f"Forwarded to {owner} with the caller's signed identity."
                    ),
                    openapi_extra=_ANY_BODY if method in ("POST", "PUT", "PATCH") else None,
                    response_class=Response,
                )
    return forwarded
