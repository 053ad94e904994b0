"""The browser the end-to-end tests drive: Debian's Chromium through Playwright, headless,
with an accessibility check (axe-core, WCAG 2.1 A and AA rules) and a screenshot per main
screen saved as a test artifact.

Nothing is downloaded: Playwright launches the Chromium the machine has (``chromium`` from
Debian's packages; ``TRIBUNE_CHROMIUM`` names another binary). A missing browser fails the
test: browser tests run in CI, they never skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
#: where screenshots go (ignored by git: .local/); CI keeps the folder as an artifact
ARTIFACTS = Path(os.environ.get("TRIBUNE_TEST_ARTIFACTS", ROOT / ".local" / "test-artifacts"))
#: Chromium's own network chatter is refused on closed networks: switch it off
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
#: a phone (the people who sign a petition mostly hold one) and a laptop
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}
#: the rules checked: WCAG 2.1 levels A and AA
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def chromium_path() -> str:
    path = os.environ.get("TRIBUNE_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise RuntimeError(
            "Chromium not found: install Debian's `chromium` package (apt-get install "
            "chromium) or set TRIBUNE_CHROMIUM; browser tests never skip"
        )
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def accessibility_violations(page: Page) -> list[str]:
    """axe-core's WCAG 2.1 A/AA violations on the page as it stands, one line each."""
    result = Axe().run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS}})
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n["target"]) for n in v["nodes"][:3])
        for v in result.response["violations"]
    ]


def assert_accessible(page: Page) -> None:
    violations = accessibility_violations(page)
    assert not violations, "accessibility (WCAG 2.1 AA) violations:\n" + "\n".join(violations)


def screenshot(page: Page, name: str) -> Path:
    """Save the page as ``<artifacts>/screenshots/<name>.png`` (full page)."""
    path = ARTIFACTS / "screenshots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def signed_in(page: Page, base: str, email: str, password: str) -> None:
    """``page`` signed in to the back office at ``base`` as that user (any earlier
    session's cookies dropped), on the dashboard."""
    page.context.clear_cookies()
    page.goto(base + "/app")
    page.get_by_label("Adresse e-mail").fill(email)
    page.get_by_label("Mot de passe").fill(password)
    page.get_by_role("button", name="Se connecter").click()
    expect(page.get_by_role("heading", name="Tableau de bord", level=1)).to_be_visible()
