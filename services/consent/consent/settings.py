from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from tribune_shared.settings import DEV_SECRET, MIN_SECRET_LENGTH, Environment, ServiceSettings

from consent.privacy import DEFAULT_RETENTION_RULES, RetentionRule


class ConsentSettings(ServiceSettings):
    service_name = "consent"
    secret_fields: ClassVar[tuple[str, ...]] = (
        *ServiceSettings.secret_fields,
        "unsubscribe_secret",
        "webhook_secret",
        "suppression_salt",
    )
    model_config = SettingsConfigDict(env_prefix="CONSENT_", extra="ignore")

    http_port: int = Field(default=8102, ge=1, le=65535)
    worker_port: int = Field(default=8202, ge=1, le=65535)
    #: purposes a consent may be given for (configurable per organisation)
    purposes: list[str] = Field(
        default_factory=lambda: ["news", "campaigns", "fundraising", "membership"]
    )
    #: the per-person open/click tracking consent: a purpose of its own, on channel email
    tracking_purpose: str = Field(default="tracking", min_length=1, max_length=64)

    # Public links (double opt-in confirmation, unsubscribe), served through the gateway
    #: where people reach the gateway; confirmation links start with it
    public_base_url: str = "http://127.0.0.1:8000"
    #: verifies the unsubscribe links messaging signs (same value as messaging's, falls back
    #: to TRIBUNE_UNSUBSCRIBE_SECRET) and signs the confirmation links (tokens are
    #: purpose-bound: one can never stand for the other)
    unsubscribe_secret: str = DEV_SECRET
    #: earlier unsubscribe secrets (JSON list), still verifying the links of emails sent
    #: before a rotation (only ``unsubscribe_secret`` signs); keep each as long as those
    #: emails may be clicked: an unsubscribe link never expires
    unsubscribe_previous_secrets: list[str] = Field(default_factory=list, max_length=16)
    #: lifetime of a double opt-in confirmation link
    confirmation_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60, le=90 * 24 * 3600)
    #: largest form body a public page accepts, in bytes
    public_form_max_bytes: int = Field(default=4096, ge=256, le=65_536)

    # Inbound SMS webhook (STOP), signed like the payment webhook
    #: HMAC-SHA256 secret shared with the SMS provider
    webhook_secret: str = DEV_SECRET
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    webhook_max_body_bytes: int = Field(default=16_384, ge=256, le=1_048_576)
    #: an inbound SMS whose first word (or whole text) is one of these stops all SMS
    stop_keywords: list[str] = Field(
        default_factory=lambda: [
            "STOP",
            "STOP SMS",
            "STOPSMS",
            "ARRET",
            "ARRÊT",
            "DESABONNER",
            "UNSUBSCRIBE",
            "CANCEL",
            "END",
            "QUIT",
        ]
    )

    # Suppression list: salted hashes only (tribune_shared.suppression)
    #: platform secret (TRIBUNE_SUPPRESSION_SALT), the same in consent, contacts, messaging
    suppression_salt: str = DEV_SECRET

    # Proof and audit: what is kept of where a request came from
    user_agent_max_chars: int = Field(default=64, ge=0, le=512)
    audit_default_limit: int = Field(default=50, ge=1, le=10_000)
    view_audit_batch_max_entries: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="audit entries of concurrent consent views written in one insert, at most",
    )

    # Consent texts
    text_max_chars: int = Field(default=20_000, ge=1, le=200_000)

    #: consent's relay is woken by a change stream on its outbox (a revocation reaches
    #: messaging without waiting for the next poll: bench/consent_revocation_latency.py)
    outbox_wake_on_insert: bool = True

    # Privacy requests, erasure and retention (consent.privacy)
    #: the legal answer time of an access or erasure request (GDPR: one month)
    privacy_deadline_months: int = Field(default=1, ge=1, le=3)
    #: services that must answer erasure-completed before an erasure request closes
    erasure_services: list[str] = Field(
        default_factory=lambda: ["contacts", "consent", "memberships", "messaging"],
        min_length=1,
    )
    #: retention clocks (JSON list of {name, clock, after_months, action, origins})
    retention_rules: list[RetentionRule] = Field(
        default_factory=lambda: list(DEFAULT_RETENTION_RULES)
    )
    #: how often the consent worker looks for clocks that ran out (0 disables the sweep)
    retention_interval_seconds: float = Field(default=3600, ge=0, le=7 * 86_400)
    #: erasures a sweep raises at most per rule (the next sweep takes the rest)
    retention_batch_size: int = Field(default=500, ge=1, le=100_000)
    privacy_watch_interval_seconds: float = Field(
        default=300,
        ge=0,
        le=86_400,
        description="how often a worker measures the open privacy requests for the "
        "overdue-request gauges (consent.monitoring; 0 disables it)",
    )

    @field_validator("public_base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one purpose is needed")
        for purpose in value:
            if (
                not purpose
                or len(purpose) > 64
                or not purpose.replace("_", "").replace("-", "").isalnum()
            ):
                raise ValueError(f"purpose {purpose!r}: letters, digits, '-' and '_' only")
        if len(set(value)) != len(value):
            raise ValueError("purposes must be unique")
        return value

    @model_validator(mode="after")
    def _previous_secrets_are_strong(self) -> ConsentSettings:
        if self.environment is not Environment.development and any(
            len(s) < MIN_SECRET_LENGTH or s == DEV_SECRET for s in self.unsubscribe_previous_secrets
        ):
            raise ValueError(
                f"{self.env_names('unsubscribe_previous_secrets')}: each previous secret "
                f"needs at least {MIN_SECRET_LENGTH} characters (never the development one)"
            )
        return self

    @field_validator("stop_keywords")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        cleaned = [" ".join(k.split()).upper() for k in value if k.strip()]
        if not cleaned:
            raise ValueError("at least one STOP keyword is needed")
        return cleaned

    @model_validator(mode="after")
    def _tracking_is_not_a_message_purpose(self) -> ConsentSettings:
        if self.tracking_purpose in self.purposes:
            raise ValueError("tracking_purpose must not also be one of the purposes")
        return self

    @property
    def all_purposes(self) -> list[str]:
        """Every purpose a consent may be recorded for (the tracking one included)."""
        return [*self.purposes, self.tracking_purpose]
