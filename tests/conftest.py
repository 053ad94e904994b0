"""Fixtures shared by every test layer. Integration and e2e tests need real Kafka and
the real store: they are started when absent (a missing broker fails, never skips)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def infra():
    """Real Kafka, SecantusDB and SMTP sink, started if not running (stopped after if so)."""
    from tribune_devstack.infra import ensure_infra
    from tribune_devstack.stack import StackConfig

    cfg = StackConfig.for_tests()
    handle = ensure_infra(cfg)
    yield cfg
    handle.stop_started()


@pytest.fixture
def isolated_env(infra, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """TRIBUNE_* settings pointing at the real infra, with a unique topic/db prefix."""
    unique = uuid.uuid4().hex[:10]
    env = {
        "TRIBUNE_ENVIRONMENT": "test",
        "TRIBUNE_KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "TRIBUNE_MONGO_URL": infra.mongo_url,
        "TRIBUNE_TOPIC_PREFIX": f"t{unique}.",
        "TRIBUNE_DATABASE_PREFIX": f"t{unique}_",
        # Outside development the settings refuse default secrets: generate them.
        "TRIBUNE_IDENTITY_SECRET": secrets.token_urlsafe(32),
        "TRIBUNE_JWT_SECRET": secrets.token_urlsafe(32),
        "TRIBUNE_WEBHOOK_SECRET": secrets.token_urlsafe(32),
        "TRIBUNE_UNSUBSCRIBE_SECRET": secrets.token_urlsafe(32),
        "TRIBUNE_SUPPRESSION_SALT": secrets.token_urlsafe(32),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


#: run order: fast, self-contained tests first; the end-to-end platform (ten processes
#: polling the shared store) starts last so it does not slow the integration tests down
_ORDER = ("unit", "contract", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        parts = item.path.parts
        return next((i for i, name in enumerate(_ORDER) if name in parts), len(_ORDER))

    items.sort(key=rank)  # stable: the order inside each group is kept
