"""Memberships API process: ``python -m memberships.main``."""

from __future__ import annotations

from fastapi import FastAPI
from tribune_shared.app import create_service_app, serve

from memberships.api import router
from memberships.privacy import router as privacy_router
from memberships.service import MembershipsService
from memberships.settings import MembershipsSettings
from memberships.store import INDEXES


def create_app(settings: MembershipsSettings | None = None) -> FastAPI:
    settings = settings or MembershipsSettings()

    async def on_startup(app: FastAPI) -> None:
        app.state.memberships_service = MembershipsService(settings, app.state.store)

    return create_service_app(
        settings,
        title="Tribune memberships",
        routers=[privacy_router, router],
        indexes=INDEXES,
        on_startup=on_startup,
    )


if __name__ == "__main__":
    settings = MembershipsSettings()
    serve(create_app(settings), settings)
