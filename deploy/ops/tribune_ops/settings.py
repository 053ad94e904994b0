"""What the CLI connects with: the platform's own settings (TRIBUNE_*), read like a service.

The CLI signs nothing and opens no personal field (a replay re-sends the parked bytes as
they are), so it needs neither the identity secret nor the vault's key-encryption key:
production settings without them are accepted here, unlike a service's.
"""

from __future__ import annotations

from functools import cache
from typing import ClassVar

from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict
from tribune_shared.events import TOPICS
from tribune_shared.settings import ServiceSettings

#: the CLI's own Kafka consumer group: it commits, per dead-letter queue partition, which
#: parked messages were replayed (tribune_ops.dlq.ReplayLedger). Under the topic prefix.
REPLAY_GROUP = "tribune-ops.dlq-replay"


class SettingsError(Exception):
    """The environment does not describe a platform the CLI can connect to."""


class OpsSettings(ServiceSettings):
    """The platform settings as the CLI reads them (TRIBUNE_OPS_<FIELD>, else
    TRIBUNE_<FIELD>: the environment the services run with is enough)."""

    service_name: ClassVar[str] = "ops"
    secret_fields: ClassVar[tuple[str, ...]] = ()
    uses_vault: ClassVar[bool] = False
    model_config = SettingsConfigDict(
        env_prefix="TRIBUNE_OPS_", extra="ignore", validate_default=True, env_nested_delimiter="__"
    )

    # Unused by the CLI: an empty default keeps production settings without it valid.
    identity_secret: str = ""
    request_timeout_seconds: float = Field(
        default=15, gt=0, le=600, description="how long one Kafka or store request may take"
    )
    dlq_ledger_max_bytes: int = Field(
        default=4000,
        ge=64,
        le=1_000_000,
        description="room for the replay ledger in an offset commit's metadata "
        "(the broker's offset.metadata.max.bytes, 4096 by default)",
    )

    @property
    def replay_group(self) -> str:
        return self.topic(REPLAY_GROUP)

    def strip_prefix(self, name: str) -> str:
        """A topic or group name without this platform's prefix."""
        prefix = self.topic_prefix
        return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def load_settings() -> OpsSettings:
    try:
        return OpsSettings()
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from exc


@cache
def _service_settings_class(service: str) -> type[ServiceSettings]:
    """A service's settings as its own processes read them (``<SERVICE>_<FIELD>`` first),
    for the fields the CLI uses: the store's URL and the database name."""
    return type(
        f"{service.title()}OpsView",
        (OpsSettings,),
        {
            "service_name": service,
            "model_config": SettingsConfigDict(
                env_prefix=f"{service.upper()}_",
                extra="ignore",
                validate_default=True,
                env_nested_delimiter="__",
            ),
        },
    )


def service_settings(service: str) -> ServiceSettings:
    try:
        return _service_settings_class(service)()
    except ValidationError as exc:
        raise SettingsError(f"{service}: {_explain(exc)}") from exc


def platform_services() -> list[str]:
    """Every service of the platform, from the topic registry: each owns or consumes a
    topic (``*``, any producer, is no service). Sorted."""
    named = {spec.owner for spec in TOPICS.values()}
    for spec in TOPICS.values():
        named.update(spec.consumers)
    return sorted(named - {"*"})


def _explain(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
        for err in exc.errors()
    )
