"""Resilience (``make chaos``): the whole platform in a throwaway folder of its own, with
a supervisor that starts again any service process that dies (as Kubernetes would), and
the faults the tests inject (chaos.kit): a broker stopped (SIGTERM or SIGKILL) and started
again, a worker killed, the store paused (SIGSTOP/SIGCONT).

Not part of a plain ``pytest`` run (``make test``): ``make chaos`` runs it
(TRIBUNE_CHAOS=1). README, Operations > Resilience, says why and records the figures."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from chaos.kit import RESULTS, Federation, Supervisor, login
from tribune_devstack.platform import RunningStack
from tribune_devstack.stack import StackConfig


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: faults injected into a platform of its own")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The suite restarts the broker and pauses the store of a stack of its own: it runs
    # from `make chaos` alone, never inside a plain `pytest` / `make test`.
    if os.environ.get("TRIBUNE_CHAOS") == "1":
        return
    chaos = [i for i in items if "chaos" in i.path.parts]
    if chaos:
        config.hook.pytest_deselected(items=chaos)
        items[:] = [i for i in items if "chaos" not in i.path.parts]


#: the store timeout every process of the chaos stack runs with: shorter than the 10 s
#: pause, so that the pause shows its 503s (with the default, 20 s, a request waits the
#: pause out and succeeds); the other faults run with it too, a harsher setting
STORE_SOCKET_TIMEOUT_SECONDS = "4"


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    """Its own infra and every API and worker (not the session's shared infra: the tests
    stop its broker and pause its store). The store runs on disk, as in production, and
    holds every service's database (one process: the store faults hit every service at
    once, as an outage of production's one MongoDB cluster would)."""
    cfg = StackConfig.for_tests(
        name=f"chaos-{uuid.uuid4().hex[:6]}", store_in_memory=False, stores="one"
    )
    # the processes inherit this process's environment (tribune_devstack.platform)
    saved = os.environ.get("TRIBUNE_STORE_SOCKET_TIMEOUT_SECONDS")
    os.environ["TRIBUNE_STORE_SOCKET_TIMEOUT_SECONDS"] = STORE_SOCKET_TIMEOUT_SECONDS
    try:
        with RunningStack(cfg, environment="test") as running:
            yield running
    finally:
        if saved is None:
            os.environ.pop("TRIBUNE_STORE_SOCKET_TIMEOUT_SECONDS", None)
        else:
            os.environ["TRIBUNE_STORE_SOCKET_TIMEOUT_SECONDS"] = saved


@pytest.fixture(scope="session")
def supervisor(stack: RunningStack) -> Iterator[Supervisor]:
    sup = Supervisor(stack)
    sup.start()
    yield sup
    sup.stop()


@pytest.fixture(scope="session")
def http(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def federation(stack: RunningStack, http: httpx.Client, supervisor: Supervisor) -> Federation:
    """A federation with its secretary (imports) and treasurer."""
    email, password = stack.admin_credentials
    admin = login(http, email, password)
    r = admin("POST", "/api/v1/federations", json={"name": f"Chaos {uuid.uuid4().hex[:4]}"})
    assert r.status_code == 201, r.text
    fed = r.json()
    users = {}
    for role in ("secretary", "treasurer"):
        user_email = f"{role}.{uuid.uuid4().hex[:6]}@tribune.test"
        user_password = f"pw-{uuid.uuid4().hex}"
        r = admin(
            "POST",
            "/api/v1/users",
            json={
                "email": user_email,
                "password": user_password,
                "role": role,
                "federation_id": fed["id"],
                "confirm_password": password,
            },
        )
        assert r.status_code == 201, r.text
        users[role] = login(http, user_email, user_password)
    return Federation(fed["id"], fed["path"], users["secretary"], users["treasurer"])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS:
        terminalreporter.section("chaos: recovery times (from the end of each fault)")
        for line in RESULTS:
            terminalreporter.write_line(line)
