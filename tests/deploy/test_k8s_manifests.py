"""Static checks of the Kubernetes manifests (deploy/k8s), offline: each overlay is rendered (deploy/k8s/render.py,
compared with `kubectl kustomize` where kubectl is installed), every object is validated against the
Kubernetes JSON schemas (kubernetes-validate, schemas in the wheel), checkov scans the rendered output once,
and the objects are checked against the code: every process of the local and compose stacks has a
Deployment with probes on paths it really serves, resources no smaller than measured (docs/scaling.json),
a PDB and a Service; HPAs point at Deployments; NetworkPolicies select workloads and allow exactly the calls
the services make; each process gets every setting it needs, and no secret sits in a ConfigMap."""

from __future__ import annotations

import base64
import copy
import functools
import importlib
import importlib.util
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from leaky_common.metrics_server import answer
from leaky_common.settings import ServiceSettings
from lt_analytics.settings import AnalyticsSettings
from lt_console.settings import ConsoleSettings
from lt_gateway.settings import GatewaySettings
from lt_notifier.settings import NotifierSettings
from lt_quota.settings import QuotaSettings
from lt_saga.settings import SagaSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes minor the manifests must be valid for (autoscaling/v2 and policy/v1 are GA there).
K8S_VERSION = "1.27"
CHECKOV_VERSION = "3.3.30"
CHECKOV_VENV = ROOT / ".run" / "checkov-venv"
# Checks that do not apply, each with why (everything else must pass).
CHECKOV_SKIPS = {
    # Images are pinned by release tag per overlay (`images:`); pinning digests is the release pipeline's
    # job (`kustomize edit set image NAME@sha256:...`), not something a repository can know in advance.
    "CKV_K8S_43": "Image should use digest",
}

Obj = dict[str, Any]

# Every app process, as deploy/local/stack.py and deploy/compose/docker-compose.yml run it:
# name -> (module, Dockerfile target, settings class or None for the third-party fake, port).
PROCESSES: dict[str, tuple[str, str, type[BaseSettings] | None, int]] = {
    "gateway": ("lt_gateway", "gateway", GatewaySettings, 8080),
    "quota": ("lt_quota", "quota", QuotaSettings, 8082),
    "analytics": ("lt_analytics", "analytics", AnalyticsSettings, 8083),
    "analytics-worker": ("lt_analytics.worker", "analytics", AnalyticsSettings, 8087),
    "purchase-saga": ("lt_saga", "saga", SagaSettings, 8084),
    "notifier": ("lt_notifier", "notifier", NotifierSettings, 8085),
    "console": ("lt_console", "console", ConsoleSettings, 8088),
    "fakepay": ("leaky_devinfra.fakes.payments", "devtools", None, 8086),
}
DEV_ONLY = {"fakepay"}
# Processes with no dependencies to report (no /ready): readiness is their /health.
HEALTH_ONLY = {"analytics-worker", "fakepay", "console"}
# Processes that serve no /metrics (not scraped), and those that hold no secret (no Secret, no lt-common: not a
# ServiceSettings, no Kafka). The web console is both: it speaks only the gateway's public API.
UNSCRAPED = DEV_ONLY | {"console"}
NO_SECRET = {"console"}
# Peak RSS (MB) of processes bench/capacity.py does not load, measured by hand: the console through the
# gateway of a local stack (deploy/local/stack.py), 20 sessions x 10 rounds of its 12 pages (2,400 pages,
# 3.2 ms of CPU each), 2026-12-01: 68.7 MB, flat from idle.
RSS_MEASURED_BY_HAND = {"console": 68.7}
# The keys each Secret must hold (created outside the repository: deploy/k8s/README.md lists them too).
SECRET_KEYS = {
    "lt-gateway": {
        "LT_INTERNAL_SIGNING_KEY",
        "LT_INTERNAL_SIGNING_KID",
        "LT_INTERNAL_PUBLIC_KEYS",
        "LT_FINGERPRINT_SECRET",
        "LT_METRICS_TOKEN",
        "LT_KAFKA_SASL_PASSWORD",
    },
    "lt-quota": {
        "LT_DATABASE_URL",
        "LT_REDIS_URL",
        "LT_AUTH_SIGNING_KEY",
        "LT_AUTH_SIGNING_KID",
        "LT_INTERNAL_PUBLIC_KEYS",
        "LT_METRICS_TOKEN",
        "LT_KAFKA_SASL_PASSWORD",
    },
    "lt-analytics": {
        "LT_DATABASE_URL",
        "LT_INTERNAL_PUBLIC_KEYS",
        "LT_METRICS_TOKEN",
        "LT_KAFKA_SASL_PASSWORD",
    },
    "lt-purchase-saga": {
        "LT_DATABASE_URL",
        "LT_PAYMENT_API_KEY",
        "LT_INTERNAL_PUBLIC_KEYS",
        "LT_METRICS_TOKEN",
        "LT_KAFKA_SASL_PASSWORD",
    },
    "lt-notifier": {
        "LT_DATABASE_URL",
        "LT_CHANNEL_SECRET_KEYS",
        "LT_ALERTMANAGER_TOKEN",
        "LT_INTERNAL_PUBLIC_KEYS",
        "LT_METRICS_TOKEN",
        "LT_KAFKA_SASL_PASSWORD",
    },
}
# Stand-ins of the right shape for the Secrets' values, to build each process's settings.
SECRET_SAMPLES = {
    "LT_INTERNAL_PUBLIC_KEYS": json.dumps({"k-1": "A" * 43}),
    "LT_CHANNEL_SECRET_KEYS": "k1:" + base64.b64encode(b"\0" * 32).decode(),
    "LT_DATABASE_URL": "postgresql://svc:pw@postgres.example.internal:5432/lt_svc",
    "LT_REDIS_URL": "redis://quota:pw@redis.example.internal:6379/0",
    "LT_PAYMENT_API_KEY": "sk_live_sample",
}


def _load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_module = _load_render()


@pytest.fixture(scope="module", autouse=True)
def _schemas_read_once() -> Iterator[None]:
    """kubernetes-validate reads the schema files (megabytes of JSON) for every object: read each once."""
    with pytest.MonkeyPatch.context() as mp:
        cached = functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)
        mp.setattr(kubernetes_validate.utils, "schema_contents", cached)
        yield


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {overlay: render_module.render(K8S / "overlays" / overlay) for overlay in OVERLAYS}


def _by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _container(deployment: Obj) -> Obj:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    return dict(containers[0])


def _matches(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions In/NotIn/Exists) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _pod_labels(objects: list[Obj]) -> dict[str, dict[str, str]]:
    return {
        name: d["spec"]["template"]["metadata"]["labels"]
        for name, d in _by_kind(objects, "Deployment").items()
    }


def _env_of(objects: list[Obj], deployment: Obj) -> dict[str, str]:
    """The environment a Deployment's container starts with (ConfigMaps via envFrom, then `env`)."""
    container = _container(deployment)
    configmaps = _by_kind(objects, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"{deployment['metadata']['name']}: no ConfigMap {name}"
        env.update(configmaps[name]["data"])
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']}: only literal values and ConfigMaps are used"
        env[item["name"]] = item["value"]
    return env


def _secret_of(deployment: Obj) -> tuple[str, str] | None:
    """(Secret name, mount path) of the pod's Secret volume, if any."""
    spec = deployment["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for mount in _container(deployment).get("volumeMounts", []):
        if mount["name"] in secrets:
            return secrets[mount["name"]], mount["mountPath"]
    return None


# ---------------------------------------------------------------- rendering


def test_the_renderer_merges_like_a_strategic_merge_patch() -> None:
    base: Obj = {
        "kind": "Deployment",
        "metadata": {"name": "x", "labels": {"a": "1"}},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "x", "image": "img:1", "env": [{"name": "A", "value": "1"}]},
                        {"name": "y", "image": "other:1"},
                    ]
                }
            },
        },
    }
    patch = {
        "metadata": {"labels": {"b": "2"}},
        "spec": {
            "replicas": None,
            "template": {"spec": {"containers": [{"name": "x", "env": [{"name": "B", "value": "2"}]}]}},
        },
    }
    out = render_module.merge_patch(base, patch)
    assert out["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert "replicas" not in out["spec"]
    x, y = out["spec"]["template"]["spec"]["containers"]
    assert x["image"] == "img:1" and [e["name"] for e in x["env"]] == ["A", "B"]
    assert y == {"name": "y", "image": "other:1"}
    # Lists without names (NetworkPolicy rules) are replaced whole.
    rules = render_module.merge_patch(
        {"egress": [{"ports": [1]}, {"ports": [2]}]}, {"egress": [{"ports": [3]}]}
    )
    assert rules == {"egress": [{"ports": [3]}]}
    with pytest.raises(render_module.RenderError):
        render_module.merge_patch(base, {"spec": {"$patch": "delete"}})
    deployment = copy.deepcopy(base)
    render_module.set_image(deployment, {"name": "img", "newName": "reg:5000/team/img", "newTag": "2"})
    render_module.set_image(deployment, {"name": "reg:5000/team/img", "newTag": "3"})
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "reg:5000/team/img:3"
    assert deployment["spec"]["template"]["spec"]["containers"][1]["image"] == "other:1"


def test_the_renderer_refuses_what_it_does_not_do(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {}\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml]\ncommonLabels: {x: y}\n")
    with pytest.raises(render_module.RenderError, match="commonLabels"):
        render_module.render(tmp_path)
    (tmp_path / "p.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {k: v}\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml]\npatches: [{path: p.yaml}]\n")
    with pytest.raises(render_module.RenderError, match="matches 0 objects"):
        render_module.render(tmp_path)


@pytest.fixture(scope="module")
def kubectl() -> str:
    """kubectl with Kustomize v5 or later; skipped without (render.py is the offline path)."""
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl not installed: the comparison with real Kustomize is skipped")
    version = json.loads(
        subprocess.run(
            [found, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    ).get("kustomizeVersion", "v0")
    if int(version.lstrip("v").split(".")[0] or 0) < 5:
        pytest.skip(f"kubectl's Kustomize is {version}; the comparison needs v5 or later")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_render_matches_kubectl_kustomize(overlay: str, rendered: dict[str, list[Obj]], kubectl: str) -> None:
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out) if o}
    ours = {(o["kind"], o["metadata"]["name"]): o for o in rendered[overlay]}
    assert ours.keys() == theirs.keys()
    for key, obj in ours.items():
        assert obj == theirs[key], key


# ---------------------------------------------------------------- schemas and scanner


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(
    overlay: str, rendered: dict[str, list[Obj]]
) -> None:
    errors = []
    # The oldest supported minor and the newest the wheel knows (nothing removed since).
    for version in (K8S_VERSION, kubernetes_validate.utils.latest_version()):
        for obj in rendered[overlay]:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_schema_validation_catches_a_wrong_field(rendered: dict[str, list[Obj]]) -> None:
    deployment = copy.deepcopy(_by_kind(rendered["prod"], "Deployment")["gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    deployment = copy.deepcopy(_by_kind(rendered["prod"], "Deployment")["gateway"])
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def _checkov() -> Path:
    """checkov in its own venv under .run/ (its pinned dependencies clash with the workspace's), installed
    from PyPI on first use. Missing and not installable: skipped locally, a failure in CI."""
    exe = CHECKOV_VENV / "bin" / "checkov"
    marker = CHECKOV_VENV / f".checkov-{CHECKOV_VERSION}"
    if exe.exists() and marker.exists():
        return exe
    uv = shutil.which("uv") or next(
        (str(p) for p in (ROOT / ".tools/bin/uv", Path.home() / ".local/bin/uv") if p.exists()), None
    )
    problem = "uv not found"
    if uv is not None:
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        steps = [
            [uv, "venv", "--quiet", "--allow-existing", str(CHECKOV_VENV), "--python", sys.executable],
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(CHECKOV_VENV / "bin" / "python"),
                f"checkov=={CHECKOV_VERSION}",
            ],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, env=env, timeout=600, check=False)
            if done.returncode != 0:
                problem = done.stderr[-2000:]
                break
        else:
            marker.touch()
            return exe
    hint = f"cannot install checkov=={CHECKOV_VERSION} into {CHECKOV_VENV}: {problem}"
    if os.environ.get("CI"):
        pytest.fail(hint)
    pytest.skip(hint)


@pytest.fixture(scope="module")
def checkov_report(
    rendered: dict[str, list[Obj]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One checkov run over every rendered overlay (a file each), offline (--skip-download)."""
    exe = _checkov()
    out_dir = tmp_path_factory.mktemp("k8s-rendered")
    for overlay, objects in rendered.items():
        (out_dir / f"{overlay}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    done = subprocess.run(
        [
            str(exe),
            "--directory",
            str(out_dir),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--skip-check",
            ",".join(CHECKOV_SKIPS),
            "--output",
            "json",
            "--compact",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout)
    report = report[0] if isinstance(report, list) else report
    report["returncode"] = done.returncode
    return dict(report)


def test_checkov_finds_no_misconfiguration(
    checkov_report: dict[str, Any], rendered: dict[str, list[Obj]]
) -> None:
    summary = checkov_report["summary"]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({Path(c['file_path']).name})"
        for c in checkov_report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert checkov_report["returncode"] == 0
    # It really looked at the workloads (namespaces and the like are not resources to it).
    workloads = sum(1 for objects in rendered.values() for o in objects if o["kind"] == "Deployment")
    checked = {c["resource"] for c in checkov_report["results"]["passed_checks"]}
    assert sum(1 for r in checked if r.startswith("Deployment.")) == workloads
    # Skips in the manifests (checkov.io/skip annotations) stay few and explained.
    for skipped in checkov_report["results"]["skipped_checks"]:
        assert skipped["check_id"] == "CKV_K8S_15", skipped["check_id"]
        assert skipped["check_result"].get("suppress_comment"), skipped["resource"]


# ---------------------------------------------------------------- workloads


def test_every_process_of_the_stacks_has_a_deployment(rendered: dict[str, list[Obj]]) -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose/docker-compose.yml").read_text())["services"]
    stack_py = (ROOT / "deploy/local/stack.py").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for overlay, objects in rendered.items():
        deployments = _by_kind(objects, "Deployment")
        expected = set(PROCESSES) - (DEV_ONLY if overlay == "prod" else set())
        assert set(deployments) == expected, overlay
        for name, deployment in deployments.items():
            module, target, _, port = PROCESSES[name]
            container = _container(deployment)
            assert container["command"] == ["python", "-m", module]
            assert compose[name]["command"] == ["python", "-m", module]
            assert compose[name]["build"]["target"] == target
            assert f'["-m", "{module}"]' in stack_py, name
            assert re.search(rf"^FROM runtime AS {target}$", dockerfile, re.MULTILINE), target
            # leaky-tokens-<target>:TAG, or REGISTRY/.../<target>:TAG once an overlay renames it.
            assert re.search(rf"(^|/)(leaky-tokens-)?{target}:[^/]+$", container["image"]), container["image"]
            env = _env_of(objects, deployment)
            link = [int(env["LT_LINK_PORT"])] if "LT_LINK_PORT" in env else []  # quota's internal link
            assert [p["containerPort"] for p in container["ports"]] == [port, *link]
            assert int(env.get("LT_PORT", env.get("LT_WORKER_METRICS_PORT", 0))) == port, name


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_the_probed_paths_are_served(name: str) -> None:
    """Readiness on /ready and liveness on /health exist in the code of each process."""
    module, _, settings_cls, _ = PROCESSES[name]
    if name == "analytics-worker":
        assert answer(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", None).startswith(b"HTTP/1.1 200")
        assert answer(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n", None).startswith(b"HTTP/1.1 404")
        return
    if name == "fakepay":
        from starlette.testclient import TestClient

        from leaky_devinfra.fakes.payments import create_fakepay_app

        assert TestClient(create_fakepay_app()).get("/health").status_code == 200
        return
    assert settings_cls is not None
    main = importlib.import_module(f"{module}.main")
    app = main.create_app(settings_cls())
    paths = {getattr(r, "path", None) for r in app.routes}
    if name in HEALTH_ONLY:
        assert "/health" in paths and "/ready" not in paths
    else:
        assert {"/ready", "/health"} <= paths
    assert ("/metrics" in paths) == (name not in UNSCRAPED)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_security_and_resources(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    dockerfile_user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_user is not None
    uid = int(dockerfile_user.group(1))
    for name, deployment in _by_kind(rendered[overlay], "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        ready = "/health" if name in HEALTH_ONLY else "/ready"
        assert container["readinessProbe"]["httpGet"]["path"] == ready, name
        assert container["livenessProbe"]["httpGet"]["path"] == "/health", name
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, (name, probe)
        resources = container["resources"]
        for kind in ("cpu", "memory"):
            assert _quantity(resources["requests"][kind]) <= _quantity(resources["limits"][kind]), (
                name,
                kind,
            )
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid, name
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], name
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        # The root filesystem is read-only: every path a process writes is on a volume.
        mounts = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
        assert "/tmp" in mounts, name
        for key, value in _env_of(rendered[overlay], deployment).items():
            if key.endswith(("_PATH", "_DIR", "_DATADIR")) and key != "LT_SECRETS_DIR":
                assert any(value == m or value.startswith(m + "/") for m in mounts), (name, key, value)


def _quantity(text: str) -> float:
    """A Kubernetes quantity (CPU cores or bytes) as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for unit, factor in units.items():
        if str(text).endswith(unit):
            return float(str(text)[: -len(unit)]) * factor
    return float(text)


def test_resources_are_no_smaller_than_measured(rendered: dict[str, list[Obj]]) -> None:
    """Memory requests cover the peak RSS measured under load (docs/scaling.json, bench/capacity.py) by 20 %,
    limits by 100 %; the CPU request of the autoscaled services covers what one pod serves at the HPA target."""
    figures = json.loads((ROOT / "docs" / "scaling.json").read_text())
    stack_names = {"purchase-saga": "saga"}
    for name, deployment in _by_kind(rendered["prod"], "Deployment").items():
        resources = _container(deployment)["resources"]
        peak = {**figures["rss_peak_mb"], **RSS_MEASURED_BY_HAND}[stack_names.get(name, name)] * 1e6
        assert _quantity(resources["requests"]["memory"]) >= 1.2 * peak, name
        assert _quantity(resources["limits"]["memory"]) >= 2 * peak, name
    # quota hashes passwords with argon2 (64 MiB each, LT_PASSWORD_HASH_CONCURRENCY at a time) on top.
    quota = _container(_by_kind(rendered["prod"], "Deployment")["quota"])["resources"]
    peak = figures["rss_peak_mb"]["quota"] * 1e6
    assert (
        _quantity(quota["limits"]["memory"]) >= peak + QuotaSettings().password_hash_concurrency * 64 * 2**20
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_pdbs_and_autoscalers(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[overlay]
    deployments = _by_kind(objects, "Deployment")
    labels = _pod_labels(objects)
    pdbs = _by_kind(objects, "PodDisruptionBudget")
    services = _by_kind(objects, "Service")
    for name, deployment in deployments.items():
        assert _matches(deployment["spec"]["selector"], labels[name]), name
        covering = [p for p in pdbs.values() if _matches(p["spec"]["selector"], labels[name])]
        assert len(covering) == 1, f"{name}: {len(covering)} PodDisruptionBudgets"
        service = services[name]
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"], name
        ports = {p["name"] for p in _container(deployment)["ports"]}
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"]), name
        # Each selector picks exactly its own workload.
        assert [n for n, lab in labels.items() if _matches(deployment["spec"]["selector"], lab)] == [name]
    hpas = _by_kind(objects, "HorizontalPodAutoscaler")
    assert set(hpas) == {"gateway", "quota"}
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        assert target["name"] in deployments
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert deployments[target["name"]]["spec"]["replicas"] == hpa["spec"]["minReplicas"], name
        assert "cpu" in _container(deployments[target["name"]])["resources"]["requests"]
    ingresses = _by_kind(objects, "Ingress")
    for ingress in ingresses.values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == "gateway", "only the gateway is public"
                assert backend["port"]["name"] in {p["name"] for p in services["gateway"]["spec"]["ports"]}


# ---------------------------------------------------------------- network policies


def _peers_in_namespace(rule_peers: list[Obj], labels: dict[str, dict[str, str]]) -> set[str]:
    """Workloads of this namespace a rule's peers select (an empty `from`/`to` selects everything)."""
    out: set[str] = set()
    for peer in rule_peers:
        if "podSelector" in peer and "namespaceSelector" not in peer:
            out |= {n for n, lab in labels.items() if _matches(peer["podSelector"], lab)}
    return out


def _allowed_calls(objects: list[Obj]) -> set[tuple[str, str, int]]:
    """(caller, callee, port) between workloads of the namespace that both sides' policies allow."""
    labels = _pod_labels(objects)
    policies = list(_by_kind(objects, "NetworkPolicy").values())
    egress: set[tuple[str, str, int]] = set()
    ingress: set[tuple[str, str, int]] = set()
    for policy in policies:
        selected = {n for n, lab in labels.items() if _matches(policy["spec"]["podSelector"], lab)}
        for rule in policy["spec"].get("egress", []):
            peers = _peers_in_namespace(rule.get("to", []), labels) if rule.get("to") else set(labels)
            for port in rule.get("ports", []):
                egress |= {(s, d, int(port["port"])) for s in selected for d in peers}
        for rule in policy["spec"].get("ingress", []):
            peers = _peers_in_namespace(rule.get("from", []), labels) if rule.get("from") else set(labels)
            for port in rule.get("ports", []):
                ingress |= {(s, d, int(port["port"])) for d in selected for s in peers}
    return egress & ingress


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_select_workloads(
    overlay: str, rendered: dict[str, list[Obj]]
) -> None:
    objects = rendered[overlay]
    labels = _pod_labels(objects)
    policies = _by_kind(objects, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    for name, policy in policies.items():
        spec = policy["spec"]
        if spec["podSelector"]:
            assert any(_matches(spec["podSelector"], lab) for lab in labels.values()), (
                f"{name} selects nothing"
            )
        for rule in [*spec.get("ingress", []), *spec.get("egress", [])]:
            peers = [*rule.get("from", []), *rule.get("to", [])]
            assert peers and rule.get("ports"), f"{name}: a rule open to every peer or port"
            for peer in peers:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert _peers_in_namespace([peer], labels), f"{name}: a peer selecting no workload"
                if "ipBlock" in peer:
                    ipaddress.ip_network(peer["ipBlock"]["cidr"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_calls_the_services_make(
    overlay: str, rendered: dict[str, list[Obj]]
) -> None:
    """The calls between workloads are the in-cluster URLs in their settings (the gateway's LT_*_URL, the saga's
    payment provider when it is fakepay): derived from the ConfigMaps, checked against the policies."""
    objects = rendered[overlay]
    services = _by_kind(objects, "Service")
    expected: set[tuple[str, str, int]] = set()
    for name, deployment in _by_kind(objects, "Deployment").items():
        for key, value in _env_of(objects, deployment).items():
            if not key.endswith("_URL") or not value.startswith(("http", "tcp://")):
                continue
            url = urlsplit(value)
            host = url.hostname or ""
            if host in services:
                port = url.port or 80
                assert port in {p["port"] for p in services[host]["spec"]["ports"]}, (name, key, value)
                expected.add((name, services[host]["spec"]["selector"]["app.kubernetes.io/name"], port))
    assert ("gateway", "quota", 8082) in expected
    assert ("gateway", "quota", 8092) in expected  # its internal link (LT_QUOTA_LINK_URL)
    assert _allowed_calls(objects) == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_may_reach_its_data_stores(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[overlay]
    labels = _pod_labels(objects)
    policies = _by_kind(objects, "NetworkPolicy")
    store_ports = {
        "to-postgres": "LT_DATABASE_URL",
        "to-redis": "LT_REDIS_URL",
        "to-kafka": "LT_KAFKA_BOOTSTRAP",
    }
    for policy_name, setting in store_ports.items():
        spec = policies[policy_name]["spec"]
        reached = {n for n, lab in labels.items() if _matches(spec["podSelector"], lab)}
        needing = {n for n in labels if n not in DEV_ONLY and setting in _needed_settings(n)}
        assert reached == needing, policy_name
    # DNS for everyone.
    assert policies["allow-dns"]["spec"]["podSelector"] == {}
    # The broker's port in the bootstrap list is the one the policy opens.
    bootstrap = _by_kind(objects, "ConfigMap")["lt-common"]["data"]["LT_KAFKA_BOOTSTRAP"]
    opened = {int(p["port"]) for rule in policies["to-kafka"]["spec"]["egress"] for p in rule["ports"]}
    assert {int(address.rsplit(":", 1)[1]) for address in bootstrap.split(",")} <= opened
    # Prometheus may scrape every process it is told to (the annotation) on that port, and only those ports.
    scraped = {
        int(p["port"])
        for rule in policies["metrics-from-prometheus"]["spec"]["ingress"]
        for p in rule["ports"]
    }
    annotated = set()
    for name, deployment in _by_kind(objects, "Deployment").items():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if name in UNSCRAPED:
            assert "prometheus.io/scrape" not in annotations, f"{name} serves no /metrics of ours"
            continue
        port = _container(deployment)["ports"][0]["containerPort"]
        assert (
            annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == port
        )
        annotated.add(port)
    assert scraped == annotated


# ---------------------------------------------------------------- settings and secrets


def _needed_settings(name: str) -> set[str]:
    """Settings (LT_ names) whose default is a loopback address and that the process's own code reads: they
    must be given, or the process talks to itself. Kafka: every service, through leaky_common.kafka."""
    module, _, settings_cls, _ = PROCESSES[name]
    if settings_cls is None:
        return set()
    package = (
        ROOT
        / "services"
        / {
            "lt_gateway": "gateway",
            "lt_quota": "quota",
            "lt_analytics": "analytics",
            "lt_saga": "purchase-saga",
            "lt_notifier": "notifier",
            "lt_console": "console",
        }[module.split(".")[0]]
        / "src"
        / module.split(".")[0]
    )
    sources = [p for p in package.rglob("*.py") if p.name != "settings.py"]
    if name == "analytics-worker":
        sources = [package / "worker.py", package / "bootstrap.py"]
    elif name == "analytics":
        sources = [p for p in sources if p.name != "worker.py"]
    code = "\n".join(p.read_text() for p in sources)
    needed = set() if name in NO_SECRET else {"LT_KAFKA_BOOTSTRAP"}
    for field, info in settings_cls.model_fields.items():
        default = str(info.default)
        if ("127.0.0.1" in default or "localhost" in default) and re.search(rf"settings\.{field}\b", code):
            needed.add(f"LT_{field.upper()}")
    return needed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_gets_the_settings_it_needs(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    """Each process's settings class accepts its environment plus its Secret's keys (in production the
    validators demand the signing keys, the fingerprint secret, a real payment key, SASL credentials), and
    every loopback default the code reads is overridden."""
    objects = rendered[overlay]
    for name, deployment in _by_kind(objects, "Deployment").items():
        settings_cls = PROCESSES[name][2]
        if settings_cls is None:
            continue
        env = _env_of(objects, deployment)
        secret = _secret_of(deployment)
        keys: set[str] = set()
        if name in NO_SECRET:
            assert secret is None and "LT_SECRETS_DIR" not in env, f"{name} has no secret to mount"
        else:
            assert secret is not None, f"{name} mounts no Secret"
            secret_name, mount = secret
            assert env["LT_SECRETS_DIR"] == mount
            keys = SECRET_KEYS[secret_name]
        provided = set(env) | keys
        missing = _needed_settings(name) - provided
        assert not missing, f"{name}: {sorted(missing)} not set"
        fields = {f"LT_{f.upper()}" for f in settings_cls.model_fields} | {"LT_SECRETS_DIR"}
        assert set(env) <= fields, f"{name}: unknown settings {sorted(set(env) - fields)}"
        values = {**env, **{k: SECRET_SAMPLES.get(k, "sample-value-" + "x" * 24) for k in keys}}
        values.pop("LT_SECRETS_DIR", None)
        with pytest.MonkeyPatch.context() as mp:
            for key in [k for k in os.environ if k.startswith("LT_")]:
                mp.delenv(key)
            for key, value in values.items():
                mp.setenv(key, value)
            settings = settings_cls()
        if isinstance(settings, ServiceSettings):
            assert settings.environment == ("production" if overlay == "prod" else "development")
        for key, value in env.items():
            if key.endswith("_URL"):
                assert str(getattr(settings, key.removeprefix("LT_").lower())) == value, (name, key)
        for url_field in ("database_url", "redis_url"):
            if f"LT_{url_field.upper()}" in _needed_settings(name):
                assert "127.0.0.1" not in getattr(settings, url_field)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_in_the_repository(overlay: str, rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[overlay]
    assert not [o for o in objects if o["kind"] == "Secret"], "Secrets are created outside the repository"
    secret_like = set().union(*SECRET_KEYS.values())
    for settings_cls in {p[2] for p in PROCESSES.values() if p[2] is not None}:
        for field, info in settings_cls.model_fields.items():
            if info.annotation in (SecretStr, SecretStr | None):
                secret_like.add(f"LT_{field.upper()}")
    for name, configmap in _by_kind(objects, "ConfigMap").items():
        leaked = set(configmap.get("data", {})) & secret_like
        assert not leaked, f"ConfigMap {name} holds {sorted(leaked)}"
    for deployment in _by_kind(objects, "Deployment").values():
        for item in _container(deployment).get("env", []):
            assert item["name"] not in secret_like, item["name"]
    readme = (K8S / "README.md").read_text()
    for secret_name, keys in SECRET_KEYS.items():
        assert secret_name in readme
        for key in keys:
            assert key in readme, key


def test_the_secret_keys_match_what_the_compose_stack_generates(tmp_path: Path) -> None:
    """The Secrets hold what secrets-init gives each app in compose (its files per app, less the optional
    bootstrap admin key): the README's recipe makes them from that generator's output."""
    spec = importlib.util.spec_from_file_location(
        "generate_secrets_k8s", ROOT / "deploy/compose/init/generate_secrets.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if os.geteuid() != 0:
        pytest.skip("generate_secrets.py chowns its files (it runs as root in compose)")
    module.main(tmp_path)
    for secret_name, keys in SECRET_KEYS.items():
        files = {p.name for p in (tmp_path / secret_name.removeprefix("lt-")).iterdir()}
        assert files - {"LT_BOOTSTRAP_ADMIN_KEY"} == keys, secret_name


@pytest.fixture(autouse=True, scope="module")
def _no_lt_env_leak() -> Iterator[None]:
    before = {k: v for k, v in os.environ.items() if k.startswith("LT_")}
    yield
    assert {k: v for k, v in os.environ.items() if k.startswith("LT_")} == before
