"""Memberships API process: ``python -m memberships.main``."""

from __future__ import annotations

from fastapi import FastAPI
from tribune_shared.app import create_service_app, serve

from memberships.api import router
from memberships.donations.api import router as donations_router
from memberships.donations.store import INDEXES as DONATION_INDEXES
from memberships.lifecycle.api import router as lifecycle_router
from memberships.lifecycle.store import INDEXES as LIFECYCLE_INDEXES
from memberships.payments.api import router as payments_router
from memberships.payments.recording import PaymentRecorder
from memberships.payments.store import INDEXES as PAYMENT_INDEXES
from memberships.people.store import INDEXES as PEOPLE_INDEXES
from memberships.plans.api import router as plans_router
from memberships.plans.store import INDEXES as PLAN_INDEXES
from memberships.privacy import router as privacy_router
from memberships.providers.api import router as providers_router
from memberships.receipts.api import router as receipts_router
from memberships.receipts.store import INDEXES as RECEIPT_INDEXES
from memberships.reports.api import router as reports_router
from memberships.reports.store import INDEXES as REPORT_INDEXES
from memberships.service import MembershipsService
from memberships.settings import MembershipsSettings
from memberships.store import INDEXES


def create_app(settings: MembershipsSettings | None = None) -> FastAPI:
    settings = settings or MembershipsSettings()

    async def on_startup(app: FastAPI) -> None:
        app.state.memberships_service = MembershipsService(settings, app.state.store)
        # the payment webhook's batched recording (payments arriving at once share writes)
        app.state.payment_recorder = PaymentRecorder(app.state.memberships_service)

    async def on_shutdown(app: FastAPI) -> None:
        await app.state.payment_recorder.close()

    return create_service_app(
        settings,
        title="Tribune memberships",
        routers=[
            plans_router,
            privacy_router,
            router,
            payments_router,
            donations_router,
            providers_router,
            lifecycle_router,
            receipts_router,
            reports_router,
        ],
        indexes=[
            *INDEXES,
            *DONATION_INDEXES,
            *PLAN_INDEXES,
            *LIFECYCLE_INDEXES,
            *PEOPLE_INDEXES,
            *RECEIPT_INDEXES,
            *REPORT_INDEXES,
            *PAYMENT_INDEXES,
        ],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )


if __name__ == "__main__":
    settings = MembershipsSettings()
    serve(create_app(settings), settings)
