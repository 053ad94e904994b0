"""Shared by the benchmarks that run services in their own process (consumer_throughput,
memberships_live, payments_webhook, receipt_numbering): the environment that points them at
an isolated stack, with their own topic and database prefixes and fresh secrets, so a run
never touches the dev stack nor another run. Not a benchmark itself: run alone, it does
nothing."""

from __future__ import annotations

import os
import secrets
import uuid

from tribune_devstack.stack import StackConfig


def isolate(cfg: StackConfig, **extra: str) -> None:
    """Point this process's settings at ``cfg``'s Kafka and store, under prefixes of its
    own; ``extra`` adds or overrides variables (a webhook secret the bench signs with)."""
    unique = uuid.uuid4().hex[:8]
    os.environ.update(
        {
            "TRIBUNE_ENVIRONMENT": "test",
            "TRIBUNE_KAFKA_BOOTSTRAP_SERVERS": cfg.kafka_bootstrap,
            "TRIBUNE_MONGO_URL": cfg.mongo_url,
            "TRIBUNE_TOPIC_PREFIX": f"bench{unique}.",
            "TRIBUNE_DATABASE_PREFIX": f"bench{unique}_",
            "TRIBUNE_IDENTITY_SECRET": secrets.token_urlsafe(32),
            "TRIBUNE_SUPPRESSION_SALT": secrets.token_urlsafe(32),
            "TRIBUNE_UNSUBSCRIBE_SECRET": secrets.token_urlsafe(32),
            "TRIBUNE_LOG_LEVEL": "WARNING",
            **extra,
        }
    )
