"""Memberships worker process: ``python -m memberships.worker`` (consumers + outbox relay)."""

from __future__ import annotations

from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.federations import INDEXES as FEDERATION_INDEXES
from tribune_shared.federations import FederationDirectory, path_fields
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.worker import Worker, configure_worker_logging, run_worker

from memberships.donations.store import INDEXES as DONATION_INDEXES
from memberships.handlers import contact_merge_handlers, contact_move_handlers
from memberships.lifecycle.service import LifecycleService, sweep_task
from memberships.lifecycle.store import INDEXES as LIFECYCLE_INDEXES
from memberships.payments.schedules import Schedules, schedule_check_task
from memberships.payments.store import INDEXES as PAYMENT_INDEXES
from memberships.people.handlers import people_handlers
from memberships.people.store import INDEXES as PEOPLE_INDEXES
from memberships.plans.store import INDEXES as PLAN_INDEXES
from memberships.privacy import erasure_handlers
from memberships.receipts.handlers import receipt_handlers, retention_sweep
from memberships.receipts.store import INDEXES as RECEIPT_INDEXES
from memberships.reports.handlers import ledger_handlers
from memberships.reports.store import INDEXES as REPORT_INDEXES
from memberships.settings import MembershipsSettings
from memberships.store import INDEXES


def build_worker(settings: MembershipsSettings | None = None) -> Worker:
    settings = settings or MembershipsSettings()
    configure_worker_logging(settings)
    store = Store(settings)
    indexes = [
        *INDEXES,
        *DONATION_INDEXES,
        *PLAN_INDEXES,
        *LIFECYCLE_INDEXES,
        *PEOPLE_INDEXES,
        *RECEIPT_INDEXES,
        *REPORT_INDEXES,
        *PAYMENT_INDEXES,
    ]
    # a moved federation's documents follow it (tribune_shared.federations)
    federations = FederationDirectory(
        store, path_fields(indexes, ContactDirectory.indexes), settings
    )
    subscriptions = (
        Subscriptions(settings.service_name)
        .add(ContactDirectory(store).handlers())
        # after the directory's projection: a moved contact's history follows them
        .add(contact_move_handlers(store), also=True)
        # donor names and tax addresses (receipts, legal lists)
        .add(people_handlers(store), also=True)
        .add(federations.handlers())
        .add(contact_merge_handlers(store))
        .add(erasure_handlers(store))
        # tax receipts: issued on payment-received, cancelled on payment-refunded
        .add(receipt_handlers(settings, store))
        .add(ledger_handlers(settings, store), also=True)
    )
    return Worker(
        settings,
        store,
        subscriptions=subscriptions,
        indexes=[*indexes, *FEDERATION_INDEXES],
        # grace, lapse and renewal reminders over time (memberships.lifecycle)
        tasks=[
            federations.task(),
            sweep_task(LifecycleService(settings, store)),
            # erased donors' receipts past their legal retention lose the identity
            retention_sweep(settings, store),
            # missed recurring dues start the grace period (memberships.payments)
            schedule_check_task(Schedules(settings, store)),
        ],
    )


if __name__ == "__main__":
    run_worker(build_worker)
