"""Versioned event contracts: one pydantic model per event type and version.

Rules: a topic carries one event type; the message key is the aggregate id; within a
version only optional fields are added (consumers ignore fields they don't know).
A breaking change is a new version registered beside the old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class EventContract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    event_version: ClassVar[int]
    #: the data field holding the aggregate id (the Kafka key)
    key_field: ClassVar[str]

    @property
    def key(self) -> str:
        return str(getattr(self, self.key_field))


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    owner: str
    description: str
    #: compacted topics keep the last value per key (tombstones erase)
    compacted: bool = False


CONTRACTS: dict[tuple[str, int], type[EventContract]] = {}
TOPICS: dict[str, TopicSpec] = {}


def contract(
    event_type: str, version: int, *, key: str, owner: str, partitions: int = 3, doc: str = ""
):
    def register(cls: type[EventContract]) -> type[EventContract]:
        if (event_type, version) in CONTRACTS:
            raise ValueError(f"duplicate contract {event_type} v{version}")
        cls.event_type = event_type
        cls.event_version = version
        cls.key_field = key
        CONTRACTS[(event_type, version)] = cls
        TOPICS.setdefault(
            event_type,
            TopicSpec(event_type, partitions, owner, doc or (cls.__doc__ or "").strip()),
        )
        return cls

    return register


def dlq_topic(topic: str) -> str:
    return f"{topic}-dlq"


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


class ContactState(BaseModel):
    """The personal data of a contact as other services may project it."""

    model_config = ConfigDict(frozen=True)

    given_name: str = ""
    family_name: str = ""
    email: str | None = None
    phone: str | None = None
    postcode: str | None = None
    tags: list[str] = Field(default_factory=list)
    origin: DataOrigin | None = None


# ---------------------------------------------------------------- gateway


@contract("federation-created", 1, key="federation_id", owner="gateway", partitions=1)
class FederationCreatedV1(EventContract):
    """A federation was added to the tree."""

    federation_id: str
    parent_id: str | None
    name: str
    path: str


@contract("federation-updated", 1, key="federation_id", owner="gateway", partitions=1)
class FederationUpdatedV1(EventContract):
    """A federation was renamed or moved."""

    federation_id: str
    parent_id: str | None
    name: str
    path: str


# ---------------------------------------------------------------- contacts


@contract("contact-created", 1, key="contact_id", owner="contacts", partitions=6)
class ContactCreatedV1(EventContract):
    """A person entered a federation's file."""

    contact_id: str
    contact_version: int = Field(ge=1)
    contact: ContactState


@contract("contact-updated", 1, key="contact_id", owner="contacts", partitions=6)
class ContactUpdatedV1(EventContract):
    """A person's data changed; carries the full new state and its version."""

    contact_id: str
    contact_version: int = Field(ge=1)
    contact: ContactState
    changed_fields: list[str] = Field(default_factory=list)


@contract("contact-merged", 1, key="merged_contact_id", owner="contacts", partitions=6)
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


@contract("consent-granted", 1, key="contact_id", owner="consent", partitions=6)
class ConsentGrantedV1(EventContract):
    """A contact consented to be reached on a channel for a purpose."""

    contact_id: str
    channel: Channel
    purpose: str
    source: str
    proof: dict[str, str] = Field(default_factory=dict)
    granted_at: datetime


@contract("consent-revoked", 1, key="contact_id", owner="consent", partitions=6)
class ConsentRevokedV1(EventContract):
    """A contact withdrew consent; messaging must stop at once."""

    contact_id: str
    channel: Channel
    purpose: str
    source: str
    revoked_at: datetime


@contract("erasure-requested", 1, key="contact_id", owner="consent", partitions=6)
class ErasureRequestedV1(EventContract):
    """The DPO accepted an erasure request; every service deletes the person."""

    request_id: str
    contact_id: str
    requested_at: datetime


@contract("erasure-completed", 1, key="contact_id", owner="*", partitions=6)
class ErasureCompletedV1(EventContract):
    """One service finished erasing a person."""

    request_id: str
    contact_id: str
    service: str
    completed_at: datetime
    kept_for_legal_reasons: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- memberships


@contract("membership-activated", 1, key="membership_id", owner="memberships")
class MembershipActivatedV1(EventContract):
    """A membership became active (dues paid)."""

    membership_id: str
    contact_id: str
    plan: str
    starts_on: date
    ends_on: date


@contract("membership-lapsed", 1, key="membership_id", owner="memberships")
class MembershipLapsedV1(EventContract):
    """A membership was not renewed after its grace period."""

    membership_id: str
    contact_id: str
    lapsed_on: date


@contract("membership-cancelled", 1, key="membership_id", owner="memberships")
class MembershipCancelledV1(EventContract):
    """A membership was cancelled by the member or the federation."""

    membership_id: str
    contact_id: str
    cancelled_on: date
    reason: str = ""


PaymentMethod = Literal["card", "transfer", "debit", "cheque", "cash"]


@contract("payment-received", 1, key="payment_id", owner="memberships")
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


# ---------------------------------------------------------------- messaging


@contract("campaign-launched", 1, key="campaign_id", owner="messaging")
class CampaignLaunchedV1(EventContract):
    """A campaign started sending."""

    campaign_id: str
    channel: Channel
    segment_id: str | None = None
    launched_at: datetime


class _MessageEvent(EventContract):
    message_id: str
    contact_id: str
    channel: Channel
    campaign_id: str | None = None


@contract("message-sent", 1, key="message_id", owner="messaging", partitions=6)
class MessageSentV1(_MessageEvent):
    """A message was handed to the provider (SMTP server or SMS gateway)."""

    sent_at: datetime


@contract("message-delivered", 1, key="message_id", owner="messaging", partitions=6)
class MessageDeliveredV1(_MessageEvent):
    """The provider reported delivery."""

    delivered_at: datetime


@contract("message-bounced", 1, key="message_id", owner="messaging", partitions=6)
class MessageBouncedV1(_MessageEvent):
    """The message bounced; hard bounces suppress the address."""

    bounce_type: Literal["hard", "soft"]
    reason: str = ""
    bounced_at: datetime


@contract("message-opened", 1, key="message_id", owner="messaging", partitions=6)
class MessageOpenedV1(_MessageEvent):
    """The recipient opened the message (recorded per person only with tracking consent)."""

    opened_at: datetime


@contract("message-clicked", 1, key="message_id", owner="messaging", partitions=6)
class MessageClickedV1(_MessageEvent):
    """The recipient clicked a link."""

    url: str
    clicked_at: datetime


@contract("message-failed", 1, key="message_id", owner="messaging", partitions=6)
class MessageFailedV1(_MessageEvent):
    """The message could not be sent."""

    reason: str
    failed_at: datetime


def contract_for(event_type: str, version: int) -> type[EventContract]:
    try:
        return CONTRACTS[(event_type, version)]
    except KeyError:
        raise LookupError(f"no contract for {event_type} v{version}") from None
