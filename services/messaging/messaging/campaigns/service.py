"""Campaign use cases: create, schedule, launch, pause, resume, cancel, read."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.errors import Conflict, InvalidField, NotFound
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import CampaignLaunchedV1, Channel
from tribune_shared.ids import sortable_id
from tribune_shared.logging import get_logger
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from messaging.campaigns.domain import (
    LAUNCHED,
    AbTest,
    Action,
    CampaignStatus,
    check_ab_versions,
    check_channel,
    check_schedule,
    transition,
)
from messaging.campaigns.store import CampaignStore
from messaging.composer import (
    InvalidRecipientAddress,
    UnsubscribeTokens,
    build_campaign_email,
    unsubscribe_url,
)
from messaging.domain import Recipient, Standing, check_limit, check_purpose
from messaging.mailer import DeliveryError, Mailer
from messaging.settings import MessagingSettings
from messaging.store import MessagingStore

log = get_logger(__name__)


class TemplateCatalog(Protocol):
    """What campaigns need of templates (messaging.templates)."""

    async def usable_version(
        self, identity: Identity, template_id: str, version: int | None, channel: Channel
    ) -> int:
        """The version a campaign of ``identity`` may use (the latest if None), or 404/422."""
        ...

    async def freeze(self, template_id: str, version: int) -> None:
        """The version is in use by a launched campaign: it never changes again."""
        ...

    async def renderer(
        self, campaign: Mapping[str, Any], version: int | None = None
    ) -> Callable[[Recipient, str], Any]:
        """The campaign's template version (or ``version`` of its template) as
        ``render(recipient, unsubscribe_url)``."""
        ...

    async def version(self, template_id: str, version: int) -> Mapping[str, Any]:
        """A version with its parts (subject, html, text)."""
        ...


class CampaignService:
    def __init__(
        self,
        settings: MessagingSettings,
        store: Store,
        templates: TemplateCatalog,
        mailer: Mailer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.campaigns = CampaignStore(store)
        self.messages = MessagingStore(store)
        self.outbox = Outbox(store)
        self.templates = templates
        self.mailer = mailer
        self.tokens = UnsubscribeTokens(settings.unsubscribe_secret)

    async def test_send(
        self,
        identity: Identity,
        campaign_id: str,
        *,
        emails: list[str],
        contact_id: str | None,
    ) -> dict[str, Any]:
        """Send the campaign's email, as it would be sent, to chosen addresses (colleagues
        checking it), subject prefixed with the test marker. Personalised from a contact of
        the caller's subtree, or from sample values. Nothing is logged as a message: these
        people are not recipients of the campaign."""
        campaign = await self.get(identity, campaign_id)
        if campaign["channel"] != Channel.email.value:
            raise InvalidField(
                "only email campaigns have test sends (preview an SMS template instead)",
                field="channel",
            )
        limit = self.settings.campaign_test_max_recipients
        if not 1 <= len(set(emails)) <= limit:
            raise InvalidField(f"give 1 to {limit} addresses", field="emails")
        if contact_id is not None:
            sample = await self.messages.find_recipient(identity, contact_id)
            if sample is None:
                raise NotFound("contact not found")
        else:
            sample = Recipient(
                contact_id="test",
                federation_id=identity.federation_id,
                federation_path=identity.federation_path,
                given_name=self.settings.campaign_test_given_name,
                family_name=self.settings.campaign_test_family_name,
            )
        if self.mailer is None:
            raise RuntimeError("no mailer")
        render = await self.templates.renderer(campaign)
        link = unsubscribe_url(
            self.settings.unsubscribe_base_url,
            self.tokens.sign(sample.contact_id, campaign["purpose"]),
        )
        rendered = render(sample, link)
        sent, failed = [], []
        for address in dict.fromkeys(emails):
            try:
                message = build_campaign_email(
                    message_id=uuid.uuid4().hex,
                    mail_from=self.settings.mail_from,
                    recipient=replace(sample, email=address),
                    subject=f"{self.settings.campaign_test_subject_prefix}{rendered.subject}",
                    text=rendered.text,
                    html=rendered.html,
                    unsubscribe_link=link,
                    date=utcnow(),
                    campaign_id=campaign["_id"],
                )
                await self.mailer.send(message)
                sent.append(address)
            except (DeliveryError, InvalidRecipientAddress) as exc:
                failed.append({"email": address, "reason": getattr(exc, "reason", str(exc))})
        log.info("campaign.test_sent", campaign_id=campaign_id, sent=len(sent), failed=len(failed))
        return {"sent": sent, "failed": failed}

    async def create(
        self,
        identity: Identity,
        *,
        name: str,
        channel: Channel,
        purpose: str,
        template_id: str,
        template_version: int | None,
        segment_id: str | None,
        ab_test: AbTest | None = None,
        standings: frozenset[Standing] | None = None,
    ) -> dict[str, Any]:
        """A draft in the caller's federation; its audience is the segment (or the whole
        subtree) within that federation's subtree, checked by contacts at launch."""
        check_channel(channel)
        check_purpose(purpose, self.settings.tracking_purpose)
        version = await self.templates.usable_version(
            identity, template_id, template_version, channel
        )
        ab: dict[str, Any] | None = None
        if ab_test is not None:
            if channel is not Channel.email:
                raise InvalidField("an A/B subject test is for email", field="ab_test")
            await self.templates.usable_version(identity, template_id, ab_test.version_b, channel)
            check_ab_versions(
                await self.templates.version(template_id, version),
                await self.templates.version(template_id, ab_test.version_b),
            )
            ab = {
                "template_version_b": ab_test.version_b,
                "share": ab_test.share,
                "decide_after_seconds": ab_test.decide_after.total_seconds(),
                "metric": ab_test.metric.value,
                "winner": None,
                "decided_at": None,
                "reason": None,
            }
        now = utcnow()
        doc: dict[str, Any] = {
            "_id": sortable_id(),
            "federation_id": identity.federation_id,
            "federation_path": identity.federation_path,
            "name": name.strip(),
            "channel": channel.value,
            "purpose": purpose,
            "template_id": template_id,
            "template_version": version,
            "segment_id": segment_id,
            "standings": sorted(s.value for s in standings) if standings else None,
            "ab_test": ab,
            "status": CampaignStatus.draft.value,
            "status_reason": None,
            "scheduled_at": None,
            "launched_at": None,
            "completed_at": None,
            "audience": {"resolved": False, "recipients": None, "error": None},
            "stats": {},
            "created_at": now,
            "created_by": identity.user_id,
            "version": 1,
        }
        await self.campaigns.insert(doc)
        return doc

    async def get(self, identity: Identity, campaign_id: str) -> dict[str, Any]:
        doc = await self.campaigns.get(identity.scope(), campaign_id)
        if doc is None:
            raise NotFound("campaign not found")
        return doc

    async def list_page(
        self, identity: Identity, *, limit: int | None, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        limit = limit or min(self.settings.history_default_limit, self.settings.max_page_size)
        check_limit(limit, self.settings.max_page_size)
        docs, more = await self.campaigns.page(identity.scope(), limit=limit, before=before)
        return docs, docs[-1]["_id"] if more and docs else None

    async def act(
        self, identity: Identity, campaign_id: str, action: Action, *, at: datetime | None = None
    ) -> dict[str, Any]:
        """Schedule (``at``), launch, pause, resume or cancel a campaign of the caller's
        subtree; 409 when its state does not allow it."""
        campaign = await self.get(identity, campaign_id)
        current = CampaignStatus(campaign["status"])
        target = transition(current, action)
        fields: dict[str, Any] = {"status": target.value, "status_reason": None}
        if action is Action.schedule:
            if at is None:
                raise Conflict("a schedule needs a time", field="at")
            horizon = timedelta(days=self.settings.campaign_schedule_horizon_days)
            check_schedule(at, utcnow(), horizon)
            fields["scheduled_at"] = at
        if action is Action.launch:
            return await self.launch(campaign, by=identity.user_id)
        # who last did what, apart from the state's own fields (scheduled_at is the
        # launch time, not when it was scheduled)
        fields[f"audit.{action.value}"] = {"by": identity.user_id, "at": utcnow()}
        if action is Action.cancel:
            # its messages not handed over are cancelled by the dispatchers, a batch at a
            # time (domain.UnsentSweep): none of them goes from now on
            fields["cancelling"] = True

        async def write(session: AsyncClientSession) -> dict[str, Any]:
            changed = await self.campaigns.update(
                campaign_id, expected=[current], fields=fields, session=session
            )
            if changed is None:
                raise Conflict("the campaign changed meanwhile: read it again")
            return changed

        changed = await self.store.run_transaction(write, what=f"campaign {action.value}")
        log.info(f"campaign.{action.value}", campaign_id=campaign_id)
        return changed

    async def launch(self, campaign: dict[str, Any], *, by: str | None) -> dict[str, Any]:
        """Freeze the template version, mark the campaign sending and publish
        ``campaign-launched`` (contacts answers with the audience), in one transaction.
        ``by`` None: the scheduler launched it at its time."""
        current = CampaignStatus(campaign["status"])
        if current in LAUNCHED:
            raise Conflict(f"the campaign is already {current.value}", status=current.value)
        await self.templates.freeze(campaign["template_id"], campaign["template_version"])
        if ab := campaign.get("ab_test"):
            await self.templates.freeze(campaign["template_id"], ab["template_version_b"])
        now = utcnow()
        event = CampaignLaunchedV1(
            campaign_id=campaign["_id"],
            channel=Channel(campaign["channel"]),
            segment_id=campaign.get("segment_id"),
            launched_at=now,
            purpose=campaign["purpose"],
        )

        async def write(session: AsyncClientSession) -> dict[str, Any]:
            changed = await self.campaigns.update(
                campaign["_id"],
                expected=[current],
                fields={
                    "status": CampaignStatus.sending.value,
                    "status_reason": None,
                    "launched_at": now,
                    "launched_by": by,
                },
                session=session,
            )
            if changed is None:
                raise Conflict("the campaign changed meanwhile: read it again")
            await self.outbox.add(
                session,
                new_envelope(
                    event,
                    producer=self.settings.service_name,
                    federation_id=campaign["federation_id"],
                    federation_path=campaign["federation_path"],
                ),
            )
            return changed

        changed = await self.store.run_transaction(write, what="campaign launch")
        log.info("campaign.launched", campaign_id=campaign["_id"], scheduled=by is None)
        return changed

    async def launch_due(self, campaign: dict[str, Any]) -> None:
        """The scheduler's launch (a concurrent worker may win the race: then nothing)."""
        try:
            await self.launch(campaign, by=None)
        except Conflict:
            pass
