"""Every service's /metrics after a small workload (a chat, a stream, a denial, a purchase): each metric family
of the issue is there with sensible values, and no label carries an id."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from leaky_common.metrics import DENIED_LABELS
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.e2e

Samples = dict[str, list[tuple[dict[str, str], float]]]
SERVICES = ("gateway", "quota", "analytics", "saga", "notifier", "analytics-worker")


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for got, v in samples.get(name, []) if labels.items() <= got.items())


async def scrape_all(stack: Any) -> dict[str, tuple[str, Samples]]:
    ports = json.loads((stack.run_dir / "stack.json").read_text())["ports"]
    token = (stack.run_dir / "metrics_token").read_text().strip()
    out: dict[str, tuple[str, Samples]] = {}
    async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        for name in SERVICES:
            resp = await client.get(f"http://127.0.0.1:{ports[name]}/metrics")
            assert resp.status_code == 200, (name, resp.status_code)
            out[name] = (resp.text, parse(resp.text))
    return out


async def workload(stack: Any, admin: httpx.AsyncClient) -> list[str]:
    """A chat, a stream, a denial and a completed purchase; returns ids that must never be label values."""
    rich, poor = [
        (await admin.post("/v1/admin/users", json={"email": f"m-{uuid.uuid4().hex[:8]}@example.com",
                                                  "name": "Metrics", "personal_quota": quota})).json()
        for quota in (5000, 5)
    ]  # fmt: skip
    chat = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hello metrics"}], "max_tokens": 30}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        auth = {"Authorization": f"Bearer {rich['api_key']}"}
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
    return [rich["id"], poor["id"], purchase_id, rich["api_key"]]


async def test_every_service_reports_the_new_metric_families(stack: Any, admin: httpx.AsyncClient) -> None:
    if stack.run_dir is None:
        pytest.skip("needs the stack's run dir (ports and metrics token): not against a `make up` stack")
    ids = await workload(stack, admin)

    async def settled_and_analysed() -> dict[str, tuple[str, Samples]] | None:
        scraped = await scrape_all(stack)
        quota, worker = scraped["quota"][1], scraped["analytics-worker"][1]
        if (
            total(quota, "lt_quota_settlement_lag_seconds_count") >= 2
            and total(worker, "lt_analytics_lag_seconds_count") >= 2
        ):
            return scraped
        return None

    scraped = await eventually(settled_and_analysed, 60, "usage settled by quota and recorded by analytics")
    mock = {"provider": "mock", "model": "mock-gpt"}

    gateway = scraped["gateway"][1]
    assert total(gateway, "lt_gateway_provider_request_duration_seconds_count", **mock, status="ok") >= 2
    assert total(gateway, "lt_gateway_provider_time_to_first_token_seconds_count", **mock) >= 1
    assert "lt_gateway_provider_errors_total" in gateway  # the usual failures, at 0
    assert total(gateway, "lt_gateway_tokens_total", **mock, quota_source="personal", kind="completion") > 0
    assert 0 < total(gateway, "lt_gateway_cost_usd_total", **mock, quota_source="personal") < 100  # dollars

    quota = scraped["quota"][1]
    assert total(quota, "lt_quota_admissions_total", decision="admitted", cap="none") >= 2
    assert total(quota, "lt_quota_admissions_total", decision="insufficient_quota", cap="personal") >= 1
    assert total(quota, "lt_quota_reservations_settled_total") >= 2
    for family in ("lt_quota_reservations_open", "lt_quota_reservations_released_total",
                   "lt_quota_reservations_expired_charged_total"):  # fmt: skip
        assert family in quota, family
    assert total(quota, "lt_quota_reservations_open") >= 0

    saga = scraped["saga"][1]
    assert total(saga, "lt_saga_purchases_total", status="COMPLETED") >= 1
    assert total(saga, "lt_saga_steps_total", status="succeeded") >= 1
    assert total(saga, "lt_db_pool_max_connections", pool="replies") == 2

    notifier = scraped["notifier"][1]
    assert {labels["channel"] for labels, _ in notifier["lt_notifier_deliveries_total"]} >= {"slack", "email"}

    worker = scraped["analytics-worker"][1]
    assert total(worker, "lt_analytics_batch_size_events_count") >= 1
    assert total(worker, "lt_analytics_events_total", outcome="recorded") >= 2
    assert {labels["kind"] for labels, _ in worker["lt_analytics_detections_total"]} >= {
        "loop",
        "request_rate",
    }
    assert "lt_kafka_dead_letters_total" in worker

    for name in ("quota", "saga", "notifier", "analytics-worker"):  # every Kafka consumer reports its lag
        lags = scraped[name][1]["lt_kafka_consumer_lag_messages"]
        assert lags and all(v >= 0 for _, v in lags), name
    for name in ("quota", "saga", "notifier", "analytics", "analytics-worker"):
        assert total(scraped[name][1], "lt_db_pool_max_connections", pool="main") > 0, name
        assert total(scraped[name][1], "lt_db_pool_connections", pool="main") >= 1, name
    # The relaying instance of each outbox samples it: caught up after the purchase.
    for name in ("quota", "saga"):
        assert "lt_outbox_backlog_messages" in scraped[name][1], name
        assert "lt_outbox_oldest_age_seconds" in scraped[name][1], name

    for name, (text, samples) in scraped.items():
        names = {label for series in samples.values() for labels, _ in series for label in labels}
        assert not names & DENIED_LABELS, (name, names & DENIED_LABELS)
        leaked = [i for i in ids if i in text]
        assert not leaked, f"{name}: an id is a label value"
