"""HTTP routes of the messaging service (thin: validate, call the service)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.app import ID_PATTERN, IdPath, IdQuery
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.events.contracts import Channel
from tribune_shared.limits import larger_body

from messaging.domain import MessageStatus, Standing
from messaging.service import MessagingService
from messaging.settings import SUBJECT_MAX_CHARS, TEXT_MAX_CHARS

router = APIRouter(prefix="/api/v1/messages", tags=["messages"])

ContactId = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
may_send = require_roles(Role.campaign_manager, Role.secretary)
may_read = require_roles(Role.campaign_manager, Role.secretary, Role.dpo)
#: aggregate figures name nobody: a viewer's dashboard shows them too
may_read_totals = require_roles(Role.campaign_manager, Role.secretary, Role.dpo, Role.viewer)


async def service(request: Request) -> MessagingService:
    return request.app.state.messaging_service


Service = Annotated[MessagingService, Depends(service)]


class SendMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: ContactId
    channel: Channel = Field(description='only "email" for now')
    purpose: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="what the message is for; the contact must have consented to it",
    )
    subject: str = Field(min_length=1, max_length=SUBJECT_MAX_CHARS)
    text: str = Field(min_length=1, max_length=TEXT_MAX_CHARS, description="plain-text body")


class MessageView(BaseModel):
    message_id: str
    contact_id: str
    channel: Channel
    purpose: str
    subject: str | None = Field(
        default=None, description="a campaign message's subject is its template's, rendered"
    )
    status: MessageStatus
    federation_id: str
    created_at: datetime
    campaign_id: str | None = None
    sent_at: datetime | None = None
    failed_at: datetime | None = None
    failure_reason: str | None = None
    refused_rule: str | None = Field(
        default=None, description="the rule that refused it at send time (status refused)"
    )
    transactional: bool = Field(
        default=False, description="sent at the person's request (double opt-in confirmation)"
    )
    per_person_tracking: bool = Field(
        default=False,
        description="the person consented to open/click tracking (purpose 'tracking', email) "
        "when it was sent; without it only aggregate rates may be measured",
    )

    @classmethod
    def of(cls, doc: dict[str, Any]) -> MessageView:
        return cls.model_validate({**doc, "message_id": doc["_id"]})


class MessageList(BaseModel):
    items: list[MessageView]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[may_send],
    # a text of TEXT_MAX_CHARS characters, JSON-escaped, is far above the JSON limit
    openapi_extra=larger_body("max_text_body_bytes"),
)
async def send_message(body: SendMessage, svc: Service, identity: CurrentIdentity) -> MessageView:
    doc = await svc.send(
        identity,
        contact_id=body.contact_id,
        channel=body.channel,
        purpose=body.purpose,
        subject=body.subject,
        text=body.text,
    )
    return MessageView.of(doc)


@router.get("", dependencies=[may_read])
async def list_messages(
    svc: Service,
    identity: CurrentIdentity,
    contact_id: IdQuery,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> MessageList:
    docs = await svc.history(identity, contact_id, limit)
    return MessageList(items=[MessageView.of(d) for d in docs])


class ChannelTotals(BaseModel):
    channel: str
    by_status: dict[str, int] = Field(
        description="messages by status (queued, held, sending, sent, failed, refused, "
        "cancelled); a status with none is left out"
    )
    sent: int = Field(description="handed to the provider")
    delivered: int = Field(description="confirmed delivered by a receipt or a DSN")
    bounced: int
    complained: int


class MessageTotals(BaseModel):
    federation_id: str
    since: datetime
    channels: list[ChannelTotals]


@router.get("/totals", dependencies=[may_read_totals])
async def message_totals(
    svc: Service,
    identity: CurrentIdentity,
    federation_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)
    ] = None,
    since: Annotated[
        datetime | None, Query(description="created at or after (default: 30 days ago)")
    ] = None,
) -> MessageTotals:
    """Messages of a federation's subtree (the caller's by default) by channel: by status,
    delivered, bounced and complained. Aggregate figures, no person named (the back
    office's dashboard)."""
    fed_id, start, totals = await svc.totals(identity, federation_id, since)
    channels = [
        ChannelTotals(
            channel=channel,
            by_status={k: v for k, v in counts.items() if k in MessageStatus.__members__},
            sent=counts.get(MessageStatus.sent.value, 0),
            delivered=counts.get("delivered", 0),
            bounced=counts.get("bounced", 0),
            complained=counts.get("complained", 0),
        )
        for channel, counts in sorted(totals.items())
    ]
    return MessageTotals(federation_id=fed_id, since=start, channels=channels)


class Reachability(BaseModel):
    contact_id: str
    channel: Channel
    purpose: str
    reachable: bool
    reason: str | None = Field(description="why a message would be refused now")
    per_person_tracking: bool = Field(
        default=False, description="open/click tracking per person is allowed (consent)"
    )
    standing: Standing | None = Field(
        default=None,
        description="membership standing as messaging knows it (campaigns filter on it); "
        "null: never a member",
    )


@router.get("/reachability/{contact_id}", dependencies=[may_read])
async def reachability(
    svc: Service,
    identity: CurrentIdentity,
    contact_id: IdPath,
    purpose: Annotated[str, Query(min_length=1, max_length=64)],
    channel: Channel = Channel.email,
) -> Reachability:
    reachable, reason = await svc.reachability(identity, contact_id, channel, purpose)
    return Reachability(
        contact_id=contact_id,
        channel=channel,
        purpose=purpose,
        reachable=reachable,
        reason=reason,
        per_person_tracking=await svc.tracking_allowed(identity, contact_id),
        standing=await svc.standing(identity, contact_id),
    )
