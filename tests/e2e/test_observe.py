"""The dashboards and alert rules proven against a real Prometheus: `stack.py observe` (what `make observe` runs)
starts Prometheus with the project's rules scraping the live stack every second; after a workload (chats, a
stream, a denial, a purchase, a freeze) every expression of every panel of every dashboard in
deploy/grafana/dashboards returns data, every rule evaluates without error, the recording rules return data
and no alert fires or is pending on the healthy stack. With Alertmanager installed (CI: always), it runs with
the project's routing, and an alert given to it reaches a platform Slack channel through the notifier."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leaky_devinfra.fakes.chat import FakeChannels
from leaky_devinfra.infra import stop_pid
from leaky_devinfra.testing import eventually, required_tool

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack.py"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
# Grafana's variables, as Grafana would expand them for "the last 5 minutes" (all of this test's data).
WINDOW = "5m"
VARIABLES = {"$__rate_interval": WINDOW, "$__range": WINDOW, "$service": ".*"}


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expression) of every target of every panel, rows' nested panels too."""
    found: list[tuple[str, str, str]] = []
    for path in DASHBOARDS:
        model = json.loads(path.read_text())
        panels = [*model["panels"], *(p for row in model["panels"] for p in row.get("panels") or [])]
        for panel in panels:
            found.extend((path.name, panel["title"], t["expr"]) for t in panel.get("targets") or [])
    return found


def expand(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr}"
    return expr


async def query(prom: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
    resp = await prom.get("/api/v1/query", params={"query": expr})
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


@pytest.fixture
async def slack(fakes_port: int) -> AsyncIterator[FakeChannels]:
    fake = FakeChannels()
    await fake.start(port=fakes_port)  # the address and port the stack's notifier is allowed to reach
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def observed(stack: Any) -> Any:
    """`stack.py observe` on the test's stack: its stack.env lines (LT_PROMETHEUS_URL, LT_ALERTMANAGER_URL)."""
    if stack.run_dir is None:
        pytest.skip("needs the stack's run dir (ports, metrics token): not against a `make up` stack")
    required_tool("prometheus", "prometheus")
    result = subprocess.run(
        [sys.executable, str(STACK), "observe", "--run-dir", str(stack.run_dir), "--scrape-interval", "1s"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    env = dict(line.split("=", 1) for line in (stack.run_dir / "stack.env").read_text().splitlines())
    assert env["LT_PROMETHEUS_URL"] in result.stdout
    # Debian names it prometheus-alertmanager; CI installs it (.ci/run): there it must run.
    if shutil.which("alertmanager") or shutil.which("prometheus-alertmanager") or os.environ.get("CI"):
        assert env.get("LT_ALERTMANAGER_URL"), result.stdout
    pids = json.loads((stack.run_dir / "stack.json").read_text())["pids"]
    try:
        yield env
    finally:
        for name in ("prometheus", "alertmanager"):
            if name in pids:
                stop_pid(int(pids[name]))


async def workload(stack: Any, admin: httpx.AsyncClient, *, freeze: bool) -> None:
    """Chats, a stream, a denial (402), a purchase to completion and (`freeze`) a freeze with a refused chat."""
    rich, poor = [
        (await admin.post("/v1/admin/users", json={"email": f"o-{uuid.uuid4().hex[:8]}@example.com",
                                                  "name": "Observed", "personal_quota": quota})).json()
        for quota in (5000, 5)
    ]  # fmt: skip
    chat = {
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": "hello prometheus"}],
        "max_tokens": 30,
    }
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        auth = {"Authorization": f"Bearer {rich['api_key']}"}
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", json=chat, headers=auth)).status_code == 200
        streamed = {**chat, "stream": True, "stream_options": {"include_usage": True}}
        async with client.stream("POST", "/v1/chat/completions", json=streamed, headers=auth) as resp:
            assert resp.status_code == 200
            assert "[DONE]" in "".join([part async for part in resp.aiter_text()])
        denied = await client.post(
            "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {poor['api_key']}"}
        )
        assert denied.status_code == 402, denied.text
        resp = await client.post(
            "/v1/purchases", json={"tokens": 1000}, headers={**auth, "Idempotency-Key": uuid.uuid4().hex}
        )
        assert resp.status_code == 202, resp.text
        purchase_id = resp.json()["id"]

        async def completed() -> bool:
            status = (await client.get(f"/v1/purchases/{purchase_id}", headers=auth)).json()["status"]
            assert status not in ("FAILED", "COMPENSATED"), status
            return bool(status == "COMPLETED")

        await eventually(completed, 60, "the purchase completed")
        if not freeze:
            return
        body = {"target_type": "user", "target_id": rich["id"], "reason": "observe test", "duration_s": 600}
        assert (await admin.post("/v1/admin/freezes", json=body)).status_code == 201
        frozen = await client.post("/v1/chat/completions", json=chat, headers=auth)
        assert 400 <= frozen.status_code < 500 and frozen.status_code != 402, frozen.text


async def test_every_dashboard_panel_returns_data_and_no_alert_fires_on_a_healthy_stack(
    stack: Any, admin: httpx.AsyncClient, observed: dict[str, str], slack: FakeChannels
) -> None:
    prometheus_url = observed["LT_PROMETHEUS_URL"]
    queries = panel_queries()
    assert len(DASHBOARDS) >= 6 and len(queries) >= 60, (len(DASHBOARDS), len(queries))
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=10) as prom:

        async def totals() -> dict[str, float]:
            return {
                expr: sum(float(v["value"][1]) for v in await query(prom, expr))
                for expr in (
                    'sum(lt_saga_purchases_total{status="COMPLETED"})',
                    "sum(lt_quota_settlement_lag_seconds_count)",
                    "sum(lt_analytics_lag_seconds_count)",
                    'sum(lt_quota_admissions_total{decision="frozen"})',
                )
            }

        async def every_target_up() -> bool:
            up = await query(prom, 'up{job="leaky-tokens"}')
            return len(up) == 6 and all(s["value"][1] == "1" for s in up)

        await eventually(every_target_up, 30, "Prometheus scraped every process of the stack")
        # Twice: a series born between two scrapes has a first sample with its final value, so a rate()
        # sees no increase; the second round increases every series the first one created.
        for round_ in (1, 2):
            before = await totals()
            await workload(stack, admin, freeze=round_ == 2)
            # purchases, settled and analysed usage events (3 chats and a stream), frozen admissions
            wanted = dict(zip(before, (1, 4, 4, 1 if round_ == 2 else 0), strict=True))

            async def scraped(before: dict[str, float] = before, wanted: dict[str, int] = wanted) -> bool:
                now = await totals()
                return all(now[expr] >= before[expr] + wanted[expr] for expr in now)

            await eventually(scraped, 45, f"round {round_}'s effects scraped", interval=0.5)

        # The saga refreshes its purchases-by-status gauge on each recovery pass (every 5 s): until then the
        # completed purchase still counts as unfinished.
        async def saga_gauge_caught_up() -> bool:
            return bool(await query(prom, "lt:saga_purchases_unfinished == 0"))

        await eventually(
            saga_gauge_caught_up, 30, "the saga's gauge shows no unfinished purchase", interval=0.5
        )
        settled = time.time()

        async def rules_evaluated_since_the_workload() -> list[dict[str, Any]] | None:
            groups = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            done = all(
                rule["lastEvaluation"] and _epoch(rule["lastEvaluation"]) > settled + 1 for rule in rules
            )
            return rules if done and rules else None

        rules = await eventually(rules_evaluated_since_the_workload, 30, "every rule evaluated again")

        empty = []
        for dashboard, title, expr in queries:
            if not finite(await query(prom, expand(expr))):
                empty.append(f"{dashboard}: {title}: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)

        names = {rule["name"] for rule in rules}
        assert {"LtErrorBudgetBurnFast", "LtTargetDown", "LtPurchasesStuck"} <= names
        for rule in rules:
            assert rule["health"] == "ok" and not rule.get("lastError"), rule
            result = await query(prom, rule["query"])
            if rule["type"] == "recording":
                assert result, f"recording rule {rule['name']} has no data"
            else:
                assert result == [], f"{rule['name']} would fire on a healthy stack: {result}"
                assert rule["state"] == "inactive", rule
        alerts = (await prom.get("/api/v1/alerts")).json()["data"]["alerts"]
        assert alerts == [], alerts

        if "LT_ALERTMANAGER_URL" in observed:
            await alerts_reach_the_notifier(prom, observed["LT_ALERTMANAGER_URL"], admin, slack)


async def alerts_reach_the_notifier(
    prom: httpx.AsyncClient, alertmanager_url: str, admin: httpx.AsyncClient, slack: FakeChannels
) -> None:
    """Prometheus knows the Alertmanager; an alert given to it (the project's routing, a page: 10 s group wait)
    reaches a platform Slack channel through the notifier's webhook."""
    active = (await prom.get("/api/v1/alertmanagers")).json()["data"]["activeAlertmanagers"]
    assert [a["url"] for a in active] == [f"{alertmanager_url}/api/v2/alerts"]
    hook = f"/slack/services/T0OBS/B0OBS/{uuid.uuid4().hex[:12]}"
    channel = await admin.post(
        "/v1/admin/notifications/channels",
        json={"channel": "slack", "url": f"{slack.base_url}{hook}", "event_types": ["PlatformAlert.v1"]},
    )
    assert channel.status_code == 201, channel.text
    name = f"LtObserveProbe{uuid.uuid4().hex[:6]}"
    alert = {
        "labels": {"alertname": name, "severity": "page", "app": "quota"},
        "annotations": {"summary": "the observe test's alert"},
    }
    async with httpx.AsyncClient(base_url=alertmanager_url, timeout=10) as am:
        assert (await am.post("/api/v2/alerts", json=[alert])).status_code == 200

    async def delivered() -> list[Any]:
        return [r.body for r in slack.of("slack") if r.path == hook]

    (body,) = await eventually(delivered, 40, "the alert at the platform's Slack channel", interval=0.5)
    assert f"Alert: {name}" in json.dumps(body)
    assert slack.rejected == []


def _epoch(timestamp: str) -> float:
    """Prometheus' RFC 3339 timestamps (nanoseconds, `Z`) as seconds since the epoch."""
    from datetime import datetime

    head, _, frac = timestamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")
