"""The small HTML pages people see when they open a link from an email (pure).

No script, no external resource; every value is escaped. Responses are never cached and
never leak the link (which holds a token) in a Referer header.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi.responses import HTMLResponse
from tribune_shared.tokens import ExpiredToken, TokenError

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Robots-Tag": "noindex",
}

CHANNEL_NAMES = {
    "email": "emails",
    "sms": "text messages",
    "phone": "phone calls",
    "post": "letters",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#222}h1{font-size:1.4rem}button{font-size:1rem;padding:.5rem 1rem;"
    "margin:.25rem 0;cursor:pointer}blockquote{border-left:3px solid #ccc;margin:1rem 0;"
    "padding:.25rem 1rem;white-space:pre-wrap;color:#444}.muted{color:#666;font-size:.9rem}"
)


def page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    """``body`` is trusted HTML built here from escaped values."""
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)


def _p(text: str, css: str | None = None) -> str:
    cls = f' class="{css}"' if css else ""
    return f"<p{cls}>{escape(text)}</p>"


def what(channel: str, purpose: str) -> str:
    return f"{CHANNEL_NAMES.get(channel, channel)} about “{purpose}”"


# ---------------------------------------------------------------- refusals


def token_refused(error: TokenError) -> HTMLResponse:
    """A forged, altered, malformed or expired link: a clear page; nothing changed."""
    if isinstance(error, ExpiredToken):
        return page(
            "This link has expired",
            _p("For your security, this link is only valid for a limited time.")
            + _p("Nothing was changed. Ask the organisation to send you a new link."),
            410,
        )
    return page(
        "This link is not valid",
        _p(
            "The link is incomplete or has been altered, so we cannot tell what it is for. "
            "Please open the link exactly as you received it."
        )
        + _p("Nothing was changed.")
        + _p(f"(reason: {error.reason})", "muted"),
        400,
    )


def missing_token() -> HTMLResponse:
    return page(
        "This link is not valid",
        _p("The link is incomplete. Please open it exactly as you received it.")
        + _p("Nothing was changed."),
        400,
    )


def bad_form(reason: str) -> HTMLResponse:
    return page("Something is missing", _p(reason) + _p("Nothing was changed."), 422)


def too_large() -> HTMLResponse:
    return page("Request too large", _p("Nothing was changed."), 413)


# ---------------------------------------------------------------- double opt-in


def confirm_form(channel: str, purpose: str, text: dict[str, Any] | None) -> HTMLResponse:
    shown = ""
    if text is not None:
        shown = (
            _p(f"What you agree to ({text['title']}, version {text['version']}):")
            + f"<blockquote>{escape(text['body'])}</blockquote>"
        )
    return page(
        "Please confirm your consent",
        _p(f"You were asked whether you agree to receive {what(channel, purpose)}.")
        + shown
        + '<form method="post"><button type="submit">Yes, I confirm</button></form>'
        + _p("If you did not ask for this, simply ignore this page: nothing happens.", "muted"),
    )


def confirmed(channel: str, purpose: str) -> HTMLResponse:
    return page(
        "Thank you, your consent is confirmed",
        _p(f"You will receive {what(channel, purpose)}.")
        + _p("Every message carries a link to unsubscribe at any time.", "muted"),
    )


def already_confirmed(channel: str, purpose: str) -> HTMLResponse:
    return page(
        "Already confirmed",
        _p(f"Your consent to receive {what(channel, purpose)} was already confirmed."),
    )


def no_longer_valid() -> HTMLResponse:
    return page(
        "This link is no longer valid",
        _p("This request was withdrawn or replaced by a newer one. Nothing was changed."),
        409,
    )


# ---------------------------------------------------------------- unsubscribe


def unsubscribe_form(purpose: str) -> HTMLResponse:
    return page(
        "Unsubscribe",
        _p("Choose what you no longer want to receive:")
        + '<form method="post"><input type="hidden" name="scope" value="purpose">'
        + f'<button type="submit">Stop emails about “{escape(purpose)}”</button></form>'
        + '<form method="post"><input type="hidden" name="scope" value="all">'
        + '<button type="submit">Stop everything (all messages, all channels)</button>'
        + "</form>"
        + _p(
            "Stopping everything also keeps a one-way fingerprint of your email address and "
            "phone number so that you are never contacted again, even if they are entered "
            "anew.",
            "muted",
        ),
    )


def unsubscribed(scope: str, purpose: str, contact_known: bool) -> HTMLResponse:
    if not contact_known:
        return page(
            "You are unsubscribed",
            _p("We hold no data about you any more: you will receive nothing from us."),
        )
    if scope == "all":
        return page(
            "You are unsubscribed from everything",
            _p("You will receive no more messages from us, on any channel."),
        )
    return page(
        "You are unsubscribed",
        _p(f"You will receive no more emails about “{purpose}”.")
        + _p("Changed your mind about everything else too? Use the link again.", "muted"),
    )
