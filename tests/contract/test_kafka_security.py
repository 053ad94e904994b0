"""Kafka is authenticated and authorized in every deployment, and what grants what is
derived from the topic registry.

- The ACL files (compose's kafka-acls.sh script, Strimzi's KafkaUsers, docs/kafka-acls.md)
  are what ``tribune_shared.events.acls`` generates from the registry today.
- The rules say what the registry says: a topic's owner writes it, its consumers read it,
  nobody else does either.
- Every worker of compose and Kubernetes signs in as its own user over SASL, and holds the
  key of every producer whose events it consumes (a missing one would park them all).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from contract.test_deploy_files import (
    KINDS,
    PROCESSES,
    SERVICES,
    build_settings,
    compose,
    compose_service,
    k8s_environment,
    k8s_object,
    raw_environment,
    resolved_environment,
    settings_class,
    volume_mounts,
)
from tribune_shared.bus import kafka_options
from tribune_shared.events import TOPICS, dlq_topic
from tribune_shared.events.acls import (
    acls,
    groups,
    render_markdown,
    render_script,
    render_strimzi,
    services,
)
from tribune_shared.events.contracts import STREAMS
from tribune_shared.settings import Environment
from tribune_shared.subscriptions import consumed_by

ROOT = Path(__file__).resolve().parents[2]
GENERATED = {
    "deploy/compose/kafka/acls.sh": render_script,
    "deploy/kubernetes/strimzi/kafka-users.yaml": render_strimzi,
    "docs/kafka-acls.md": render_markdown,
}


@pytest.mark.parametrize("path", sorted(GENERATED))
def test_generated_acl_files_are_up_to_date(path: str) -> None:
    assert (ROOT / path).read_text() == GENERATED[path](), (
        f"{path} is stale: run `make kafka-acls` and commit it"
    )


def allowed(service: str, operation: str, resource: str = "topic") -> set[str]:
    return {
        name
        for rule in acls(service)
        if rule.resource == resource and operation in rule.operations
        for name in rule.names
    }


def test_the_registry_services_are_the_deployed_ones() -> None:
    assert services() == SERVICES


@pytest.mark.parametrize("topic", sorted(TOPICS))
def test_only_the_owner_writes_a_topic_and_only_its_consumers_read_it(topic: str) -> None:
    spec = TOPICS[topic]
    writers = {s for s in services() if topic in allowed(s, "Write")}
    readers = {s for s in services() if topic in allowed(s, "Read")}
    assert writers == (set(services()) if spec.owner == "*" else {spec.owner})
    # its consumers, and the services whose stream processors (faust apps) read it
    streams = {s.service for s in STREAMS.values() if topic in s.reads}
    assert readers == set(spec.consumers) | streams
    # a consumer parks what it cannot handle on the topic's DLQ; nobody reads a DLQ
    assert {s for s in services() if dlq_topic(topic) in allowed(s, "Write")} == set(spec.consumers)
    assert not any(dlq_topic(topic) in allowed(s, "Read") for s in services())


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_joins_only_its_own_groups(service: str) -> None:
    # the groups its EventConsumers use: <service> for the bulk lane, <service>.<lane>
    streams = {s.app_id for s in STREAMS.values() if s.service == service}
    assert set(groups(service)) | streams == allowed(service, "Read", "group")
    for group in groups(service):
        assert group == service or group.startswith(f"{service}.")
    if consumed_by(service):
        assert service in groups(service)


def owners_consumed_by(service: str) -> set[str]:
    """The producers whose events ``service`` accepts (owner "*": every service)."""
    owners = {TOPICS[t].owner for t in consumed_by(service)}
    if "*" in owners:
        owners = (owners - {"*"}) | set(services())
    return owners | {service}


def assert_worker_kafka(svc: str, env: dict[str, str], where: str, monkeypatch) -> None:
    settings = build_settings(settings_class(svc), env, monkeypatch)
    assert settings.environment is Environment.production
    assert settings.kafka_security_protocol in ("SASL_SSL", "SASL_PLAINTEXT"), where
    assert settings.kafka_sasl_username == svc, f"{where}: signs in as its own user"
    assert settings.kafka_sasl_password is not None
    options = kafka_options(settings)  # production refuses an unauthenticated connection
    assert options["sasl_plain_username"] == svc
    missing = sorted(p for p in owners_consumed_by(svc) if not settings.event_keys(p))
    assert not missing, f"{where}: no event signing key of {missing}"


@pytest.mark.parametrize(("svc", "kind"), PROCESSES, ids=["-".join(p) for p in PROCESSES])
def test_compose_processes_sign_in_to_kafka_as_their_service(svc, kind, monkeypatch) -> None:
    name = f"{svc}-{kind}"
    env = resolved_environment(name)
    assert_worker_kafka(svc, env, f"compose {name}", monkeypatch)
    raw = raw_environment(compose_service(name))
    password = raw[f"{svc.upper()}_KAFKA_SASL_PASSWORD"]
    assert password == f"${{{svc.upper()}_KAFKA_PASSWORD:?set it in .env}}"
    # a producer's key is the same variable wherever it is used
    for key, value in raw.items():
        if key.startswith("TRIBUNE_EVENT_SIGNING_KEYS__"):
            producer = key.removeprefix("TRIBUNE_EVENT_SIGNING_KEYS__")
            assert value == f"${{{producer}_EVENT_SIGNING_KEY:?set it in .env}}", key


def test_compose_kafka_has_no_unauthenticated_listener_and_a_user_per_service() -> None:
    kafka = compose_service("kafka")
    env = kafka["environment"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, protocols
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    assert listeners == set(protocols)
    setup = compose_service("kafka-setup")
    for service in (kafka, setup):
        users = {
            k.removeprefix("SCRAM_USER_").lower(): v
            for k, v in service["environment"].items()
            if k.startswith("SCRAM_USER_")
        }
        assert users == {s: f"${{{s.upper()}_KAFKA_PASSWORD:?set it in .env}}" for s in SERVICES}, (
            "a SCRAM user per service, with the password its processes use"
        )
        assert service["environment"]["BROKER_ADMIN_PASSWORD"].startswith("${KAFKA_ADMIN_PASSWORD")
        mounts = volume_mounts(service)
        (folder,) = [path for target, path in mounts.items() if target == "/tribune/kafka"]
        assert folder == (ROOT / "deploy/compose/kafka").resolve()
        script = service["command"][-1].removeprefix("/tribune/kafka/")
        assert (folder / script).is_file(), script
    assert setup["image"] == kafka["image"]
    assert setup["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "--command-config" in " ".join(kafka["healthcheck"]["test"])


@pytest.mark.parametrize(("svc", "kind"), PROCESSES, ids=["-".join(p) for p in PROCESSES])
def test_compose_processes_wait_for_the_kafka_acls(svc: str, kind: str) -> None:
    depends = compose_service(f"{svc}-{kind}")["depends_on"]
    assert depends["kafka-setup"]["condition"] == "service_completed_successfully"


def test_compose_setup_applies_the_generated_acls() -> None:
    setup = (ROOT / "deploy/compose/kafka/setup.sh").read_text()
    assert re.search(r'exec sh "\$\(dirname "\$0"\)/acls.sh"', setup)
    assert "TOPIC_PREFIX" not in compose()["x-tribune-env"], "acls.sh would need it too"


@pytest.mark.parametrize("svc", SERVICES)
def test_kubernetes_workers_sign_in_as_their_service_and_apis_hold_no_kafka_secret(
    svc: str, monkeypatch
) -> None:
    worker = k8s_environment(k8s_object("Deployment", f"{svc}-worker"))
    # the CA file is mounted from a Secret in the cluster: here, only its path is checked
    monkeypatch.setattr("tribune_shared.bus.create_ssl_context", lambda **files: files)
    assert_worker_kafka(svc, worker, f"kubernetes {svc}-worker", monkeypatch)
    assert worker["TRIBUNE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    deployment = k8s_object("Deployment", f"{svc}-worker")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    cafile = Path(worker["TRIBUNE_KAFKA_SSL_CAFILE"])
    ca = volumes[mounts[str(cafile.parent)]]["secret"]
    assert [i["path"] for i in ca["items"]] == [cafile.name], "the CA file is mounted"
    api = k8s_environment(k8s_object("Deployment", f"{svc}-api"))
    if svc == "messaging":
        # its revocation feed reads (never publishes) as messaging, and verifies consent's
        # signatures: its user and consent's key only, never its own signing key
        from messaging.revocations import FEED_TOPICS

        settings = build_settings(settings_class(svc), api, monkeypatch)
        assert settings.kafka_security_protocol == "SASL_SSL"
        assert settings.kafka_sasl_username == svc and settings.kafka_sasl_password
        assert all(settings.event_keys(TOPICS[t].owner) for t in FEED_TOPICS)
        signing = [k for k in api if k.startswith("TRIBUNE_EVENT_SIGNING_KEYS")]
        assert signing == ["TRIBUNE_EVENT_SIGNING_KEYS__CONSENT"], signing
        return
    leaked = [k for k in api if "KAFKA_SASL" in k or k.startswith("TRIBUNE_EVENT_SIGNING_KEYS")]
    assert not leaked, f"{svc}-api publishes nothing: it needs no Kafka secret ({leaked})"


def test_kinds_are_api_and_worker() -> None:
    assert KINDS == ("api", "worker")  # the API/worker split the checks above rely on


def test_a_stream_processor_gets_its_input_its_group_and_only_its_own_topics() -> None:
    for spec in STREAMS.values():
        rules = acls(spec.service)
        assert set(spec.reads) <= allowed(spec.service, "Read")
        assert spec.app_id in allowed(spec.service, "Read", "group")
        prefixed = [r for r in rules if r.pattern == "prefixed"]
        assert [name for r in prefixed for name in r.names] == [f"{spec.app_id}-"]
        # the prefix ends with "-": another app "<app_id>x" gets nothing of it
        assert all(r.resource == "topic" for r in prefixed)
    script = render_script()
    assert "--resource-pattern-type prefixed" in script
    assert "patternType: prefix" in render_strimzi()
