"""Traces across the whole local stack, exported over real OTLP/HTTP to a fake collector: one chat request
(gateway -> quota admit -> provider -> usage event -> quota's settlement and the analytics batch, linked) and
one purchase (every saga step, its commands to quota and quota's replies across Kafka, the purchase event at
the notifier)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from leaky_devinfra.fakes.otlp import FakeCollector, ReceivedSpan
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack.py"
PROMPT = "the orchid code word is tangerine"


async def _stack(command: str, run_dir: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(STACK), command, "--run-dir", str(run_dir), *(["--ports", "auto"] if command == "up" else []),
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.fixture(scope="module")
async def traced_stack() -> AsyncIterator[tuple[FakeCollector, dict[str, str]]]:
    """A stack of its own exporting every span to a fake collector (the loop keeps serving it meanwhile)."""
    collector = FakeCollector()
    await collector.start()
    run_dir = Path(tempfile.mkdtemp(prefix="lt-e2e-traces-"))
    env = {
        **os.environ,
        "LT_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "LT_TRACE_CLIENT_SPAN_RATIO": "1.0",  # every trace gets its Redis, PostgreSQL and HTTP spans
    }
    env.pop("LT_GATEWAY_URL", None)
    env["LT_OUTBOUND_ALLOW_NETWORKS"] = "[]"
    code, out = await _stack("up", run_dir, env)
    try:
        assert code == 0, out
        stack_env = dict(
            line.split("=", 1) for line in (run_dir / "stack.env").read_text().splitlines() if "=" in line
        )
        yield collector, stack_env
    finally:
        await _stack("down", run_dir, env)
        await collector.close()


def outbound(spans: list[ReceivedSpan], service: str, path: str) -> ReceivedSpan:
    """The one HTTP CLIENT span of `service` to a URL ending in `path`."""
    found = [
        s for s in spans if s.service == service and str(s.attributes.get("url.full", "")).endswith(path)
    ]
    assert len(found) == 1, (service, path, [(s.service, s.name, s.attributes) for s in spans])
    return found[0]


def one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, (service, name, [(s.service, s.name) for s in spans])
    return found[0]


async def test_a_chat_requests_trace_spans_the_gateway_quota_the_provider_and_both_consumers(
    traced_stack: tuple[FakeCollector, dict[str, str]],
) -> None:
    collector, env = traced_stack
    gateway = env["LT_GATEWAY_URL"]
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        admin = {"Authorization": f"Bearer {env['LT_ADMIN_KEY']}"}
        body = {
            "email": f"tr-{uuid.uuid4().hex[:8]}@example.com",
            "name": "Traced",
            "personal_quota": 100_000,
        }
        user = (await client.post("/v1/admin/users", json=body, headers=admin)).json()
        trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        chat = {"model": "mock-gpt", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 30}
        # The request id is an argument of the admission script: no span may hold it.
        request_id = f"rq-marigold-{uuid.uuid4().hex[:8]}"
        headers = {
            "Authorization": f"Bearer {user['api_key']}",
            "traceparent": f"00-{trace_id}-{caller}-01",
            "X-Request-ID": request_id,
        }
        r = await client.post("/v1/chat/completions", json=chat, headers=headers)
        assert r.status_code == 200, r.text
        assert "tangerine" in r.text  # the mock echoes the prompt; no span may

    def settled_and_aggregated() -> bool:
        linked = {
            s.service
            for s in collector.spans
            if s.name == "consume usage.recorded batch" and trace_id in s.links
        }
        return {"quota", "analytics-worker"} <= linked

    await eventually(settled_and_aggregated, 60, "quota's and analytics' batches linked to the request")
    spans = collector.in_trace(trace_id)
    request = one(spans, "gateway", "POST /v1/chat/completions")
    assert request.kind == "server" and request.parent_id == caller
    assert "publish usage.recorded" in request.events
    # The gateway's outbound call to quota (over its internal link) is a CLIENT span, parent of quota's server span.
    to_admit = outbound(spans, "gateway", "/internal/admit")
    assert to_admit.kind == "client" and to_admit.parent_id == request.span_id
    assert to_admit.attributes["http.request.method"] == "POST"
    assert to_admit.attributes["http.response.status_code"] == 200
    assert to_admit.attributes["server.address"] == "127.0.0.1"
    admit = one(spans, "quota", "POST /internal/admit")
    assert admit.kind == "server" and admit.parent_id == to_admit.span_id
    # Quota's admission runs its Lua script: one Redis span, named by the script, under the admission.
    script = one(spans, "quota", "EVALSHA admit")
    assert script.kind == "client" and script.parent_id == admit.span_id
    assert script.attributes["db.system.name"] == "redis"
    assert script.attributes["db.operation.name"] == "EVALSHA"
    assert script.attributes["db.stored_procedure.name"] == "admit"
    assert isinstance(script.attributes["server.port"], int)
    provider = one(spans, "gateway", "chat mock-gpt")
    assert provider.kind == "client" and provider.parent_id == request.span_id
    assert provider.attributes["gen_ai.operation.name"] == "chat"
    assert provider.attributes["gen_ai.request.model"] == "mock-gpt"
    assert provider.attributes["gen_ai.response.model"] == "mock-gpt"
    usage = r.json()["usage"]
    assert provider.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert provider.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    to_release = outbound(spans, "gateway", "/internal/release")
    assert to_release.parent_id == request.span_id
    release = one(spans, "quota", "POST /internal/release")
    assert release.parent_id == to_release.span_id
    # The first release of a fresh Redis meets NOSCRIPT (a failed span), loads the script and runs it again.
    released = [s for s in spans if s.service == "quota" and s.name == "EVALSHA release"]
    assert released and all(s.parent_id == release.span_id for s in released)
    assert not released[-1].error
    # Quota's settlement of the usage event (a batch linked to the request) writes the ledger in PostgreSQL.
    batch = next(
        s
        for s in collector.spans
        if s.service == "quota" and s.name == "consume usage.recorded batch" and trace_id in s.links
    )

    def settlement_queries() -> list[ReceivedSpan]:
        return [
            s
            for s in collector.in_trace(batch.trace_id)
            if s.attributes.get("db.system.name") == "postgresql"
        ]

    queries = await eventually(settlement_queries, 30, "the settlement batch's PostgreSQL spans")
    assert all(q.kind == "client" and q.service == "quota" for q in queries)
    assert {q.attributes["db.operation.name"] for q in queries} & {"INSERT", "UPDATE", "WITH"}
    assert all(q.attributes["db.namespace"] and q.attributes["server.port"] for q in queries)
    assert "db.query.text" not in json.dumps([q.attributes for q in queries])
    # Probes are not traced; and no span anywhere holds the prompt (nor the mock's echo of it).
    assert not [s for s in collector.spans if s.name.endswith(("/health", "/ready", "/metrics"))]
    dumped = json.dumps([(s.name, s.attributes, s.events) for s in collector.spans], default=str)
    assert "tangerine" not in dumped and "orchid" not in dumped
    # Nor the API key, nor the Lua script's arguments and keys (the user's id, the reservation's), nor a query
    # string or SQL text.
    assert user["id"] not in dumped  # in the script's keys (freeze:user:<id>) and arguments
    assert user["api_key"] not in dumped and request_id not in dumped
    assert "db.query.text" not in dumped and "db.statement" not in dumped
    assert not [s for s in collector.spans if "?" in str(s.attributes.get("url.full", ""))]


async def test_a_purchases_trace_follows_every_saga_step_across_kafka(
    traced_stack: tuple[FakeCollector, dict[str, str]],
) -> None:
    collector, env = traced_stack
    async with httpx.AsyncClient(base_url=env["LT_GATEWAY_URL"], timeout=30) as client:
        admin = {"Authorization": f"Bearer {env['LT_ADMIN_KEY']}"}
        body = {"email": f"tp-{uuid.uuid4().hex[:8]}@example.com", "name": "Buyer", "personal_quota": 1000}
        user = (await client.post("/v1/admin/users", json=body, headers=admin)).json()
        trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        me = {"Authorization": f"Bearer {user['api_key']}"}
        headers = {**me, "traceparent": f"00-{trace_id}-{caller}-01", "Idempotency-Key": uuid.uuid4().hex}
        r = await client.post("/v1/purchases", json={"tokens": 1000}, headers=headers)
        assert r.status_code == 202, r.text
        purchase_id = r.json()["id"]

        async def completed() -> bool:
            status = (await client.get(f"/v1/purchases/{purchase_id}", headers=me)).json()["status"]
            assert status not in ("FAILED", "COMPENSATED")
            return bool(status == "COMPLETED")

        await eventually(completed, 60, "the purchase completed")

    def tree() -> list[ReceivedSpan] | None:
        spans = collector.in_trace(trace_id)
        names = {(s.service, s.name) for s in spans}
        wanted = {
            ("quota", "consume quota.commands"),
            ("purchase-saga", "consume saga.replies"),
            ("notifier", "consume purchase.events"),
        }
        ids = {s.span_id for s in spans} | {caller}
        # Whole: every expected hop arrived and every span's parent is in the trace (no orphan, no new root).
        return spans if wanted <= names and all(s.parent_id in ids for s in spans) else None

    spans = await eventually(tree, 60, "the purchase's spans across gateway, saga, quota and notifier")
    by_id = {s.span_id: s for s in spans}
    # The gateway forwards management paths through one catch-all route: its span bears that template.
    proxied = one(spans, "gateway", "POST /v1/{rest}")
    assert proxied.parent_id == caller
    forwarded = outbound(spans, "gateway", "/v1/purchases")  # the gateway's call to the saga, its owner
    assert forwarded.kind == "client" and forwarded.parent_id == proxied.span_id
    assert forwarded.attributes["http.response.status_code"] == 202
    created = one(spans, "purchase-saga", "POST /v1/purchases")
    assert created.parent_id == forwarded.span_id
    # The saga's steps write PostgreSQL (CLIENT spans under them), and its payment call is an HTTP span.
    assert [
        s
        for s in spans
        if s.service == "purchase-saga" and s.attributes.get("db.system.name") == "postgresql"
    ]
    assert [s for s in spans if s.service == "purchase-saga" and s.attributes.get("http.request.method")]
    steps = [s for s in spans if s.service == "purchase-saga" and s.name.startswith("saga ")]
    assert len(steps) >= 2, [s.name for s in steps]
    command = next(s for s in spans if s.name == "consume quota.commands")
    assert by_id[command.parent_id].service == "purchase-saga"  # the saga's step wrote the command
    reply = next(s for s in spans if s.name == "consume saga.replies")
    assert by_id[reply.parent_id].service == "quota"  # quota's handling of the command wrote the reply
    announced = next(s for s in spans if s.name == "consume purchase.events")
    assert by_id[announced.parent_id].service == "purchase-saga"
