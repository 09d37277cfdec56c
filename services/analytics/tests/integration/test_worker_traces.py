"""The faust worker's batches are spans linked to each usage event's request, exported over real OTLP/HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry import trace

from leaky_common.db import create_database
from leaky_common.events import UsageRecorded
from leaky_common.kafka import EventPublisher, ensure_topics
from leaky_devinfra.fakes.otlp import FakeCollector
from leaky_devinfra.spans import capture_spans
from leaky_devinfra.testing import TEST_KEYS
from leaky_devinfra.testing import eventually as wait_for
from lt_analytics.settings import AnalyticsSettings

pytestmark = pytest.mark.integration

tracer = trace.get_tracer("test.gateway")


@contextlib.asynccontextmanager
async def traced_worker(settings: AnalyticsSettings, collector_url: str) -> AsyncIterator[Path]:
    """`python -m lt_analytics.worker` exporting its spans to the fake collector; stopped by its PID. Gives
    the path of its log."""
    datadir = Path(tempfile.mkdtemp(prefix="lt-analytics-trace-"))
    env = {
        **os.environ,
        "LT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LT_DATABASE_URL": settings.database_url,
        "LT_USAGE_TOPIC": settings.usage_topic,
        "LT_CONSUMER_GROUP": f"analytics-trace-{uuid.uuid4().hex[:8]}",
        "LT_FAUST_DATADIR": str(datadir),
        "LT_SERVICE_NAME": "analytics-worker",
        "LT_LOG_JSON": "false",
        "LT_WORKER_METRICS_PORT": "0",  # any free port: 8087 may be another worker's (xdist, a running stack)
        "LT_OTLP_ENDPOINT": collector_url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with (datadir / "worker.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lt_analytics.worker", env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield datadir / "worker.log"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_each_batch_span_links_to_the_requests_of_its_events(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    settings = AnalyticsSettings(
        database_url=await create_database(postgres_url, f"analytics_{uuid.uuid4().hex[:10]}"),
        kafka_bootstrap=kafka_bootstrap,
        usage_topic=f"usage.test.{uuid.uuid4().hex[:8]}",
        **TEST_KEYS.settings(),
        environment="test",
        log_json=False,
    )
    await ensure_topics(settings, [settings.usage_topic])
    collector = FakeCollector()
    await collector.start()
    publisher = EventPublisher(settings)
    await publisher.start()
    requests: set[str] = set()
    try:
        with capture_spans():
            for i in range(3):
                with tracer.start_as_current_span("POST /v1/chat/completions") as request:
                    event = UsageRecorded(
                        request_id=uuid.uuid4().hex, user_id=f"u{i}", org_id="o1", model="mock-gpt",
                        provider="mock", prompt_tokens=5, completion_tokens=5, total_tokens=10,
                    )  # fmt: skip
                    await publisher.publish(settings.usage_topic, event, key=event.user_id)
                requests.add(f"{request.get_span_context().trace_id:032x}")
        async with traced_worker(settings, collector.url) as log:

            def linked() -> set[str]:
                batches = collector.named(f"consume {settings.usage_topic} batch", "analytics-worker")
                return {t for b in batches for t in b.links} & requests

            try:
                await wait_for(lambda: linked() == requests, 90, "batch spans linked to all three requests")
            except AssertionError as exc:
                spans = sorted({(s.service, s.name) for s in collector.spans})
                raise AssertionError(
                    f"{exc}\nspans received: {spans}\nworker log (end):\n{log.read_text(errors='replace')[-6000:]}"
                ) from None
        batch = collector.named(f"consume {settings.usage_topic} batch")[0]
        assert batch.kind == "consumer" and batch.attributes["messaging.batch.message_count"] >= 1
        assert batch.trace_id not in requests
    finally:
        await publisher.stop()
        await collector.close()
