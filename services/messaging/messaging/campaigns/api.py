"""HTTP routes of campaigns (thin: validate, call the service)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from tribune_shared.app import ID_PATTERN, IdPath
from tribune_shared.auth import CurrentIdentity, Role, require_roles
from tribune_shared.events.contracts import Channel

from messaging.campaigns.domain import AbMetric, AbTest, Action, CampaignStatus
from messaging.campaigns.service import CampaignService
from messaging.domain import Standing

router = APIRouter(prefix="/api/v1/campaigns", tags=["campaigns"])

may_run = require_roles(Role.campaign_manager, Role.admin)
may_read = require_roles(Role.campaign_manager, Role.admin, Role.secretary)
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]


async def service(request: Request) -> CampaignService:
    return request.app.state.campaign_service


Service = Annotated[CampaignService, Depends(service)]


class AbTestIn(BaseModel):
    """An A/B subject test: version B of the same template differs only in its subject."""

    model_config = ConfigDict(extra="forbid")

    template_version_b: int = Field(ge=1, description="the version with the other subject")
    share: float = Field(
        default=0.2, ge=0.02, le=0.5, description="share of the audience in the test (half A)"
    )
    decide_after_minutes: int = Field(
        default=240, ge=1, le=10_080, description="after the launch, when the winner is chosen"
    )
    metric: AbMetric = Field(
        default=AbMetric.clicked,
        description="what decides: clicks (counted for everyone, in aggregate) or opens "
        "(only measurable for people who agreed to tracking)",
    )

    def to_domain(self) -> AbTest:
        return AbTest(
            version_b=self.template_version_b,
            share=self.share,
            decide_after=timedelta(minutes=self.decide_after_minutes),
            metric=self.metric,
        )


class AbTestView(BaseModel):
    template_version_b: int
    share: float
    decide_after_seconds: float
    metric: AbMetric
    winner: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None


class CreateCampaign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    channel: Channel = Field(description='"email" or "sms"')
    purpose: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the consent purpose: only contacts who granted it on the channel get it",
    )
    template_id: Id
    template_version: int | None = Field(
        default=None, ge=1, description="a version of the template (default: its latest)"
    )
    segment_id: Id | None = Field(
        default=None,
        description="a saved segment of contacts (default: every contact of the subtree)",
    )
    ab_test: AbTestIn | None = None
    standings: list[Standing] | None = Field(
        default=None,
        min_length=1,
        description="only members of these standings (up_to_date, grace, lapsed: a cancelled "
        "membership counts as lapsed); default: anyone, members or not",
    )


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: datetime = Field(description="when it launches by itself (with a time zone)")


class Audience(BaseModel):
    resolved: bool = Field(description="contacts has selected every recipient")
    recipients: int | None = None
    error: str | None = None


class CampaignView(BaseModel):
    id: str
    federation_id: str
    name: str
    channel: Channel
    purpose: str
    template_id: str
    template_version: int
    segment_id: str | None
    ab_test: AbTestView | None = None
    standings: list[Standing] | None = None
    status: CampaignStatus
    status_reason: str | None = Field(
        default=None, description="why it is paused or failed (e.g. the circuit breaker)"
    )
    cancelling: bool = Field(
        default=False,
        description="cancelled, and its messages not sent are still being marked cancelled "
        "by the dispatchers (stats.queued falls to 0 as they go); none of them is sent",
    )
    scheduled_at: datetime | None = None
    launched_at: datetime | None = None
    completed_at: datetime | None = None
    audience: Audience
    stats: dict[str, int] = Field(
        description="live counts: selected, audience, queued, sent, failed, cancelled, "
        "refused and refused_by.<rule>, delivered, bounced, opened, clicked, unsubscribed"
    )
    created_at: datetime
    created_by: str

    @classmethod
    def of(cls, doc: dict[str, Any]) -> CampaignView:
        return cls.model_validate({**doc, "id": doc["_id"], "stats": _flat(doc.get("stats") or {})})


def _flat(stats: dict[str, Any], prefix: str = "") -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in stats.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = int(value)
    return out


class CampaignList(BaseModel):
    items: list[CampaignView]
    next_before: str | None = Field(description="pass as ?before= for the next (older) page")


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[may_run])
async def create_campaign(
    body: CreateCampaign, svc: Service, identity: CurrentIdentity
) -> CampaignView:
    doc = await svc.create(
        identity,
        name=body.name,
        channel=body.channel,
        purpose=body.purpose,
        template_id=body.template_id,
        template_version=body.template_version,
        segment_id=body.segment_id,
        ab_test=body.ab_test.to_domain() if body.ab_test else None,
        standings=frozenset(body.standings) if body.standings else None,
    )
    return CampaignView.of(doc)


@router.get("", dependencies=[may_read])
async def list_campaigns(
    svc: Service,
    identity: CurrentIdentity,
    limit: Annotated[int | None, Query(ge=1)] = None,
    before: Annotated[str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)] = None,
) -> CampaignList:
    docs, more = await svc.list_page(identity, limit=limit, before=before)
    return CampaignList(items=[CampaignView.of(d) for d in docs], next_before=more)


@router.get("/{campaign_id}", dependencies=[may_read])
async def get_campaign(
    svc: Service, identity: CurrentIdentity, campaign_id: IdPath
) -> CampaignView:
    return CampaignView.of(await svc.get(identity, campaign_id))


@router.post("/{campaign_id}/schedule", dependencies=[may_run])
async def schedule_campaign(
    body: Schedule, svc: Service, identity: CurrentIdentity, campaign_id: IdPath
) -> CampaignView:
    return CampaignView.of(await svc.act(identity, campaign_id, Action.schedule, at=body.at))


class TrialSend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    emails: list[Annotated[str, Field(min_length=3, max_length=254)]] = Field(
        min_length=1, max_length=100, description="where the test email goes"
    )
    contact_id: Id | None = Field(
        default=None, description="personalise it as for this contact (default: samples)"
    )


class TrialSent(BaseModel):
    sent: list[str]
    failed: list[dict[str, str]]


@router.post("/{campaign_id}/test", dependencies=[may_run])
async def test_send(
    body: TrialSend, svc: Service, identity: CurrentIdentity, campaign_id: IdPath
) -> TrialSent:
    """Send the campaign's email to chosen addresses, subject marked as a test."""
    result = await svc.test_send(
        identity, campaign_id, emails=body.emails, contact_id=body.contact_id
    )
    return TrialSent.model_validate(result)


def _action_route(action: Action) -> None:
    async def run(svc: Service, identity: CurrentIdentity, campaign_id: IdPath) -> CampaignView:
        return CampaignView.of(await svc.act(identity, campaign_id, action))

    run.__name__ = f"{action.value}_campaign"
    router.post(
        f"/{{campaign_id}}/{action.value}",
        dependencies=[may_run],
        summary=f"{action.value.capitalize()} a campaign",
    )(run)


for _action in (Action.launch, Action.pause, Action.resume, Action.cancel):
    _action_route(_action)
