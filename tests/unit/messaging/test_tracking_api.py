"""The public tracking routes, without a store: what a person's browser or mail client
gets back, and what is buffered for the next flush (written in the integration tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from messaging.settings import MessagingSettings
from messaging.tracking.api import router
from messaging.tracking.domain import PIXEL_GIF, TrackingTokens
from messaging.tracking.service import TrackingService, link_tracker
from tribune_shared.store import Store
from tribune_shared.tokens import SignedTokens

URL = "https://tribune.example/agir?x=1&y=2"


def settings(**overrides) -> MessagingSettings:
    return MessagingSettings(tracking_base_url="https://gw.example.org", **overrides)


@pytest.fixture
def app() -> Iterator[tuple[TestClient, TrackingService]]:
    s = settings(tracking_buffer_max_hits=3, tracking_flush_max_hits=2)
    svc = TrackingService(s, Store(s))  # never flushed here: no connection is made
    api = FastAPI()
    api.include_router(router)
    api.state.tracking_service = svc
    with TestClient(api, follow_redirects=False) as client:
        yield client, svc


def tokens() -> TrackingTokens:
    s = settings()
    return TrackingTokens(s.unsubscribe_secret, max_url_chars=s.tracking_max_url_chars)


def click_token(url: str = URL) -> str:
    return tokens().click(message_id="m1", campaign_id="c1", link=0, url=url, tracking=True)


def test_a_tracked_link_redirects_to_its_url_and_is_buffered(app):
    client, svc = app
    answer = client.get(f"/api/v1/public/t/c/{click_token()}")
    assert answer.status_code == 302
    assert answer.headers["location"] == URL
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert svc.buffered == 1


def test_the_links_the_dispatcher_writes_are_served_by_the_routes(app):
    client, svc = app
    html, _ = link_tracker(settings()).tracked(
        f'<a href="{URL.replace("&", "&amp;")}">x</a>',
        "",
        message_id="m1",
        campaign_id="c1",
        tracking_allowed=True,
    )
    assert html is not None
    click = html.split('href="', 1)[1].split('"', 1)[0]
    pixel = html.split('src="', 1)[1].split('"', 1)[0]
    assert click.startswith("https://gw.example.org/api/v1/public/t/c/")
    answer = client.get(click.removeprefix("https://gw.example.org"))
    assert (answer.status_code, answer.headers["location"]) == (302, URL)
    answer = client.get(pixel.removeprefix("https://gw.example.org"))
    assert answer.status_code == 200
    assert svc.buffered == 2


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        click_token()[:-3] + "AAA",  # altered signature
        SignedTokens("someone-elses-secret-0123456789abcdef", "track-click").sign(
            {"m": "m1", "c": "c1", "i": 0, "u": "https://evil.example/", "t": 1}
        ),
        tokens().open(message_id="m1", campaign_id="c1"),  # a pixel's token
        "x" * 5000,
    ],
)
def test_a_bad_click_token_gets_a_404_page_and_no_redirect(app, token):
    client, svc = app
    answer = client.get(f"/api/v1/public/t/c/{token}")
    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/html")
    assert "Link not found" in answer.text
    assert svc.buffered == 0


def test_the_pixel_is_a_gif_never_cached(app):
    client, svc = app
    token = tokens().open(message_id="m1", campaign_id="c1")
    answer = client.get(f"/api/v1/public/t/o/{token}.gif")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/gif"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.content == PIXEL_GIF and PIXEL_GIF.startswith(b"GIF89a\x01\x00\x01\x00")
    assert svc.buffered == 1


def test_a_bad_pixel_token_is_404_and_not_counted(app):
    client, svc = app
    for token in ("garbage", click_token()):
        assert client.get(f"/api/v1/public/t/o/{token}.gif").status_code == 404
    assert svc.buffered == 0


def test_the_buffer_wakes_the_flusher_when_full_enough_and_never_grows_past_its_bound(app):
    client, svc = app
    token = click_token()
    client.get(f"/api/v1/public/t/c/{token}")
    assert not svc.flush_due
    client.get(f"/api/v1/public/t/c/{token}")
    assert svc.flush_due  # tracking_flush_max_hits reached: flush now
    for _ in range(3):
        # the store is not taking them: beyond the bound hits are not kept, but the
        # person still gets where the link leads
        assert client.get(f"/api/v1/public/t/c/{token}").status_code == 302
    assert svc.buffered == 3
