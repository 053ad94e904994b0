"""The gateway's security headers on every answer, and the embeddable exception: a page
whose CSP names who may frame it (a public form in a party's site) gets no
X-Frame-Options: DENY that would forbid what its CSP allows."""

from __future__ import annotations

from gateway.headers import API_CSP, SecurityHeaders
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

FORM_CSP = "default-src 'none'; frame-ancestors https://parti.example"


async def api(request):
    return JSONResponse({"ok": True})


async def form_page(request):
    return HTMLResponse("<p>form</p>", headers={"Content-Security-Policy": FORM_CSP})


def client() -> TestClient:
    app = Starlette(routes=[Route("/api", api), Route("/form", form_page)])
    return TestClient(SecurityHeaders(app, hsts_seconds=0))


def test_an_api_answer_may_not_be_framed_nor_sniffed():
    r = client().get("/api")
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Content-Security-Policy"] == API_CSP
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"


def test_a_page_naming_its_framers_keeps_its_own_policy_and_no_deny():
    r = client().get("/form")
    assert "X-Frame-Options" not in r.headers
    assert r.headers["Content-Security-Policy"] == FORM_CSP
    assert r.headers["X-Content-Type-Options"] == "nosniff"
