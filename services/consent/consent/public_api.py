"""Public routes (no identity; reached through the gateway's public routes): the pages
behind the links in emails, and the inbound SMS webhook.

A GET never changes anything (mail scanners open links); the action is a POST. A forged,
altered or expired token gets a clear page and changes nothing.
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import FormData
from tribune_shared.errors import InvalidField, PayloadTooLarge
from tribune_shared.limits import BodyTooLarge, read_body
from tribune_shared.tokens import TokenError
from tribune_shared.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER

from consent import pages
from consent.api import Client, Service
from consent.domain import Source
from consent.service import ConfirmOutcome

router = APIRouter(prefix="/api/v1/public/consents", tags=["public"])
webhooks = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

Token = Annotated[str | None, Query(max_length=4096, description="the signed token of the link")]
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058 body


async def _form(request: Request, limit: int) -> FormData:
    """The posted form (urlencoded or multipart, as RFC 8058 allows), size-bounded."""
    body = await read_body(request, limit)
    request._body = body  # let Starlette parse what was already read
    content_type = request.headers.get("content-type", "")
    if not body or not content_type.startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        return FormData()
    return await request.form()


def _token(query_token: str | None, form: FormData) -> str | None:
    value = query_token or form.get("token")
    return value if isinstance(value, str) and value else None


# ---------------------------------------------------------------- double opt-in


@router.get("/confirm", response_class=HTMLResponse)
async def confirmation_page(svc: Service, token: Token = None) -> HTMLResponse:
    """The page of a confirmation link: what the person is asked to agree to, and a
    button that confirms (POST). Opening it changes nothing."""
    if not token:
        return pages.missing_token()
    try:
        details = await svc.confirmation_page(token)
    except TokenError as error:
        return pages.token_refused(error)
    channel, purpose = details["channel"], details["purpose"]
    if details["state"] is ConfirmOutcome.already_confirmed:
        return pages.already_confirmed(channel, purpose)
    if details["state"] is ConfirmOutcome.no_longer_valid:
        return pages.no_longer_valid()
    return pages.confirm_form(channel, purpose, details["text"])


@router.post("/confirm", response_class=HTMLResponse)
async def confirm(
    request: Request, svc: Service, client: Client, token: Token = None
) -> HTMLResponse:
    """The person confirms: the pending consent becomes granted, with the confirmation's
    time (and minimised IP and user agent) as proof."""
    try:
        form = await _form(request, svc.settings.public_form_max_bytes)
    except BodyTooLarge:
        return pages.too_large()
    token = _token(token, form)
    if not token:
        return pages.missing_token()
    try:
        outcome, link = await svc.confirm(token, client)
    except TokenError as error:
        return pages.token_refused(error)
    if outcome is ConfirmOutcome.confirmed:
        return pages.confirmed(link["channel"], link["purpose"])
    if outcome is ConfirmOutcome.already_confirmed:
        return pages.already_confirmed(link["channel"], link["purpose"])
    return pages.no_longer_valid()


# ---------------------------------------------------------------- unsubscribe


@router.get("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe_page(svc: Service, token: Token = None) -> HTMLResponse:
    """The page of the unsubscribe link of an email: unsubscribe from this purpose or
    from everything (POST). Opening it changes nothing."""
    if not token:
        return pages.missing_token()
    try:
        _, purpose = svc.read_unsubscribe(token)
    except TokenError as error:
        return pages.token_refused(error)
    return pages.unsubscribe_form(purpose)


@router.post("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe(
    request: Request, svc: Service, client: Client, token: Token = None
) -> HTMLResponse:
    """Either RFC 8058 one-click (body ``List-Unsubscribe=One-Click``, sent by mail
    clients from the List-Unsubscribe header: the link's purpose is withdrawn) or the
    page's form (``scope=purpose`` or ``scope=all``). No login; ends in consent-revoked."""
    try:
        form = await _form(request, svc.settings.public_form_max_bytes)
    except BodyTooLarge:
        return pages.too_large()
    token = _token(token, form)
    if not token:
        return pages.missing_token()
    scope: Literal["purpose", "all"]
    if form.get(ONE_CLICK[0]) == ONE_CLICK[1]:
        scope, source = "purpose", Source.one_click
    elif form.get("scope") in ("purpose", "all"):
        scope, source = form["scope"], Source.unsubscribe_link  # type: ignore[assignment]
    else:
        return pages.bad_form("Choose what to unsubscribe from (scope: purpose or all).")
    try:
        outcome = await svc.unsubscribe(token, scope, source, client)
    except TokenError as error:
        return pages.token_refused(error)
    return pages.unsubscribed(scope, outcome.purpose, outcome.contact_known)


# ---------------------------------------------------------------- inbound SMS (STOP)

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class InboundSms(BaseModel):
    """What the SMS provider posts for a received SMS (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    sender: str = Field(alias="from", description="the sender's number, E.164")
    text: str = Field(max_length=1600)
    message_id: str | None = Field(default=None, max_length=200)

    @field_validator("sender")
    @classmethod
    def _e164(cls, value: str) -> str:
        value = value.strip()
        if not _E164.match(value):
            raise ValueError("must be an E.164 phone number, e.g. +33612345678")
        return value


class SmsResult(BaseModel):
    status: Literal["stopped", "ignored"]
    contacts: int = Field(description="contacts with that number")
    revoked: int = Field(description="SMS consents withdrawn now (0 when already withdrawn)")


def _parse_sms(body: bytes) -> InboundSms:
    try:
        payload: Any = json.loads(body)
    except ValueError:
        raise InvalidField("must be a JSON object", field="body") from None
    try:
        return InboundSms.model_validate(payload)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(p) for p in error.get("loc", ())]
        raise InvalidField(error["msg"], field=".".join(loc) or "body") from None


@webhooks.post(
    "/sms",
    status_code=status.HTTP_200_OK,
    summary="The SMS provider relays an inbound SMS (signed, public); STOP withdraws SMS",
    responses={
        401: {"description": "missing, invalid or stale signature; nothing recorded"},
        422: {"description": "invalid field (with the reason); nothing recorded"},
    },
)
async def inbound_sms(request: Request, svc: Service, client: Client) -> SmsResult:
    limit = svc.settings.webhook_max_body_bytes
    try:
        body = await read_body(request, limit)
    except BodyTooLarge:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes") from None
    # The signature covers the raw bytes: verify before parsing anything.
    svc.verify_webhook(
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(SIGNATURE_HEADER),
        body,
        time.time(),
    )
    sms = _parse_sms(body)
    return SmsResult.model_validate(
        await svc.sms_received(sms.sender, sms.text, sms.message_id, client)
    )


def public_routers() -> list[APIRouter]:
    return [router, webhooks]
