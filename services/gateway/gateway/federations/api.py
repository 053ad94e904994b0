"""Routes of one federation: read it, rename or move it (``GET``/``PATCH
/api/v1/federations/{id}``; creating and listing are in gateway.api)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.app import ID_PATTERN

from gateway.api import Admin, Audit, ClientIdentity, FederationId, FederationOut, audited
from gateway.federations.service import FederationService

router = APIRouter(prefix="/api/v1")

FederationPath = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


async def federation_service(request: Request) -> FederationService:
    return request.app.state.federation_service


Federations = Annotated[FederationService, Depends(federation_service)]


class FederationChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    parent_id: FederationId | None = Field(
        default=None,
        description="move the federation (and everything below it) under this one, of the "
        "caller's subtree",
    )


class FederationView(FederationOut):
    version: int = Field(description="+1 per rename or move")

    @classmethod
    def of(cls, doc: dict[str, Any]) -> FederationView:
        return cls.model_validate({"version": 1, **doc, "id": doc["_id"]})


@router.get("/federations/{federation_id}", tags=["federations"])
async def get_federation(
    federation_id: FederationPath, identity: ClientIdentity, svc: Federations
) -> FederationView:
    """A federation of the caller's subtree (404 for any other)."""
    return FederationView.of(await svc.federation(identity, federation_id))


@router.patch("/federations/{federation_id}", tags=["federations"])
async def update_federation(
    request: Request,
    federation_id: FederationPath,
    body: FederationChangeIn,
    identity: Admin,
    svc: Federations,
    audit: Audit,
) -> FederationView:
    """Rename a federation of the caller's subtree, or move it (with everything below it)
    under another federation of that subtree: never under itself or its descendants, never
    the caller's own federation. Its users follow at once; every service re-paths what it
    holds in the background (``federation-updated``): for a short while some of the moved
    data is visible only from the old place. Audited."""
    changes = {
        k: v for k, v in (("name", body.name), ("parent_id", body.parent_id)) if v is not None
    }
    doc = await audited(
        request,
        identity,
        audit,
        lambda: svc.update(identity, federation_id, name=body.name, parent_id=body.parent_id),
        account=lambda _: (None, {"federation_id": federation_id, **changes}),
    )
    return FederationView.of(doc)
