"""The Grafana dashboards are code (scripts/gen_dashboards.py, Grafana's foundation SDK): the committed JSON is
exactly the generator's output, every panel has a query, every query parses as PromQL (`promtool check rules`
on the expressions as recording rules) and reads only metric names the services export or the rules record.
tests/e2e/test_observe.py then evaluates each against a Prometheus scraping a live stack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from leaky_devinfra.testing import required_tool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
GENERATOR = ROOT / "scripts" / "gen_dashboards.py"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
# Grafana's variables with a value Prometheus accepts (the e2e test expands them the same way).
VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$service": ".*"}
# Series that Prometheus itself (`up`, `ALERTS`) or prometheus_client's process collector provide.
NOT_OURS = {"up", "ALERTS", "process_cpu_seconds_total", "process_resident_memory_bytes"}
KEYWORDS = {"and", "or", "unless", "e"}  # binary operators; `e` of 1e-9


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def _panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    top = model["panels"]
    return [p for p in [*top, *(n for row in top for n in row.get("panels") or [])] if p["type"] != "row"]


def _expressions() -> list[tuple[str, str, str]]:
    return [
        (name, panel["title"], target["expr"])
        for name, model in _dashboards().items()
        for panel in _panels(model)
        for target in panel["targets"]
    ]


def _expand(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def test_committed_dashboards_are_the_generators_output() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr + " (run `python scripts/gen_dashboards.py --write`)"


def test_the_six_dashboards_and_their_panels() -> None:
    dashboards = _dashboards()
    assert {m["uid"] for m in dashboards.values()} == {
        "lt-overview", "lt-gateway", "lt-quota", "lt-saga", "lt-analytics", "lt-infra"
    }  # fmt: skip
    for name, model in dashboards.items():
        panels = _panels(model)
        assert panels, name
        assert len({p["id"] for p in model["panels"]}) == len(model["panels"]), f"{name}: duplicate panel ids"
        for panel in panels:
            assert panel["targets"], f"{name}: {panel['title']} has no query"
            assert all(t["expr"].strip() for t in panel["targets"]), f"{name}: {panel['title']}: empty query"
            assert panel["datasource"]["uid"] == "prometheus", (name, panel["title"])


def test_every_metric_a_panel_reads_is_exported_or_recorded() -> None:
    sources = "\n".join(
        p.read_text() for p in [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]
    )
    exported = set(re.findall(r'"(lt_[a-z0-9_]+)"', sources))
    recorded = {
        r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r
    }
    unknown = set()
    for _, _, expr in _expressions():
        bare = re.sub(r'"[^"]*"', '""', _expand(expr))
        bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
        for name in re.findall(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", bare):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            if name not in exported | recorded | NOT_OURS | KEYWORDS and base not in exported:
                unknown.add(name)
    assert not unknown, f"panels read metrics nobody exports: {sorted(unknown)}"


def test_every_panel_query_parses_as_promql(tmp_path: Path) -> None:
    promtool = required_tool("promtool", "prometheus")
    rules = [{"record": f"panel_{i}", "expr": _expand(expr)} for i, (_, _, expr) in enumerate(_expressions())]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_family_of_the_docs_is_on_a_dashboard() -> None:
    docs = (ROOT / "docs" / "observability.md").read_text()
    families = set(re.findall(r"^\| `(lt_[a-z0-9_]+)` \|", docs, re.MULTILINE))
    assert len(families) >= 30, families
    exprs = " ".join(expr for _, _, expr in _expressions())
    missing = {f for f in families if not re.search(rf"\b{f}(_bucket|_count|_sum)?\b", exprs)}
    assert not missing, f"metric families no dashboard shows: {sorted(missing)}"


def test_every_dashboard_round_trips_through_the_sdks_model() -> None:
    """Grafana cannot run here: the SDK's own dashboard model reads each file and writes it back unchanged."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    for name, model in _dashboards().items():
        back = json.loads(json.dumps(Dashboard.from_json(model), cls=JSONEncoder))
        assert back == model, name
