from __future__ import annotations

import re
from email.utils import parseaddr
from typing import ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from tribune_shared.settings import DEV_SECRET, ServiceSettings

from messaging.campaigns.rules import parse_windows
from messaging.domain import single_line_problem

#: hard caps of the API; the settings below may only tighten them
SUBJECT_MAX_CHARS = 200
TEXT_MAX_CHARS = 100_000
#: a template part (HTML or text source, messaging.templates)
TEMPLATE_PART_MAX_CHARS = 100_000

#: the SMS provider styles messaging.sms has adapters for
SmsProviderName = Literal["ovh", "twilio"]
_SMS_PROVIDER_ORDER: tuple[SmsProviderName, ...] = ("ovh", "twilio")
#: an alphanumeric sender id (what the phone shows) or a phone number
_SMS_SENDER_ALNUM = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 .\-]{1,11}$")
_SMS_SENDER_NUMBER = re.compile(r"^\+?[1-9]\d{2,14}$")


class MessagingSettings(ServiceSettings):
    service_name = "messaging"
    secret_fields: ClassVar[tuple[str, ...]] = (
        *ServiceSettings.secret_fields,
        "unsubscribe_secret",
        "suppression_salt",
    )
    model_config = SettingsConfigDict(env_prefix="MESSAGING_", extra="ignore")

    http_port: int = Field(default=8104, ge=1, le=65535)
    worker_port: int = Field(default=8204, ge=1, le=65535)

    # SMTP relay the email channel hands messages to
    smtp_host: str = Field(default="127.0.0.1", min_length=1)
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_timeout_seconds: float = Field(default=10, gt=0, le=120)
    smtp_use_tls: bool = Field(default=False, description="implicit TLS (port 465)")
    smtp_start_tls: bool | None = Field(
        default=None, description="STARTTLS: true forces, false disables, unset = if offered"
    )
    smtp_pool_size: int = Field(
        default=8,
        ge=1,
        le=256,
        description="SMTP sessions a worker keeps open (campaigns and the emails events ask for)",
    )
    smtp_rate_per_second: float = Field(
        default=0,
        ge=0,
        le=100_000,
        description="emails per second a worker hands to the relay (0: no limit)",
    )
    # A second relay: used when the first cannot take a message now (the worker's sends)
    smtp_fallback_host: str | None = Field(default=None, min_length=1)
    smtp_fallback_port: int = Field(default=587, ge=1, le=65535)
    smtp_fallback_use_tls: bool = False
    smtp_fallback_start_tls: bool | None = None
    smtp_fallback_username: str | None = None
    smtp_fallback_password: SecretStr | None = None
    smtp_fallback_rate_per_second: float = Field(default=0, ge=0, le=100_000)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None

    # What every email carries
    mail_from: str = "Tribune <no-reply@tribune.localhost>"
    #: consent's public unsubscribe page, through the gateway
    unsubscribe_base_url: str = "http://127.0.0.1:8000/api/v1/public/consents/unsubscribe"
    #: signs the unsubscribe tokens (falls back to TRIBUNE_UNSUBSCRIBE_SECRET)
    unsubscribe_secret: str = DEV_SECRET
    unsubscribe_footer: str = Field(
        default="You receive this email because you agreed to it. "
        "To stop receiving these emails: {url}",
        max_length=1000,
    )

    #: salts the suppression list's hashes (TRIBUNE_SUPPRESSION_SALT, same as consent's):
    #: an address on it is never sent anything
    suppression_salt: str = DEV_SECRET
    #: the consent purpose (channel email) that allows per-person open/click tracking
    tracking_purpose: str = Field(default="tracking", min_length=1, max_length=64)

    # Open and click tracking (messaging.tracking); tokens are signed with
    # unsubscribe_secret under their own purposes (tribune_shared.tokens)
    tracking_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="the gateway's public address: tracked links and the open pixel point "
        "at <this>/api/v1/public/t/...",
    )
    tracking_max_url_chars: int = Field(
        default=2000,
        ge=100,
        le=2500,
        description="a longer link is left as it is, not tracked (its token must stay "
        "under the 4096 characters a token may have)",
    )
    tracking_flush_interval_ms: int = Field(
        default=500, ge=10, le=60_000, description="how often buffered opens/clicks are written"
    )
    tracking_flush_max_hits: int = Field(
        default=1000, ge=1, le=100_000, description="buffered hits that trigger a write at once"
    )
    tracking_buffer_max_hits: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="hits an API process holds while the store does not take them; beyond, "
        "new hits are not counted (the redirect still works)",
    )
    tracking_dedupe_days: int = Field(
        default=90,
        ge=1,
        le=400,
        description="how long a message's first open/click is remembered for the unique "
        "counts (a later one counts as unique again)",
    )

    # The double opt-in confirmation email (consent-confirmation-requested)
    confirmation_subject: str = Field(
        default="Please confirm your subscription", min_length=1, max_length=SUBJECT_MAX_CHARS
    )
    confirmation_text: str = Field(
        default="Hello,\n\nYou were asked whether you agree to receive our emails about "
        "\u201c{purpose}\u201d. To confirm, open this link:\n\n{url}\n\nIf you did not ask "
        "for this, ignore this email: without your confirmation we will not write to you "
        "again about it.",
        max_length=5000,
    )

    # The renewal reminder (membership-renewal-requested, messaging.renewals): sent only
    # with the person's email consent for this purpose
    renewal_purpose: str = Field(
        default="membership",
        min_length=1,
        max_length=64,
        description="the consent purpose (channel email) a renewal reminder needs",
    )
    renewal_subject: str = Field(
        default="Your membership ends on {ends_on}",
        min_length=1,
        max_length=SUBJECT_MAX_CHARS,
        description="subject of the reminder ({ends_on}, {days_left}, {plan} are filled in)",
    )
    renewal_text: str = Field(
        default="Hello,\n\nYour membership ({plan}) ends on {ends_on}, in {days_left} days. "
        "Renew your dues before then to stay a member in good standing (and keep your vote "
        "in the party's internal elections).",
        min_length=1,
        max_length=5000,
        description="text of the reminder ({ends_on}, {days_left}, {plan} are filled in); "
        "the unsubscribe footer is added",
    )

    # The meeting reminder (meeting-reminder-requested, messaging.reminders): sent only with
    # the person's email consent for the purpose the event names (contacts' settings)
    meeting_reminder_subject: str = Field(
        default="Reminder: {title}, {date} at {time}",
        min_length=1,
        max_length=SUBJECT_MAX_CHARS,
        description="subject of the reminder ({title}, {date}, {time}, {place} are filled in)",
    )
    meeting_reminder_text: str = Field(
        default="Hello,\n\nYou registered for \u201c{title}\u201d on {date} at {time}.\n"
        "Place: {place}\n\nSee you there!",
        min_length=1,
        max_length=5000,
        description="text of the reminder ({title}, {date}, {time}, {place} are filled in); "
        "the unsubscribe footer is added",
    )
    meeting_reminder_timezone: str = Field(
        default="Europe/Paris",
        min_length=1,
        max_length=64,
        description="the IANA time zone the reminder writes the meeting's date and time in",
    )

    # SMS (messaging.sms): providers over HTTP, tried in order, the next when one fails
    sms_provider_order: list[SmsProviderName] = Field(
        default_factory=lambda: list(_SMS_PROVIDER_ORDER),
        min_length=1,
        max_length=2,
        description="SMS providers in failover order (ovh, twilio): the first that takes it",
    )
    sms_sender_id: str = Field(
        default="Tribune",
        description="what the phone shows as sender: 1-11 letters/digits, or a number",
    )
    sms_max_segments: int = Field(
        default=6, ge=1, le=10, description="most SMS parts one message may take"
    )
    sms_timeout_seconds: float = Field(
        default=10, gt=0, le=60, description="per HTTP request to an SMS provider"
    )
    sms_max_connections: int = Field(
        default=20, ge=1, le=1000, description="pooled connections to the SMS providers"
    )
    sms_max_attempts: int = Field(
        default=3, ge=1, le=10, description="tries per provider on 5xx, 429 and timeouts"
    )
    sms_retry_backoff_seconds: float = Field(
        default=0.5, ge=0, le=30, description="wait before the first retry, doubled each retry"
    )
    sms_retry_backoff_max_seconds: float = Field(
        default=5, ge=0, le=300, description="longest wait between two retries"
    )
    sms_receipt_tolerance_seconds: int = Field(
        default=300, ge=1, le=3600, description="age beyond which a signed receipt is refused"
    )
    # OVH-like provider (JSON jobs API, X-Ovh-* signed requests)
    sms_ovh_base_url: str = Field(
        default="http://127.0.0.1:8026/1.0",
        description="API root (OVH: https://eu.api.ovh.com/1.0)",
    )
    sms_ovh_service_name: str = Field(default="sms-tribune-1", min_length=1, max_length=64)
    sms_ovh_application_key: str = Field(default="tribune-dev", min_length=1, max_length=128)
    #: credentials (unset: this provider is left out of the order). Not in secret_fields:
    #: SMS is optional, a deployment without a provider need not set them.
    sms_ovh_application_secret: SecretStr | None = None
    sms_ovh_consumer_key: SecretStr | None = None
    #: HMAC-SHA256 secret of the provider's delivery receipts (unset: receipts refused)
    sms_ovh_receipt_secret: SecretStr | None = None
    sms_ovh_rate_per_second: float = Field(
        default=10, gt=0, le=10_000, description="messages per second handed to this provider"
    )
    sms_ovh_burst: int = Field(
        default=10, ge=1, le=10_000, description="messages sent at once after an idle time"
    )
    # Twilio-like provider (form-encoded Messages API, basic auth)
    sms_twilio_base_url: str = Field(
        default="http://127.0.0.1:8026/2010-04-01",
        description="API root (Twilio: https://api.twilio.com/2010-04-01)",
    )
    sms_twilio_account_sid: str = Field(default="ACtribunedev", min_length=1, max_length=64)
    #: credentials (unset: this provider is left out of the order)
    sms_twilio_auth_token: SecretStr | None = None
    #: HMAC-SHA256 secret of the provider's delivery receipts (unset: receipts refused)
    sms_twilio_receipt_secret: SecretStr | None = None
    sms_twilio_status_callback_url: str | None = Field(
        default=None, description="StatusCallback sent with each message (receipts go there)"
    )
    sms_twilio_rate_per_second: float = Field(default=10, gt=0, le=10_000)
    sms_twilio_burst: int = Field(default=10, ge=1, le=10_000)

    # Send-time rules of campaigns (messaging.campaigns.rules)
    sms_quiet_hours_enabled: bool = Field(
        default=True, description="hold marketing SMS outside the allowed hours (below)"
    )
    sms_allowed_hours: str = Field(
        default="mon-sat 08:00-20:00",
        min_length=1,
        max_length=500,
        description="when marketing SMS may reach people, on their own clock, e.g. "
        "'mon-fri 08:00-20:00; sat 09:00-18:00'; other days and public holidays are quiet",
    )
    sms_holiday_country: str = Field(
        default="FR",
        max_length=2,
        description="whose public holidays are quiet all day (ISO code; empty: none)",
    )
    sms_default_timezone: str = Field(
        default="Europe/Paris",
        min_length=1,
        max_length=64,
        description="a recipient's time zone when neither the contact, their department "
        "nor their phone number tells it",
    )
    cap_enabled: bool = Field(default=True, description="apply the frequency cap (below)")
    cap_messages: int = Field(
        default=3, ge=1, le=1000, description="most marketing messages a person gets per window"
    )
    cap_window_days: int = Field(
        default=7, ge=1, le=366, description="the frequency cap's rolling window, in days"
    )
    cap_per_channel: bool = Field(
        default=False,
        description="count the cap per channel (false: email and SMS together)",
    )

    @field_validator("sms_allowed_hours")
    @classmethod
    def _allowed_hours(cls, value: str) -> str:
        parse_windows(value)  # raises ValueError naming the faulty entry
        return value

    @field_validator("sms_holiday_country")
    @classmethod
    def _holiday_country(cls, value: str) -> str:
        value = value.strip().upper()
        if value and value not in holidays.list_supported_countries():
            raise ValueError(f"{value!r} is not a country the holidays library knows")
        return value

    @field_validator("sms_default_timezone", "meeting_reminder_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    # Campaigns (messaging.campaigns): the dispatcher every worker runs
    campaign_poll_interval_seconds: float = Field(
        default=0.2, gt=0, le=60, description="how often an idle dispatcher looks for work"
    )
    campaign_complete_check_max_seconds: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="longest wait before a dispatcher asks again whether a campaign with "
        "messages left and none due (deferred by quiet hours, held, being sent elsewhere) "
        "is done; the wait doubles from campaign_poll_interval_seconds while it is not",
    )
    campaign_claim_size: int = Field(
        default=200, ge=1, le=10_000, description="queued messages a dispatcher takes at once"
    )
    campaign_cancel_batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="messages of a cancelled campaign that a dispatcher cancels per "
        "transaction, one batch per campaign per tick (the cancel itself changes only the "
        "campaign)",
    )
    campaign_claim_ahead_handoffs: int = Field(
        default=2,
        ge=0,
        le=100,
        description="when this many hand-offs of a full batch are left, the next batch is "
        "claimed while they are sent (0: only once a batch is done). A claim is one bulk "
        "update of the queue: between batches it held up about a quarter of a worker's time "
        "in the bench. Messages claimed and not handed over are not in the crash window: a "
        "stopping worker puts them back, a killed one's come back after "
        "campaign_claim_timeout_seconds",
    )
    campaign_handoff_size: int = Field(
        default=50,
        ge=1,
        le=1_000,
        description="messages handed over and not yet on record, at most: a crash re-sends "
        "at most this many. A hand-off (between two re-checks of consent and state) is this "
        "size, or half of it with campaign_overlap_handoffs",
    )
    campaign_overlap_handoffs: bool = Field(
        default=True,
        description="hand the next hand-off's messages over as soon as every message of "
        "this one has a session, and record this one once its last message is back (the "
        "sessions never wait for a hand-off's slowest message, record or state reads); "
        "hand-offs are then half of campaign_handoff_size (two are unrecorded at once), so "
        "a crash still re-sends at most campaign_handoff_size",
    )
    campaign_read_ahead_handoffs: int = Field(
        default=1,
        ge=0,
        le=8,
        description="hand-offs whose recipients' views a dispatcher reads while an earlier "
        "one is being sent and recorded (0: each right before its hand-off). Only while the "
        'guard is watching, which stops a message whose "no" came after that read; the '
        "outcomes stay recorded one hand-off after the other (the crash window is unchanged)",
    )
    campaign_guard_memory_seconds: float = Field(
        default=600,
        ge=10,
        le=86_400,
        description="how long the guard remembers a revocation it saw (any later hand-off "
        "reads it from the views anyway)",
    )
    revocation_feed_enabled: bool = Field(
        default=True,
        description="read revocations, suppressions and erasures straight from Kafka "
        "(messaging.revocations), so the API and the campaign guard honour them before "
        "messaging's views have applied them",
    )
    revocation_feed_memory_seconds: float = Field(
        default=600,
        ge=10,
        le=86_400,
        description="how long the revocation feed remembers what it read (the views apply "
        "it well within that)",
    )
    revocation_feed_max_entries: int = Field(
        default=200_000,
        ge=100,
        le=10_000_000,
        description="what the revocation feed remembers at most (then it forgets what it "
        "read longest ago)",
    )
    revocation_feed_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=5_000,
        description="how long the broker may hold the feed's fetch when nothing came",
    )
    revocation_feed_retry_seconds: float = Field(default=2, gt=0, le=300)
    revocation_feed_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="messages the feed takes per poll at most"
    )
    campaign_claim_timeout_seconds: float = Field(
        default=120,
        ge=5,
        le=86_400,
        description="claimed messages of a worker that died go back to the queue after this",
    )
    campaign_schedule_horizon_days: int = Field(default=365, ge=1, le=3650)
    campaign_test_max_recipients: int = Field(
        default=10, ge=1, le=100, description="addresses of one test send"
    )
    campaign_test_subject_prefix: str = Field(default="[TEST] ", max_length=50)
    campaign_test_given_name: str = Field(default="Prénom", max_length=100)
    campaign_test_family_name: str = Field(default="Nom", max_length=100)
    campaign_breaker_min_sent: int = Field(
        default=200, ge=1, le=10_000_000, description="sent before the circuit breaker judges"
    )
    campaign_breaker_check_seconds: float = Field(
        default=2, ge=0, le=600, description="how often a dispatcher looks at the rates"
    )
    campaign_watch_interval_seconds: float = Field(
        default=60,
        ge=0,
        le=3600,
        description="how often a worker measures the sending campaigns' progress for the "
        "stalled-campaign gauges (messaging.monitoring; 0 disables it)",
    )
    campaign_watch_max_campaigns: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="sending campaigns measured at most per round (each is one gauge series)",
    )
    campaign_breaker_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    campaign_breaker_complaint_rate: float = Field(default=0.003, gt=0, le=1)
    campaign_breaker_unsubscribe_rate: float = Field(default=0.02, gt=0, le=1)

    # Delivery feedback (messaging.feedback): receipts, bounces, complaints
    #: HMAC-SHA256 secret of the email events and DSN webhooks (unset: both refused, 401).
    #: Not in secret_fields: a deployment whose ESP posts no feedback need not set it.
    email_events_secret: SecretStr | None = None
    email_events_tolerance_seconds: int = Field(
        default=300, ge=1, le=3600, description="age beyond which a signed email event is refused"
    )
    feedback_max_events: int = Field(
        default=1000, ge=1, le=100_000, description="events one email events call may carry"
    )
    feedback_batch_max_calls: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="concurrent single-feedback webhook calls (SMS receipts, abuse reports) "
        "recorded in one transaction, at most",
    )
    feedback_early_receipt_seconds: float = Field(
        default=3600,
        ge=1,
        le=7 * 86_400,
        description="how long an SMS receipt that came before its message's outcome was "
        "recorded waits for it (then it is dropped)",
    )
    feedback_early_receipt_poll_seconds: float = Field(
        default=1, gt=0, le=60, description="how often a worker matches the early receipts"
    )

    # Limits (the API refuses more than the hard caps whatever these say)
    subject_max_chars: int = Field(default=SUBJECT_MAX_CHARS, ge=1, le=SUBJECT_MAX_CHARS)
    text_max_chars: int = Field(default=TEXT_MAX_CHARS, ge=1, le=TEXT_MAX_CHARS)
    history_default_limit: int = Field(default=50, ge=1, le=10_000)
    #: GET /api/v1/messages/totals counts the messages of this many last days by default
    totals_default_days: int = Field(
        default=30, ge=1, le=3660, description="period of the message totals by default"
    )

    # Message templates (messaging.templates)
    template_part_max_chars: int = Field(
        default=TEMPLATE_PART_MAX_CHARS,
        ge=1,
        le=TEMPLATE_PART_MAX_CHARS,
        description="characters of a template's HTML or text part (its source)",
    )
    template_render_max_chars: int = Field(
        default=200_000,
        ge=1000,
        le=10_000_000,
        description="characters of one rendered part; a template rendering more is refused",
    )
    template_sms_stop_text: str = Field(
        default="STOP",
        min_length=1,
        max_length=100,
        pattern=r"^[^\r\n]+$",
        description="opt-out wording every SMS template prints as is, e.g. 'STOP au 36xxx'",
    )
    template_cache_size: int = Field(
        default=256, ge=1, le=100_000, description="compiled template versions a process keeps"
    )

    @field_validator("mail_from")
    @classmethod
    def _mail_from_has_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address:
            raise ValueError("must be an email address, e.g. 'Tribune <no-reply@example.org>'")
        return value

    @field_validator(
        "unsubscribe_base_url",
        "tracking_base_url",
        "sms_ovh_base_url",
        "sms_twilio_base_url",
        "sms_twilio_status_callback_url",
    )
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value

    @field_validator("sms_provider_order")
    @classmethod
    def _distinct_providers(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names each provider once")
        return value

    @field_validator("sms_sender_id")
    @classmethod
    def _sms_sender(cls, value: str) -> str:
        if not (_SMS_SENDER_ALNUM.match(value) or _SMS_SENDER_NUMBER.match(value)):
            raise ValueError(
                "must be 1 to 11 letters, digits, spaces, dots or dashes with at least one "
                "letter, or a phone number (+33612345678)"
            )
        return value

    @field_validator("confirmation_text")
    @classmethod
    def _confirmation_has_url(cls, value: str) -> str:
        if "{url}" not in value:
            raise ValueError("must contain {url}, where the confirmation link goes")
        return value

    @field_validator("confirmation_subject", "renewal_subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if problem := single_line_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("unsubscribe_footer")
    @classmethod
    def _footer_has_url(cls, value: str) -> str:
        if "{url}" not in value:
            raise ValueError("must contain {url}, where the unsubscribe link goes")
        return value
