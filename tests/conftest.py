"""Fixtures shared by every test layer. Integration and e2e tests need real Kafka and
the real store: the session starts its own (a missing broker fails, never skips)."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tribune_devstack.stack import StackConfig

_KEPT_INFRA = pytest.StashKey["StackConfig"]()

# Settings built without an environment are production's, which refuse the published
# development secrets. Unit tests build settings bare, so the suite says development out
# loud; the fixtures that run real processes (isolated_env, the e2e stack) say "test" and
# bring generated secrets. A test of the unset case removes the variable itself.
os.environ["TRIBUNE_ENVIRONMENT"] = "development"


@pytest.fixture(scope="session")
def infra(request: pytest.FixtureRequest) -> Iterator[StackConfig]:
    """This session's own Kafka, in-memory SecantusDB and SMTP sink, on free ports, in
    .local/tests/<name>/: stopped and deleted at the end (TRIBUNE_KEEP_INFRA=1 keeps them).
    The e2e platform runs on the same config, so one session starts one broker."""
    from tribune_devstack.platform import RunningStack
    from tribune_devstack.stack import StackConfig

    with RunningStack(StackConfig.for_tests(), platform=False) as session:
        yield session.cfg
    if session.cfg.keep_infra:
        request.config.stash[_KEPT_INFRA] = session.cfg


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    cfg = config.stash.get(_KEPT_INFRA, None)
    if cfg is not None:
        terminalreporter.write_line(
            f"TRIBUNE_KEEP_INFRA: Kafka {cfg.kafka_bootstrap}, store {cfg.mongo_url} and SMTP "
            f"sink {cfg.smtp_http_url} still run, logs in {cfg.infra_logs_dir}; stop them with "
            f"`TRIBUNE_INFRA_DIR={cfg.infra_dir} make infra-down`, then delete that folder"
        )


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
