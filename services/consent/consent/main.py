"""Consent API process: ``python -m consent.main``."""

from __future__ import annotations

from fastapi import FastAPI
from tribune_shared.app import create_service_app, serve

from consent.api import router
from consent.service import ConsentService
from consent.settings import ConsentSettings
from consent.store import INDEXES


def create_app(settings: ConsentSettings | None = None) -> FastAPI:
    settings = settings or ConsentSettings()

    async def on_startup(app: FastAPI) -> None:
        app.state.consent_service = ConsentService(settings, app.state.store)

    return create_service_app(
        settings, title="Tribune consent", routers=[router], indexes=INDEXES, on_startup=on_startup
    )


if __name__ == "__main__":
    settings = ConsentSettings()
    serve(create_app(settings), settings)
