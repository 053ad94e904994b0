"""HTTP routes of the consent service (thin: validate, call the service)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status
from pydantic import BaseModel, Field
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.events.contracts import Channel

from consent.domain import ConsentStatus, LedgerEntry
from consent.service import ConsentService

router = APIRouter(prefix="/api/v1/consents", tags=["consents"])

ContactId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
may_change = require_roles(Role.secretary, Role.campaign_manager, Role.dpo)


def service(request: Request) -> ConsentService:
    return request.app.state.consent_service


Service = Annotated[ConsentService, Depends(service)]


class ConsentChange(BaseModel):
    channel: Channel
    purpose: str = Field(min_length=1, max_length=64)
    source: str = Field(min_length=1, max_length=200, description="form, import id, call...")
    text_version: str | None = Field(
        default=None, max_length=64, description="version of the consent text shown"
    )


class ConsentResult(BaseModel):
    contact_id: str
    channel: Channel
    purpose: str
    status: ConsentStatus
    changed: bool


class CurrentConsent(BaseModel):
    channel: Channel
    purpose: str
    status: ConsentStatus
    updated_at: datetime


class ConsentView(BaseModel):
    contact_id: str
    consents: list[CurrentConsent]
    history: list[LedgerEntry]


async def _change(
    svc: ConsentService, identity, contact_id: str, body: ConsentChange, wanted: ConsentStatus
) -> ConsentResult:
    proof = {"text_version": body.text_version} if body.text_version else {}
    state, changed = await svc.change(
        identity, contact_id, body.channel, body.purpose, wanted, body.source, proof
    )
    return ConsentResult(
        contact_id=contact_id,
        channel=body.channel,
        purpose=body.purpose,
        status=state,
        changed=changed,
    )


@router.post("/{contact_id}/grant", status_code=status.HTTP_200_OK, dependencies=[may_change])
async def grant(
    contact_id: ContactId, body: ConsentChange, svc: Service, identity: CurrentIdentity
) -> ConsentResult:
    return await _change(svc, identity, contact_id, body, ConsentStatus.granted)


@router.post("/{contact_id}/revoke", status_code=status.HTTP_200_OK, dependencies=[may_change])
async def revoke(
    contact_id: ContactId, body: ConsentChange, svc: Service, identity: CurrentIdentity
) -> ConsentResult:
    return await _change(svc, identity, contact_id, body, ConsentStatus.revoked)


@router.get("/{contact_id}")
async def view(contact_id: ContactId, svc: Service, identity: CurrentIdentity) -> ConsentView:
    return ConsentView.model_validate(await svc.view(identity, contact_id))
