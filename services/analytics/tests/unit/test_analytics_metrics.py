"""The analytics worker's metrics: batch sizes and outcomes, lag behind the requests, consumer lag."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from leaky_common.events import UsageRecorded
from lt_analytics.handlers import Outcome
from lt_analytics.usecases.ingest import _observe
from lt_analytics.worker import _lag_sampler, _observe_batch


def value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_batch_counts_its_size_and_outcomes() -> None:
    batches, events = (
        value("lt_analytics_batch_size_events_count"),
        value("lt_analytics_batch_size_events_sum"),
    )
    recorded = value("lt_analytics_events_total", {"outcome": "recorded"})
    invalid = value("lt_analytics_events_total", {"outcome": "invalid"})
    _observe_batch([Outcome.RECORDED, Outcome.RECORDED, Outcome.INVALID])
    assert value("lt_analytics_batch_size_events_count") == batches + 1
    assert value("lt_analytics_batch_size_events_sum") == events + 3
    assert value("lt_analytics_events_total", {"outcome": "recorded"}) == recorded + 2
    assert value("lt_analytics_events_total", {"outcome": "invalid"}) == invalid + 1


def test_lag_and_detections_are_observed() -> None:
    for kind in ("loop", "request_rate", "spend_velocity", "baseline_ratio"):
        assert REGISTRY.get_sample_value("lt_analytics_detections_total", {"kind": kind}) is not None
    count = value("lt_analytics_lag_seconds_count")
    fast = value("lt_analytics_lag_seconds_bucket", {"le": "1.0"})
    old = UsageRecorded(
        request_id="r", model="m", provider="p", occurred_at=datetime.now(UTC) - timedelta(minutes=1)
    )
    _observe([old], [])
    assert value("lt_analytics_lag_seconds_count") == count + 1
    assert value("lt_analytics_lag_seconds_bucket", {"le": "1.0"}) == fast  # a minute late is not under 1 s


@dataclass(frozen=True)
class _Message:
    tp: Any
    offset: int


@dataclass(frozen=True)
class _Event:
    message: _Message


class _Consumer:
    def highwater(self, tp: Any) -> int:
        return {"p0": 120, "p1": 10}[tp]


class _App:
    consumer = _Consumer()


def test_the_workers_consumer_lag_is_summed_over_partitions() -> None:
    sample = _lag_sampler(_App(), "g-an", "t-an")  # type: ignore[arg-type]
    labels = {"group": "g-an", "topic": "t-an"}
    assert REGISTRY.get_sample_value("lt_kafka_consumer_lag_messages", labels) == 0
    sample([_Event(_Message("p0", 99)), _Event(_Message("p0", 109))])
    assert value("lt_kafka_consumer_lag_messages", labels) == 10
    sample([_Event(_Message("p1", 4))])
    assert value("lt_kafka_consumer_lag_messages", labels) == 15
