"""The kernel on a Kafka that authenticates and authorizes, as compose runs it: the broker is
started by compose's own script (deploy/compose/kafka/start.sh: SASL/SCRAM for clients,
SASL/PLAIN on the controller listener, ACLs enforced, one SCRAM user per service) and the
ACLs derived from the topic registry (tribune_shared.events.acls) are applied. Each service
then works with its own credentials and nothing more: contacts publishes its facts,
consent consumes them with its group; consent cannot publish a contact fact nor use
another service's group; a wrong password gets nowhere."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from aiokafka.protocol.admin import CreateAclsRequest
from support import wait_for
from tribune_devstack.kafka import LOG4J2_CONFIG, jars_ready, kafka_jars_dir, require_tool
from tribune_devstack.stack import find_free_ports
from tribune_shared.bus import EventConsumer, EventPublisher, ensure_topics, kafka_options
from tribune_shared.events import new_envelope
from tribune_shared.events.acls import acls, services
from tribune_shared.events.contracts import ContactCreatedV1, ContactState, ContactUpdatedV1
from tribune_shared.store import Store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "deploy" / "compose" / "kafka" / "start.sh"
#: Kafka's protocol codes (org.apache.kafka.common.acl / resource)
RESOURCE = {"topic": 2, "group": 3}
OPERATION = {"Read": 3, "Write": 4, "Create": 5, "Alter": 7, "Describe": 8}
LITERAL, ALLOW = 3, 3


class SecureBroker:
    """A broker run by compose's start.sh, Kafka's scripts being stand-ins for the jars."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.controller, self.host_port = find_free_ports(3)
        self.admin_password = secrets.token_hex(16)
        self.passwords = {s: secrets.token_hex(16) for s in services()}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _scripts(self) -> Path:
        """bin/kafka-storage.sh and bin/kafka-server-start.sh, as in the apache/kafka image."""
        libs = kafka_jars_dir()
        if not jars_ready(libs):
            pytest.fail(f"Kafka jars not in {libs}: run `make fetch-kafka`")
        java = require_tool(os.environ.get("TRIBUNE_JAVA", "java"), "a JDK 17+")
        home = self.root / "kafka-home"
        (home / "bin").mkdir(parents=True)
        for script, main in (
            ("kafka-storage.sh", "kafka.tools.StorageTool"),
            ("kafka-server-start.sh", "kafka.Kafka"),
        ):
            path = home / "bin" / script
            path.write_text(
                f"#!/bin/sh\nexec {java} -Xms128m -Xmx512m "
                f"-Dlog4j2.configurationFile={LOG4J2_CONFIG} "
                f'-cp "{libs}/*" {main} "$@"\n'
            )
            path.chmod(0o755)
        return home

    def start(self) -> None:
        home = self._scripts()
        config = self.root / "config"
        config.mkdir()
        env = {
            "PATH": os.environ["PATH"],
            "KAFKA_HOME": str(home),
            "TRIBUNE_KAFKA_CONFIG_DIR": str(config),
            "CLUSTER_ID": "1F7pgwKlRRafylknvVPabg",
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@127.0.0.1:{self.controller}",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_LISTENERS": f"INTERNAL://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller},HOST://127.0.0.1:{self.host_port}",
            "KAFKA_ADVERTISED_LISTENERS": f"INTERNAL://127.0.0.1:{self.port},"
            f"HOST://127.0.0.1:{self.host_port}",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "INTERNAL:SASL_PLAINTEXT,"
            "CONTROLLER:SASL_PLAINTEXT,HOST:SASL_PLAINTEXT",
            "KAFKA_INTER_BROKER_LISTENER_NAME": "INTERNAL",
            "KAFKA_LOG_DIRS": str(self.root / "data"),
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
            "BROKER_ADMIN_PASSWORD": self.admin_password,
            "BROKER_CONTROLLER_PASSWORD": secrets.token_hex(16),
            **{f"SCRAM_USER_{s.upper()}": pw for s, pw in self.passwords.items()},
        }
        log = (self.root / "broker.log").open("wb")
        self.proc = subprocess.Popen(["sh", str(START)], env=env, stdout=log, stderr=log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self) -> str:
        return (self.root / "broker.log").read_text(errors="replace")[-3000:]

    def client(self, user: str, password: str | None = None) -> dict[str, str]:
        """The settings a process of ``user`` gets (as compose gives them)."""
        return {
            "kafka_bootstrap_servers": self.bootstrap,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": user,
            "kafka_sasl_password": password or self.passwords.get(user) or self.admin_password,
        }


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[SecureBroker]:
    b = SecureBroker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


async def apply_acls(settings) -> int:
    """What kafka-setup does with kafka-acls.sh (deploy/compose/kafka/acls.sh), through
    the admin API: the same rules, from the same registry."""
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    count = 0
    try:
        for service in services():
            for rule in acls(service):
                for name in rule.names:
                    for op in rule.operations:
                        request = CreateAclsRequest(
                            RESOURCE[rule.resource],
                            settings.topic(name),
                            LITERAL,
                            rule.principal,
                            "*",
                            OPERATION[op],
                            ALLOW,
                        )
                        response = await admin._send_request(request)
                        ((code, message),) = response.creation_responses
                        assert code == 0, message
                        count += 1
    finally:
        await admin.close()
    return count


def contact(cid: str, version: int = 1, producer: str = "contacts"):
    state = ContactState(given_name="Marianne", email="m@example.fr")
    if version == 1:
        event = ContactCreatedV1(contact_id=cid, contact_version=1, contact=state)
    else:
        event = ContactUpdatedV1(
            contact_id=cid, contact_version=version, contact=state, changed_fields=["email"]
        )
    return new_envelope(event, producer=producer, federation_id="f", federation_path="/f/")


async def test_each_service_does_what_the_acls_allow_with_its_own_credentials(
    broker: SecureBroker, isolated_env
):
    from consent.settings import ConsentSettings
    from contacts.settings import ContactsSettings

    async def answering() -> bool:
        if broker.proc is not None and broker.proc.poll() is not None:
            pytest.fail(f"the broker stopped:\n{broker.log_tail()}")
        admin = AIOKafkaAdminClient(**kafka_options(admin_settings))
        try:
            await admin.start()
            return True
        except KafkaConnectionError:
            return False
        finally:
            await admin.close()

    admin_settings = ContactsSettings(**broker.client("admin"))
    await wait_for(answering, timeout=120, interval=1)
    assert await apply_acls(admin_settings) > 100

    contacts = ContactsSettings(**broker.client("contacts"))
    consent = ConsentSettings(**broker.client("consent"))
    await ensure_topics(contacts)  # a worker's start-up, with a service's own rights
    await ensure_topics(consent)  # the topics exist now: describing them is enough

    publisher = EventPublisher(contacts)
    await publisher.start()
    intruder = EventPublisher(consent, producer="consent")
    await intruder.start()
    store = Store(consent)
    cid = f"c-{uuid.uuid4().hex[:8]}"
    try:
        await publisher.publish(contact(cid))
        # consent's credentials cannot write a contact fact, signed or not
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(intruder.publish(contact(cid, 9, "consent")), 30)

        applied: list[str] = []

        async def record(envelope, session) -> None:
            applied.append(envelope.key)

        consumer = EventConsumer(
            consent,
            store,
            group="consent",  # its own group: allowed
            handlers={"contact-created": record},
            dlq_publisher=intruder,
        )
        await consumer.start()
        task = asyncio.create_task(consumer.run())
        try:

            async def consumed() -> bool:
                return cid in applied

            await wait_for(consumed, timeout=60)
        finally:
            consumer.request_stop()
            await task

        # another service's group is not consent's to use
        stolen = AIOKafkaConsumer(
            contacts.topic("contact-created"),
            **kafka_options(consent),
            group_id=consent.topic("memberships"),
            enable_auto_commit=False,
        )
        with pytest.raises(GroupAuthorizationFailedError):
            await stolen.start()
            await asyncio.wait_for(stolen.getmany(timeout_ms=10_000), 30)
        await stolen.stop()

        # a wrong password gets nowhere
        wrong = EventPublisher(ContactsSettings(**broker.client("contacts", "not-the-password")))
        with pytest.raises(KafkaConnectionError):
            await wrong.start()
        await wrong.stop()
    finally:
        await publisher.stop()
        await intruder.stop()
        await store.client.drop_database(consent.database_name)
        await store.close()
