"""Shared by the benchmarks that run services in their own process (consumer_throughput,
memberships_live, payments_webhook, receipt_numbering): the environment that points them at
an isolated stack, with their own topic and database prefixes and fresh secrets, so a run
never touches the dev stack nor another run; and a store of its own for the benchmarks that
need nothing else (expiry_stall, campaign_deferred_claims). Not a benchmark itself: run
alone, it does nothing."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tribune_devstack.infra import ensure_infra
from tribune_devstack.stack import StackConfig

_T = TypeVar("_T")


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


def on_own_store(name: str, run: Callable[[str], Coroutine[Any, Any, _T]]) -> _T:
    """``run(mongo_url)`` against a store of its own (the local stack's SecantusDB, on disk,
    its default settings), in an isolated test environment; the store is stopped and its
    files deleted after (unless the stack's keep-infra setting says otherwise)."""
    cfg = StackConfig.for_tests(name=f"{name}-{uuid.uuid4().hex[:6]}", store_in_memory=False)
    isolate(cfg)
    handle = ensure_infra(cfg, only=["store"])
    try:
        return asyncio.run(run(cfg.mongo_url))
    finally:
        handle.stop_started()
        if not cfg.keep_infra:
            shutil.rmtree(cfg.state_dir, ignore_errors=True)
