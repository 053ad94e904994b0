"""Local (no-docker) runners for the Tribune platform: Kafka from Maven jars, SecantusDB,
an SMTP sink, fake SMS and payment providers, and the five services' API and worker processes. See
deploy/local/README.md."""

from tribune_devstack.infra import (
    INFRA,
    InfraHandle,
    ensure_infra,
    fetch_kafka,
    infra_names,
    kafka_ready,
    kafka_version,
    payments_ready,
    sms_ready,
    smtp_ready,
    stop_infra,
    store_ready,
)
from tribune_devstack.platform import (
    ProcessSpec,
    ProcessStatus,
    RunningStack,
    process_specs,
    stack_env,
    stack_secrets,
    start_platform,
    status,
    stop_platform,
    wait_platform_ready,
)
from tribune_devstack.procs import DevstackError
from tribune_devstack.stack import SERVICES, StackConfig, find_free_ports

__all__ = [
    "INFRA",
    "SERVICES",
    "DevstackError",
    "InfraHandle",
    "ProcessSpec",
    "ProcessStatus",
    "RunningStack",
    "StackConfig",
    "ensure_infra",
    "fetch_kafka",
    "find_free_ports",
    "infra_names",
    "kafka_ready",
    "kafka_version",
    "payments_ready",
    "process_specs",
    "sms_ready",
    "smtp_ready",
    "stack_env",
    "stack_secrets",
    "start_platform",
    "status",
    "stop_infra",
    "stop_platform",
    "store_ready",
    "wait_platform_ready",
]
