"""The deploy files (compose, Kubernetes, Prometheus, Grafana) match the code.

Services come from the filesystem (services/*/pyproject.toml) and their settings classes
by import, so a new service without compose/Kubernetes entries, a new secret setting that
no deploy file provides, or a port that does not match fails here. No Docker or cluster is
needed: files are parsed, compose variables are interpolated the way compose does, and
each process's settings class is built from the environment it would get.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import os
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from tribune_shared import metrics as tribune_metrics
from tribune_shared.settings import Environment, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
K8S_DIR = DEPLOY / "kubernetes"
PROM_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
KAFKA_POM = DEPLOY / "local" / "kafka" / "pom.xml"

SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))
KINDS = ("api", "worker")
MODULE_OF = {"api": "main", "worker": "worker"}
PROCESSES = [(svc, kind) for svc in SERVICES for kind in KINDS]
PLATFORM_ENV = ("TRIBUNE_KAFKA_BOOTSTRAP_SERVERS", "TRIBUNE_MONGO_URL", "TRIBUNE_ENVIRONMENT")
K8S_SECRET_EXAMPLE = "secret.example.yaml"
#: metric names monitoring may use besides tribune_shared.metrics: Prometheus's own
#: scrape health, and the blackbox exporter's probe of /ready
EXTERNAL_METRICS = {"up", "probe_success"}
#: stands in for every secret the operator fills in (long enough for production)
TEST_SECRET = "deploy-contract-test-secret-0123456789"


def process_id(param: tuple[str, str]) -> str:
    return "-".join(param)


# ------------------------------------------------------------------ helpers: code side


def test_services_found() -> None:
    assert SERVICES, "no services/*/pyproject.toml found"
    for svc in SERVICES:
        assert (ROOT / "services" / svc / svc / "__init__.py").is_file(), f"no package {svc}/"


@cache
def settings_class(svc: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"{svc}.settings")
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, ServiceSettings)
        and obj is not ServiceSettings
        and obj.__module__ == module.__name__
    ]
    assert len(found) == 1, f"{svc}.settings must define one ServiceSettings subclass: {found}"
    return found[0]


def env_prefix(cls: type[ServiceSettings]) -> str:
    return cls.model_config.get("env_prefix", "")


def build_settings(
    cls: type[ServiceSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> ServiceSettings:
    """The settings a process gets from exactly ``env`` (nothing from the test's own env)."""
    for key in list(os.environ):
        if key.startswith(("TRIBUNE_", env_prefix(cls))):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cls()


def assert_production_env(svc: str, env: dict[str, str], where: str) -> None:
    """What a production process cannot start without."""
    cls = settings_class(svc)
    for name in PLATFORM_ENV:
        assert env.get(name), f"{where}: {name} is not set"
    assert env["TRIBUNE_ENVIRONMENT"] == "production", f"{where}: TRIBUNE_ENVIRONMENT"
    for field in cls.secret_fields:
        options = (f"{env_prefix(cls)}{field.upper()}", f"TRIBUNE_{field.upper()}")
        assert any(env.get(o) for o in options), (
            f"{where}: secret setting {field!r} of {cls.__name__} is refused in production "
            f"unless {' or '.join(options)} is set"
        )


def process_port(settings: ServiceSettings, kind: str) -> int:
    return settings.http_port if kind == "api" else settings.worker_port


# ------------------------------------------------------------------ helpers: metrics / PromQL


#: every module a Tribune process runs (importing them registers their metrics)
PROCESS_MODULES = (
    *(f"{svc}.{module}" for svc in SERVICES for module in MODULE_OF.values()),
    "memberships.live.main",
)


@cache
def known_metric_names() -> frozenset[str]:
    """Series names of the metrics Tribune's processes export: the tribune_shared.metrics
    families and those each service defines, read from the registry."""
    for module in PROCESS_MODULES:
        importlib.import_module(module)
    kernel = {
        family.name
        for obj in vars(tribune_metrics).values()
        if isinstance(obj, MetricWrapperBase)
        for family in obj.describe()
    }
    ours = kernel | {f.name for f in REGISTRY.collect() if f.name.startswith("tribune_")}
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names = set()
    registered = set()
    for family in REGISTRY.collect():
        if family.name in ours:
            registered.add(family.name)
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    assert registered == ours, f"not in the registry: {ours - registered}"
    return frozenset(names)


_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (labels, functions, keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, subqueries
    text = re.sub(r"\boffset\s+-?\w+", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if call or name.lower() in _PROMQL_KEYWORDS or name in ("by", "without"):
            continue
        names.add(name)
    return names


def assert_known_metrics(expr: str, where: str) -> None:
    names = promql_metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = names - known_metric_names() - EXTERNAL_METRICS
    assert not unknown, (
        f"{where}: {sorted(unknown)} are not metrics of tribune_shared.metrics "
        f"(known: {sorted(known_metric_names())})"
    )


def test_promql_parser_finds_metric_names() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (service, le) (rate(tribune_http_request_duration"
        '_seconds_bucket{route!~"/metrics|x"}[$__rate_interval]))) > 1 and on (service) '
        "max by (service) (tribune_outbox_backlog offset 10m) or vector(0)"
    )
    assert promql_metric_names(expr) == {
        "tribune_http_request_duration_seconds_bucket",
        "tribune_outbox_backlog",
    }
    assert "tribune_outbox_backlog" in known_metric_names()
    assert "tribune_http_requests_total" in known_metric_names()
    assert "tribune_http_requests" not in known_metric_names()


# ------------------------------------------------------------------ every file parses


def deploy_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.name.endswith(suffixes))


@pytest.mark.parametrize(
    "path", deploy_files(".yml", ".yaml"), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_yaml_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"


@pytest.mark.parametrize("path", deploy_files(".json"), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path: Path) -> None:
    assert json.loads(path.read_text())


# ------------------------------------------------------------------ compose


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    return services[name]


@cache
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


class MissingVariable(Exception):
    pass


def interpolate(value: Any, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $$."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        val = variables.get(name)
        is_set, non_empty = val is not None, bool(val)
        if op == ":-":
            return val if non_empty else arg
        if op == "-":
            return val if is_set else arg
        if op == ":?":
            if not non_empty:
                raise MissingVariable(f"{name}: {arg}")
            return val
        if op == "?":
            if not is_set:
                raise MissingVariable(f"{name}: {arg}")
            return val
        if op == ":+":
            return arg if non_empty else ""
        if op == "+":
            return arg if is_set else ""
        return val or ""

    return _INTERPOLATION.sub(sub, str(value))


def compose_variables() -> dict[str, str]:
    """.env as an operator writes it: the example with every empty value filled in."""
    return {k: (v or f"{TEST_SECRET}-{k.lower()}") for k, v in env_example().items()}


def raw_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def resolved_environment(name: str) -> dict[str, str]:
    variables = compose_variables()
    return {k: interpolate(v, variables) for k, v in raw_environment(compose_service(name)).items()}


def command_args(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def healthcheck_port(service: dict[str, Any], path: str = "/ready") -> int:
    test = service.get("healthcheck", {}).get("test")
    assert test, "no healthcheck"
    text = " ".join(command_args(test))
    match = re.search(rf"https?://[^/\s:'\"]+:(\d+){re.escape(path)}\b", text)
    assert match, f"healthcheck does not GET {path}: {text}"
    return int(match.group(1))


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = {int(str(p).split("/")[0]) for p in service.get("expose", [])}
    for spec in service.get("ports", []):
        target = spec["target"] if isinstance(spec, dict) else str(spec).rsplit(":", 1)[-1]
        ports.add(int(str(target).split("/")[0]))
    return ports


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return host, int(port)


@pytest.mark.parametrize(("svc", "kind"), PROCESSES, ids=map(process_id, PROCESSES))
def test_compose_process_runs_its_module(svc: str, kind: str) -> None:
    service = compose_service(f"{svc}-{kind}")
    args = command_args(service.get("command", []))
    module = f"{svc}.{MODULE_OF[kind]}"
    assert any(a == "-m" and b == module for a, b in itertools.pairwise(args)), (
        f"{svc}-{kind} must run `python -m {module}`, runs {args}"
    )


@pytest.mark.parametrize(("svc", "kind"), PROCESSES, ids=map(process_id, PROCESSES))
def test_compose_process_image_is_built_from_the_service_dockerfile(svc: str, kind: str) -> None:
    service = compose_service(f"{svc}-{kind}")
    build = service.get("build")
    assert isinstance(build, dict), f"{svc}-{kind}: build must give context and dockerfile"
    assert (COMPOSE_DIR / build["context"]).resolve() == ROOT, "build context is the repo root"
    assert build["dockerfile"] == f"services/{svc}/Dockerfile"
    assert (ROOT / build["dockerfile"]).is_file(), f"services/{svc}/Dockerfile does not exist"
    api, worker = compose_service(f"{svc}-api"), compose_service(f"{svc}-worker")
    assert api["image"] == worker["image"], "the API and the worker run the same image"
    dockerfile = (ROOT / build["dockerfile"]).read_text()
    exposed = {
        int(port.split("/")[0])
        for line in re.findall(r"^EXPOSE\s+(.+)$", dockerfile, re.M)
        for port in line.split()
    }
    cls = settings_class(svc)
    defaults = {cls.model_fields["http_port"].default, cls.model_fields["worker_port"].default}
    assert defaults <= exposed, f"services/{svc}/Dockerfile EXPOSEs {exposed}, not {defaults}"


@pytest.mark.parametrize(("svc", "kind"), PROCESSES, ids=map(process_id, PROCESSES))
def test_compose_process_environment_satisfies_settings(
    svc: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"{svc}-{kind}"
    service = compose_service(name)
    raw = raw_environment(service)
    shared = {str(k): str(v) for k, v in compose()["x-tribune-env"].items()}
    assert raw.items() >= shared.items(), f"{name} must merge the x-tribune-env anchor"

    env = resolved_environment(name)
    assert_production_env(svc, env, f"compose {name}")
    cls = settings_class(svc)
    prefix = env_prefix(cls)
    for var in (f"{prefix}HTTP_HOST", f"{prefix}HTTP_PORT", f"{prefix}WORKER_PORT"):
        assert var in env, f"{name}: {var} is not set"

    settings = build_settings(cls, env, monkeypatch)  # refuses weak secrets in production
    assert settings.environment is Environment.production
    assert settings.http_host == "0.0.0.0", f"{name} must listen on all interfaces"
    port = process_port(settings, kind)
    assert healthcheck_port(service) == port, f"{name}: healthcheck /ready is not on {port}"
    assert port in container_ports(service), f"{name}: port {port} is not exposed"

    kafka_port = healthcheck_port_of_listener()
    for server in settings.kafka_bootstrap_servers.split(","):
        host, server_port = host_port(server)
        assert host in compose()["services"] and server_port == kafka_port, server
    mongo = urlsplit(settings.mongo_url)
    assert mongo.hostname in compose()["services"], settings.mongo_url
    replica_set = parse_qs(mongo.query).get("replicaSet")
    assert replica_set == [mongo_replica_set()], f"{name}: Mongo URL must name the replica set"

    depends = service.get("depends_on", {})
    for infra in ("kafka", "mongo"):
        assert depends.get(infra, {}).get("condition") == "service_healthy", (
            f"{name} must wait for {infra} to be healthy"
        )


@pytest.mark.parametrize(("svc", "kind"), PROCESSES, ids=map(process_id, PROCESSES))
def test_compose_secrets_come_from_env_file(svc: str, kind: str) -> None:
    cls = settings_class(svc)
    raw = raw_environment(compose_service(f"{svc}-{kind}"))
    for field in cls.secret_fields:
        for var in (f"{env_prefix(cls)}{field.upper()}", f"TRIBUNE_{field.upper()}"):
            if var in raw:
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", raw[var]), (
                    f"{svc}-{kind}: {var} must be ${{VAR:?set it in .env}}, not {raw[var]!r}"
                )


def test_compose_variables_are_all_in_env_example() -> None:
    text = COMPOSE_FILE.read_text()
    used = {m.group("name") or m.group("bare") for m in _INTERPOLATION.finditer(text)} - {None}
    example = env_example()
    assert used - example.keys() == set(), "variables missing from .env.example"
    assert example.keys() - used == set(), "variables of .env.example compose does not use"
    required = {m.group("name") for m in _INTERPOLATION.finditer(text) if m.group("op") == ":?"}
    for key, value in example.items():
        if not value:
            assert key in required, f"{key} is empty in .env.example: use ${{{key}:?...}}"
    with pytest.raises(MissingVariable):  # an unfilled .env stops compose
        for name in compose()["services"]:
            for value in raw_environment(compose_service(name)).values():
                interpolate(value, example)


def test_env_example_documents_every_variable() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert i and lines[i - 1].startswith("#"), f"no comment above {line!r}"


def test_gateway_routes_to_compose_services(monkeypatch: pytest.MonkeyPatch) -> None:
    if "gateway" not in SERVICES:
        pytest.fail("no gateway service")
    gateway = build_settings(
        settings_class("gateway"), resolved_environment("gateway-api"), monkeypatch
    )
    url_fields = upstream_url_fields(type(gateway))
    assert url_fields, "GatewaySettings has no *_url field"
    prefix = env_prefix(type(gateway))
    for field in url_fields:
        assert f"{prefix}{field.upper()}" in resolved_environment("gateway-api"), field
        url = urlsplit(getattr(gateway, field))
        target = compose_service(url.hostname)
        assert url.port == healthcheck_port(target), (
            f"gateway {field}={url.geturl()}: {url.hostname} listens on {healthcheck_port(target)}"
        )
        assert url.port in container_ports(target)
        assert gateway_dependency(url.hostname), f"gateway-api must wait for {url.hostname}"


def upstream_url_fields(cls: type[ServiceSettings]) -> list[str]:
    """The service's own *_url settings (mongo_url is the platform's)."""
    return [
        f for f in cls.model_fields if f.endswith("_url") and f not in ServiceSettings.model_fields
    ]


def gateway_dependency(name: str) -> bool:
    depends = compose_service("gateway-api").get("depends_on", {})
    return depends.get(name, {}).get("condition") == "service_healthy"


def test_compose_smtp_host_is_the_mail_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    for svc in SERVICES:
        cls = settings_class(svc)
        if "smtp_host" not in cls.model_fields:
            continue
        settings = build_settings(cls, resolved_environment(f"{svc}-worker"), monkeypatch)
        sink = compose_service(settings.smtp_host)
        assert settings.smtp_port in container_ports(sink)
        assert "mailpit" in sink["image"]
        depends = compose_service(f"{svc}-worker")["depends_on"]
        assert depends[settings.smtp_host]["condition"] == "service_healthy"


def healthcheck_port_of_listener() -> int:
    env = compose_service("kafka")["environment"]
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    host, port = host_port(advertised["INTERNAL"])  # the containers' listener
    assert host == "kafka"
    return port


def mongo_replica_set() -> str:
    args = command_args(compose_service("mongo")["command"])
    return args[args.index("--replSet") + 1]


def test_compose_kafka_is_a_pinned_kraft_single_node() -> None:
    version = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", KAFKA_POM.read_text())
    assert version, "kafka.version not found in deploy/local/kafka/pom.xml"
    kafka = compose_service("kafka")
    assert kafka["image"] == f"apache/kafka:{version.group(1)}"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["CLUSTER_ID"]
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert str(env[key]) == "1", key
    assert healthcheck_port_of_listener() == 9092
    assert "healthcheck" in kafka


def test_compose_mongo_is_a_pinned_replica_set() -> None:
    mongo = compose_service("mongo")
    image, _, tag = mongo["image"].partition(":")
    assert image == "mongo" and re.fullmatch(r"8\.\d+\.\d+", tag), mongo["image"]
    assert mongo_replica_set() == "rs0"
    check = " ".join(command_args(mongo["healthcheck"]["test"]))
    assert "rs.initiate" in check and "_id: 'rs0'" in check and "mongo:27017" in check


def test_compose_third_party_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image", "")
        if "build" in service:
            continue
        _, sep, tag = image.rpartition(":")
        assert sep and tag not in ("latest", "") and re.search(r"\d", tag), (
            f"{name}: pin an explicit version, not {image!r}"
        )


def test_compose_messaging_workers_scale() -> None:
    worker = compose_service("messaging-worker")
    replicas = int(interpolate(worker["deploy"]["replicas"], compose_variables()))
    assert replicas >= 2
    assert "container_name" not in worker, "container_name prevents --scale"
    assert not worker.get("ports"), "a published host port prevents --scale"
    readme = (DEPLOY / "README.md").read_text()
    assert "--scale messaging-worker=" in readme


def test_compose_runs_monitoring() -> None:
    prometheus = compose_service("prometheus")
    mounts = volume_mounts(prometheus)
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = config_flag.split("=", 1)[1]
    assert mounts[config_path] == (PROM_DIR / "prometheus.yml").resolve()
    for rule_file in prometheus_config()["rule_files"]:
        assert rule_file in mounts, f"rule file {rule_file} is not mounted"
        assert mounts[rule_file].is_file()
    grafana = compose_service("grafana")
    mounts = volume_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA_DIR / "provisioning").resolve()
    provider_paths = [p["options"]["path"] for p in dashboard_providers()]
    for path in provider_paths:
        assert mounts[path] == (GRAFANA_DIR / "dashboards").resolve()
    blackbox = compose_service("blackbox")
    for mount_path, source in volume_mounts(blackbox).items():
        assert source.is_file(), mount_path


def volume_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts: container path -> host path (named volumes left out)."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = str(spec).split(":")[:2]
        if source.startswith("."):
            mounts[target] = (COMPOSE_DIR / source).resolve()
    return mounts


# ------------------------------------------------------------------ Kubernetes


@cache
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


@cache
def k8s_objects() -> list[dict[str, Any]]:
    objects = []
    for resource in kustomization()["resources"]:
        path = K8S_DIR / resource
        assert path.is_file(), f"kustomization lists missing {resource}"
        objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objects


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r} in deploy/kubernetes, got {len(found)}"
    return found[0]


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(kustomization()["resources"])
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert K8S_SECRET_EXAMPLE in files
    assert listed == files - {K8S_SECRET_EXAMPLE}
    namespaces = [o for o in k8s_objects() if o["kind"] == "Namespace"]
    assert [n["metadata"]["name"] for n in namespaces] == [kustomization()["namespace"]]
    for obj in k8s_objects():
        assert obj.get("apiVersion") and obj["metadata"].get("name"), obj
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == kustomization()["namespace"], obj


@cache
def k8s_secret_example() -> dict[str, str]:
    secret = yaml.safe_load((K8S_DIR / K8S_SECRET_EXAMPLE).read_text())
    assert secret["kind"] == "Secret"
    return secret["stringData"]


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def k8s_environment(deployment: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets, secrets filled in as an operator would."""
    container = container_of(deployment)
    secret_name = yaml.safe_load((K8S_DIR / K8S_SECRET_EXAMPLE).read_text())["metadata"]["name"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= k8s_object("ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            pytest.fail(f"unexpected envFrom {source}")
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret_name, item
        assert ref["key"] in k8s_secret_example(), f"{ref['key']} missing from the secret example"
        example = k8s_secret_example()[ref["key"]]
        env[item["name"]] = example if "://" in example else f"{TEST_SECRET}-{ref['key']}"
    return env


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


@pytest.mark.parametrize(("svc", "kind"), PROCESSES, ids=map(process_id, PROCESSES))
def test_kubernetes_deployment(svc: str, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"{svc}-{kind}"
    deployment = k8s_object("Deployment", name)
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        template["metadata"]["labels"].items()
    )
    container = container_of(deployment)
    args = command_args(container["command"] + container.get("args", []))
    assert args[-2:] == ["-m", f"{svc}.{MODULE_OF[kind]}"], args

    env = k8s_environment(deployment)
    assert_production_env(svc, env, f"kubernetes {name}")
    settings = build_settings(settings_class(svc), env, monkeypatch)
    assert settings.http_host == "0.0.0.0"
    assert "replicaSet=" in settings.mongo_url
    port = process_port(settings, kind)

    assert resolve_port(container, container["ports"][0]["containerPort"]) == port
    ready, alive = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert ready["path"] == "/ready" and resolve_port(container, ready["port"]) == port
    assert alive["path"] == "/health" and resolve_port(container, alive["port"]) == port
    if "startupProbe" in container:
        assert resolve_port(container, container["startupProbe"]["httpGet"]["port"]) == port

    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][bound].keys(), f"{name} {bound}"
    assert template["spec"].get("enableServiceLinks") is False, (
        f"{name}: injected <SERVICE>_PORT variables would collide with settings prefixes"
    )
    images = {i["name"] for i in kustomization()["images"]}
    assert container["image"].rsplit(":", 1)[0] in images
    other = k8s_object("Deployment", f"{svc}-{'worker' if kind == 'api' else 'api'}")
    assert container_of(other)["image"] == container["image"]


@pytest.mark.parametrize("svc", SERVICES)
def test_kubernetes_api_service(svc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = k8s_object("Deployment", f"{svc}-api")
    service = k8s_object("Service", f"{svc}-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    settings = build_settings(settings_class(svc), k8s_environment(deployment), monkeypatch)
    (port,) = service["spec"]["ports"]
    assert port["port"] == settings.http_port
    assert resolve_port(container_of(deployment), port["targetPort"]) == settings.http_port


def test_kubernetes_gateway_routes_to_services(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = k8s_object("Deployment", "gateway-api")
    gateway = build_settings(settings_class("gateway"), k8s_environment(deployment), monkeypatch)
    for field in upstream_url_fields(type(gateway)):
        url = urlsplit(getattr(gateway, field))
        host = url.hostname.split(".")[0]
        service = k8s_object("Service", host)
        assert url.port in {p["port"] for p in service["spec"]["ports"]}, field


# ------------------------------------------------------------------ Prometheus


@cache
def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())


def scrape_targets(job: dict[str, Any]) -> set[str]:
    targets = {t for sc in job.get("static_configs", []) for t in sc["targets"]}
    for sd in job.get("dns_sd_configs", []):
        targets |= {f"{name}:{sd['port']}" for name in sd["names"]}
    return targets


def dns_discovered(job: dict[str, Any]) -> set[str]:
    return {f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]}


def compose_process_targets() -> dict[str, str]:
    """compose name -> host:port of its /metrics and /ready."""
    return {
        f"{svc}-{kind}": f"{svc}-{kind}:{healthcheck_port(compose_service(f'{svc}-{kind}'))}"
        for svc, kind in PROCESSES
    }


def test_prometheus_scrapes_every_process() -> None:
    jobs = prometheus_config()["scrape_configs"]
    metrics_jobs = [j for j in jobs if j.get("metrics_path", "/metrics") == "/metrics"]
    ready_jobs = [j for j in jobs if j.get("metrics_path") == "/probe"]
    scraped = set().union(*(scrape_targets(j) for j in metrics_jobs))
    probed = set().union(*(scrape_targets(j) for j in ready_jobs))
    discovered = set().union(*(dns_discovered(j) for j in jobs))
    for name, target in compose_process_targets().items():
        assert target in scraped, f"{target} (/metrics) is not scraped"
        assert target in probed, f"{target} (/ready) is not probed"
        if "deploy" in compose_service(name):  # scaled: every replica must be found
            assert target in discovered, f"{name} is scaled: discover it through DNS"
    for job in ready_jobs:
        replacement = next(
            r["replacement"] for r in job["relabel_configs"] if r["target_label"] == "__address__"
        )
        host, port = host_port(replacement)
        assert port in container_ports(compose_service(host))
        assert any("/ready" in r.get("replacement", "") for r in job["relabel_configs"])
        assert job["params"]["module"][0] in blackbox_modules()


def blackbox_modules() -> dict[str, Any]:
    return yaml.safe_load((PROM_DIR / "blackbox.yml").read_text())["modules"]


@cache
def alert_rules() -> list[dict[str, Any]]:
    config = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [rule for group in config["groups"] for rule in group["rules"]]


def test_alerts_use_only_defined_metrics() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        assert_known_metrics(rule["expr"], f"alert {rule['alert']}")
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    used = set().union(*(promql_metric_names(r["expr"]) for r in rules))
    for needed in (
        "tribune_consumer_lag",  # consumer lag high
        "tribune_dlq_messages_total",  # DLQ messages > 0
        "tribune_outbox_backlog",  # outbox backlog growing
        "probe_success",  # service not ready
        "tribune_campaign_idle_seconds",  # a campaign stalled
        "tribune_privacy_requests_overdue",  # erasure requests overdue
        "tribune_privacy_request_deadline_seconds",  # ... or nearly
    ):
        assert needed in used, f"no alert on {needed}"


def test_alert_unit_tests_name_real_alerts() -> None:
    tests = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    names = {r["alert"] for r in alert_rules()}
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            assert check["alertname"] in names
        for series in case["input_series"]:
            assert_known_metrics(series["series"], "alerts_test.yml")


# ------------------------------------------------------------------ Grafana


def provisioning(kind: str) -> list[dict[str, Any]]:
    folder = GRAFANA_DIR / "provisioning" / kind
    key = "datasources" if kind == "datasources" else "providers"
    return [
        item
        for path in sorted(folder.glob("*.y*ml"))
        for item in yaml.safe_load(path.read_text())[key]
    ]


def dashboard_providers() -> list[dict[str, Any]]:
    return provisioning("dashboards")


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in panels:
        out.append(panel)
        out += all_panels(panel.get("panels", []))
    return out


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    (datasource,) = [d for d in provisioning("datasources") if d["type"] == "prometheus"]
    url = urlsplit(datasource["url"])
    assert url.port in container_ports(compose_service(url.hostname))
    assert datasource["uid"]


@pytest.mark.parametrize(
    "path", sorted((GRAFANA_DIR / "dashboards").glob("*.json")), ids=lambda p: p.name
)
def test_grafana_dashboard(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    (datasource,) = [d for d in provisioning("datasources") if d["type"] == "prometheus"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    allowed_uids = {datasource["uid"]}
    if "datasource" in variables:
        assert variables["datasource"]["current"]["value"] == datasource["uid"]
        allowed_uids.add("${datasource}")
    for variable in variables.values():
        if variable["type"] == "query":
            query = (
                variable["query"]["query"]
                if isinstance(variable["query"], dict)
                else (variable["query"])
            )
            match = re.fullmatch(r"label_values\((\w+)\s*,\s*\w+\)", query)
            assert match and match.group(1) in known_metric_names(), query
    used: set[str] = set()
    panels = [p for p in all_panels(dashboard["panels"]) if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] in allowed_uids, panel["title"]
        for target in panel["targets"]:
            assert_known_metrics(target["expr"], f"{path.name}: {panel['title']}")
            used |= promql_metric_names(target["expr"])
    for needed in DASHBOARD_NEEDS[path.name]:
        assert needed in used, f"{path.name} has no panel on {needed}"


#: what each dashboard must show: the technical figures, and the business ones
DASHBOARD_NEEDS = {
    "tribune-overview.json": (
        "tribune_http_requests_total",
        "tribune_http_request_duration_seconds_bucket",
        "tribune_events_handled_total",
        "tribune_consumer_lag",
        "tribune_dlq_messages_total",
        "tribune_outbox_backlog",
        "tribune_messages_total",
    ),
    "tribune-business.json": (
        "tribune_payment_webhooks_total",
        "tribune_provider_webhooks_total",
        "tribune_receipts_issued_total",
        "tribune_payment_reversals_total",
        "tribune_membership_transitions_total",
        "tribune_renewal_reminders_total",
        "tribune_messages_total",
        "tribune_webhook_refusals_total",
        "tribune_campaign_idle_seconds",
        "tribune_privacy_requests_overdue",
        "tribune_privacy_request_deadline_seconds",
    ),
}


# ------------------------------------------------------------------ schemas (offline)

SCHEMAS = DEPLOY / "schemas"
#: the Kubernetes versions the manifests must be valid for (kubernetes-validate ships the
#: schemas: nothing is fetched): the oldest still supported upstream, and the newest
K8S_VERSIONS = ("1.33", "1.37")
#: custom resources and the CRD (kept in deploy/schemas, from the KEDA Go module) they obey
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
}


@cache
def crd_schema(file: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / file).read_text())
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return dict(found["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_kubernetes_schemas(version: str) -> None:
    import kubernetes_validate

    for obj in k8s_objects():
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        # strict: a misspelt or misplaced field fails instead of being dropped by the API
        kubernetes_validate.validate(obj, version, strict=True)


def test_keda_objects_match_the_keda_crds() -> None:
    import jsonschema

    found = 0
    for obj in k8s_objects():
        key = (obj["apiVersion"], obj["kind"])
        if key not in CRDS:
            continue
        found += 1
        schema = crd_schema(CRDS[key], obj["apiVersion"].split("/")[1])
        jsonschema.validate(obj, schema, cls=jsonschema.Draft4Validator)
    assert found == len(CRDS)


def test_a_misplaced_field_fails_the_crd_validation() -> None:
    """The CRD schemas are strict enough to catch a typo (the check above can fail)."""
    import jsonschema

    scaled = dict(k8s_object("ScaledObject", "messaging-worker"))
    scaled["spec"] = {**scaled["spec"], "maxReplicaCount": "six"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            scaled, crd_schema(CRDS[("keda.sh/v1alpha1", "ScaledObject")], "v1alpha1")
        )


def test_compose_file_matches_the_compose_specification() -> None:
    import jsonschema

    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    jsonschema.validate(raw, schema, cls=jsonschema.Draft202012Validator)


# ------------------------------------------------------------------ Kubernetes operations


def deployments() -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] == "Deployment"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and In/NotIn/Exists matchExpressions) against labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def test_every_deployment_has_a_disruption_budget() -> None:
    budgets = [o for o in k8s_objects() if o["kind"] == "PodDisruptionBudget"]
    for deployment in deployments():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert len(matching) == 1, deployment["metadata"]["name"]
        spec = matching[0]["spec"]
        # never a budget that blocks every drain (0 disruptions allowed)
        assert spec.get("maxUnavailable", 1) >= 1
        if "minAvailable" in spec:
            hpa = k8s_object("HorizontalPodAutoscaler", deployment["metadata"]["name"])
            assert spec["minAvailable"] < hpa["spec"]["minReplicas"]


@pytest.mark.parametrize("svc", SERVICES)
def test_apis_scale_on_cpu(svc: str) -> None:
    hpa = k8s_object("HorizontalPodAutoscaler", f"{svc}-api")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", f"{svc}-api")
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "replicas" not in k8s_object("Deployment", f"{svc}-api")["spec"], (
        "the HPA owns the replica count"
    )


def test_messaging_workers_scale_on_consumer_lag_up_to_the_partition_count() -> None:
    from tribune_shared.events.contracts import TOPICS, Lane

    scaled = k8s_object("ScaledObject", "messaging-worker")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == ("Deployment", "messaging-worker")
    assert "replicas" not in k8s_object("Deployment", "messaging-worker")["spec"]
    assert not [
        o
        for o in k8s_objects()
        if o["kind"] == "HorizontalPodAutoscaler"
        and o["spec"]["scaleTargetRef"]["name"] == "messaging-worker"
    ], "KEDA makes the HPA itself"
    consumed = [spec for spec in TOPICS.values() if "messaging" in spec.consumers]
    # more replicas than partitions would leave consumers idle
    assert scaled["spec"]["maxReplicaCount"] <= max(s.partitions for s in consumed)
    assert scaled["spec"]["minReplicaCount"] >= 1
    groups = {t["metadata"]["consumerGroup"] for t in scaled["spec"]["triggers"]}
    # the group names the kernel's consumers use: one per lane (tribune_shared.bus)
    lanes = {s.lane for s in consumed}
    assert groups == {
        "messaging" if lane is Lane.bulk else f"messaging.{lane.value}" for lane in lanes
    }
    configmap = k8s_object("ConfigMap", "tribune-config")["data"]
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "kafka"
        assert (
            trigger["metadata"]["bootstrapServers"] == configmap["TRIBUNE_KAFKA_BOOTSTRAP_SERVERS"]
        )
        assert int(trigger["metadata"]["lagThreshold"]) >= 1
        auth = k8s_object("TriggerAuthentication", trigger["authenticationRef"]["name"])
        for ref in auth["spec"]["secretTargetRef"]:
            if ref["name"] == "tribune-secrets":
                assert ref["key"] in k8s_secret_example(), ref


def network_policies() -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] == "NetworkPolicy"]


def allowed_ingress_sources(labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        source
        for policy in network_policies()
        if "Ingress" in policy["spec"]["policyTypes"]
        and selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get("ingress", [])
        for source in rule.get("from", [])
    ]


def test_network_policies_deny_by_default_and_expose_only_the_gateway() -> None:
    (deny,) = [p for p in network_policies() if p["metadata"]["name"] == "default-deny"]
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {
        "Ingress",
        "Egress",
    }
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    for deployment in deployments():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        name = deployment["metadata"]["name"]
        outside = [
            s
            for s in allowed_ingress_sources(labels)
            if "namespaceSelector" in s and s["namespaceSelector"].get("matchLabels") != monitoring
        ]
        if name == "gateway-api":
            assert outside, "the gateway must be reachable from the ingress controller"
        else:
            assert not outside, f"{name} is reachable from outside the namespace"
        inside = [s for s in allowed_ingress_sources(labels) if "podSelector" in s]
        for source in inside:
            assert source["podSelector"]["matchLabels"] == {
                "app.kubernetes.io/name": "gateway",
                "app.kubernetes.io/component": "api",
            }, f"{name}: only the gateway may call a service API"
    ingress = k8s_object("Ingress", "tribune")
    backends = {
        p["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert backends == {"gateway-api"}


def test_only_workers_and_the_apis_that_read_it_reach_kafka() -> None:
    kafka_port = int(
        urlsplit(
            "//"
            + k8s_object("ConfigMap", "tribune-config")["data"]["TRIBUNE_KAFKA_BOOTSTRAP_SERVERS"]
        ).port
        or 0
    )
    for deployment in deployments():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        ports = {
            port["port"]
            for policy in network_policies()
            if "Egress" in policy["spec"]["policyTypes"]
            and selects(policy["spec"]["podSelector"], labels)
            for rule in policy["spec"].get("egress", [])
            for port in rule.get("ports", [])
        }
        # the workers, memberships' live figures (faust consumes Kafka too) and messaging's
        # API (its revocation feed: messaging.revocations)
        reads_kafka = labels["app.kubernetes.io/component"] in ("worker", "live") or (
            deployment["metadata"]["name"] == "messaging-api"
        )
        assert (kafka_port in ports) is reads_kafka, deployment["metadata"]["name"]
        assert 27017 in ports, deployment["metadata"]["name"]
