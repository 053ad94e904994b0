"""HTTP routes of the gateway (thin: validate, call the service or forward)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response, status
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from tribune_shared.auth import Identity, Role
from tribune_shared.errors import Forbidden, Unauthorized

from gateway.proxy import Proxy
from gateway.routing import ROUTES, Route
from gateway.service import BEARER_CHALLENGE, GatewayService

TOKEN_URL = "/api/v1/auth/token"
oauth2 = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


def service(request: Request) -> GatewayService:
    return request.app.state.gateway_service


def proxy(request: Request) -> Proxy:
    return request.app.state.proxy


Service = Annotated[GatewayService, Depends(service)]
Forwarder = Annotated[Proxy, Depends(proxy)]


async def client_identity(svc: Service, token: Annotated[str | None, Depends(oauth2)]) -> Identity:
    """The authenticated client (Bearer access token), or 401."""
    if not token:
        raise Unauthorized("not authenticated", headers=BEARER_CHALLENGE)
    return await svc.identity_for_token(token)


ClientIdentity = Annotated[Identity, Depends(client_identity)]


def admin(identity: ClientIdentity) -> Identity:
    if identity.role is not Role.admin:
        raise Forbidden(f"role {identity.role} may not do this")
    return identity


Admin = Annotated[Identity, Depends(admin)]
FederationId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ContactId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


# ---------------------------------------------------------------- models


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the token expires")


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


class NewUser(BaseModel):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    role: Role
    federation_id: FederationId | None = Field(
        default=None, description="defaults to the caller's federation"
    )


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
    form: Annotated[OAuth2PasswordRequestForm, Depends()], svc: Service
) -> TokenResponse:
    """OAuth2 password flow: ``username`` is the email."""
    issued = await svc.login(form.username, form.password)
    return TokenResponse(access_token=issued.token, expires_in=issued.expires_in)


@router.get("/me", tags=["auth"])
async def me(identity: ClientIdentity, svc: Service) -> MeOut:
    doc = await svc.me(identity)
    return MeOut.model_validate({**doc, "id": doc["_id"]})


@router.post("/federations", status_code=status.HTTP_201_CREATED, tags=["federations"])
async def create_federation(body: NewFederation, identity: Admin, svc: Service) -> FederationOut:
    return FederationOut.of(await svc.create_federation(identity, body.name, body.parent_id))


@router.get("/federations", tags=["federations"])
async def list_federations(identity: ClientIdentity, svc: Service) -> list[FederationOut]:
    """The caller's federation and everything below it."""
    return [FederationOut.of(d) for d in await svc.federations(identity)]


@router.post("/users", status_code=status.HTTP_201_CREATED, tags=["users"])
async def create_user(body: NewUser, identity: Admin, svc: Service) -> UserOut:
    doc = await svc.create_user(identity, body.email, body.password, body.role, body.federation_id)
    return UserOut.of(doc)


@router.get("/people/{contact_id}", tags=["people"])
async def person(contact_id: ContactId, identity: ClientIdentity, fwd: Forwarder) -> PersonView:
    """One person as every service sees them; a service that is down degrades its part."""
    return PersonView.model_validate(await fwd.person(identity, contact_id))


# ---------------------------------------------------------------- forwarded routes

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
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
            request: Request, identity: ClientIdentity, fwd: Forwarder, path: str
        ) -> Response:
            return await fwd.forward(route, request, identity)

        return forward_path

    async def forward(request: Request, identity: ClientIdentity, fwd: Forwarder) -> Response:
        return await fwd.forward(route, request, identity)

    return forward


def forwarding_router() -> APIRouter:
    """One explicit route per prefix and method, so OpenAPI lists every forwarded part."""
    forwarded = APIRouter()
    for route in ROUTES:
        methods = route.methods or (("POST",) if route.public else METHODS)
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
