"""The live figures process: ``python -m memberships.live``.

One process: the faust app (memberships.live.app) runs in the event loop of the HTTP app
that serves its figures, so a request reads the tables faust keeps, in memory."""

from __future__ import annotations

from fastapi import FastAPI
from tribune_shared.app import create_service_app, serve
from tribune_shared.bus import ensure_topics

from memberships.live.api import router
from memberships.live.app import LIVE_TOPICS, LiveFigures
from memberships.live.service import LiveService
from memberships.settings import MembershipsSettings


def live_settings(settings: MembershipsSettings | None = None) -> MembershipsSettings:
    """The memberships settings, listening on the live port."""
    settings = settings or MembershipsSettings()
    return settings.model_copy(update={"http_port": settings.live_port})


def create_app(
    settings: MembershipsSettings | None = None, live: LiveFigures | None = None
) -> FastAPI:
    settings = settings or live_settings()
    figures = live or LiveFigures(settings)

    async def figures_ready() -> bool:
        return figures.ready

    async def on_startup(app: FastAPI) -> None:
        # faust must find the source topics with the registry's partition counts
        await ensure_topics(settings, LIVE_TOPICS)
        await figures.start()
        app.state.live = figures
        app.state.live_service = LiveService(settings, app.state.store, figures)
        app.state.readiness["figures"] = figures_ready

    async def on_shutdown(app: FastAPI) -> None:
        await figures.stop()

    return create_service_app(
        settings,
        title="Tribune memberships live figures",
        routers=[router],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


def main() -> None:
    settings = live_settings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
