from __future__ import annotations

import phonenumbers
from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from tribune_shared.settings import ServiceSettings


class ContactsSettings(ServiceSettings):
    service_name = "contacts"
    model_config = SettingsConfigDict(env_prefix="CONTACTS_", extra="ignore")

    http_port: int = Field(default=8101, ge=1, le=65535)
    worker_port: int = Field(default=8201, ge=1, le=65535)

    #: region used to read phone numbers written without a country code, and postcodes
    default_region: str = Field(default="FR", min_length=2, max_length=2)
    default_page_size: int = Field(default=50, ge=1, le=10_000)
    max_name_length: int = Field(default=100, ge=1, le=1_000)
    max_tags: int = Field(default=50, ge=0, le=1_000)
    max_tag_length: int = Field(default=40, ge=1, le=200)
    max_search_words: int = Field(default=5, ge=1, le=20)
    #: retries of a create whose transaction lost a write conflict to a concurrent one
    transaction_retries: int = Field(default=3, ge=0, le=20)
    transaction_retry_backoff_seconds: float = Field(default=0.02, ge=0, le=5)

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r} (ISO 3166-1 alpha-2 expected)")
        return value

    @model_validator(mode="after")
    def _page_sizes(self) -> ContactsSettings:
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size must not exceed max_page_size")
        return self
