"""Every database read of the CLI: each service's outbox, in that service's own database
(``ServiceSettings.database_name``), through the kernel's ``Outbox``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from tribune_shared.outbox import OUTBOX, Outbox
from tribune_shared.settings import ServiceSettings
from tribune_shared.store import Store


@dataclass(frozen=True)
class OutboxBacklog:
    service: str
    database: str
    #: events committed and not published yet (a batch row counts its events)
    backlog: int
    #: when the oldest of them was committed (None: nothing waits)
    oldest_at: datetime | None

    def age_seconds(self, now: datetime) -> float | None:
        return None if self.oldest_at is None else max(0.0, (now - self.oldest_at).total_seconds())

    def as_json(self, now: datetime) -> dict[str, Any]:
        age = self.age_seconds(now)
        return {
            "service": self.service,
            "database": self.database,
            "backlog": self.backlog,
            "oldest_pending_at": self.oldest_at.isoformat() if self.oldest_at else None,
            "oldest_pending_seconds": round(age, 3) if age is not None else None,
        }


async def outbox_backlog(service: str, settings: ServiceSettings, timeout_ms: int) -> OutboxBacklog:
    """One service's unpublished outbox: ``Outbox.backlog`` and its oldest row (the
    relay publishes in ``seq`` order, so the oldest is the next to go)."""
    store = Store(settings, server_timeout_ms=timeout_ms)
    try:
        backlog = await Outbox(store).backlog()
        oldest = await store[OUTBOX].find_one(
            {"published_at": None}, {"created_at": 1}, sort=[("seq", ASCENDING)]
        )
    finally:
        await store.close()
    created = oldest.get("created_at") if oldest else None
    if isinstance(created, datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return OutboxBacklog(
        service, settings.database_name, backlog, created if isinstance(created, datetime) else None
    )
