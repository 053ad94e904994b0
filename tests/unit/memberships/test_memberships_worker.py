"""The worker's wiring: one consumer group reading contacts, the federation tree and
erasure requests."""

from __future__ import annotations

from memberships.settings import MembershipsSettings
from memberships.worker import GROUP, build_worker


async def test_the_memberships_group_projects_contacts_and_federations():
    settings = MembershipsSettings()
    worker = build_worker(settings)
    [consumer] = worker.consumers
    assert GROUP == "memberships"
    assert consumer.group == settings.topic("memberships")
    assert set(consumer.handlers) == {
        "contact-created",
        "contact-updated",
        "contact-merged",  # payments and memberships follow the surviving contact
        "federation-created",
        "federation-updated",
        "erasure-requested",  # memberships answers every erasure (pseudonymises payments)
    }
    assert worker.relay is not None  # the outbox is published by this worker
    await worker.store.close()
