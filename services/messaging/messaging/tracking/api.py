"""Public routes of open and click tracking (no identity; the gateway forwards GET only).

The click route redirects only to the URL its signed token carries (a link that was in
the rendered template): a forged or altered token gets a 404 page and no redirect, so the
route is never an open redirect. Nothing here waits for the store: hits are buffered and
written in batches (``TrackingService``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from tribune_shared.tokens import TokenError

from messaging.tracking.domain import PIXEL_GIF, PUBLIC_PREFIX
from messaging.tracking.service import TrackingService

router = APIRouter(prefix=PUBLIC_PREFIX, tags=["public"])

#: the tracking URL holds a token: never cached, never sent on as a Referer, never indexed
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}
_NOT_FOUND_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    "<title>Link not found</title></head><body><h1>Link not found</h1>"
    "<p>This link is not valid. If you copied it from an email, check that it is "
    "complete.</p></body></html>"
)


async def service(request: Request) -> TrackingService:
    return request.app.state.tracking_service


Service = Annotated[TrackingService, Depends(service)]


def not_found() -> HTMLResponse:
    return HTMLResponse(
        _NOT_FOUND_PAGE,
        status_code=status.HTTP_404_NOT_FOUND,
        headers={**HEADERS, "Content-Security-Policy": "default-src 'none'"},
    )


@router.get(
    "/c/{token}",
    response_class=RedirectResponse,
    status_code=status.HTTP_302_FOUND,
    summary="A tracked link of an email: counts the click, redirects to the link",
    responses={
        302: {"description": "to the link's URL (the one the template had)"},
        404: {"description": "forged, altered or malformed token: a page, no redirect"},
    },
)
async def click(token: str, svc: Service) -> Response:
    try:
        url = svc.click(token)
    except TokenError:
        return not_found()
    return RedirectResponse(url, status_code=status.HTTP_302_FOUND, headers=HEADERS)


@router.get(
    "/o/{token}.gif",
    response_class=Response,
    summary="The open pixel of an email (only in those of people who consented)",
    responses={
        200: {"content": {"image/gif": {}}, "description": "a transparent 1x1 GIF"},
        404: {"description": "forged, altered or malformed token"},
    },
)
async def pixel(token: str, svc: Service) -> Response:
    try:
        svc.open(token)
    except TokenError:
        return not_found()
    return Response(PIXEL_GIF, media_type="image/gif", headers=HEADERS)
