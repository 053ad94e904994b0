"""Open and click tracking, the pure part: link rewriting, the pixel, tokens, counting."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from messaging.tracking.domain import (
    PUBLIC_PREFIX,
    Hit,
    HitKind,
    LinkTracker,
    TrackingTokens,
    first_hits,
    html_links,
    tally,
    text_urls,
    track_links,
    tracked_urls,
)
from tribune_shared.tokens import MalformedToken, SignedTokens, TamperedToken, WrongPurpose

SECRET = "tracking-test-secret-0123456789abcdef"
BASE = "https://gw.example.org"
UNSUBSCRIBE = "https://gw.example.org/api/v1/public/consents/unsubscribe"
UNSUBSCRIBE_LINK = f"{UNSUBSCRIBE}?token=abc.def"

NEWSLETTER = f"""<!doctype html>
<html><head><title>Lettre <a href="https://title.example/">?</a></title>
<style>a[href="https://css.example/"] {{ color: red }}</style>
<script>var s = '<a href="https://script.example/">';</script></head>
<BODY style="margin:0">
<!--[if mso]><v:roundrect href="https://outlook.example/"></v:roundrect><![endif]-->
<p>Bonjour Ana&nbsp;! <a class="btn"
   HREF = 'https://tribune.example/agir?x=1&amp;y=%C3%A9'>Agir</a></p>
<p><a href="mailto:contact@tribune.example">Écrire</a> · <a href="tel:+33123456789">Appeler</a>
 · <a href="#top">Haut</a> · <a href="/relatif">relatif</a>
 · <a href="javascript:alert(1)">x</a></p>
<img alt='<a href="https://alt.example/">' src="https://img.example/logo.png">
<map><area shape="rect" coords="0,0,1,1" href=https://tribune.example/carte></map>
<p><a title="a > b" href="https://tribune.example/agir?x=1&y=%C3%A9">Agir encore</a>
<a href="https://tribune.example/don"/> <a name="sans-lien">ancre</a></p>
<p><a href="{UNSUBSCRIBE_LINK}">Se désinscrire</a></p>
</body></html>
"""

TEXT = (
    "Bonjour Ana,\n\nAgir : [Agir](https://tribune.example/agir?x=1&y=%C3%A9).\n"
    "Voir (https://fr.wikipedia.org/wiki/Paris_(France)) et https://tribune.example/don.\n"
    f"Se désinscrire : {UNSUBSCRIBE_LINK}\n"
)


def tracker(max_url_chars: int = 2000) -> LinkTracker:
    tokens = TrackingTokens(SECRET, max_url_chars=max_url_chars)
    return LinkTracker(tokens, base_url=BASE + "/", untracked=(UNSUBSCRIBE,))


def tokens() -> TrackingTokens:
    return TrackingTokens(SECRET, max_url_chars=2000)


TOKEN = r"([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)"
CLICK = re.compile(re.escape(f"{BASE}{PUBLIC_PREFIX}/c/") + TOKEN)
PIXEL = re.compile(re.escape(f"{BASE}{PUBLIC_PREFIX}/o/") + TOKEN + r"\.gif")


def clicks_in(part: str) -> list:
    return [tokens().read_click(t) for t in CLICK.findall(part)]


class ReferenceLinks(HTMLParser):
    """What the standard library's HTML parser calls the links of a document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("a", "area"):
            url = next((v for k, v in attrs if k == "href"), None)
            if url is not None:
                self.urls.append(url)


def reference(html: str) -> list[str]:
    parser = ReferenceLinks()
    parser.feed(html)
    parser.close()
    return parser.urls


# ---------------------------------------------------------------- finding links


@pytest.mark.parametrize(
    "html",
    [
        # html.parser reads a <title> as markup, browsers (and html_links) as text
        NEWSLETTER.replace('<a href="https://title.example/">?</a>', ""),
        '<a href="https://a.example/?q=1&amp;r=2">x</a><A HREF=https://b.example/>y</A>',
        "<p><a\nhref\n=\n'https://c.example/'\n>z</a></p>",
        '<a data-x="<a href=https://no.example/>" href="https://yes.example/">x</a>',
        "<!-- <a href='https://no.example/'> --><a href='https://yes.example/'>",
        "<script><a href='https://no.example/'></script><a href='https://yes.example/'>",
        '<a href="https://é.example/ü?x=&eacute;&#233;">accents</a>',
        '<a href="">empty</a><a href>bare</a><a>none</a>',
    ],
)
def test_the_links_found_are_those_html_parser_finds(html):
    assert [url for _, _, url in html_links(html)] == reference(html)


def test_links_in_comments_scripts_styles_titles_and_attributes_are_not_links():
    urls = [url for _, _, url in html_links(NEWSLETTER)]
    assert urls == [
        "https://tribune.example/agir?x=1&y=%C3%A9",
        "mailto:contact@tribune.example",
        "tel:+33123456789",
        "#top",
        "/relatif",
        "javascript:alert(1)",
        "https://tribune.example/carte",
        "https://tribune.example/agir?x=1&y=%C3%A9",
        "https://tribune.example/don",
        UNSUBSCRIBE_LINK,
    ]


def test_an_unclosed_tag_or_quote_hides_no_link_and_breaks_nothing():
    assert html_links('<p>x</p><a href="https://x.example/') == []
    assert html_links("<a href='https://x.example/' <!-- ") == [(8, 28, "https://x.example/")]


# ---------------------------------------------------------------- rewriting


def test_rewriting_changes_only_the_tracked_links_values():
    html, _ = tracker().tracked(
        NEWSLETTER, TEXT, message_id="m1", campaign_id="c1", tracking_allowed=False
    )
    assert html is not None
    # put each original URL back: the document is the original, byte for byte (quotes
    # of rewritten values become double quotes)
    restored = html
    for token in CLICK.findall(html):
        url = tokens().read_click(token).url
        restored = restored.replace(f"{BASE}{PUBLIC_PREFIX}/c/{token}", url.replace("&", "&amp;"))
    expected = NEWSLETTER.replace(
        "'https://tribune.example/agir?x=1&amp;y=%C3%A9'",
        '"https://tribune.example/agir?x=1&amp;y=%C3%A9"',
    ).replace("href=https://tribune.example/carte", 'href="https://tribune.example/carte"')
    expected = expected.replace(
        'href="https://tribune.example/agir?x=1&y=%C3%A9"',
        'href="https://tribune.example/agir?x=1&amp;y=%C3%A9"',
    )
    assert restored == expected


def test_unsubscribe_mailto_tel_anchors_relative_and_script_links_are_left_alone():
    html, text = tracker().tracked(
        NEWSLETTER, TEXT, message_id="m1", campaign_id="c1", tracking_allowed=True
    )
    for kept in (
        f'href="{UNSUBSCRIBE_LINK}"',
        'href="mailto:contact@tribune.example"',
        'href="tel:+33123456789"',
        'href="#top"',
        'href="/relatif"',
        'href="javascript:alert(1)"',
        "https://outlook.example/",  # in a conditional comment: not a link of the page
        "https://script.example/",
    ):
        assert kept in html
    assert f"Se désinscrire : {UNSUBSCRIBE_LINK}\n" in text
    # what was tracked: the http(s) links of the page, decoded as a browser reads them
    assert sorted({c.url for c in clicks_in(html)}) == [
        "https://tribune.example/agir?x=1&y=%C3%A9",
        "https://tribune.example/carte",
        "https://tribune.example/don",
    ]


def test_a_url_has_one_index_in_both_parts_and_indexes_follow_the_html():
    html, text = tracker().tracked(
        NEWSLETTER, TEXT, message_id="m1", campaign_id="c1", tracking_allowed=True
    )
    in_html = {c.url: c.link for c in clicks_in(html)}
    assert in_html == {
        "https://tribune.example/agir?x=1&y=%C3%A9": 0,
        "https://tribune.example/carte": 1,
        "https://tribune.example/don": 2,
    }
    in_text = {c.url: c.link for c in clicks_in(text)}
    assert in_text == {
        "https://tribune.example/agir?x=1&y=%C3%A9": 0,
        "https://fr.wikipedia.org/wiki/Paris_(France)": 3,  # only in the text: after
        "https://tribune.example/don": 2,
    }
    # the sentence around a text link is untouched
    assert "Agir : [Agir](https://gw.example.org/api/v1/public/t/c/" in text
    assert re.search(r"/c/[\w.-]+\)\.\n", text)
    assert re.search(r"Voir \(https://gw\.example\.org/api/v1/public/t/c/[\w.-]+\) et", text)
    # what labels the per-link counts, read from a template's HTML: the same order
    assert tracked_urls(NEWSLETTER, untracked=(UNSUBSCRIBE,), max_url_chars=2000) == [
        "https://tribune.example/agir?x=1&y=%C3%A9",
        "https://tribune.example/carte",
        "https://tribune.example/don",
    ]


def test_the_tokens_name_the_message_the_campaign_and_the_consent():
    html, _ = tracker().tracked(
        NEWSLETTER, "", message_id="m1", campaign_id="c1", tracking_allowed=False
    )
    click = clicks_in(html)[0]
    assert (click.message_id, click.campaign_id, click.tracking) == ("m1", "c1", False)
    html, _ = tracker().tracked(
        NEWSLETTER, "", message_id="m2", campaign_id="c1", tracking_allowed=True
    )
    assert clicks_in(html)[0].tracking is True


def test_the_open_pixel_is_added_only_with_tracking_consent():
    without, _ = tracker().tracked(
        NEWSLETTER, TEXT, message_id="m1", campaign_id="c1", tracking_allowed=False
    )
    assert "/o/" not in without and "<img" in without and without.count("<img") == 1
    with_consent, text = tracker().tracked(
        NEWSLETTER, TEXT, message_id="m1", campaign_id="c1", tracking_allowed=True
    )
    assert with_consent is not None
    (token,) = PIXEL.findall(with_consent)
    opened = tokens().read_open(token)
    assert (opened.message_id, opened.campaign_id) == ("m1", "c1")
    # last thing of the body, 1x1, with an empty alt (screen readers skip it)
    pixel = with_consent[with_consent.index('<img src="https://gw') :]
    assert re.match(r'<img src="[^"]+" width="1" height="1" alt="" [^>]*></body>', pixel)
    assert "/o/" not in text


def test_a_document_without_body_gets_the_pixel_at_its_end():
    html, _ = tracker().tracked(
        "<p>Bonjour</p>", "Bonjour", message_id="m", campaign_id="c", tracking_allowed=True
    )
    assert html is not None and html.startswith("<p>Bonjour</p><img src=")
    html, text = tracker().tracked(
        None, "Bonjour", message_id="m", campaign_id="c", tracking_allowed=True
    )
    assert (html, text) == (None, "Bonjour")


def test_a_link_too_long_for_a_token_is_not_tracked():
    long_url = "https://tribune.example/" + "a" * 300
    html, _ = tracker(max_url_chars=200).tracked(
        f'<a href="{long_url}">x</a><a href="https://tribune.example/">y</a>',
        "",
        message_id="m",
        campaign_id="c",
        tracking_allowed=True,
    )
    assert f'href="{long_url}"' in html
    assert [c.url for c in clicks_in(html)] == ["https://tribune.example/"]


def test_a_document_without_links_is_returned_as_is():
    html = "<p>Rien à suivre</p>"
    assert track_links(html, base_url=BASE, token_for=lambda url: "t") is html


def test_text_links_end_where_the_sentence_takes_over():
    text = "a https://x.example/a, b (https://x.example/b). c https://x.example/c?d=1!"
    assert [u for _, _, u in text_urls(text)] == [
        "https://x.example/a",
        "https://x.example/b",
        "https://x.example/c?d=1",
    ]


# ---------------------------------------------------------------- tokens


def test_a_forged_or_altered_click_token_is_refused():
    good = tokens().click(
        message_id="m", campaign_id="c", link=0, url="https://tribune.example/", tracking=True
    )
    payload, mac = good.split(".")
    with pytest.raises(TamperedToken):
        tokens().read_click(f"{payload}.{mac[:-2]}AA")
    altered = SignedTokens("another-secret-0123456789abcdef0123", "track-click").sign(
        {"m": "m", "c": "c", "i": 0, "u": "https://evil.example/", "t": 1}, ttl_seconds=None
    )
    with pytest.raises(TamperedToken):
        tokens().read_click(altered)
    forged_payload = altered.split(".")[0]
    with pytest.raises(TamperedToken):  # someone else's URL under a genuine signature
        tokens().read_click(f"{forged_payload}.{mac}")
    with pytest.raises(MalformedToken):
        tokens().read_click("not-a-token")


def test_a_pixel_token_is_no_click_token_and_the_reverse():
    pixel = tokens().open(message_id="m", campaign_id="c")
    with pytest.raises(WrongPurpose):
        tokens().read_click(pixel)
    click = tokens().click(
        message_id="m", campaign_id="c", link=0, url="https://tribune.example/", tracking=True
    )
    with pytest.raises(WrongPurpose):
        tokens().read_open(click)


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:text/html,x", "//evil.example/", "https://x y/"]
)
def test_even_a_genuinely_signed_token_never_leads_to_another_scheme(url):
    token = SignedTokens(SECRET, "track-click").sign(
        {"m": "m", "c": "c", "i": 0, "u": url, "t": 0}, ttl_seconds=None
    )
    with pytest.raises(MalformedToken):
        tokens().read_click(token)


# ---------------------------------------------------------------- counting

AT = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


def hit(kind: HitKind, message: str, campaign: str = "c1", link: int | None = None) -> Hit:
    url = None if link is None else f"https://x.example/{link}"
    return Hit(kind, message, campaign, AT + timedelta(seconds=1), True, link, url)


def test_a_batch_counts_every_hit_and_each_message_first_once():
    hits = [
        hit(HitKind.open, "m1"),
        hit(HitKind.open, "m1"),
        hit(HitKind.open, "m2"),
        hit(HitKind.click, "m1", link=0),
        hit(HitKind.click, "m1", link=1),
        hit(HitKind.click, "m3", "c2", link=0),
    ]
    firsts = first_hits(hits, b"key")
    assert len(firsts) == 4  # open m1, open m2, click m1, click m3
    assert firsts[next(iter(firsts))] is hits[0]
    counts = tally(hits, firsts.values())
    assert dict(counts["c1"]) == {
        "opened": 3,
        "unique_opened": 2,
        "clicked": 2,
        "unique_clicked": 1,
        "clicked_links.0": 1,
        "clicked_links.1": 1,
    }
    assert dict(counts["c2"]) == {"clicked": 1, "unique_clicked": 1, "clicked_links.0": 1}
    # markers already seen in an earlier batch: counted, not unique
    assert "unique_opened" not in tally(hits, [])["c1"]


def test_an_ab_test_gets_each_message_once_per_kind_in_its_variant():
    hits = [
        hit(HitKind.click, "ma", link=0),
        hit(HitKind.click, "ma", link=1),
        hit(HitKind.open, "mb"),
        hit(HitKind.click, "mb", link=0),
        hit(HitKind.click, "held", link=0),
    ]
    firsts = first_hits(hits, b"key").values()
    counts = tally(hits, firsts, {"ma": "a", "mb": "b"})["c1"]
    assert {k: n for k, n in counts.items() if k.startswith("ab.")} == {
        "ab.a.clicked": 1,  # two clicks, one message: the rate is per message sent
        "ab.b.opened": 1,
        "ab.b.clicked": 1,
    }
