"""`python -m lt_analytics.worker`: the faust-streaming app that aggregates UsageRecorded into Postgres.

It also runs the anomaly detectors on each new event and relays their outbox (alerts, freeze commands) to
the broker: one elected relay per service, whichever worker instance holds the lock.

Durable state lives in Postgres, not in faust tables: the local broker (tansu) cannot reliably serve the
changelog recovery faust tables need. faust commits offsets after events are acked (at-least-once); the
request log keyed by event id makes redelivery a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import faust
import uvloop
from aiokafka.helpers import create_ssl_context
from faust.exceptions import FaustError
from opentelemetry import trace

from leaky_common import kafka_uvloop
from leaky_common.events import Topics
from leaky_common.metrics import CONSUMER_LAG, DEAD_LETTERS
from leaky_common.metrics_server import MetricsServer
from leaky_common.observability import setup_logging, setup_tracing
from leaky_common.serve import freeze_start_up, trim_when_quiet
from leaky_common.tracing import batch_span
from lt_analytics.adapters.metrics import BATCH_SIZE, EVENTS
from lt_analytics.bootstrap import start_worker
from lt_analytics.handlers import Outcome, Prepared, UsageHandler
from lt_analytics.settings import AnalyticsSettings

__all__ = ["build_faust_app", "main"]

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("lt_analytics.worker")


def _credentials(settings: AnalyticsSettings) -> faust.SASLCredentials | None:
    """SASL credentials when the broker wants them (the same settings as every other Kafka client)."""
    if settings.kafka_security_protocol == "PLAINTEXT" or settings.kafka_sasl_password is None:
        return None
    ssl = create_ssl_context() if settings.kafka_security_protocol == "SASL_SSL" else None
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=ssl,
    )


def build_faust_app(settings: AnalyticsSettings, handler: UsageHandler) -> faust.App:
    """A faust app (id = consumer group) whose one agent feeds the usage topic to `handler`."""
    datadir = settings.faust_datadir or Path(tempfile.gettempdir()) / "lt-analytics-faust"
    app = faust.App(
        settings.consumer_group,
        broker=[f"kafka://{address.strip()}" for address in settings.kafka_bootstrap.split(",")],
        broker_credentials=_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        datadir=str(datadir),
        # tansu: no idempotent producer or transactions, and ListOffsets(latest) is unreliable.
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6,
        broker_rebalance_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=1.0,
        topic_allow_declare=False,
        topic_disable_leader=True,
        stream_buffer_maxsize=settings.stream_buffer_max,
    )
    usage_topic = app.topic(settings.usage_topic, value_serializer="raw", key_serializer="raw")
    agent = _UsageAgent(app, settings, handler)
    app.agent(usage_topic, name="aggregate_usage", concurrency=1)(agent.aggregate_usage)
    return app


class _UsageAgent:
    """The usage topic's agent: batches recorded one transaction each, the next taken while one is written."""

    def __init__(self, app: faust.App, settings: AnalyticsSettings, handler: UsageHandler) -> None:
        self.settings = settings
        self.handler = handler
        self.dlq_topic = app.topic(
            Topics.dlq(settings.usage_topic), value_serializer="raw", key_serializer="raw"
        )
        self.dead_letters = DEAD_LETTERS.labels(settings.usage_topic)
        self.sample_lag = _lag_sampler(app, settings.consumer_group, settings.usage_topic)

    async def record(self, events: list[Any], raws: list[bytes], prepared: Prepared) -> None:
        """Record one batch (one transaction), send its invalid events to the DLQ, then ack it."""
        settings = self.settings
        # One span per batch, linked to each event's request; alerts and freezes it writes to the outbox
        # carry this span's context onwards.
        with batch_span(
            tracer, f"consume {settings.usage_topic} batch", (e.headers for e in events), len(raws)
        ):
            outcomes = await self.handler.handle_prepared(prepared)
        for event, raw, outcome in zip(events, raws, outcomes, strict=True):
            if outcome is Outcome.INVALID:
                await self.dlq_topic.send(
                    key=event.message.key,
                    value=raw,
                    headers={"dlq-reason": b"invalid", "dlq-source": settings.usage_topic.encode()},
                )
                self.dead_letters.inc()
        _observe_batch(outcomes)
        self.sample_lag(events)
        for event in events:
            event.ack()  # the hold taken in aggregate_usage: now faust may commit past it

    async def aggregate_usage(self, stream: Any) -> None:
        """Batches (one transaction each) keep up with thousands of events per second; `within` bounds the
        wait a lone event has before it is recorded and checked. One batch is written while the next one is
        taken from the stream, parsed and summed (`UsageHandler.prepare`): the worker's work and PostgreSQL's
        overlap instead of taking turns. Writes stay one at a time and in order. faust acks a batch's events as
        soon as this loop moves on, so each event is held (one more reference) until its batch is committed:
        offsets are committed only past recorded events, and a worker stopped meanwhile has them delivered again
        (the request log makes that a no-op)."""
        settings = self.settings
        writing: asyncio.Task[None] | None = None
        try:
            async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
                for event in events:
                    event.message.incref()
                raws = [e.value if isinstance(e.value, bytes) else str(e.value).encode() for e in events]
                prepared = self.handler.prepare(raws)  # while the previous batch is being written
                if writing is not None:
                    await writing  # the previous batch first: its failure stops the agent, as it always did
                writing = asyncio.ensure_future(self.record(list(events), raws, prepared))
                writing.add_done_callback(_report_failure)
        finally:
            if writing is not None and not writing.done():
                # Stopping: give the batch in hand a moment to commit; cancelled, it rolls back unacked.
                await asyncio.wait({writing}, timeout=settings.stop_write_wait_s)
                writing.cancel()
                with contextlib.suppress(BaseException):
                    await writing


def _report_failure(task: asyncio.Task[None]) -> None:
    """Log a batch write that failed while no next batch was there to surface it (its events stay unacked:
    the next worker to own the partition records them)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("recording a usage batch failed", exc_info=task.exception())


def _highwater(app: faust.App, tp: Any) -> int | None:
    """The partition's high watermark as of the last fetch; None before the consumer started, or once the
    partition was revoked (aiokafka asserts it is assigned)."""
    try:
        return app.consumer.highwater(tp)
    except (FaustError, AssertionError):
        return None


def _lag_sampler(app: faust.App, group: str, topic: str) -> Any:
    """Records each partition's lag (high watermark of the last fetch minus the batch's end) after a batch."""
    lags: dict[Any, int] = {}
    gauge = CONSUMER_LAG.labels(group, topic)
    gauge.set(0)

    def sample(events: list[Any]) -> None:
        ends: dict[Any, int] = {}
        for event in events:
            ends[event.message.tp] = event.message.offset + 1
        for tp, end in ends.items():
            highwater = _highwater(app, tp)
            if highwater is not None:
                lags[tp] = max(int(highwater) - end, 0)
        gauge.set(sum(lags.values()))

    return sample


def _observe_batch(outcomes: list[Outcome]) -> None:
    BATCH_SIZE.observe(len(outcomes))
    for outcome in set(outcomes):
        EVENTS.labels(outcome.value).inc(outcomes.count(outcome))


def _metrics_server(settings: AnalyticsSettings) -> MetricsServer:
    """`/metrics` on `worker_metrics_port` (faust's own web server stays off)."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    return MetricsServer(settings.host, settings.worker_metrics_port, token)


def main() -> None:
    """Build settings from the environment and run the faust worker until signalled."""
    settings = AnalyticsSettings()
    setup_logging(settings)
    setup_tracing(settings)
    # uvloop, as the HTTP services run on (leaky_common.serve), for this loop and for the one faust's consumer
    # thread makes; aiokafka guarded for it (kafka_uvloop).
    kafka_uvloop.install()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runtime = loop.run_until_complete(start_worker(settings))
    metrics = _metrics_server(settings)
    loop.run_until_complete(metrics.start())
    # Freed heap pages back to the system after each quiet second, as the HTTP services do (leaky_common.api).
    interval = settings.heap_trim_interval_s
    trimmer = loop.create_task(trim_when_quiet(interval)) if interval > 0 else None
    app = build_faust_app(settings, runtime.handler)
    # quiet: no banner or spinner in the JSON log stream.
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level, override_logging=False, quiet=True)
    freeze_start_up(settings)
    try:
        worker.execute_from_commandline()
    finally:
        if trimmer is not None:
            trimmer.cancel()
        if not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.run_until_complete(runtime.stop())
            with contextlib.suppress(Exception):
                loop.run_until_complete(metrics.stop())


if __name__ == "__main__":
    main()
