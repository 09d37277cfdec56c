"""Prometheus metrics every service shares (Kafka consumers, dead letters, the outbox, connection pools) and the
guard that keeps label values bounded.

Names follow Prometheus' conventions: base units (`_seconds`, dollars), `_total` on counters. Labels take
values from small fixed sets only (topics, groups, configured model names, statuses): never a user, key,
session, org, request or purchase id. `fold` maps anything outside a known set to `"other"`; the structure
tests walk every service's registry for label names in `DENIED_LABELS`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DENIED_LABELS",
    "OUTBOX_BACKLOG",
    "OUTBOX_OLDEST_AGE",
    "denied_labels",
    "fold",
    "track_pool",
]

# Label names that would carry one series per user, key, session, org, request or purchase.
DENIED_LABELS = frozenset(
    {
        "user_id",
        "user",
        "key_id",
        "key",
        "api_key",
        "session_id",
        "session",
        "org_id",
        "org",
        "team_id",
        "request_id",
        "reservation_id",
        "purchase_id",
        "event_id",
        "email",
        "fingerprint",
        "pool_id",
        "trace_id",
    }
)

CONSUMER_LAG = Gauge(
    "lt_kafka_consumer_lag_messages",
    "Messages behind the partitions' high watermark, summed over the topic's partitions (sampled on each fetch)",
    ["group", "topic"],
)
DEAD_LETTERS = Counter(
    "lt_kafka_dead_letters_total",
    "Messages sent to a dead-letter topic, by the topic they came from",
    ["topic"],
)
OUTBOX_BACKLOG = Gauge("lt_outbox_backlog_messages", "Outbox rows not yet published (sampled by the relay)")
OUTBOX_OLDEST_AGE = Gauge(
    "lt_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row; 0 when none (sampled by the relay)",
)


def fold(value: str | None, allowed: Collection[str]) -> str:
    """`value` if it is one of `allowed`, else `"other"` (a label value must come from a bounded set)."""
    return value if value is not None and value in allowed else "other"


def denied_labels(registry: CollectorRegistry = REGISTRY) -> list[tuple[str, str]]:
    """(metric, label) pairs of `registry` whose label name is in `DENIED_LABELS` (structure tests)."""
    found: list[tuple[str, str]] = []
    # Declared label names first: a labelled metric with no series yet shows none in `collect()`.
    for collector in list(getattr(registry, "_collector_to_names", {})):
        name = getattr(collector, "_name", type(collector).__name__)
        found.extend(
            (name, label) for label in getattr(collector, "_labelnames", ()) if label in DENIED_LABELS
        )
    for family in registry.collect():
        for sample in family.samples:
            found.extend((family.name, label) for label in sample.labels if label in DENIED_LABELS)
    return sorted(set(found))


class _PoolCollector(Collector):
    """asyncpg pools' sizes, read at scrape time (no work on the hot path)."""

    def __init__(self) -> None:
        # asyncpg pools take no weak references: held until they close (dropped then, at add or collect).
        self._pools: dict[int, tuple[Any, str]] = {}

    def _live(self) -> list[tuple[Any, str]]:
        for key, (pool, _name) in list(self._pools.items()):
            if pool.is_closing():
                del self._pools[key]
        return list(self._pools.values())

    def add(self, pool: Any, name: str) -> None:
        self._live()
        self._pools[id(pool)] = (pool, name)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used: dict[str, float] = defaultdict(float)
        idle: dict[str, float] = defaultdict(float)
        size: dict[str, float] = defaultdict(float)
        for pool, name in self._live():
            open_, free = pool.get_size(), pool.get_idle_size()
            used[name] += open_ - free
            idle[name] += free
            size[name] += pool.get_max_size()
        connections = GaugeMetricFamily(
            "lt_db_pool_connections",
            "Open connections of the asyncpg pool, in use or idle",
            labels=["pool", "state"],
        )
        for name in sorted(size):
            connections.add_metric([name, "in_use"], used[name])
            connections.add_metric([name, "idle"], idle[name])
        maximum = GaugeMetricFamily(
            "lt_db_pool_max_connections", "Connections the asyncpg pool may open", labels=["pool"]
        )
        for name in sorted(size):
            maximum.add_metric([name], size[name])
        yield connections
        yield maximum

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def track_pool(pool: Any, name: str) -> None:
    """Report `pool`'s connections as `lt_db_pool_*{pool=name}` while it lives (`name`: a fixed word)."""
    _POOLS.add(pool, name)
