"""Subscriptions: declared once, no silent overwrite, in step with the topic registry, and
split into lanes so urgent events have their own consumer."""

from __future__ import annotations

import importlib

import pytest
from tribune_shared.events import TOPICS
from tribune_shared.events.contracts import Lane
from tribune_shared.subscriptions import (
    Batch,
    DuplicateSubscription,
    Subscriptions,
    apply_steps,
    awaited_by,
    consumed_by,
)


async def noop(envelope, session) -> None:
    return None


def test_a_second_handler_for_a_type_is_refused_unless_it_says_it_extends():
    subs = Subscriptions("consent").add({"contact-created": noop})

    async def other(envelope, session) -> None:
        return None

    with pytest.raises(DuplicateSubscription, match="contact-created"):
        subs.add({"contact-created": other})
    subs.add({"contact-created": other}, also=True)
    assert subs.steps("contact-created") == (noop, other)
    with pytest.raises(DuplicateSubscription, match="same handler twice"):
        subs.add({"contact-created": other}, also=True)


def test_an_unknown_topic_is_refused():
    with pytest.raises(LookupError, match="no-such-topic"):
        Subscriptions("consent").add({"no-such-topic": noop})


def test_the_registry_check_names_what_differs():
    subs = Subscriptions("memberships").add({"contact-created": noop})
    with pytest.raises(ValueError, match="declared but not handled") as err:
        subs.check_registry()
    assert "erasure-requested" in str(err.value)
    extra = Subscriptions("memberships").add({"message-opened": noop})
    with pytest.raises(ValueError, match=r"handled but not declared: \['message-opened'\]"):
        extra.check_registry()


def test_compliance_critical_topics_ride_the_urgent_lane():
    urgent = {t for t, spec in TOPICS.items() if spec.lane is Lane.urgent}
    assert {"consent-revoked", "suppression-added", "erasure-requested"} <= urgent
    assert "contact-created" not in urgent


async def test_steps_run_in_order_batch_handlers_get_the_batch():
    seen: list[tuple[str, object]] = []

    async def one(envelope, session) -> None:
        seen.append(("one", envelope))

    async def many(envelopes, session) -> None:
        seen.append(("many", tuple(envelopes)))

    await apply_steps((Batch(many), one), ["a", "b"], session=None)  # type: ignore[list-item]
    assert seen == [("many", ("a", "b")), ("one", "a"), ("one", "b")]


SERVICES = ("contacts", "consent", "memberships", "messaging")


@pytest.mark.parametrize("service", SERVICES)
async def test_each_worker_consumes_what_the_registry_declares_one_consumer_per_lane(service):
    worker_module = importlib.import_module(f"{service}.worker")
    worker = worker_module.build_worker()  # refuses to build if it differs from the registry
    try:
        handled = {t for c in worker.consumers for t in c.steps}
        assert handled == consumed_by(service)
        for consumer in worker.consumers:
            lanes = {TOPICS[t].lane for t in consumer.steps}
            assert lanes == {consumer.lane}
            assert consumer.group.endswith(
                service if consumer.lane is Lane.bulk else f"{service}.urgent"
            )
        assert {c.lane for c in worker.consumers} == {TOPICS[t].lane for t in handled}
    finally:
        await worker.store.close()


def test_the_gateway_consumes_nothing():
    assert consumed_by("gateway") == frozenset()


def test_a_service_waits_for_what_others_wrote_never_for_its_own_events():
    assert "consent-granted" in consumed_by("consent")  # its retention clocks read them back
    assert "consent-granted" not in awaited_by("consent")
    assert {"contact-created", "federation-created"} <= awaited_by("consent")
    assert {"consent-granted", "consent-revoked", "contact-created"} <= awaited_by("messaging")
