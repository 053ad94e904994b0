"""End-to-end: the real processes (every service API and worker) on real Kafka, the
real store and the SMTP sink, driven over HTTP through the gateway."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from browser_support import LAPTOP, PHONE, chromium
from playwright.sync_api import Browser, Page
from support import Client, login
from tribune_devstack.platform import RunningStack
from tribune_devstack.stack import StackConfig


@pytest.fixture(scope="session")
def stack(infra: StackConfig) -> Iterator[RunningStack]:
    """Every API and worker, on the session's own infra (tests/conftest.py)."""
    with RunningStack(infra, environment="test") as running:
        yield running


@pytest.fixture(scope="session")
def http(stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def admin(stack, http) -> Client:
    email, password = stack.admin_credentials
    return login(http, email, password)


@dataclass
class Federation:
    id: str
    path: str
    user: Client


@pytest.fixture(scope="session")
def federations(admin, http) -> dict[str, Federation]:
    """Paris and Lyon under the national root, each with its own secretary."""
    out = {}
    for name in ("Paris", "Lyon"):
        r = admin("POST", "/api/v1/federations", json={"name": name})
        assert r.status_code == 201, r.text
        fed = r.json()
        email = f"secretary.{name.lower()}.{uuid.uuid4().hex[:6]}@tribune.test"
        password = f"pw-{uuid.uuid4().hex}"
        r = admin(
            "POST",
            "/api/v1/users",
            json={
                "email": email,
                "password": password,
                "role": "secretary",
                "federation_id": fed["id"],
            },
        )
        assert r.status_code == 201, r.text
        out[name] = Federation(fed["id"], fed["path"], login(http, email, password))
    return out


@pytest.fixture(scope="session")
def new_user(stack, admin, http) -> Callable[[str, Federation], Client]:
    """Make a user of ``role`` in a federation (the national administrator makes it,
    confirming with their password where the role asks for it) and log them in."""

    def make(role: str, federation: Federation) -> Client:
        email = f"{role}.{uuid.uuid4().hex[:8]}@tribune.test"
        password = f"pw-{uuid.uuid4().hex}"
        r = admin(
            "POST",
            "/api/v1/users",
            json={
                "email": email,
                "password": password,
                "role": role,
                "federation_id": federation.id,
                "confirm_password": stack.admin_credentials[1],
            },
        )
        assert r.status_code == 201, r.text
        return login(http, email, password)

    return make


@pytest.fixture(scope="session")
def dpos(new_user, federations) -> dict[str, Client]:
    """A DPO in Paris and one in Lyon."""
    return {name: new_user("dpo", fed) for name, fed in federations.items()}


#: the processes whose logs a failing end-to-end test shows (most failures are a projection
#: that did not catch up: the workers' batch lines say which batch took how long)
_LOGS_ON_FAILURE = ("messaging-worker", "consent-worker", "contacts-worker")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.when == "call" and report.failed and isinstance(stack, RunningStack):
        for name in _LOGS_ON_FAILURE:
            report.sections.append((f"log tail {name}", stack.log_tail(name, 60)))
    return report


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless (tests/browser_support.py). One per module, not per
    session: Playwright's sync API keeps an event loop running in this thread while it is
    started, and later modules call asyncio.run."""
    with chromium() as running:
        yield running


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    """A fresh page the size of a phone, French first."""
    context = browser.new_context(viewport=PHONE, locale="fr-FR", is_mobile=True, has_touch=True)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def laptop(browser: Browser) -> Iterator[Page]:
    """A fresh page the size of a laptop, French first."""
    context = browser.new_context(viewport=LAPTOP, locale="fr-FR")
    try:
        yield context.new_page()
    finally:
        context.close()
