"""The request path, made one unambiguous thing before anything looks at it.

The gateway routes, checks roles, audits and forwards on the path. If each of those read it
differently (one decoded, another raw, a third resolving ``..``), a request could be routed
and audited as one thing and reach a service as another: ``/api/v1/segments/../contacts/x``
audited as a segments call while reading a contact, or ``/api/v1/public/consents/../..
/openapi.json`` reaching a service's internal endpoints without a login. So the path is
normalised once, at the door, by ``NormalisedPath`` (outermost middleware):

- percent-decoded exactly once (``%2e`` is a dot, ``%2f`` a slash) and valid UTF-8;
- refused (400) when what is left could be read two ways: a ``.`` or ``..`` segment, an
  empty segment (``//``; a single trailing ``/`` is kept), a backslash, a control
  character, or a ``%`` (a double-encoded path: whoever decodes it again would see
  something else than the gateway did);
- then every layer (routing, the access audit, the forwarded call) sees that one path:
  ``scope["path"]`` is it, and ``scope["raw_path"]`` is its canonical encoding, which is
  also what goes to the service (``wire``): a service decoding it once gets the very path
  the gateway routed on, and nothing in it can climb out of the routed prefix.

Pure rules (``normalise``, ``wire``) and the small ASGI middleware applying them.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

from fastapi.responses import JSONResponse
from tribune_shared.errors import DomainError
from tribune_shared.logging import get_logger

log = get_logger(__name__)

#: what RFC 3986 allows unencoded in a path segment (pchar less "%"), besides letters and
#: digits: everything else is percent-encoded on the way to the service
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
#: a path made of these only is its own wire form (the common case: quote is skipped)
_PLAIN = re.compile(r"[A-Za-z0-9/\-._~!$&'()*+,;=:@]*")
_REFUSED_CHARS = re.compile(r"[\\%\x00-\x1f\x7f]")
#: how much of a refused path the log keeps (enough to recognise a probe)
_LOGGED_CHARS = 200


class InvalidPath(DomainError):
    """400: the path could be read two ways; nothing was routed or forwarded."""

    status_code = 400
    code = "invalid_path"


def normalise(raw_path: bytes) -> str:
    """The path of a request as the gateway reads it, from the bytes the client sent
    (without the query string); raises ``InvalidPath``."""
    if not raw_path.startswith(b"/"):
        raise InvalidPath("the path must start with /")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath("the path is not valid UTF-8 once percent-decoded") from None
    if _REFUSED_CHARS.search(path):
        raise InvalidPath("the path holds a backslash, a control character or a double-encoded %")
    segments = path.split("/")[1:]
    for n, segment in enumerate(segments):
        if segment in (".", ".."):
            raise InvalidPath("the path holds a . or .. segment")
        if not segment and n < len(segments) - 1:
            raise InvalidPath("the path holds an empty segment (//)")
    return path


def wire(path: str) -> str:
    """The canonical encoding of a normalised path: what the service receives, and decodes
    once into exactly ``path``."""
    if _PLAIN.fullmatch(path):
        return path
    return quote(path, safe="/" + _SEGMENT_SAFE)


class NormalisedPath:
    """ASGI middleware: every HTTP request's path normalised (``normalise``) before any
    other layer sees it, or refused with 400."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A server that does not pass the raw bytes has decoded them once already: encode
        # that path again so it is decoded once here, as the raw bytes would be.
        raw = scope.get("raw_path") or wire(scope["path"]).encode("ascii")
        try:
            path = normalise(raw)
        except InvalidPath as exc:
            log.warning(
                "gateway.path_refused",
                method=scope.get("method"),
                path=raw[:_LOGGED_CHARS].decode("latin-1"),
                reason=exc.message,
            )
            response = JSONResponse(exc.body(), status_code=exc.status_code)
            await response(scope, receive, send)
            return
        scope = {**scope, "path": path, "raw_path": wire(path).encode("ascii")}
        await self.app(scope, receive, send)
