from __future__ import annotations

from email.utils import parseaddr
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from tribune_shared.settings import DEV_SECRET, ServiceSettings

from messaging.domain import single_line_problem

#: hard caps of the API; the settings below may only tighten them
SUBJECT_MAX_CHARS = 200
TEXT_MAX_CHARS = 100_000


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

    # Limits (the API refuses more than the hard caps whatever these say)
    subject_max_chars: int = Field(default=SUBJECT_MAX_CHARS, ge=1, le=SUBJECT_MAX_CHARS)
    text_max_chars: int = Field(default=TEXT_MAX_CHARS, ge=1, le=TEXT_MAX_CHARS)
    history_default_limit: int = Field(default=50, ge=1, le=10_000)

    @field_validator("mail_from")
    @classmethod
    def _mail_from_has_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address:
            raise ValueError("must be an email address, e.g. 'Tribune <no-reply@example.org>'")
        return value

    @field_validator("unsubscribe_base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value

    @field_validator("confirmation_text")
    @classmethod
    def _confirmation_has_url(cls, value: str) -> str:
        if "{url}" not in value:
            raise ValueError("must contain {url}, where the confirmation link goes")
        return value

    @field_validator("confirmation_subject")
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
