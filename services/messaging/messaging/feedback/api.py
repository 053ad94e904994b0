"""Public webhooks of delivery feedback (no identity: signed; reached through the gateway's
public routes). Thin: read the raw body, hand it to the service, which verifies the
signature on those exact bytes before parsing anything."""

from __future__ import annotations

import time
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field
from tribune_shared.limits import larger_body
from tribune_shared.webhooks import SIGNATURE_HEADER, SIGNATURE_PARAMETERS, TIMESTAMP_HEADER

from messaging.feedback.domain import EmailEvent
from messaging.feedback.service import FeedbackService
from messaging.settings import SmsProviderName

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


async def service(request: Request) -> FeedbackService:
    return request.app.state.feedback_service


Service = Annotated[FeedbackService, Depends(service)]

_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "missing, invalid or stale signature (or no secret set); nothing recorded"
    },
    413: {"description": "body above the route's limit; nothing recorded"},
    422: {"description": "invalid field (with the reason); nothing recorded"},
}
_SIGNATURE_HEADERS = SIGNATURE_PARAMETERS


class FeedbackAnswer(BaseModel):
    received: int = Field(description="pieces of feedback in the call")
    applied: int = Field(description="changed a message: its first delivery, bounce or complaint")
    duplicates: int = Field(description="already recorded (a retry changes nothing)")
    unknown: int = Field(description="name no message of ours that was handed to a provider")
    early: int = Field(
        description="SMS receipts that came before their message's outcome was recorded: "
        "kept, and recorded as soon as it is"
    )
    ignored: int = Field(description="said nothing to record (not final, or not a complaint)")


def _answer(result: Any) -> FeedbackAnswer:
    return FeedbackAnswer.model_validate(vars(result))


def _headers(request: Request) -> tuple[str | None, str | None]:
    return request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER)


@router.post(
    "/sms-receipts/{provider}",
    summary="An SMS provider reports a message's delivery (signed, public)",
    responses=_REFUSALS,
    openapi_extra={"parameters": _SIGNATURE_HEADERS},
)
async def sms_receipt(
    request: Request,
    svc: Service,
    provider: Annotated[
        SmsProviderName,
        Path(description=f"the provider style: {', '.join(get_args(SmsProviderName))}"),
    ],
) -> FeedbackAnswer:
    body = await request.body()
    return _answer(await svc.sms_receipt(provider, body, *_headers(request), time.time()))


@router.post(
    "/email-events",
    summary="An email provider reports deliveries, bounces and complaints (signed, public)",
    description="A JSON list of events (at most `MESSAGING_FEEDBACK_MAX_EVENTS`), each "
    '`{"type": "delivered"|"bounced"|"complained", "message_id", "bounce_type": '
    '"hard"|"soft" (bounces), "reason", "at"}`; `message_id` is our X-Tribune-Message-Id '
    "or our Message-ID. Signed with `MESSAGING_EMAIL_EVENTS_SECRET`.",
    responses=_REFUSALS,
    openapi_extra={
        **larger_body("max_text_body_bytes"),
        "parameters": _SIGNATURE_HEADERS,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "items": EmailEvent.model_json_schema()}
                }
            },
        },
    },
)
async def email_events(request: Request, svc: Service) -> FeedbackAnswer:
    body = await request.body()
    return _answer(await svc.email_events(body, *_headers(request), time.time()))


@router.post(
    "/email-dsn",
    summary="A bounce (RFC 3464 DSN) or complaint (RFC 5965 ARF) report mail (signed, public)",
    description="The raw report message (`message/rfc822`): Status 5.x.x is a hard bounce, "
    "4.x.x a soft one; an ARF report of Feedback-Type abuse is a complaint. Signed with "
    "`MESSAGING_EMAIL_EVENTS_SECRET`.",
    responses=_REFUSALS,
    openapi_extra={
        **larger_body("max_text_body_bytes"),
        "parameters": _SIGNATURE_HEADERS,
        "requestBody": {
            "required": True,
            "content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}},
        },
    },
)
async def email_dsn(request: Request, svc: Service) -> FeedbackAnswer:
    body = await request.body()
    return _answer(await svc.email_report(body, *_headers(request), time.time()))
