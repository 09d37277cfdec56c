"""Record batches built by the caller (`EventPublisher.publish_batch`): the messages of one publish go as one
batch per partition, as aiokafka's `send` would have put them, without its per-message future, partitioner
call and accumulator entry."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

__all__ = ["KeyPartitions", "RawMessage", "record_batches", "send_batches"]

RawMessage = tuple[bytes, bytes | None, list[tuple[str, bytes]]]  # value, key, headers
_MAX_REQUEST_SIZE = 1_048_576  # the producer's max_request_size (aiokafka's default, which we keep)
_PARTITIONER = DefaultPartitioner()  # the producer's own: murmur2 of the key, as the Java client's


class KeyPartitions:
    """A topic's partition of each key seen (murmur2 is pure Python in aiokafka): forgotten when the topic's
    partitions change, or when it holds too many keys."""

    def __init__(self, limit: int = 50_000) -> None:
        self._count = 0
        self._limit = limit
        self._of: dict[bytes, int] = {}

    def of(self, key: bytes, partitions: list[int]) -> int:
        """The key's partition among `partitions` (sorted)."""
        if self._count != len(partitions) or len(self._of) > self._limit:
            self._count, self._of = len(partitions), {}
        partition = self._of.get(key)
        if partition is None:
            partition = self._of[key] = _PARTITIONER(key, partitions, partitions)
        return partition


def record_batches(
    producer: AIOKafkaProducer,
    keys: KeyPartitions,
    partitions: list[int],
    messages: Sequence[RawMessage],
    errors: list[BaseException | None],
) -> list[tuple[Any, int, list[int]]]:
    """The messages in record batches: (batch, partition, the messages' indexes in it), a partition's in the
    order of its messages; one too large to send is marked in `errors` instead, as `send` refuses it."""
    open_batches: dict[int, tuple[Any, list[int]]] = {}
    full: list[tuple[Any, int, list[int]]] = []
    for i, (value, key, headers) in enumerate(messages):
        size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > _MAX_REQUEST_SIZE:  # (a record batch would take one message of any size)
            errors[i] = MessageSizeTooLargeError(f"a message of {size} bytes")
            continue
        partition = partitions[i % len(partitions)] if key is None else keys.of(key, partitions)
        record = {"timestamp": None, "key": key, "value": value, "headers": headers}
        batch = open_batches.get(partition)
        if batch is None or batch[0].append(**record) is None:
            if batch is not None:  # full: it goes as it is, the message starts the next one
                full.append((batch[0], partition, batch[1]))
            batch = open_batches[partition] = (producer.create_batch(), [])
            batch[0].append(**record)  # (an empty one takes any message)
        batch[1].append(i)
    return full + [(builder, partition, indexes) for partition, (builder, indexes) in open_batches.items()]


async def send_batches(
    producer: AIOKafkaProducer,
    topic: str,
    keys: KeyPartitions,
    partitions: list[int],
    messages: Sequence[RawMessage],
) -> list[BaseException | None]:
    """Send the messages' record batches and wait for the broker: per message, None once acknowledged, else
    the exception of its batch (or why it was not sent)."""
    errors: list[BaseException | None] = [None] * len(messages)
    delivered = []
    for builder, partition, indexes in record_batches(producer, keys, partitions, messages, errors):
        builder.close()
        delivered.append((await producer.send_batch(builder, topic, partition=partition), indexes))
    results = await asyncio.gather(*(future for future, _ in delivered), return_exceptions=True)
    for result, (_, indexes) in zip(results, delivered, strict=True):
        if isinstance(result, BaseException):
            for i in indexes:
                errors[i] = result
    return errors
