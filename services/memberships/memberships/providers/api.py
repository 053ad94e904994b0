"""Routes of the provider webhooks (public, signed; thin: read, verify, map, apply)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from tribune_shared.client_info import CLIENT_IP_HEADER
from tribune_shared.errors import InvalidFields
from tribune_shared.limits import allow_body

from memberships.providers import helloasso, stripe
from memberships.providers.service import Outcome, ProviderWebhooks

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


async def webhooks(request: Request) -> ProviderWebhooks:
    memberships = request.app.state.memberships_service
    return ProviderWebhooks(memberships.settings, memberships, clock=memberships.clock)


Webhooks = Annotated[ProviderWebhooks, Depends(webhooks)]


class OutcomeView(BaseModel):
    action: Literal["payment", "reversal", "ignored"]
    status: str = Field(
        description="payment: recorded | duplicate | flagged_for_refund; reversal: reversed | "
        "duplicate (this reference again) | already_reversed (under another); ignored"
    )
    provider_payment_id: str | None = None
    payment_id: str | None = None
    membership_id: str | None = None
    reason: str | None = Field(
        default=None, description="why it was ignored, or the legal rule a flagged payment breaks"
    )


class ProviderWebhookResult(BaseModel):
    provider: Literal["stripe", "helloasso"]
    event_id: str | None = Field(default=None, description="Stripe's event id")
    event_type: str
    outcomes: list[OutcomeView]


def _views(outcomes: list[Outcome]) -> list[OutcomeView]:
    return [OutcomeView.model_validate(o, from_attributes=True) for o in outcomes]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidFields([("body", "must be a JSON document")]) from None


_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or stale signature (the reason says); nothing done"},
    404: {"description": "unknown contact, or a reversal of a payment not recorded (yet)"},
    413: {"description": "body above the configured limit"},
    422: {"description": "signed but malformed: the field and the reason; nothing done"},
}


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


@router.post(
    "/stripe",
    summary="Stripe-style events: payments, refunds, disputes (signed, public)",
    responses=_ANSWERS,
    openapi_extra={
        "parameters": [
            _header(
                stripe.SIGNATURE_HEADER,
                't=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>[,v1=...]',
            )
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    },
)
async def stripe_webhook(request: Request, hooks: Webhooks) -> ProviderWebhookResult:
    # The signature covers the raw bytes: verified before anything is parsed.
    allow_body(request.scope, hooks.settings.stripe_max_body_bytes)
    body = await request.body()
    hooks.verify_stripe(request.headers.get(stripe.SIGNATURE_HEADER), body)
    event = hooks.read_stripe(_json(body))
    outcomes = await hooks.apply(stripe.PROVIDER, event.actions)
    return ProviderWebhookResult(
        provider="stripe", event_id=event.event_id, event_type=event.type, outcomes=_views(outcomes)
    )


@router.post(
    "/helloasso",
    summary="HelloAsso-style notifications: Order and Payment (signed, public)",
    responses=_ANSWERS,
    openapi_extra={
        "parameters": [_header(helloasso.SIGNATURE_HEADER, "hex HMAC-SHA256(signatureKey, body)")],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    },
)
async def helloasso_webhook(request: Request, hooks: Webhooks) -> ProviderWebhookResult:
    allow_body(request.scope, hooks.settings.helloasso_max_body_bytes)
    body = await request.body()
    # the gateway passes the sender's address on (set by it, never taken from the client)
    sender = request.headers.get(CLIENT_IP_HEADER) or (
        request.client.host if request.client else None
    )
    hooks.verify_helloasso(request.headers.get(helloasso.SIGNATURE_HEADER), sender, body)
    notification = hooks.read_helloasso(_json(body))
    outcomes = await hooks.apply(helloasso.PROVIDER, notification.actions)
    return ProviderWebhookResult(
        provider="helloasso", event_type=notification.event_type, outcomes=_views(outcomes)
    )
