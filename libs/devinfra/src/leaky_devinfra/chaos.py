"""A Kafka relay that misbehaves on purpose, for fault-injection runs: delays, duplicates and drops messages.

Point a producer at a private topic and the relay forwards each message to the real one; the reordering
comes from independent random delays, so duplicates can arrive before or after the original.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

__all__ = ["ChaosOdds", "ChaosRelay"]


class ChaosOdds(Protocol):
    """Per-message odds of each fault; any config object with these attributes will do."""

    @property
    def duplicate_p(self) -> float: ...
    @property
    def delay_p(self) -> float: ...
    @property
    def max_delay_s(self) -> float: ...
    @property
    def drop_p(self) -> float: ...


class ChaosRelay:
    """Forwards Kafka topics pairwise, delaying, duplicating (so reordering) and dropping messages."""

    def __init__(self, bootstrap: str, routes: dict[str, str], config: ChaosOdds, rng: random.Random) -> None:
        self._bootstrap = bootstrap
        self._routes = routes
        self._config = config
        self._rng = rng
        self.stats: Counter[str] = Counter()
        self._pending: set[asyncio.Task[None]] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and start forwarding in the background."""
        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=0)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            *self._routes,
            bootstrap_servers=self._bootstrap,
            group_id=f"chaos-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            metadata_max_age_ms=5_000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        cfg, rng = self._config, self._rng
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    target = self._routes[record.topic]
                    if rng.random() < cfg.drop_p:
                        self.stats["dropped"] += 1
                        continue
                    copies = 2 if rng.random() < cfg.duplicate_p else 1
                    self.stats["duplicated"] += copies - 1
                    for _ in range(copies):
                        delay = rng.uniform(0, cfg.max_delay_s) if rng.random() < cfg.delay_p else 0.0
                        self.stats["delayed"] += delay > 0
                        task = asyncio.create_task(
                            self._forward(target, record.key, record.value, list(record.headers or ()), delay)
                        )
                        self._pending.add(task)
                        task.add_done_callback(self._pending.discard)
                    self.stats["forwarded"] += 1

    async def _forward(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
        delay: float,
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        assert self._producer is not None
        await self._producer.send_and_wait(topic, value, key=key, headers=headers)

    async def stop(self) -> None:
        """Stop forwarding; messages still delayed are not delivered."""
        for task in [self._task, *self._pending]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *[t for t in [self._task, *self._pending] if t is not None], return_exceptions=True
        )
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
