"""What campaigns use of templates (messaging.templates): the version a campaign may use,
freezing it at launch, and rendering it for each recipient."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tribune_shared.auth import Identity
from tribune_shared.errors import NotFound
from tribune_shared.events.contracts import Channel

from messaging.campaigns.domain import origin_line
from messaging.domain import Recipient
from messaging.templates.domain import Rendered, render
from messaging.templates.service import TemplateService

__all__ = ["Rendered", "TemplateContent"]


class TemplateContent:
    def __init__(self, templates: TemplateService) -> None:
        self.templates = templates

    async def usable_version(
        self, identity: Identity, template_id: str, version: int | None, channel: Channel
    ) -> int:
        """The version a campaign of the caller's federation may use: the given one, or
        the template's latest; 404 if the caller's federation does not see it, 422 if it
        is for another channel."""
        if version is None:
            _, versions = await self.templates.get(identity, template_id)
            if not versions:
                raise NotFound("template not found")
            version = max(v["version"] for v in versions)
        found = await self.templates.version_for_campaign(
            identity.federation_path, template_id, version, channel
        )
        return int(found["version"])

    async def freeze(self, template_id: str, version: int) -> None:
        await self.templates.freeze(template_id, version)

    async def version(self, template_id: str, version: int) -> Mapping[str, Any]:
        found = await self.templates.templates.version(template_id, version)
        if found is None:
            raise NotFound("template version not found")
        return found

    async def renderer(self, campaign: Mapping[str, Any], version: int | None = None):
        """The campaign's version (or ``version`` of its template), compiled once, as
        ``render(recipient, unsubscribe_url)``."""
        compiled = await self.templates.compiled(
            campaign["template_id"], version or campaign["template_version"]
        )
        sender = self.templates.default_sender()
        name = campaign["name"]

        def render_for(recipient: Recipient, unsubscribe_url: str) -> Rendered:
            return render(
                compiled,
                {
                    "given_name": recipient.given_name,
                    "family_name": recipient.family_name,
                    "email": recipient.email,
                    "phone": recipient.phone,
                },
                unsubscribe_url=unsubscribe_url,
                origin=origin_line(recipient.origin_kind, recipient.origin_detail),
                sender=sender,
                campaign_name=name,
            )

        return render_for
