from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from tribune_shared.settings import ServiceSettings


class ConsentSettings(ServiceSettings):
    service_name = "consent"
    model_config = SettingsConfigDict(env_prefix="CONSENT_", extra="ignore")

    http_port: int = 8102
    worker_port: int = 8202
    #: purposes a consent may be given for (configurable per organisation)
    purposes: list[str] = Field(
        default_factory=lambda: ["news", "campaigns", "fundraising", "membership"]
    )
