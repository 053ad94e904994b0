"""Use cases: check the rules, hand the email over, then log it and its event together."""

from __future__ import annotations

import uuid
from typing import Any

from tribune_shared.auth import Identity
from tribune_shared.errors import BadGateway, NotFound, Refused
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import Channel, MessageFailedV1, MessageSentV1
from tribune_shared.logging import get_logger
from tribune_shared.metrics import MESSAGES
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store

from messaging.composer import (
    InvalidRecipientAddress,
    UnsubscribeTokens,
    build_email,
    unsubscribe_url,
)
from messaging.domain import (
    ContentLimits,
    MessageStatus,
    check_channel,
    check_content,
    check_limit,
    check_sendable,
)
from messaging.mailer import DeliveryError, Mailer
from messaging.settings import MessagingSettings
from messaging.store import MessagingStore

log = get_logger(__name__)


class DeliveryFailed(BadGateway):
    """502: the provider did not take the message (it is logged as failed)."""

    code = "delivery_failed"


class MessagingService:
    def __init__(
        self,
        settings: MessagingSettings,
        store: Store,
        mailer: Mailer,
        *,
        messages: MessagingStore | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.messages = messages or MessagingStore(store)
        self.outbox = outbox or Outbox(store)
        self.mailer = mailer
        self.tokens = UnsubscribeTokens(settings.unsubscribe_secret)
        self.limits = ContentLimits(
            subject_max_chars=settings.subject_max_chars, text_max_chars=settings.text_max_chars
        )

    async def reachability(
        self, identity: Identity, contact_id: str, channel: Channel, purpose: str
    ) -> tuple[bool, str | None]:
        """Whether a message on ``channel`` for ``purpose`` would be sent now, and why not:
        the very rule ``send`` applies, on messaging's own view."""
        recipient = await self.messages.find_recipient(identity, contact_id)
        if recipient is None:
            raise NotFound("contact not found")
        consent = await self.messages.consent(contact_id, channel, purpose)
        try:
            check_sendable(recipient, consent, channel, purpose)
        except Refused as refused:
            return False, refused.message
        return True, None

    async def send(
        self,
        identity: Identity,
        *,
        contact_id: str,
        channel: Channel,
        purpose: str,
        subject: str,
        text: str,
    ) -> dict[str, Any]:
        """Send one message to one contact; the logged message, or an error."""
        check_channel(channel)
        check_content(subject, text, self.limits)
        recipient = await self.messages.find_recipient(identity, contact_id)
        if recipient is None:
            raise NotFound("contact not found")
        consent = await self.messages.consent(contact_id, channel, purpose)
        try:
            check_sendable(recipient, consent, channel, purpose)
        except Refused as refused:
            MESSAGES.labels(channel.value, "refused").inc()
            log.info("message.refused", contact_id=contact_id, reason=refused.message)
            raise

        message_id = uuid.uuid4().hex
        now = utcnow()
        link = unsubscribe_url(
            self.settings.unsubscribe_base_url, self.tokens.sign(contact_id, purpose)
        )
        try:
            email = build_email(
                message_id=message_id,
                mail_from=self.settings.mail_from,
                recipient=recipient,
                subject=subject,
                text=text,
                unsubscribe_link=link,
                footer_template=self.settings.unsubscribe_footer,
                date=now,
            )
        except InvalidRecipientAddress as exc:
            MESSAGES.labels(channel.value, "refused").inc()
            why = f"contact email address is not usable ({exc})"
            raise Refused(why, rule="bad_address") from exc

        message: dict[str, Any] = {
            "_id": message_id,
            "contact_id": contact_id,
            "channel": channel.value,
            "purpose": purpose,
            "subject": subject,
            "campaign_id": None,
            "federation_id": recipient.federation_id,
            "federation_path": recipient.federation_path,
            "created_by": identity.user_id,
            "created_at": now,
        }
        await self.messages.record_sending(message)

        reason: str | None = None
        try:
            await self.mailer.send(email)
        except DeliveryError as exc:
            reason = exc.reason
        status = MessageStatus.failed if reason else MessageStatus.sent
        done_at = utcnow()
        if status is MessageStatus.sent:
            event: MessageSentV1 | MessageFailedV1 = MessageSentV1(
                message_id=message_id, contact_id=contact_id, channel=channel, sent_at=done_at
            )
        else:
            event = MessageFailedV1(
                message_id=message_id,
                contact_id=contact_id,
                channel=channel,
                reason=reason or "",
                failed_at=done_at,
            )
        async with self.store.transaction() as session:
            changed = await self.messages.record_outcome(
                message_id, status, done_at, reason, session
            )
            await self.outbox.add(
                session,
                new_envelope(
                    event,
                    producer=self.settings.service_name,
                    federation_id=recipient.federation_id,
                    federation_path=recipient.federation_path,
                ),
            )
        MESSAGES.labels(channel.value, status.value).inc()
        log.info("message." + status.value, message_id=message_id, contact_id=contact_id)
        if reason:
            raise DeliveryFailed(reason, message_id=message_id)
        return {**message, **changed}

    async def history(
        self, identity: Identity, contact_id: str, limit: int | None
    ) -> list[dict[str, Any]]:
        limit = limit or min(self.settings.history_default_limit, self.settings.max_page_size)
        check_limit(limit, self.settings.max_page_size)
        if await self.messages.find_recipient(identity, contact_id) is None:
            raise NotFound("contact not found")
        return await self.messages.messages_of(identity, contact_id, limit)
