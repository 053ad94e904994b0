"""Consent API process: ``python -m consent.main``."""

from __future__ import annotations

from fastapi import FastAPI
from tribune_shared.app import create_service_app, serve

from consent.api import router
from consent.privacy_api import person_router as privacy_person_router
from consent.privacy_api import router as privacy_router
from consent.privacy_service import PrivacyService
from consent.privacy_store import PRIVACY_INDEXES
from consent.public_api import public_routers
from consent.service import ConsentService
from consent.settings import ConsentSettings
from consent.store import INDEXES


def create_app(settings: ConsentSettings | None = None) -> FastAPI:
    settings = settings or ConsentSettings()

    async def on_startup(app: FastAPI) -> None:
        app.state.consent_service = ConsentService(settings, app.state.store)
        app.state.privacy_service = PrivacyService(settings, app.state.store)

    async def on_shutdown(app: FastAPI) -> None:
        await app.state.consent_service.close()  # queued view audits are written first

    return create_service_app(
        settings,
        title="Tribune consent",
        # the privacy person route (/consents/privacy/{id}) goes before /consents/{id}/...
        routers=[privacy_person_router, router, privacy_router, *public_routers()],
        indexes=[*INDEXES, *PRIVACY_INDEXES],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


if __name__ == "__main__":
    settings = ConsentSettings()
    serve(create_app(settings), settings)
