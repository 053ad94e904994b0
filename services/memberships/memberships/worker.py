"""Memberships worker process: ``python -m memberships.worker`` (consumers + outbox relay)."""

from __future__ import annotations

from tribune_shared.contact_directory import ContactDirectory
from tribune_shared.federations import FederationDirectory
from tribune_shared.store import Store
from tribune_shared.subscriptions import Subscriptions
from tribune_shared.worker import Worker, configure_worker_logging, run_worker

from memberships.handlers import contact_merge_handlers, contact_move_handlers
from memberships.privacy import erasure_handlers
from memberships.settings import MembershipsSettings
from memberships.store import INDEXES


def build_worker(settings: MembershipsSettings | None = None) -> Worker:
    settings = settings or MembershipsSettings()
    configure_worker_logging(settings)
    store = Store(settings)
    subscriptions = (
        Subscriptions(settings.service_name)
        .add(ContactDirectory(store).handlers())
        # after the directory's projection: a moved contact's history follows them
        .add(contact_move_handlers(store), also=True)
        .add(FederationDirectory(store).handlers())
        .add(contact_merge_handlers(store))
        .add(erasure_handlers(store))
    )
    return Worker(settings, store, subscriptions=subscriptions, indexes=INDEXES)


if __name__ == "__main__":
    run_worker(build_worker)
