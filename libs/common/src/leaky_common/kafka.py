"""Kafka produce/consume glue: envelope serialisation, keys, trace headers, manual commits and a DLQ.

Consumers commit an offset only after its message was handled (at-least-once); handlers must be idempotent
(record the event id in an inbox in the same transaction as the state change) to make it effectively-once.
A message that cannot be parsed, or whose handler keeps failing on it, goes to `<topic>.dlq` and is committed;
infrastructure errors (`transient_errors()`) are retried until they clear instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from pydantic import BaseModel, ValidationError

from leaky_common import kafka_uvloop
from leaky_common.errors import store_unavailable
from leaky_common.events import AnyMessage, Message, Topics, parse_message
from leaky_common.kafka_admin import client_options, ensure_topics
from leaky_common.kafka_produce import KeyPartitions, RawMessage, send_batches
from leaky_common.metrics import CONSUMER_LAG, DEAD_LETTERS
from leaky_common.settings import ServiceSettings
from leaky_common.tasks import cancel_and_wait
from leaky_common.tracing import context_headers

__all__ = [
    "EventConsumer",
    "EventPublisher",
    "Handler",
    "RawMessage",
    "broker_reachable",
    "client_options",
    "ensure_topics",
    "transient_errors",
]

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("leaky_common.kafka")
kafka_uvloop.install()  # the services run on uvloop (leaky_common.serve)


@functools.cache
def transient_errors() -> tuple[type[BaseException], ...]:
    """Failures of the infrastructure rather than of the message: retried, never dead-lettered. A store down
    (`store_unavailable`, imported on first use), any OS-level failure, or the broker's."""
    return (OSError, *store_unavailable(), KafkaError)


Handler = Callable[[AnyMessage, ConsumerRecord[bytes, bytes]], Awaitable[None]]


def _headers_from_context(extra: dict[str, str] | None = None) -> list[tuple[str, bytes]]:
    """The current trace context (when there is one) as Kafka headers, plus `extra`."""
    return context_headers(extra)


def _context_from_headers(headers: Sequence[tuple[str, bytes]] | None) -> otel_context.Context:
    carrier = {k: v.decode(errors="replace") for k, v in headers or ()}
    return propagate.extract(carrier)


async def broker_reachable(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """A TCP connection to one of the bootstrap servers opens within `timeout_s` (for /ready)."""
    for address in filter(None, (a.strip() for a in bootstrap.split(","))):
        try:
            parts = urlsplit(f"//{address}")
            host, port = parts.hostname, parts.port or 9092
            if not host:
                continue
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=timeout_s)
        except (OSError, TimeoutError, ValueError):  # ValueError: a port that is not a number
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


class EventPublisher:
    """Publishes contract messages; `publish` returns once the broker acknowledged (acks=all)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        # aiokafka binds to the running loop, so the producer is made in start().
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, KeyPartitions] = {}  # per topic

    async def start(self) -> None:
        """Connect to the broker."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            **client_options(self._settings),
            acks="all",
            enable_idempotence=self._settings.kafka_idempotence,
            linger_ms=2,
            client_id=self._settings.service_name,
            request_timeout_ms=10_000,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    def _ready_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("EventPublisher.start() was not called")
        return self._producer

    async def publish(self, topic: str, message: Message, key: str | None = None) -> None:
        """Send one message and wait for the broker's acknowledgement."""
        value = message.model_dump_json().encode()
        with tracer.start_as_current_span(f"publish {topic}", kind=trace.SpanKind.PRODUCER):
            # Inside the PRODUCER span: the consumer's span becomes its child.
            headers = _headers_from_context({"type": str(getattr(message, "type", ""))})
            await self._ready_producer().send_and_wait(
                topic, value, key=key.encode() if key else None, headers=headers
            )

    async def publish_raw(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        """Send pre-serialised bytes (used for the DLQ and outbox relays)."""
        await self._ready_producer().send_and_wait(topic, value, key=key, headers=headers)

    async def publish_batch(self, topic: str, messages: Sequence[RawMessage]) -> list[BaseException | None]:
        """Send pre-serialised messages in one record batch per partition (each key on the partition `send`
        would choose, in order within it) and wait for the broker: per message, None once acknowledged, else
        its batch's exception. Far less work per message than one `send` each (leaky_common.kafka_produce)."""
        producer = self._ready_producer()
        partitions = sorted(await producer.partitions_for(topic))
        keys = self._partitions.setdefault(topic, KeyPartitions())
        return await send_batches(producer, topic, keys, partitions, messages)


def _cancel_group_tasks(consumer: AIOKafkaConsumer) -> None:
    """Cancel the group tasks a wedged consumer's stop() left running (it timed out before reaching them): else
    its heartbeats go on for the life of the process, a member of the group nobody consumes for."""
    coordinator = getattr(consumer, "_coordinator", None)
    for name in ("_coordination_task", "_heartbeat_task", "_commit_refresh_task", "_reset_committed_task"):
        task = getattr(coordinator, name, None)
        if isinstance(task, asyncio.Task) and not task.done():
            task.cancel()


class EventConsumer:
    """A consumer-group loop: parse, handle (with retries), commit; poison messages go to the DLQ."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        publisher: EventPublisher,
        max_attempts: int = 5,
        retry_backoff_s: float = 0.2,
        commit_timeout_s: float = 30.0,
    ) -> None:
        self._settings = settings
        self._commit_timeout_s = commit_timeout_s
        self._topics = list(topics)
        self._handler = handler
        self._publisher = publisher
        self._max_attempts = max_attempts
        self._retry_backoff_s = retry_backoff_s
        self._group_id = group_id
        # aiokafka binds to the running loop, so the consumer is made in start().
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.processed = 0
        self._lag: dict[TopicPartition, int] = {}
        # Children made once (a label lookup costs about a microsecond); every series exists from the start.
        self._lag_gauges = {topic: CONSUMER_LAG.labels(group_id, topic) for topic in self._topics}
        for topic in self._topics:
            DEAD_LETTERS.labels(topic)
        transient_errors()  # the store clients' exceptions imported now, not in the loop at the first failure

    @property
    def running(self) -> bool:
        """True while the consume loop is alive."""
        return self._task is not None and not self._task.done()

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions the group gave this consumer (empty before it joined or while it rebalances)."""
        return frozenset(self._consumer.assignment()) if self._consumer is not None else frozenset()

    async def start(self) -> None:
        """Join the group and start consuming in a background task."""
        self._consumer = await self._open()
        self._task = asyncio.create_task(self._run(), name=f"consumer:{','.join(self._topics)}")

    async def _open(self) -> AIOKafkaConsumer:
        settings = self._settings
        consumer = AIOKafkaConsumer(
            *self._topics,
            **client_options(settings),
            group_id=self._group_id,
            client_id=f"{settings.service_name}-{self._group_id}",
            enable_auto_commit=False,
            # tansu answers ListOffsets(latest) wrongly; committed offsets + earliest is reliable everywhere.
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            metadata_max_age_ms=5_000,
        )
        await consumer.start()
        return consumer

    async def _reopen(self) -> None:
        """Replace a wedged consumer (a commit that never ends: the client can no longer find the group's
        coordinator) with a new one; it resumes from the committed offsets, so the batch in hand is redelivered
        and the idempotent handlers absorb it."""
        old, self._consumer = self._consumer, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), self._commit_timeout_s)
            except Exception:  # stop() wedges too (leaving the group needs the coordinator): drop its sockets
                _cancel_group_tasks(old)
                for part in (old._fetcher, old._client):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(part.close(), 5.0)
        delay = self._retry_backoff_s
        while not self._stopping.is_set():
            try:
                self._consumer = await self._open()
                logger.warning("consumer of %s re-opened", ",".join(self._topics))
                return
            except KafkaError:
                logger.exception("could not re-open the consumer of %s; retrying", ",".join(self._topics))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        """Stop after the message in hand, commit, leave the group."""
        self._stopping.set()
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                assert self._consumer is not None
                batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            except KafkaError:
                logger.exception("kafka fetch failed; retrying")
                await asyncio.sleep(0.5)
                continue
            try:
                await self._handle_batches(batches)
            except Exception:
                # A bug here must not end consumption for good: the group would go on giving this member its
                # partitions (the heartbeats run apart) while nothing reads them. Re-open instead: the new
                # consumer resumes from the committed offsets, so nothing of the batch in hand is skipped.
                logger.exception("consume loop of %s failed; re-opening", ",".join(self._topics))
                await asyncio.sleep(self._retry_backoff_s)
                await self._reopen()

    async def _handle_batches(
        self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Handle and commit each partition's fetched records. A partition a rebalance took away meanwhile is
        neither measured nor committed: its new owner resumes from the last commit, and the idempotent
        handlers absorb what is delivered twice."""
        for tp, records in batches.items():
            await self._process_records(records)
            assert self._consumer is not None
            if tp not in self._consumer.assignment():
                continue
            self._sample_lag(tp, records[-1].offset + 1)
            if not await self._commit(tp, records[-1].offset + 1):
                await self._reopen()
                return

    def _sample_lag(self, tp: TopicPartition, position: int) -> None:
        """Lag of `tp` after handling up to `position`, from the high watermark of the last fetch (no I/O)."""
        highwater = self._consumer.highwater(tp) if self._consumer is not None else None
        if highwater is None:
            return
        self._lag[tp] = max(highwater - position, 0)
        gauge = self._lag_gauges.get(tp.topic)
        if gauge is not None:
            gauge.set(sum(lag for p, lag in self._lag.items() if p.topic == tp.topic))

    async def _process_records(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Handle one partition's fetched records, in order (`BatchEventConsumer` handles them at once)."""
        for record in records:
            await self._process(record)

    async def _commit(self, tp: TopicPartition, offset: int) -> bool:
        """Commit `offset`; False when the consumer is wedged (the commit did not end in time)."""
        for attempt in range(5):
            try:
                assert self._consumer is not None
                await asyncio.wait_for(self._consumer.commit({tp: offset}), self._commit_timeout_s)
                return True
            except TimeoutError:
                logger.error(
                    "commit for %s at %d took over %.0fs; re-opening", tp, offset, self._commit_timeout_s
                )
                return False
            except KafkaError:
                if attempt == 4:
                    # Not committing means a redelivery, which idempotent handlers absorb.
                    logger.exception("commit failed for %s at %d", tp, offset)
                    return True
                await asyncio.sleep(0.2 * (attempt + 1))
        return True

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            message = parse_message(record.value or b"")
        except ValidationError as exc:
            await self._dead_letter(record, f"unparseable: {exc.error_count()} errors")
            return
        ctx = _context_from_headers(record.headers)
        token = otel_context.attach(ctx)
        try:
            with tracer.start_as_current_span(
                f"consume {record.topic}", kind=trace.SpanKind.CONSUMER
            ) as span:
                span.set_attribute("messaging.message.id", message.event_id)
                await self._handle_with_retries(message, record)
        finally:
            otel_context.detach(token)

    async def _handle_with_retries(self, message: AnyMessage, record: ConsumerRecord[bytes, bytes]) -> None:
        # Infrastructure trouble (database, cache or network down) is retried until it clears, holding
        # the partition: dead-lettering a settlement during an outage would lose it. Anything else is a
        # message this code cannot handle; after `max_attempts` it goes to the DLQ so the rest flows on.
        attempt = 0
        delay = self._retry_backoff_s
        while True:
            attempt += 1
            try:
                await self._handler(message, record)
                self.processed += 1
                return
            except asyncio.CancelledError:
                raise
            except transient_errors() as exc:
                logger.warning("handler hit %r for %s; retrying in %.1fs", exc, message.event_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:
                if attempt >= self._max_attempts:
                    logger.exception("handler failed %d times; dead-lettering %s", attempt, message.event_id)
                    await self._dead_letter(record, f"handler failed: {type(exc).__name__}")
                    return
                logger.warning("handler attempt %d failed for %s: %r", attempt, message.event_id, exc)
                await asyncio.sleep(self._retry_backoff_s * attempt)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        headers = [
            *(record.headers or ()),
            ("dlq-reason", reason.encode()),
            ("dlq-source", record.topic.encode()),
        ]
        await self._publisher.publish_raw(
            Topics.dlq(record.topic), record.value or b"", record.key, list(headers)
        )
        DEAD_LETTERS.labels(record.topic).inc()


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-compatible dict of a model (for outbox rows)."""
    return model.model_dump(mode="json")
