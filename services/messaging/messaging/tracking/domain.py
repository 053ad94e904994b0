"""Open and click tracking, free of I/O: signed link tokens, rewriting a rendered email's
links through the tracking redirect, the open pixel, and what a batch of hits counts.

**What a click token carries.** The destination URL itself, signed with the message id,
the campaign id, the link's index in the message and whether the person had consented to
tracking when it was sent (``{"m", "c", "i", "u", "t"}``), rather than an index into a
per-campaign link table:

- rewriting stays pure and per recipient (no table to build, store and share between
  workers before the first mail leaves, no read per click to find the URL back);
- a template may put a variable in a link (``?ref={{ contact.given_name | urlencode }}``):
  such links differ per recipient and could not live in one table per campaign version;
- the HMAC binds the URL to the token, and tokens are only ever signed for the links found
  in a rendered template: a forged or altered token is refused, so the redirect can never
  be an open redirect. The price is longer links (the URL is in them, base64url-encoded);
  a link longer than ``tracking_max_url_chars`` is left as it is (not tracked).

Per-link counts are keyed by the link's index (distinct URLs numbered in the order they
first appear in the HTML, then in the text): the campaign's statistics never hold a URL,
so a personalised link puts no personal data into them; ``tracked_urls`` of the template's
HTML lists the links in the same order to label them.

The open pixel is added only when the person consented to tracking; an open token carries
the message and campaign ids only (``{"m", "c"}``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from html import escape, unescape
from urllib.parse import urlsplit

from tribune_shared.tokens import MalformedToken, SignedTokens

#: the public routes (through the gateway) the rewritten links and the pixel point at
PUBLIC_PREFIX = "/api/v1/public/t"
#: token purposes: a click token is no pixel token and the reverse (tribune_shared.tokens)
CLICK_PURPOSE = "track-click"
OPEN_PURPOSE = "track-open"

#: a transparent 1x1 GIF (43 bytes)
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


class HitKind(StrEnum):
    open = "open"
    click = "click"


@dataclass(frozen=True)
class Click:
    message_id: str
    campaign_id: str
    link: int
    url: str
    #: the person had granted tracking consent when the message was sent
    tracking: bool


@dataclass(frozen=True)
class Open:
    message_id: str
    campaign_id: str


def trackable(url: str, max_chars: int) -> bool:
    """An absolute http(s) link of at most ``max_chars``, with nothing a browser would
    read differently from us (whitespace, control characters)."""
    if len(url) > max_chars or not url.isprintable() or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an invalid IPv6 host
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


class TrackingTokens:
    """Sign and read click and open tokens (``tribune_shared.tokens.SignedTokens``, no
    expiry: a link in an email keeps working as long as the email exists)."""

    def __init__(
        self, secret: str, *, max_url_chars: int, previous_secrets: Sequence[str] = ()
    ) -> None:
        self._click = SignedTokens(secret, CLICK_PURPOSE, previous_secrets=previous_secrets)
        self._open = SignedTokens(secret, OPEN_PURPOSE, previous_secrets=previous_secrets)
        self.max_url_chars = max_url_chars

    def click(
        self, *, message_id: str, campaign_id: str, link: int, url: str, tracking: bool
    ) -> str:
        data = {"m": message_id, "c": campaign_id, "i": link, "u": url, "t": int(tracking)}
        return self._click.sign(data, ttl_seconds=None)

    def open(self, *, message_id: str, campaign_id: str) -> str:
        return self._open.sign({"m": message_id, "c": campaign_id}, ttl_seconds=None)

    def read_click(self, token: str) -> Click:
        """The click of a genuine token; a ``TokenError`` otherwise. The URL is checked
        again (an http(s) link): even a token signed with a leaked secret never sends a
        person to a ``javascript:`` or ``data:`` URL."""
        data = self._click.verify(token).data
        message_id, campaign_id = _ids(data)
        link, url, tracking = data.get("i"), data.get("u"), data.get("t")
        if not isinstance(link, int) or isinstance(link, bool) or link < 0:
            raise MalformedToken("the link is malformed")
        if not isinstance(url, str) or not trackable(url, self.max_url_chars):
            raise MalformedToken("the link is malformed")
        if tracking not in (0, 1) or isinstance(tracking, bool):
            raise MalformedToken("the link is malformed")
        return Click(message_id, campaign_id, link, url, tracking == 1)

    def read_open(self, token: str) -> Open:
        return Open(*_ids(self._open.verify(token).data))


def _ids(data: dict[str, object]) -> tuple[str, str]:
    message_id, campaign_id = data.get("m"), data.get("c")
    if not isinstance(message_id, str) or not message_id:
        raise MalformedToken("the link is malformed")
    if not isinstance(campaign_id, str) or not campaign_id:
        raise MalformedToken("the link is malformed")
    return message_id, campaign_id


def click_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{PUBLIC_PREFIX}/c/{token}"


def open_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{PUBLIC_PREFIX}/o/{token}.gif"


# ---------------------------------------------------------------- rewriting

#: one attribute of a start tag as browsers (and html.parser) read it: a name, then an
#: optional value, quoted or not
_ATTRIBUTE = re.compile(
    r"""(?<=['"\s/])([^\s/>][^\s/=>]*)(\s*=+\s*('[^']*'|"[^"]*"|(?!['"])[^>\s]*))?"""
)
_TAG_NAME = re.compile(r"<[^\s/>]+")
#: the rest of a start tag: a quoted value may hold a ">", which does not end the tag
#: (possessive, and an unclosed quote or tag runs to the end as in a browser: one linear
#: pass whatever the document)
_TAG_REST = r"""(?:[^>"']++|"[^"]*+(?:"|\Z)|'[^']*+(?:'|\Z))*+(?:>|\Z)"""
#: One pass over a document, in the order the HTML tokenizer reads it, of just what
#: matters to find its links: comments, elements whose content is text (a link-shaped
#: string there is no link), link tags, and every other tag (skipped whole, so an ``<a``
#: inside an attribute value is not taken for a link). Why not html.parser: it calls back
#: Python for every tag and text run, about 10 ms for a 40 KB newsletter, per recipient.
#: The tests check this finds what html.parser finds.
_SCAN = re.compile(
    r"<!--(?:>|->|.*?(?:--!?>|\Z))"
    r"|<(?P<raw>script|style|title|textarea|xmp|iframe|noembed|noframes)(?=[\s/>])"
    + _TAG_REST
    + r".*?(?:</(?P=raw)(?=[\s/>])[^>]*>|\Z)"
    r"|<plaintext(?=[\s/>]).*"
    r"|<(?P<link>a|area)(?=[\s/>])" + _TAG_REST + r"|<[a-z]" + _TAG_REST + r"|<[!?/][^>]*+(?:>|\Z)",
    re.IGNORECASE | re.DOTALL,
)
#: elements whose ``href`` is a link a person follows
_LINK_TAGS = frozenset({"a", "area"})
_HREF = re.compile("href", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
#: a link in a plain-text part (what RFC 3986 allows in a URL, less brackets and quotes,
#: which in text more often close the link than belong to it)
_TEXT_URL = re.compile(r"""https?://[^\s<>"'`{}|\\^\[\]]+""", re.IGNORECASE)
_TRAILING = ".,;:!?*"


def _href_span(tag: str) -> tuple[int, int, str] | None:
    """Where the first ``href`` value of a raw start tag is (its quotes included), and the
    value as a browser reads it."""
    name = _TAG_NAME.match(tag)
    if name is None:
        return None
    for m in _ATTRIBUTE.finditer(tag, name.end()):
        if m.group(1).lower() != "href":
            continue
        if m.group(3) is None:
            return None
        raw = m.group(3)
        value = raw[1:-1] if raw[:1] in ("'", '"') else raw
        return m.start(3), m.end(3), unescape(value)
    return None


def html_links(html: str) -> list[tuple[int, int, str]]:
    """Each ``<a>``/``<area>`` link of the document: (start, end) of its ``href`` value
    in ``html`` (quotes included) and the URL as a browser reads it (entities decoded).
    Only offsets are found: the document is then rewritten by slicing, so every byte that
    is not a link's value stays as it was. Text inside comments, ``<script>``, ``<style>``,
    ``<title>`` and ``<textarea>`` holds no link."""
    links = []
    for m in _SCAN.finditer(html):
        if m.group("link") is None:
            continue
        found = _href_span(m.group())
        if found is not None:
            links.append((m.start() + found[0], m.start() + found[1], found[2]))
    return links


def track_links(html: str, *, base_url: str, token_for: Callable[[str], str | None]) -> str:
    """``html`` with each link ``token_for`` gives a token for pointing at
    ``<base_url>/api/v1/public/t/c/<token>``; every other byte unchanged. ``token_for``
    returns None for a link to leave as it is (unsubscribe, ``mailto:``...)."""
    if _HREF.search(html) is None:
        return html
    parts: list[str] = []
    done = 0
    for start, end, url in html_links(html):
        token = token_for(url)
        if token is None:
            continue
        parts += [html[done:start], '"', escape(click_url(base_url, token)), '"']
        done = end
    if not parts:
        return html
    parts.append(html[done:])
    return "".join(parts)


def _text_link_end(url: str) -> int:
    """How much of a match is the link: trailing punctuation and a closing parenthesis
    without its opening one (``(see https://x.fr/a)``, ``[label](https://x.fr)``) are the
    sentence's, not the link's."""
    end = len(url)
    while end:
        last = url[end - 1]
        if last in _TRAILING:
            end -= 1
        elif last == ")" and url.count("(", 0, end) < url.count(")", 0, end):
            end -= 1
        else:
            break
    return end


def text_urls(text: str) -> list[tuple[int, int, str]]:
    """The http(s) links of a plain-text part: (start, end, url)."""
    found = []
    for m in _TEXT_URL.finditer(text):
        end = m.start() + _text_link_end(m.group())
        if end > m.start():
            found.append((m.start(), end, text[m.start() : end]))
    return found


def track_text_links(text: str, *, base_url: str, token_for: Callable[[str], str | None]) -> str:
    """The plain-text part with its links rewritten as ``track_links`` does."""
    parts: list[str] = []
    done = 0
    for start, end, url in text_urls(text):
        token = token_for(url)
        if token is None:
            continue
        parts += [text[done:start], click_url(base_url, token)]
        done = end
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def add_pixel(html: str, pixel_url: str) -> str:
    """The open pixel, last thing of the body (or of the document if it has none)."""
    pixel = (
        f'<img src="{escape(pixel_url)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    ends = [m.start() for m in _BODY_END.finditer(html)]
    if not ends:
        return html + pixel
    return html[: ends[-1]] + pixel + html[ends[-1] :]


def tracked_urls(html: str, *, untracked: Iterable[str] = (), max_url_chars: int) -> list[str]:
    """The distinct tracked links of an HTML part, in the order they get their index (what
    labels a campaign's ``clicked_links.<index>`` counts, read from its template)."""
    skip = tuple(untracked)
    seen: dict[str, None] = {}
    for _, _, url in html_links(html):
        if trackable(url, max_url_chars) and not url.startswith(skip):
            seen.setdefault(url, None)
    return list(seen)


class LinkTracker:
    """What the dispatcher calls for each email it hands over (``tracked``).

    ``untracked``: URL prefixes never rewritten (the unsubscribe page: a person must reach
    it without going through us, and mail clients read it from the List-Unsubscribe header
    anyway; links already pointing at the tracking routes)."""

    def __init__(self, tokens: TrackingTokens, *, base_url: str, untracked: Iterable[str]) -> None:
        self.tokens = tokens
        self.base_url = base_url.rstrip("/")
        self.untracked = (*untracked, self.base_url + PUBLIC_PREFIX + "/")

    def tracked(
        self,
        html: str | None,
        text: str,
        *,
        message_id: str,
        campaign_id: str,
        tracking_allowed: bool,
    ) -> tuple[str | None, str]:
        """The rendered HTML and text of one message with their links going through the
        click redirect, and, only when the person consented to tracking
        (``tracking_allowed``), the open pixel in the HTML. The same URL has the same
        index (and token) in both parts."""
        tokens: dict[str, str | None] = {}
        indexes = itertools.count()  # 0, 1, ... one per distinct tracked link

        def token_for(url: str) -> str | None:
            if url in tokens:
                return tokens[url]
            token = None
            if trackable(url, self.tokens.max_url_chars) and not url.startswith(self.untracked):
                token = self.tokens.click(
                    message_id=message_id,
                    campaign_id=campaign_id,
                    link=next(indexes),
                    url=url,
                    tracking=tracking_allowed,
                )
            tokens[url] = token
            return token

        if html is not None:
            html = track_links(html, base_url=self.base_url, token_for=token_for)
            if tracking_allowed:
                pixel = self.tokens.open(message_id=message_id, campaign_id=campaign_id)
                html = add_pixel(html, open_url(self.base_url, pixel))
        text = track_text_links(text, base_url=self.base_url, token_for=token_for)
        return html, text


# ---------------------------------------------------------------- counting


@dataclass(frozen=True)
class Hit:
    """One open or click, as the public route saw it (buffered until the next flush)."""

    kind: HitKind
    message_id: str
    campaign_id: str
    at: datetime
    #: the person had consented to tracking when the message was sent (an open always
    #: had: the pixel is only in those messages)
    tracking: bool
    link: int | None = None
    url: str | None = None


def marker(key: bytes, kind: HitKind, message_id: str) -> str:
    """The id remembering that a message was opened (or clicked) once, to count unique
    opens and clicks. Keyed: the markers alone (a dump, a backup) do not tell which
    messages were opened; they hold no contact, no time, and expire."""
    return hmac.new(key, f"{kind.value}:{message_id}".encode(), hashlib.sha256).hexdigest()[:40]


def first_hits(hits: Sequence[Hit], key: bytes) -> dict[str, Hit]:
    """Per marker, the batch's first hit carrying it (only it may be the first ever)."""
    out: dict[str, Hit] = {}
    for hit in hits:
        out.setdefault(marker(key, hit.kind, hit.message_id), hit)
    return out


def tally(
    hits: Iterable[Hit], firsts: Iterable[Hit], variants: Mapping[str, str] | None = None
) -> dict[str, Counter[str]]:
    """The campaigns' counters a batch adds: ``opened`` and ``clicked`` (every hit),
    ``unique_opened`` and ``unique_clicked`` (``firsts``: the hits that were their
    message's first of their kind), ``clicked_links.<index>``, and for a message of an A/B
    subject test (``variants``: message id -> "a" / "b") ``ab.<variant>.opened`` /
    ``.clicked``, once per message: the test compares rates per message sent."""
    variants = variants or {}
    counts: dict[str, Counter[str]] = {}
    for hit in hits:
        tally_of = counts.setdefault(hit.campaign_id, Counter())
        if hit.kind is HitKind.open:
            tally_of["opened"] += 1
        else:
            tally_of["clicked"] += 1
            tally_of[f"clicked_links.{hit.link}"] += 1
    for hit in firsts:
        what = "opened" if hit.kind is HitKind.open else "clicked"
        tally_of = counts.setdefault(hit.campaign_id, Counter())
        tally_of[f"unique_{what}"] += 1
        if variant := variants.get(hit.message_id):
            tally_of[f"ab.{variant}.{what}"] += 1
    return counts


__all__ = [
    "CLICK_PURPOSE",
    "OPEN_PURPOSE",
    "PIXEL_GIF",
    "PUBLIC_PREFIX",
    "Click",
    "Hit",
    "HitKind",
    "LinkTracker",
    "Open",
    "TrackingTokens",
    "add_pixel",
    "click_url",
    "first_hits",
    "html_links",
    "marker",
    "open_url",
    "tally",
    "text_urls",
    "track_links",
    "track_text_links",
    "trackable",
    "tracked_urls",
]
