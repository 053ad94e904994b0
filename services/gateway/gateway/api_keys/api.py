"""Routes of API keys (administrators): create (the secret shown once), list, revoke.
Every change is in the access audit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field
from tribune_shared.auth import Role

from gateway.api import Admin, Audit, FederationId, UserId, audited
from gateway.api_keys.domain import MAX_ROUTES
from gateway.api_keys.service import ApiKeyService

router = APIRouter(prefix="/api/v1", tags=["api-keys"])


async def _keys(request: Request) -> ApiKeyService:
    return request.app.state.api_keys


class NewApiKey(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="what the key is for")
    role: Role = Field(description="the role it acts as (never above yours, never dpo)")
    federation_id: FederationId | None = Field(
        default=None, description="the federation it acts in (of your subtree; default yours)"
    )
    routes: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list,
        max_length=MAX_ROUTES,
        description="route prefixes it may call (e.g. /api/v1/contacts); empty: every "
        "forwarded API and the person view",
    )
    expires_at: datetime | None = Field(default=None, description="none: until revoked")


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="the key starts with trk_<prefix>_: to recognise it")
    role: Role
    federation_id: str
    routes: list[str]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(
        description="written at most once per GATEWAY_API_KEY_LAST_USED_FLUSH_SECONDS"
    )
    revoked_at: datetime | None

    @classmethod
    def of(cls, doc: dict[str, Any]) -> ApiKeyOut:
        return cls.model_validate({**doc, "id": doc["_id"]})


class CreatedApiKey(ApiKeyOut):
    secret: str = Field(
        description="the key: shown this once, never again (send it as X-API-Key, or "
        "Authorization: Bearer)"
    )


@router.post("/api-keys", status_code=status.HTTP_201_CREATED)
async def create_api_key(
    request: Request, body: NewApiKey, identity: Admin, audit: Audit
) -> CreatedApiKey:
    """A key for an integration, acting as ``role`` in ``federation_id`` (administrators).
    The secret is in this answer only. Audited."""
    keys = await _keys(request)

    async def create() -> tuple[dict[str, Any], str]:
        return await keys.create(
            identity,
            name=body.name,
            role=body.role,
            federation_id=body.federation_id,
            routes=body.routes,
            expires_at=body.expires_at,
        )

    doc, secret = await audited(
        request,
        identity,
        audit,
        create,
        account=lambda made: (
            None,
            {
                "api_key": made[0]["_id"] if made else "refused",
                "action": "created",
                "role": body.role.value,
            },
        ),
        ok_status=status.HTTP_201_CREATED,
    )
    return CreatedApiKey.model_validate({**doc, "id": doc["_id"], "secret": secret})


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]


@router.get("/api-keys")
async def list_api_keys(
    request: Request,
    identity: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> ApiKeyList:
    """The keys of the caller's subtree, newest first, revoked ones included (never a
    secret)."""
    keys = await _keys(request)
    docs = await keys.page(identity, min(limit, request.app.state.settings.max_page_size))
    return ApiKeyList(items=[ApiKeyOut.of(d) for d in docs])


@router.post("/api-keys/{key_id}/revoke")
async def revoke_api_key(
    request: Request, key_id: UserId, identity: Admin, audit: Audit
) -> ApiKeyOut:
    """The key stops working at once on this gateway replica, within
    ``GATEWAY_USER_CACHE_SECONDS`` on the others. Audited."""
    keys = await _keys(request)
    doc = await audited(
        request,
        identity,
        audit,
        lambda: keys.revoke(identity, key_id),
        account=lambda _: (None, {"api_key": key_id, "action": "revoked"}),
    )
    return ApiKeyOut.of(doc)
