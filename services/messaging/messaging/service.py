"""Use cases: check the rules, hand the email over, then log it and its event together."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from tribune_shared.auth import Identity
from tribune_shared.errors import BadGateway, NotFound, Refused
from tribune_shared.events import Envelope, decode_as, new_envelope, utcnow
from tribune_shared.events.contracts import (
    Channel,
    ConsentConfirmationRequestedV1,
    MessageFailedV1,
    MessageSentV1,
)
from tribune_shared.federations import FederationDirectory
from tribune_shared.logging import get_logger
from tribune_shared.metrics import MESSAGES
from tribune_shared.outbox import Outbox
from tribune_shared.store import Store
from tribune_shared.subscriptions import Awaiting
from tribune_shared.suppression import email_hash

from messaging.composer import (
    InvalidRecipientAddress,
    OutgoingEmail,
    UnsubscribeTokens,
    build_email,
    build_transactional_email,
    unsubscribe_url,
)
from messaging.domain import (
    ConsentState,
    ContentLimits,
    MessageStatus,
    Recipient,
    Standing,
    check_channel,
    check_content,
    check_limit,
    check_purpose,
    check_sendable,
    consent_after,
    refusal,
    tracking_allowed,
)
from messaging.mailer import DeliveryError, Mailer
from messaging.revocations import RevocationFeed
from messaging.settings import MessagingSettings
from messaging.store import MessagingStore, consent_key

log = get_logger(__name__)


class DeliveryFailed(BadGateway):
    """502: the provider did not take the message (it is logged as failed)."""

    code = "delivery_failed"


def confirmation_message_id(envelope: Envelope) -> str:
    """The message id of the confirmation email a consent-confirmation-requested event
    asks for: derived from the event, so a redelivery finds it."""
    return hashlib.sha256(f"confirmation:{envelope.event_id}".encode()).hexdigest()[:32]


class MessagingService:
    def __init__(
        self,
        settings: MessagingSettings,
        store: Store,
        mailer: Mailer,
        *,
        messages: MessagingStore | None = None,
        outbox: Outbox | None = None,
        revocations: RevocationFeed | None = None,
    ) -> None:
        self.settings = settings
        #: the "no"s read from Kafka before the views apply them (None: the views alone)
        self.revocations = revocations
        self.store = store
        self.messages = messages or MessagingStore(store)
        self.federations = FederationDirectory(store)
        self.outbox = outbox or Outbox(store)
        self.mailer = mailer
        self.tokens = UnsubscribeTokens(settings.unsubscribe_secret)
        self.limits = ContentLimits(
            subject_max_chars=settings.subject_max_chars, text_max_chars=settings.text_max_chars
        )

    async def totals(
        self, identity: Identity, federation_id: str | None, since: datetime | None
    ) -> tuple[str, datetime, dict[str, dict[str, int]]]:
        """(federation id, since, per channel counts) of the messages of a federation's
        subtree (the caller's own by default; another outside its subtree is a 404), created
        since ``since`` (default: ``totals_default_days`` ago)."""
        fed_id, path = await self.federations.resolve(identity, federation_id)
        if since is None:
            since = utcnow() - timedelta(days=self.settings.totals_default_days)
        elif since.tzinfo is None:  # a date and time without offset is UTC
            since = since.replace(tzinfo=UTC)
        return fed_id, since, await self.messages.totals(path, since)

    async def reachability(
        self, identity: Identity, contact_id: str, channel: Channel, purpose: str
    ) -> tuple[bool, str | None]:
        """Whether a message on ``channel`` for ``purpose`` would be sent now, and why not:
        the very rule ``send`` applies, on messaging's own view."""
        recipient = await self._recipient(identity, contact_id)
        consent = await self._consent(contact_id, channel, purpose)
        try:
            check_sendable(
                recipient, consent, channel, purpose, suppressed=await self._suppressed(recipient)
            )
        except Refused as refused:
            return False, refused.message
        return True, None

    async def _recipient(self, identity: Identity, contact_id: str) -> Recipient:
        """The contact as messaging's view has it; 404 if unknown, out of scope, or erased
        (by the view, or by an erasure the revocation feed saw first)."""
        recipient = await self.messages.find_recipient(identity, contact_id)
        if recipient is None or (self.revocations and self.revocations.knows(contact_id)):
            raise NotFound("contact not found")
        return recipient

    async def _consent(
        self, contact_id: str, channel: Channel, purpose: str
    ) -> ConsentState | None:
        """The view's consent, or a revocation the feed saw after it (messaging.revocations)."""
        consent = await self.messages.consent(contact_id, channel, purpose)
        if self.revocations is None:
            return consent
        revoked = self.revocations.said_at(consent_key(contact_id, channel, purpose))
        return consent_after(consent, revoked)

    async def _suppressed(self, recipient: Recipient) -> bool:
        """Whether the recipient's address is on the suppression list (a salted hash)."""
        hashed = email_hash(recipient.email, self.settings.suppression_salt)
        if self.revocations is not None and self.revocations.knows(hashed):
            return True
        return await self.messages.is_suppressed(hashed)

    async def _tracking(self, contact_id: str) -> ConsentState | None:
        return await self.messages.consent(
            contact_id, Channel.email, self.settings.tracking_purpose
        )

    async def standing(self, identity: Identity, contact_id: str) -> Standing | None:
        """The contact's membership standing in messaging's own view."""
        if await self.messages.find_recipient(identity, contact_id) is None:
            raise NotFound("contact not found")
        return (await self.messages.standings([contact_id], utcnow().date())).get(contact_id)

    async def tracking_allowed(self, identity: Identity, contact_id: str) -> bool:
        """Whether per-person open/click tracking may be added to this contact's emails."""
        if await self.messages.find_recipient(identity, contact_id) is None:
            raise NotFound("contact not found")
        return tracking_allowed(await self._tracking(contact_id))

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
        check_purpose(purpose, self.settings.tracking_purpose)
        check_content(subject, text, self.limits)
        recipient = await self._recipient(identity, contact_id)
        consent = await self._consent(contact_id, channel, purpose)
        try:
            check_sendable(
                recipient, consent, channel, purpose, suppressed=await self._suppressed(recipient)
            )
        except Refused as refused:
            MESSAGES.labels(channel.value, "refused").inc()
            log.info("message.refused", contact_id=contact_id, reason=refused.message)
            raise

        message_id = uuid.uuid4().hex
        now = utcnow()
        try:
            email = self._email_with_unsubscribe(
                message_id, recipient, contact_id, purpose, subject, text, now
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
            "transactional": False,
            # Per-person open/click tracking only with the person's tracking consent
            # (no pixel or redirect yet: the log says whether it would be allowed).
            "per_person_tracking": tracking_allowed(await self._tracking(contact_id)),
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

    # ------------------------------------------------------------ transactional

    async def send_confirmations(
        self, envelopes: list[Envelope], session: AsyncClientSession
    ) -> None:
        """consent-confirmation-requested, a partition batch at once: email each person
        their double opt-in link.

        Transactional: no marketing consent is needed (the person is asked for it), but
        an erased person or a suppressed address is never written to. A message's id
        derives from its event's id, and the sent messages are logged with their
        message-sent events in the handler's transaction: once that commits, a
        redelivered event sends nothing. (A crash between the SMTP hand-over and the
        commit sends them again: at least once, a batch at most.)

        The batch's reads are a few bulk queries and its emails go out together through
        the worker's pooled sessions (at most ``smtp_pool_size`` at once): a viral
        petition asks for thousands of them in minutes. Nothing is sent while one of the
        batch's people is not projected yet (``Awaiting`` names the first such event: the
        consumer applies the ones before it alone and holds the partition there). A failed
        email is logged as failed and raised, so the consumer retries it; the others of
        the batch, already handed over, are first committed on their own, so no retry
        sends them twice.
        """
        requests = [(e, decode_as(e, ConsentConfirmationRequestedV1)) for e in envelopes]
        ids = {e.event_id: confirmation_message_id(e) for e, _ in requests}
        done = await self.messages.sent_among(list(ids.values()), session)
        todo = [(e, r) for e, r in requests if ids[e.event_id] not in done]
        if not todo:
            return
        contact_ids = list({r.contact_id for _, r in todo})
        recipients = await self.messages.recipients(contact_ids, session)
        unknown = [c for c in contact_ids if c not in recipients]
        erased = await self.messages.erased_among(unknown, session) if unknown else set()
        if waiting := {c for c in unknown if c not in erased}:
            # Not projected yet (contact-created comes on another topic): waited for. The
            # events before the first such one are sent (the consumer applies them alone).
            first = next(e for e, r in todo if r.contact_id in waiting)
            raise Awaiting(
                f"contacts {sorted(waiting)[:5]} are not known to messaging yet",
                event_id=first.event_id,
            )
        salt = self.settings.suppression_salt
        hashes = {c: h for c, r in recipients.items() if (h := email_hash(r.email, salt))}
        suppressed = await self.messages.suppressed_among(list(hashes.values()), session)
        now = utcnow()
        skipped: Counter[str] = Counter(erased=sum(r.contact_id in erased for _, r in todo))
        sends: list[tuple[Envelope, Recipient, dict[str, Any], OutgoingEmail]] = []
        for envelope, request in todo:
            recipient = recipients.get(request.contact_id)
            if recipient is None:  # erased
                continue
            hashed = hashes.get(request.contact_id)
            if hashed is None:
                skipped["no_address"] += 1
                continue
            if hashed in suppressed or (
                self.revocations is not None and self.revocations.knows(hashed)
            ):
                skipped["suppressed"] += 1
                continue
            try:
                email = self._confirmation_email(ids[envelope.event_id], recipient, request, now)
            except InvalidRecipientAddress:
                skipped["bad_address"] += 1
                continue
            message = self._confirmation_log(envelope, request, recipient, now)
            sends.append((envelope, recipient, message, email))
        if refused := sum(n for reason, n in skipped.items() if reason != "erased"):
            MESSAGES.labels(Channel.email.value, "refused").inc(refused)
        await self.send_for_events(sends, session)
        log.info(
            "confirmations.handled",
            events=len(envelopes),
            sent=len(sends),
            already_sent=len(done),
            skipped=dict(+skipped),
        )

    def _confirmation_email(
        self,
        message_id: str,
        recipient: Recipient,
        request: ConsentConfirmationRequestedV1,
        now: datetime,
    ) -> OutgoingEmail:
        text = self.settings.confirmation_text.replace("{purpose}", request.purpose).replace(
            "{url}", request.confirm_url
        )
        return build_transactional_email(
            message_id=message_id,
            mail_from=self.settings.mail_from,
            recipient=recipient,
            subject=self.settings.confirmation_subject,
            text=text,
            date=now,
        )

    def _confirmation_log(
        self,
        envelope: Envelope,
        request: ConsentConfirmationRequestedV1,
        recipient: Recipient,
        now: datetime,
    ) -> dict[str, Any]:
        """The message log entry of a confirmation."""
        return {
            "_id": confirmation_message_id(envelope),
            "contact_id": request.contact_id,
            "channel": Channel.email.value,
            "purpose": request.purpose,
            "subject": self.settings.confirmation_subject,
            "campaign_id": None,
            "federation_id": recipient.federation_id,
            "federation_path": recipient.federation_path,
            "created_by": envelope.producer,
            "created_at": now,
            "transactional": True,
            "per_person_tracking": False,
            "cause_event_id": envelope.event_id,
        }

    def _email_with_unsubscribe(
        self,
        message_id: str,
        recipient: Recipient,
        contact_id: str,
        purpose: str,
        subject: str,
        text: str,
        now: datetime,
    ) -> OutgoingEmail:
        """A non-transactional email: the unsubscribe link of its purpose in the footer
        and the List-Unsubscribe headers (InvalidRecipientAddress if the address is not
        usable)."""
        link = unsubscribe_url(
            self.settings.unsubscribe_base_url, self.tokens.sign(contact_id, purpose)
        )
        return build_email(
            message_id=message_id,
            mail_from=self.settings.mail_from,
            recipient=recipient,
            subject=subject,
            text=text,
            unsubscribe_link=link,
            footer_template=self.settings.unsubscribe_footer,
            date=now,
        )

    async def send_consented_email(
        self,
        envelope: Envelope,
        session: AsyncClientSession,
        *,
        contact_id: str,
        purpose: str,
        message_id: str,
        subject: str,
        text: str,
        extra: dict[str, Any],
    ) -> str:
        """An email an event asks for (a renewal or meeting reminder): sent only to a
        person who consented to emails for ``purpose``, never to a suppressed address or
        an erased person, with the unsubscribe link of that purpose (it is not
        transactional). Idempotent: ``message_id`` derives from the event, and a message
        already sent is not sent again. Returns "sent", "already_sent", or why nothing
        was sent (erased, no_consent, consent_revoked, suppressed, no_address,
        bad_address); raises Awaiting while the person is not projected yet."""
        done = await self.messages.message(message_id, session)
        if done is not None and done.get("status") == MessageStatus.sent.value:
            return "already_sent"
        recipient = await self.messages.recipient(contact_id, session)
        if recipient is None:
            if await self.messages.is_erased(contact_id, session):
                return "erased"
            # Not projected yet (contact-created comes on another topic): waited for.
            raise Awaiting(f"contact {contact_id} is not known to messaging yet")
        consent = await self.messages.consent(contact_id, Channel.email, purpose)
        refused = refusal(
            recipient,
            consent,
            Channel.email,
            purpose,
            suppressed=await self._suppressed(recipient),
        )
        if refused is not None:  # no consent for the purpose: nothing is sent
            MESSAGES.labels(Channel.email.value, "refused").inc()
            return refused.rule
        now = utcnow()
        try:
            email = self._email_with_unsubscribe(
                message_id, recipient, contact_id, purpose, subject, text, now
            )
        except InvalidRecipientAddress:
            MESSAGES.labels(Channel.email.value, "refused").inc()
            return "bad_address"
        message = {
            "_id": message_id,
            "contact_id": contact_id,
            "channel": Channel.email.value,
            "purpose": purpose,
            "subject": subject,
            "campaign_id": None,
            "federation_id": recipient.federation_id,
            "federation_path": recipient.federation_path,
            "created_by": envelope.producer,
            "created_at": now,
            "transactional": False,
            "per_person_tracking": False,
            "cause_event_id": envelope.event_id,
            **extra,
        }
        await self.send_for_event(
            envelope, session, recipient=recipient, message=message, email=email
        )
        return "sent"

    async def send_for_event(
        self,
        envelope: Envelope,
        session: AsyncClientSession,
        *,
        recipient: Recipient,
        message: dict[str, Any],
        email: OutgoingEmail,
    ) -> None:
        """``send_for_events`` of one email."""
        await self.send_for_events([(envelope, recipient, message, email)], session)

    async def send_for_events(
        self,
        sends: list[tuple[Envelope, Recipient, dict[str, Any], OutgoingEmail]],
        session: AsyncClientSession,
    ) -> None:
        """Hand over emails events asked for (each ``message["_id"]`` derives from its
        event's id), at most ``smtp_pool_size`` at once, and log them sent with their
        message-sent events in the handler's transaction: once that commits, a
        redelivered event finds its message sent.

        A failure is logged as failed (outside the handler's transaction, which is rolled
        back) and raised, so the consumer retries, then parks the event on its DLQ. The
        emails of the same batch that did go are first committed in a transaction of
        their own: the retry finds them sent instead of sending them again."""
        if not sends:
            return
        slots = asyncio.Semaphore(max(1, self.settings.smtp_pool_size))

        async def hand_over(email: OutgoingEmail) -> None:
            async with slots:
                await self.mailer.send(email)

        results = await asyncio.gather(
            *(hand_over(email) for *_, email in sends), return_exceptions=True
        )
        sent: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        events: list[Envelope] = []
        first_failure: BaseException | None = None
        for (envelope, recipient, message, _), result in zip(sends, results, strict=True):
            at = utcnow()
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancelled: the worker is stopping
                reason = result.reason if isinstance(result, DeliveryError) else repr(result)
                failed.append(
                    {
                        **message,
                        "status": MessageStatus.failed.value,
                        "failed_at": at,
                        "failure_reason": reason,
                    }
                )
                first_failure = first_failure or result
                continue
            sent.append({**message, "status": MessageStatus.sent.value, "sent_at": at})
            events.append(
                new_envelope(
                    MessageSentV1(
                        message_id=message["_id"],
                        contact_id=message["contact_id"],
                        channel=Channel.email,
                        sent_at=at,
                    ),
                    producer=self.settings.service_name,
                    federation_id=recipient.federation_id,
                    federation_path=recipient.federation_path,
                    causation=envelope,
                )
            )

        async def log_sent(s: AsyncClientSession) -> None:
            await self.messages.record_messages(sent, s)
            await self.outbox.add(s, *events)

        MESSAGES.labels(Channel.email.value, MessageStatus.sent.value).inc(len(sent))
        if first_failure is None:
            await log_sent(session)
            return
        MESSAGES.labels(Channel.email.value, MessageStatus.failed.value).inc(len(failed))
        if sent:
            await self.store.run_transaction(log_sent, what="emails sent before a failure")
        await self.messages.record_messages(failed, None)
        raise first_failure
