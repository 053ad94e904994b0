"""Versioned event contracts: one pydantic model per event type and version.

Rules: a topic carries one event type; the message key is the aggregate id; within a
version only optional fields are added (consumers ignore fields they don't know).
A breaking change is a new version registered beside the old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr


class EventContract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    event_version: ClassVar[int]
    #: the data field holding the aggregate id (the Kafka key)
    key_field: ClassVar[str]
    #: dotted paths of the fields holding personal data: they travel encrypted with the
    #: person's data key (``tribune_shared.vault``) and read as their default once the key
    #: is destroyed; each must have a default
    personal_fields: ClassVar[tuple[str, ...]] = ()
    #: the data field naming the person the personal fields are about
    subject_field: ClassVar[str] = "contact_id"

    _erased_fields: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @property
    def key(self) -> str:
        return str(getattr(self, self.key_field))

    @property
    def erased_fields(self) -> frozenset[str]:
        """Personal fields that could not be read because the person was erased (their data
        key is destroyed): they hold their defaults. Projections treat such an event as
        being about an erased person."""
        return self._erased_fields

    @property
    def erased(self) -> bool:
        return bool(self._erased_fields)


class Lane(StrEnum):
    """Which consumer of a service reads a topic. Compliance-critical facts (a "no", an
    erasure) ride the urgent lane: its own Kafka consumer and batches, so they never wait
    behind a bulk backlog (a 100,000-row import's contact events)."""

    bulk = "bulk"
    urgent = "urgent"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    owner: str
    description: str
    #: the services whose workers consume this topic (checked when a worker starts; the
    #: APIs wait for these events when a client names them: tribune_shared.consistency)
    consumers: tuple[str, ...] = ()
    lane: Lane = Lane.bulk
    #: compacted topics keep the last value per key (tombstones erase)
    compacted: bool = False


CONTRACTS: dict[tuple[str, int], type[EventContract]] = {}
TOPICS: dict[str, TopicSpec] = {}


def contract(
    event_type: str,
    version: int,
    *,
    key: str,
    owner: str,
    partitions: int = 3,
    consumers: tuple[str, ...] = (),
    lane: Lane = Lane.bulk,
    doc: str = "",
):
    def register(cls: type[EventContract]) -> type[EventContract]:
        if (event_type, version) in CONTRACTS:
            raise ValueError(f"duplicate contract {event_type} v{version}")
        cls.event_type = event_type
        cls.event_version = version
        cls.key_field = key
        _check_personal_fields(cls)
        CONTRACTS[(event_type, version)] = cls
        spec = TopicSpec(
            event_type,
            partitions,
            owner,
            doc or (cls.__doc__ or "").strip(),
            consumers=tuple(sorted(consumers)),
            lane=lane,
        )
        known = TOPICS.setdefault(event_type, spec)
        if (known.partitions, known.consumers, known.lane) != (
            spec.partitions,
            spec.consumers,
            spec.lane,
        ):
            raise ValueError(f"{event_type} v{version}: topic declared differently by v1")
        return cls

    return register


def dlq_topic(topic: str) -> str:
    return f"{topic}-dlq"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``Model`` or ``Model | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _check_personal_fields(cls: type[EventContract]) -> None:
    """Every personal field exists and has a default, so an event whose person was erased
    (sealed values unreadable) still decodes; the subject field exists."""
    if not cls.personal_fields:
        return
    if cls.subject_field not in cls.model_fields:
        raise TypeError(f"{cls.__name__}: subject field {cls.subject_field!r} is not a field")
    for path in cls.personal_fields:
        model: type[BaseModel] | None = cls
        parts = path.split(".")
        for i, part in enumerate(parts):
            if model is None or part not in model.model_fields:
                raise TypeError(f"{cls.__name__}: personal field {path!r} does not exist")
            info = model.model_fields[part]
            if i == len(parts) - 1:
                if info.is_required():
                    raise TypeError(f"{cls.__name__}: personal field {path!r} needs a default")
            else:
                model = _model_of(info.annotation)


# ---------------------------------------------------------------- shared value types


class Channel(StrEnum):
    email = "email"
    sms = "sms"
    phone = "phone"
    post = "post"


class OriginKind(StrEnum):
    web_form = "web_form"
    event = "event"
    membership = "membership"
    petition = "petition"
    electoral_list = "electoral_list"
    rented_file = "rented_file"
    import_file = "import"
    manual = "manual"


class DataOrigin(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: OriginKind
    detail: str = Field(default="", max_length=500)
    collected_on: date | None = None


#: the fields of a contact's state that identify the person (sealed in contact events)
CONTACT_PERSONAL_FIELDS: tuple[str, ...] = (
    "contact.given_name",
    "contact.family_name",
    "contact.email",
    "contact.phone",
    "contact.postcode",
    # the full contact (emails, phones, postal address, birth year, custom fields)
    "contact.emails",
    "contact.phones",
    "contact.address",
    "contact.birth_year",
    "contact.custom_fields",
)


class ContactEmail(BaseModel):
    model_config = ConfigDict(frozen=True)

    address: str
    primary: bool = False


class ContactPhone(BaseModel):
    model_config = ConfigDict(frozen=True)

    number: str = Field(description="E.164")
    kind: Literal["mobile", "landline", "other"] = "other"


class ContactAddress(BaseModel):
    model_config = ConfigDict(frozen=True)

    lines: list[str] = Field(default_factory=list)
    postcode: str | None = None
    commune: str | None = None
    commune_insee: str | None = Field(default=None, description="INSEE code (5 chars, 2A/2B)")
    department: str | None = None


class ContactState(BaseModel):
    """The personal data of a contact as other services may project it.

    Its JSON form (with the envelope's federation_path) is the document shape the segment
    filter language (``contacts.filter_language``) evaluates. ``email``/``phone``/``postcode``
    mirror the primary email, the first phone and the address's postcode.
    """

    model_config = ConfigDict(frozen=True)

    given_name: str = ""
    family_name: str = ""
    email: str | None = None
    phone: str | None = None
    postcode: str | None = None
    tags: list[str] = Field(default_factory=list)
    origin: DataOrigin | None = None
    # Added in v1 (optional): the full contact.
    emails: list[ContactEmail] = Field(default_factory=list)
    phones: list[ContactPhone] = Field(default_factory=list)
    address: ContactAddress | None = None
    constituency: str | None = None
    polling_station: str | None = None
    birth_year: int | None = None
    custom_fields: dict[str, str | int | float] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


# ---------------------------------------------------------------- gateway


@contract(
    "federation-created",
    1,
    key="federation_id",
    owner="gateway",
    partitions=1,
    consumers=("contacts", "consent", "memberships", "messaging"),
)
class FederationCreatedV1(EventContract):
    """A federation was added to the tree."""

    federation_id: str
    parent_id: str | None
    name: str
    path: str
    #: the federation's version: 1 at creation (absent in events made before versions)
    version: int | None = None


@contract(
    "federation-updated",
    1,
    key="federation_id",
    owner="gateway",
    partitions=1,
    consumers=("contacts", "consent", "memberships", "messaging"),
)
class FederationUpdatedV1(EventContract):
    """A federation was renamed or moved (a move sends one event for the federation and
    one for each of its descendants, whose paths change with it). Consumers apply only a
    newer ``version`` and re-path what they hold (tribune_shared.federations)."""

    federation_id: str
    parent_id: str | None
    name: str
    path: str
    #: the federation's version: +1 per rename or move (a replay or an older event is
    #: recognised by it)
    version: int | None = None
    #: the path before this change (equal to ``path`` for a rename)
    previous_path: str | None = None


# ---------------------------------------------------------------- contacts


@contract(
    "contact-created",
    1,
    key="contact_id",
    owner="contacts",
    partitions=6,
    consumers=("consent", "memberships", "messaging"),
)
class ContactCreatedV1(EventContract):
    """A person entered a federation's file."""

    personal_fields: ClassVar[tuple[str, ...]] = CONTACT_PERSONAL_FIELDS

    contact_id: str
    contact_version: int = Field(ge=1)
    contact: ContactState


@contract(
    "contact-updated",
    1,
    key="contact_id",
    owner="contacts",
    partitions=6,
    consumers=("consent", "memberships", "messaging"),
)
class ContactUpdatedV1(EventContract):
    """A person's data changed; carries the full new state and its version."""

    personal_fields: ClassVar[tuple[str, ...]] = CONTACT_PERSONAL_FIELDS

    contact_id: str
    contact_version: int = Field(ge=1)
    contact: ContactState
    changed_fields: list[str] = Field(default_factory=list)


@contract(
    "contact-merged",
    1,
    key="merged_contact_id",
    owner="contacts",
    partitions=6,
    consumers=("consent", "memberships", "messaging"),
)
class ContactMergedV1(EventContract):
    """A duplicate was merged into a surviving contact; consumers remap the old id."""

    merged_contact_id: str
    surviving_contact_id: str
    contact_version: int = Field(ge=1)
    merged_by: str


@contract("contact-erased", 1, key="contact_id", owner="contacts", partitions=6)
class ContactErasedV1(EventContract):
    """A person's data is gone from contacts."""

    contact_id: str
    contact_version: int = Field(ge=1)


# ---------------------------------------------------------------- consent


@contract(
    "consent-granted",
    1,
    key="contact_id",
    owner="consent",
    partitions=6,
    consumers=("consent", "messaging"),
)
class ConsentGrantedV1(EventContract):
    """A contact consented to be reached on a channel for a purpose."""

    personal_fields: ClassVar[tuple[str, ...]] = ("proof",)

    contact_id: str
    channel: Channel
    purpose: str
    source: str
    proof: dict[str, str] = Field(default_factory=dict)
    granted_at: datetime
    #: SHA-256 (hex) of the consent text the person agreed to, when one was recorded
    text_hash: str | None = None
    #: who recorded it: a user of the federation, or the person (double opt-in link)
    actor_kind: Literal["user", "person"] | None = None


@contract(
    "consent-revoked",
    1,
    key="contact_id",
    owner="consent",
    partitions=6,
    consumers=("consent", "messaging"),
    lane=Lane.urgent,
)
class ConsentRevokedV1(EventContract):
    """A contact withdrew consent; messaging must stop at once."""

    contact_id: str
    channel: Channel
    purpose: str
    source: str
    revoked_at: datetime
    #: who recorded it: a user, or the person (unsubscribe link, one-click, SMS STOP)
    actor_kind: Literal["user", "person"] | None = None


@contract(
    "consent-confirmation-requested",
    1,
    key="contact_id",
    owner="consent",
    partitions=6,
    consumers=("messaging",),
)
class ConsentConfirmationRequestedV1(EventContract):
    """A consent is pending (double opt-in): messaging sends the person the confirmation
    link (a transactional email, sent without a marketing consent but never to a
    suppressed address). The consent counts only once the link is opened and confirmed."""

    request_id: str
    contact_id: str
    channel: Channel
    purpose: str
    #: public link with a signed, expiring token; opening it lets the person confirm
    confirm_url: str
    expires_at: datetime
    text_version: str | None = None


@contract(
    "suppression-added",
    1,
    key="address_hash",
    owner="consent",
    partitions=3,
    consumers=("contacts", "messaging"),
    lane=Lane.urgent,
)
class SuppressionAddedV1(EventContract):
    """An address joined the suppression list (the person objected to everything, was
    erased, or the address hard-bounced): never message it, flag any contact created with
    it. Carries only the salted hash (tribune_shared.suppression.address_hash), never the
    address."""

    address_hash: str
    kind: Literal["email", "phone"]
    #: objection (the person), erasure, or bounce (a hard bounce: the address is invalid)
    reason: Literal["objection", "erasure", "bounce"]
    suppressed_at: datetime


@contract(
    "erasure-requested",
    1,
    key="contact_id",
    owner="consent",
    partitions=6,
    consumers=("contacts", "consent", "memberships", "messaging"),
    lane=Lane.urgent,
)
class ErasureRequestedV1(EventContract):
    """The DPO accepted an erasure request; every service deletes the person."""

    request_id: str
    contact_id: str
    requested_at: datetime


@contract("erasure-completed", 1, key="contact_id", owner="*", partitions=6, consumers=("consent",))
class ErasureCompletedV1(EventContract):
    """One service finished erasing a person."""

    request_id: str
    contact_id: str
    service: str
    completed_at: datetime
    kept_for_legal_reasons: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- memberships


@contract(
    "membership-activated",
    1,
    key="membership_id",
    owner="memberships",
    consumers=("consent", "messaging"),
)
class MembershipActivatedV1(EventContract):
    """A membership became active (dues paid)."""

    membership_id: str
    contact_id: str
    plan: str
    starts_on: date
    ends_on: date


@contract(
    "membership-lapsed", 1, key="membership_id", owner="memberships", consumers=("messaging",)
)
class MembershipLapsedV1(EventContract):
    """A membership was not renewed after its grace period."""

    membership_id: str
    contact_id: str
    lapsed_on: date


@contract(
    "membership-cancelled", 1, key="membership_id", owner="memberships", consumers=("messaging",)
)
class MembershipCancelledV1(EventContract):
    """A membership was cancelled by the member or the federation."""

    membership_id: str
    contact_id: str
    cancelled_on: date
    reason: str = ""


@contract("membership-grace-started", 1, key="membership_id", owner="memberships")
class MembershipGraceStartedV1(EventContract):
    """A membership's paid period ended without renewal: it is in its grace days (still in
    good standing until ``grace_ends_on``)."""

    membership_id: str
    contact_id: str
    ends_on: date
    grace_ends_on: date


@contract(
    "membership-renewal-requested",
    1,
    key="membership_id",
    owner="memberships",
    consumers=("messaging",),
)
class MembershipRenewalRequestedV1(EventContract):
    """A membership's paid period ends soon: the member is asked to renew (a reminder is
    sent only with their consent for the membership purpose)."""

    membership_id: str
    contact_id: str
    plan: str
    ends_on: date
    days_left: int = Field(ge=0)


PaymentMethod = Literal["card", "transfer", "debit", "cheque", "cash"]


@contract(
    "payment-received",
    1,
    key="payment_id",
    owner="memberships",
    consumers=("consent", "memberships"),
)
class PaymentReceivedV1(EventContract):
    """A payment provider confirmed a payment (recorded once, whatever the retries)."""

    payment_id: str
    provider: str
    provider_payment_id: str
    contact_id: str
    amount_cents: int = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)
    method: PaymentMethod
    purpose: Literal["dues", "donation"]
    received_at: datetime


@contract(
    "payment-refunded",
    1,
    key="payment_id",
    owner="memberships",
    consumers=("memberships",),
)
class PaymentRefundedV1(EventContract):
    """A recorded payment was refunded or charged back: the standing it bought, the totals
    it counted in and its receipt are reversed."""

    payment_id: str
    refund_id: str
    contact_id: str
    amount_cents: int = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)
    kind: Literal["refund", "chargeback"]
    purpose: Literal["dues", "donation"]
    reason: str = ""
    refunded_at: datetime


@contract("donation-received", 1, key="donation_id", owner="memberships")
class DonationReceivedV1(EventContract):
    """A donation was accepted within the legal limits."""

    donation_id: str
    contact_id: str
    amount_cents: int = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)
    method: PaymentMethod
    received_at: datetime


@contract("receipt-issued", 1, key="receipt_id", owner="memberships")
class ReceiptIssuedV1(EventContract):
    """A tax receipt with a sequential number was issued."""

    receipt_id: str
    number: str
    contact_id: str
    amount_cents: int = Field(gt=0)
    issued_at: datetime


@contract("receipt-cancelled", 1, key="receipt_id", owner="memberships")
class ReceiptCancelledV1(EventContract):
    """A tax receipt was cancelled (by a treasurer, replaced by a reissue, or because its
    payment was refunded or charged back); its number is never given again."""

    receipt_id: str
    number: str
    contact_id: str
    payment_id: str
    kind: Literal["cancelled", "reissued", "refund", "chargeback"]
    reason: str = ""
    replaced_by: str | None = None
    cancelled_at: datetime


# ---------------------------------------------------------------- public forms and meetings


@contract(
    "consent-text-published",
    1,
    key="text_id",
    owner="consent",
    consumers=("contacts",),
)
class ConsentTextPublishedV1(EventContract):
    """A consent text was created, changed (allowed until first used as proof) or
    withdrawn. Contacts keeps a copy so a public form shows the exact text (and its hash)
    the person agrees to; consent stays the owner of texts and of the proof."""

    text_id: str
    version: str
    title: str = ""
    body: str = ""
    language: str = "fr"
    #: SHA-256 (hex) of ``body``
    sha256: str = ""
    #: the text was deleted: forms may no longer offer it
    withdrawn: bool = False
    #: counts the text's changes (creation 1, each change +1, withdrawal last): a copy
    #: keeps the highest, whatever order the events arrive in
    revision: int = Field(default=0, ge=0)


@contract(
    "form-submitted",
    1,
    key="submission_id",
    owner="contacts",
    partitions=6,
    consumers=("contacts",),
)
class FormSubmittedV1(EventContract):
    """Somebody filled in a public form (petition, sign-up, volunteer form, RSVP) and the
    submission passed the abuse checks. The answers stay in contacts' store (no personal
    data travels here): contacts' worker applies queued submissions in batches, matching
    or creating the person (accept first, apply through the backbone)."""

    submission_id: str
    form_id: str
    form_kind: Literal["petition", "signup", "volunteer", "event_rsvp"]
    received_at: datetime


class FormConsent(BaseModel):
    """One consent box the person ticked, with the exact text version they were shown."""

    model_config = ConfigDict(frozen=True)

    channel: Channel
    purpose: str
    text_version: str
    #: SHA-256 (hex) of the text as the page showed it
    text_sha256: str


@contract(
    "form-submission-applied",
    1,
    key="contact_id",
    owner="contacts",
    partitions=6,
    consumers=("consent",),
)
class FormSubmissionAppliedV1(EventContract):
    """A form submission was matched to a person (created or updated). Consent records
    the boxes the person ticked with their own proof (email through double opt-in); only
    contacts' matching knows the person, hence this second fact after form-submitted."""

    personal_fields: ClassVar[tuple[str, ...]] = ("proof",)

    submission_id: str
    form_id: str
    form_kind: Literal["petition", "signup", "volunteer", "event_rsvp"]
    contact_id: str
    contact_version: int = Field(ge=1)
    #: the person entered the file with this submission
    created: bool
    #: the same person had already submitted this form (counted once)
    repeat: bool = False
    consents: list[FormConsent] = Field(default_factory=list)
    #: the person's own proof: submitted_at, minimised ip, user_agent, form_id, page
    proof: dict[str, str] = Field(default_factory=dict)
    submitted_at: datetime


@contract(
    "meeting-reminder-requested",
    1,
    key="contact_id",
    owner="contacts",
    consumers=("messaging",),
)
class MeetingReminderRequestedV1(EventContract):
    """A meeting or canvassing session a person registered for is near: messaging reminds
    them (only with their consent for the meeting's purpose, quiet hours for SMS)."""

    meeting_id: str
    contact_id: str
    title: str
    kind: Literal["meeting", "canvassing"]
    starts_at: datetime
    place: str = ""
    #: the consent purpose the reminder needs (contacts' meetings settings)
    purpose: str
    hours_before: int = Field(ge=0)


# ---------------------------------------------------------------- messaging


@contract("campaign-launched", 1, key="campaign_id", owner="messaging", consumers=("contacts",))
class CampaignLaunchedV1(EventContract):
    """A campaign started sending. Contacts, the owner of people and of the segment
    language, answers with the audience: one ``campaign-recipient-selected`` per contact of
    the segment (or of the whole federation subtree without one) within the envelope's
    federation subtree, then ``campaign-audience-resolved``."""

    campaign_id: str
    channel: Channel
    segment_id: str | None = None
    launched_at: datetime
    #: the consent purpose the campaign is for (messaging checks it at send time)
    purpose: str | None = None
    #: contacts without an address on the channel are left out of the audience
    needs_address: bool = True


@contract(
    "campaign-recipient-selected",
    1,
    key="contact_id",
    owner="contacts",
    partitions=6,
    consumers=("messaging",),
)
class CampaignRecipientSelectedV1(EventContract):
    """A contact belongs to a launched campaign's audience (keyed by contact: the audience
    spreads over every partition, so every messaging worker takes its share). Messaging
    records the message's intent and re-checks every rule when it sends."""

    campaign_id: str
    contact_id: str
    #: the contact's position in the audience (0-based), for A/B shares and progress
    position: int = Field(ge=0)


@contract(
    "campaign-audience-resolved",
    1,
    key="campaign_id",
    owner="contacts",
    consumers=("messaging",),
)
class CampaignAudienceResolvedV1(EventContract):
    """Contacts has selected every recipient of a campaign (``recipients`` of them), or
    could not (``error``: the segment is gone or outside the campaign's federation)."""

    campaign_id: str
    recipients: int = Field(ge=0)
    error: str | None = None
    resolved_at: datetime


class _MessageEvent(EventContract):
    message_id: str
    contact_id: str
    channel: Channel
    campaign_id: str | None = None


@contract(
    "message-sent", 1, key="message_id", owner="messaging", partitions=6, consumers=("consent",)
)
class MessageSentV1(_MessageEvent):
    """A message was handed to the provider (SMTP server or SMS gateway)."""

    sent_at: datetime


@contract("message-delivered", 1, key="message_id", owner="messaging", partitions=6)
class MessageDeliveredV1(_MessageEvent):
    """The provider reported delivery."""

    delivered_at: datetime


@contract(
    "message-bounced", 1, key="message_id", owner="messaging", partitions=6, consumers=("consent",)
)
class MessageBouncedV1(_MessageEvent):
    """The message bounced; consent puts the address of a hard bounce on the suppression
    list (a soft bounce is only counted: the provider retries by itself)."""

    bounce_type: Literal["hard", "soft"]
    reason: str = ""
    bounced_at: datetime
    #: salted hash of the address that bounced (``tribune_shared.suppression``), set on a
    #: hard bounce: the one address consent suppresses, never the address itself
    address_hash: str | None = None


@contract(
    "message-complained",
    1,
    key="message_id",
    owner="messaging",
    partitions=6,
    consumers=("consent",),
    lane=Lane.urgent,
)
class MessageComplainedV1(_MessageEvent):
    """The recipient reported the message as spam to their mailbox provider (a feedback
    loop or an ESP's complaint event): consent records it as the person's objection to the
    message's purpose on that channel."""

    #: the consent purpose the message was sent for
    purpose: str
    complained_at: datetime


@contract("message-opened", 1, key="message_id", owner="messaging", partitions=6)
class MessageOpenedV1(_MessageEvent):
    """The recipient opened the message (recorded per person only with tracking consent)."""

    opened_at: datetime


@contract(
    "message-clicked", 1, key="message_id", owner="messaging", partitions=6, consumers=("consent",)
)
class MessageClickedV1(_MessageEvent):
    """The recipient clicked a link."""

    url: str
    clicked_at: datetime


@contract("message-failed", 1, key="message_id", owner="messaging", partitions=6)
class MessageFailedV1(_MessageEvent):
    """The message could not be sent."""

    reason: str
    failed_at: datetime


# ---------------------------------------------------------------- stream processors


@dataclass(frozen=True)
class StreamSpec:
    """A stream processor (a faust-streaming app) a service runs under its own Kafka user:
    it reads ``reads`` with the consumer group ``app_id`` and keeps its tables in topics
    named ``<app_id>-...`` (changelogs), which it creates itself. The Kafka ACLs give the
    service exactly that (tribune_shared.events.acls)."""

    app_id: str
    service: str
    reads: tuple[str, ...]


STREAMS: dict[str, StreamSpec] = {}


def stream(app_id: str, *, service: str, reads: tuple[str, ...]) -> StreamSpec:
    if app_id in STREAMS:
        raise ValueError(f"duplicate stream processor {app_id}")
    unknown = sorted(set(reads) - set(TOPICS))
    if unknown:
        raise ValueError(f"stream {app_id} reads unregistered topics {unknown}")
    STREAMS[app_id] = spec = StreamSpec(app_id, service, tuple(sorted(reads)))
    return spec


#: memberships' live figures (memberships.live; its app id is MEMBERSHIPS_LIVE_APP_ID)
MEMBERSHIPS_LIVE = stream(
    "memberships-live",
    service="memberships",
    reads=(
        "membership-activated",
        "membership-grace-started",
        "membership-lapsed",
        "membership-cancelled",
        "payment-received",
        "payment-refunded",
    ),
)


#: The gateway's live event stream (gateway.live_events, ``GET /api/v1/events/stream``):
#: which topics it shows and to which roles (``tribune_shared.auth.Role`` values), in one
#: place. Events carry no personal data there (sealed fields stay sealed); a role sees an
#: event of its subtree only if it is listed. Its recorder reads them with its own group.
_ALL_ROLES = ("admin", "secretary", "treasurer", "campaign_manager", "dpo", "viewer")
_PEOPLE = ("admin", "secretary", "campaign_manager", "dpo", "viewer")
_CONSENT = ("admin", "secretary", "campaign_manager", "dpo")
_MONEY = ("admin", "treasurer")
_STANDING = ("admin", "secretary", "treasurer", "viewer")
_SENDING = ("admin", "campaign_manager")
LIVE_EVENTS: dict[str, tuple[str, ...]] = {
    "contact-created": _PEOPLE,
    "contact-updated": _PEOPLE,
    "contact-merged": _PEOPLE,
    "contact-erased": _PEOPLE,
    "form-submission-applied": ("admin", "secretary", "campaign_manager"),
    "consent-granted": _CONSENT,
    "consent-revoked": _CONSENT,
    "suppression-added": ("admin", "dpo"),
    "erasure-requested": ("admin", "dpo"),
    "erasure-completed": ("admin", "dpo"),
    "membership-activated": _STANDING,
    "membership-grace-started": _STANDING,
    "membership-lapsed": _STANDING,
    "membership-cancelled": _STANDING,
    "payment-received": _MONEY,
    "payment-refunded": _MONEY,
    "donation-received": _MONEY,
    "receipt-issued": _MONEY,
    "receipt-cancelled": _MONEY,
    "campaign-launched": _SENDING,
    "message-sent": _SENDING,
    "message-delivered": _SENDING,
    "message-bounced": _SENDING,
    "message-failed": _SENDING,
    "message-opened": _SENDING,
    "message-clicked": _SENDING,
    "message-complained": _SENDING,
    "federation-created": _ALL_ROLES,
    "federation-updated": _ALL_ROLES,
}
GATEWAY_LIVE_EVENTS = stream("gateway-live-events", service="gateway", reads=tuple(LIVE_EVENTS))


def contract_for(event_type: str, version: int) -> type[EventContract]:
    try:
        return CONTRACTS[(event_type, version)]
    except KeyError:
        raise LookupError(f"no contract for {event_type} v{version}") from None
