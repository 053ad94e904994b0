"""The bus's security without a broker: what every Kafka client connects with, and which
events a consumer accepts (the owner's, signed with its key)."""

from __future__ import annotations

import ssl
from types import SimpleNamespace

import pytest
from support import DemoSettings
from tribune_shared.bus import (
    PRODUCER_HEADER,
    SIGNATURE_HEADER,
    authenticity_problem,
    kafka_options,
    message_headers,
)
from tribune_shared.events import new_envelope, utcnow
from tribune_shared.events.contracts import ContactCreatedV1, ContactState, ErasureCompletedV1
from tribune_shared.settings import Environment

KEYS = {"contacts": b"c" * 40, "consent": b"s" * 40, "messaging": b"m" * 40}


def created(producer: str = "contacts"):
    event = ContactCreatedV1(contact_id="c1", contact_version=1, contact=ContactState())
    return new_envelope(event, producer=producer, federation_id="f", federation_path="/f/")


def record(envelope, headers):
    """What the consumer reads: the value and headers of a Kafka record."""
    return SimpleNamespace(value=envelope.to_bytes(), headers=headers)


def signed(envelope, signer: str, key: bytes | None = None):
    value = envelope.to_bytes()
    return record(envelope, message_headers(envelope, value, signer, key or KEYS[signer]))


def problem(event_type: str, envelope, rec) -> str | None:
    return authenticity_problem(
        lambda p: (KEYS[p],) if p in KEYS else (), event_type, envelope, rec
    )


def test_the_owners_signed_event_is_accepted():
    env = created()
    assert problem("contact-created", env, signed(env, "contacts")) is None


def test_an_unsigned_event_is_refused():
    env = created()
    plain = [(k, v) for k, v in signed(env, "contacts").headers if k != SIGNATURE_HEADER]
    assert "no tribune-signature" in problem("contact-created", env, record(env, plain))
    assert "no tribune-producer" in problem("contact-created", env, record(env, []))


def test_a_signature_with_another_key_or_over_another_value_is_refused():
    env = created()
    assert "bad signature" in problem(
        "contact-created", env, signed(env, "contacts", key=b"x" * 40)
    )
    # the owner's signature, copied onto a tampered value
    tampered = env.model_copy(update={"federation_path": "/other/"})
    headers = signed(env, "contacts").headers
    assert "bad signature" in problem("contact-created", tampered, record(tampered, headers))


def test_a_service_that_does_not_own_the_topic_is_refused_even_with_its_own_key():
    env = created(producer="consent")  # consent really signs, but contacts owns the topic
    reason = problem("contact-created", env, signed(env, "consent"))
    assert "'consent' is not the owner of 'contact-created' ('contacts')" in reason


def test_the_producer_named_in_the_envelope_must_be_the_signer():
    env = created(producer="contacts")
    assert "signed as 'consent'" in problem("contact-created", env, signed(env, "consent"))


def test_an_event_on_another_types_topic_is_refused():
    env = created()
    assert "on the 'contact-updated' topic" in problem(
        "contact-updated", env, signed(env, "contacts")
    )


def test_a_topic_owned_by_everyone_takes_any_known_producer():
    event = ErasureCompletedV1(
        contact_id="c1", request_id="r1", service="messaging", completed_at=utcnow()
    )
    env = new_envelope(event, producer="messaging", federation_id="f", federation_path="/f/")
    assert problem("erasure-completed", env, signed(env, "messaging")) is None
    stranger = new_envelope(event, producer="intruder", federation_id="f", federation_path="/f/")
    assert "no signing key known for producer 'intruder'" in problem(
        "erasure-completed", stranger, signed(stranger, "intruder", key=b"i" * 40)
    )


def test_every_client_connects_with_the_settings_security():
    plain = DemoSettings(environment=Environment.development)
    assert kafka_options(plain) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    sasl = DemoSettings(
        environment=Environment.development,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="contacts",
        kafka_sasl_password="pw",
    )
    options = kafka_options(sasl)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == (
        "SCRAM-SHA-256",
        "contacts",
    )
    assert options["sasl_plain_password"] == "pw"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_production_refuses_an_unauthenticated_kafka_connection():
    dev = DemoSettings(environment=Environment.development)
    production = dev.model_copy(update={"environment": Environment.production})
    with pytest.raises(ValueError, match="DEMO_KAFKA_SECURITY_PROTOCOL"):
        kafka_options(production)


def test_headers_name_the_signer():
    env = created()
    headers = dict(signed(env, "contacts").headers)
    assert headers[PRODUCER_HEADER] == b"contacts"
    assert headers[SIGNATURE_HEADER].startswith(b"sha256=")


async def test_a_worker_without_the_owners_key_refuses_to_start():
    """Production derives no key: a consumer that could verify nothing would park every
    event, so it does not start, and it names the missing setting."""
    from tribune_shared.bus import EventConsumer
    from tribune_shared.store import Store

    dev = DemoSettings(environment=Environment.development)
    production = dev.model_copy(update={"environment": Environment.production})

    async def ignore(envelope, session) -> None:
        return None

    store = Store(production)
    try:
        with pytest.raises(ValueError, match="TRIBUNE_EVENT_SIGNING_KEYS__CONTACTS"):
            EventConsumer(
                production,
                store,
                group="g",
                handlers={"contact-created": ignore},
                dlq_publisher=None,  # type: ignore[arg-type]  # refused before any use
            )
    finally:
        await store.close()


@pytest.mark.parametrize(("interval", "refreshes"), [(300.0, 1), (0.0, 5)])
async def test_the_lag_gauge_is_refreshed_once_per_interval(interval: float, refreshes: int):
    """The consumer's lag (high watermark - position, per assigned partition) reaches
    /metrics on the configured interval, not on every poll of a busy loop (0: every poll)."""
    from aiokafka import TopicPartition
    from prometheus_client import REGISTRY
    from tribune_shared.bus import EventConsumer
    from tribune_shared.store import Store

    async def ignore(envelope, session) -> None:
        return None

    polls = 5
    settings = DemoSettings(
        environment=Environment.development, consumer_lag_report_seconds=interval
    )
    store = Store(settings)
    try:
        consumer = EventConsumer(
            settings,
            store,
            group=f"lag-{refreshes}",
            handlers={"contact-created": ignore},
            dlq_publisher=None,  # type: ignore[arg-type]  # nothing is parked here
        )
        tp = TopicPartition("contact-created", 0)
        positions = iter(range(100))
        asked: list[int] = []

        async def getmany(**_):
            asked.append(1)
            if len(asked) >= polls:
                consumer.request_stop()
            return {}

        async def position(_tp):
            return next(positions)

        async def stop():
            return None

        consumer.consumer = SimpleNamespace(  # type: ignore[assignment]
            getmany=getmany,
            assignment=lambda: {tp},
            highwater=lambda _tp: 100,
            position=position,
            paused=lambda: set(),
            stop=stop,
        )
        await consumer.run()
        assert len(asked) == polls
        # each refresh read one position: 100 - the last one read is what /metrics shows
        shown = REGISTRY.get_sample_value(
            "tribune_consumer_lag", {"group": consumer.group, "topic": tp.topic, "partition": "0"}
        )
        assert shown == 100 - (refreshes - 1)
    finally:
        await store.close()
