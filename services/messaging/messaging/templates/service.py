"""Template use cases: write (check, then store a version), read within the federation's
lineage, preview for one contact, and what the campaign core calls (``version_for_campaign``
when a campaign is set up, ``freeze`` at launch, ``compiled`` + ``domain.render`` per
recipient)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlencode

from tribune_shared.auth import Identity
from tribune_shared.errors import Conflict, InvalidField, NotFound
from tribune_shared.events import utcnow
from tribune_shared.events.contracts import Channel
from tribune_shared.store import Store, ancestor_paths, subtree_filter

from messaging.domain import check_limit
from messaging.settings import MessagingSettings
from messaging.store import MessagingStore
from messaging.templates.domain import (
    PREVIEW_CAMPAIGN_NAME,
    PREVIEW_ORIGIN,
    CompiledTemplate,
    Rendered,
    TemplateCache,
    TemplateContent,
    TemplateLimits,
    check_template,
    compile_template,
    render,
)
from messaging.templates.store import Amended, TemplateStore, version_key

#: SMS facts about a rendered text (segments, encoding): messaging.sms provides them
SmsInfo = Callable[[str], Mapping[str, Any]]
#: the cache key's revision of a frozen version
_FROZEN = "frozen"


class VersionFrozen(Conflict):
    """409: the version was used by a sent campaign; it never changes again."""

    code = "version_frozen"


def lineage_scope(federation_path: str) -> dict[str, Any]:
    """Templates of a federation's subtree and of its ancestors (inherited down the tree:
    usable, read-only there)."""
    return {
        "$or": [
            subtree_filter(federation_path),
            {"federation_path": {"$in": ancestor_paths(federation_path)}},
        ]
    }


def _parts(content: TemplateContent) -> dict[str, Any]:
    return dataclasses.asdict(content)


class TemplateService:
    def __init__(
        self,
        settings: MessagingSettings,
        store: Store,
        *,
        templates: TemplateStore | None = None,
        recipients: MessagingStore | None = None,
        sms_info: SmsInfo | None = None,
    ) -> None:
        self.settings = settings
        self.templates = templates or TemplateStore(store)
        self.recipients = recipients or MessagingStore(store)
        self.sms_info = sms_info
        self.limits = TemplateLimits(
            subject_max_chars=settings.subject_max_chars,
            part_max_chars=settings.template_part_max_chars,
            render_max_chars=settings.template_render_max_chars,
            sms_stop_text=settings.template_sms_stop_text,
        )
        self.cache = TemplateCache(settings.template_cache_size)

    # ------------------------------------------------------------ writing

    def _check(
        self, channel: Channel, subject: str | None, html: str | None, text: str | None
    ) -> TemplateContent:
        return check_template(channel, subject=subject, html=html, text=text, limits=self.limits)

    def _version_doc(
        self,
        template: Mapping[str, Any],
        version: int,
        content: TemplateContent,
        identity: Identity,
    ) -> dict[str, Any]:
        now = utcnow()
        return {
            "_id": version_key(template["_id"], version),
            "template_id": template["_id"],
            "version": version,
            "channel": template["channel"],
            "federation_id": template["federation_id"],
            "federation_path": template["federation_path"],
            "parts": _parts(content),
            "frozen": False,
            "frozen_at": None,
            "revision": 1,
            "created_at": now,
            "created_by": identity.user_id,
            "updated_at": now,
        }

    async def create(
        self,
        identity: Identity,
        *,
        name: str,
        channel: Channel,
        subject: str | None,
        html: str | None,
        text: str | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A template of the caller's own federation, with its version 1."""
        if not name.strip():
            raise InvalidField("must not be blank", field="name")
        content = self._check(channel, subject, html, text)
        now = utcnow()
        template = {
            "_id": uuid.uuid4().hex,
            "name": name.strip(),
            "channel": channel.value,
            "federation_id": identity.federation_id,
            "federation_path": identity.federation_path,
            "latest_version": 1,
            "created_at": now,
            "created_by": identity.user_id,
            "updated_at": now,
        }
        version = self._version_doc(template, 1, content, identity)
        await self.templates.create(template, version)
        return template, version

    async def add_version(
        self,
        identity: Identity,
        template_id: str,
        *,
        subject: str | None,
        html: str | None,
        text: str | None,
    ) -> dict[str, Any]:
        """The edit: version n+1, whatever state version n is in. Templates of the caller's
        subtree only (an ancestor's is used as it is: 404 here, as for any other write)."""
        template = await self.templates.template(template_id, identity.scope())
        if template is None:
            raise NotFound("template not found")
        content = self._check(Channel(template["channel"]), subject, html, text)
        version = await self.templates.add_version(
            template_id,
            identity.scope(),
            lambda n: self._version_doc(template, n, content, identity),
            utcnow(),
        )
        if version is None:
            raise NotFound("template not found")
        return version

    async def amend_version(
        self,
        identity: Identity,
        template_id: str,
        version: int,
        *,
        subject: str | None,
        html: str | None,
        text: str | None,
    ) -> dict[str, Any]:
        """Correct version n in place, as long as no sent campaign used it (409 after)."""
        template = await self.templates.template(template_id, identity.scope())
        if template is None:
            raise NotFound("template not found")
        content = self._check(Channel(template["channel"]), subject, html, text)
        outcome = await self.templates.amend(template_id, version, _parts(content), utcnow())
        if outcome is Amended.missing:
            raise NotFound("template version not found")
        if outcome is Amended.frozen:
            raise VersionFrozen(
                f"version {version} was used by a sent campaign and is frozen: it cannot "
                f"change; create a new version instead (POST /api/v1/templates/{template_id}"
                "/versions)",
                template_id=template_id,
                version=version,
            )
        found = await self.templates.version(template_id, version)
        assert found is not None  # versions are never deleted
        return found

    # ------------------------------------------------------------ reading

    async def list_templates(
        self, identity: Identity, channel: Channel | None, limit: int | None
    ) -> list[dict[str, Any]]:
        limit = limit or min(self.settings.history_default_limit, self.settings.max_page_size)
        check_limit(limit, self.settings.max_page_size)
        return await self.templates.templates(
            lineage_scope(identity.federation_path), channel.value if channel else None, limit
        )

    async def get(
        self, identity: Identity, template_id: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A template and the summary of each of its versions."""
        template = await self.templates.template(
            template_id, lineage_scope(identity.federation_path)
        )
        if template is None:
            raise NotFound("template not found")
        return template, await self.templates.versions(template_id)

    async def version(self, identity: Identity, template_id: str, version: int) -> dict[str, Any]:
        return await self._version_in(lineage_scope(identity.federation_path), template_id, version)

    async def _version_in(
        self, scope: dict[str, Any], template_id: str, version: int
    ) -> dict[str, Any]:
        template = await self.templates.template(template_id, scope)
        found = await self.templates.version(template_id, version) if template else None
        if found is None:
            raise NotFound("template version not found")
        return found

    async def preview(
        self,
        identity: Identity,
        template_id: str,
        version: int,
        *,
        contact: Mapping[str, Any] | None,
        contact_id: str | None,
        origin: str | None,
        sender: str | None,
        campaign_name: str | None,
    ) -> tuple[Rendered, Mapping[str, Any] | None]:
        """The message one contact would get (given, or from messaging's projection of the
        caller's subtree), with SMS facts for an SMS; a part that cannot be rendered: 422."""
        if (contact is None) == (contact_id is None):
            raise InvalidField("give either contact (its fields) or contact_id", field="contact")
        found = await self.version(identity, template_id, version)
        if contact_id is not None:
            recipient = await self.recipients.find_recipient(identity, contact_id)
            if recipient is None:
                raise NotFound("contact not found", field="contact_id")
            values = dataclasses.asdict(recipient)
            values["federation_name"] = await self.templates.federation_name(
                recipient.federation_id
            )
        else:
            values = dict(contact or {})
        preview_link = f"{self.settings.unsubscribe_base_url}?{urlencode({'token': 'preview'})}"
        rendered = render(
            self._compile(found),
            values,
            unsubscribe_url=preview_link,
            origin=origin or PREVIEW_ORIGIN,
            sender=sender or self.default_sender(),
            campaign_name=campaign_name or PREVIEW_CAMPAIGN_NAME,
        )
        sms = None
        if found["channel"] == Channel.sms.value and self.sms_info is not None:
            sms = self.sms_info(rendered.text)
        return rendered, sms

    def default_sender(self) -> str:
        """The sender identity of MESSAGING_MAIL_FROM (its display name, else its address)."""
        name, address = parseaddr(self.settings.mail_from)
        return name or address

    # ------------------------------------------------------------ the campaign core

    async def version_for_campaign(
        self, federation_path: str, template_id: str, version: int, channel: Channel
    ) -> dict[str, Any]:
        """The version a campaign of ``federation_path`` on ``channel`` may use: a template
        of that federation or of an ancestor (inherited down the tree; 404 otherwise, a
        descendant's included), for that channel (422 ``channel`` otherwise)."""
        usable = {"federation_path": {"$in": ancestor_paths(federation_path)}}
        found = await self._version_in(usable, template_id, version)
        if found["channel"] != Channel(channel).value:
            raise InvalidField(
                f"the template is for {found['channel']}, not {Channel(channel).value}",
                field="channel",
            )
        return found

    async def freeze(self, template_id: str, version: int) -> dict[str, Any]:
        """Freeze a version at a campaign's launch (idempotent) and return it as frozen:
        send exactly what this returns. Unknown version: NotFound."""
        found = await self.templates.freeze(template_id, version, utcnow())
        if found is None:
            raise NotFound("template version not found")
        return found

    async def compiled(self, template_id: str, version: int) -> CompiledTemplate:
        """A version compiled, from this process's cache after the first call (for the
        dispatcher: ``domain.render(compiled, contact, ...)`` per recipient)."""
        # a frozen version never changes: once compiled, no read of the store
        compiled = self.cache.get((template_id, version, _FROZEN))
        if compiled is not None:
            return compiled
        found = await self.templates.version(template_id, version)
        if found is None:
            raise NotFound("template version not found")
        return self._compile(found)

    def _compile(self, version: Mapping[str, Any]) -> CompiledTemplate:
        # an unfrozen version may still be amended: its revision is part of the key
        revision = _FROZEN if version.get("frozen") else version.get("revision", 1)
        key = (version["template_id"], version["version"], revision)
        compiled = self.cache.get(key)
        if compiled is None:
            parts = version["parts"]
            compiled = compile_template(
                Channel(version["channel"]),
                subject=parts.get("subject"),
                html=parts.get("html"),
                text=parts["text"],
                render_max_chars=self.limits.render_max_chars,
            )
            self.cache.put(key, compiled)
        return compiled
