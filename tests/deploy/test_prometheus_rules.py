"""The alert rules (deploy/prometheus/rules.yml) pass `promtool check rules` and their unit tests
(`promtool test rules deploy/prometheus/tests/*.yml`), every alert has a unit test in which it fires, and
Alertmanager's configuration passes `amtool check-config` (Debian's `prometheus-alertmanager`).

promtool comes with Prometheus (Debian's `prometheus` package, `brew install prometheus`); `.ci/run` installs
it. Missing on a developer's machine this module is skipped with that hint; in CI (`CI` set) it fails."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from leaky_devinfra.testing import required_tool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))


def _tool(name: str, package: str) -> str:
    return required_tool(name, package, brew=package.rsplit("-", maxsplit=1)[-1])


def _run(*args: str, tool: str = "promtool") -> subprocess.CompletedProcess[str]:
    binary = (
        _tool("promtool", "prometheus") if tool == "promtool" else _tool("amtool", "prometheus-alertmanager")
    )
    return subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def _alerts() -> list[str]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config() -> None:
    # The compose config names the scraper's token file of the secrets volume: check the syntax only.
    result = _run("check", "config", "--syntax-only", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_check_config() -> None:
    result = _run("check-config", str(ROOT / "deploy" / "alertmanager" / "alertmanager.yml"), tool="amtool")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    result = _run("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout


def test_every_alert_fires_in_a_unit_test() -> None:
    fired: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            fired |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    alerts = _alerts()
    assert len(alerts) >= 10
    assert not set(alerts) - fired, f"alerts no unit test shows firing: {set(alerts) - fired}"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        assert rule["labels"]["severity"] in {"page", "ticket", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
