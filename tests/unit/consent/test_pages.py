"""The pages behind the links: a clear answer for each refusal, nothing injected."""

from __future__ import annotations

from consent import pages
from tribune_shared.tokens import ExpiredToken, MalformedToken, TamperedToken


def test_an_expired_link_says_so_with_410():
    r = pages.token_refused(ExpiredToken("the link has expired", 1))
    assert r.status_code == 410
    assert b"expired" in r.body and b"Nothing was changed" in r.body


def test_a_forged_or_altered_link_is_400_with_its_reason():
    for error in (TamperedToken("x"), MalformedToken("x")):
        r = pages.token_refused(error)
        assert r.status_code == 400
        assert b"not valid" in r.body and error.reason.encode() in r.body


def test_pages_are_not_cached_nor_leak_their_url():
    r = pages.unsubscribe_form("news")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "form-action 'self'" in r.headers["content-security-policy"]
    assert r.body.count(b'method="post"') == 2  # this purpose, or everything


def test_values_are_escaped():
    r = pages.confirm_form(
        "email",
        "<script>alert(1)</script>",
        {"title": "T&C", "version": "v1", "body": "<b>agree</b>"},
    )
    assert b"<script>" not in r.body and b"&lt;script&gt;" in r.body
    assert b"&lt;b&gt;agree&lt;/b&gt;" in r.body
