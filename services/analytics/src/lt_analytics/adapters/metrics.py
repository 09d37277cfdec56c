"""Analytics' Prometheus metrics: the worker's batches, its lag behind the requests, and what it detects."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Histogram

from lt_analytics.domain.thresholds import Kind

__all__ = ["BATCH_SIZE", "DETECTIONS", "EVENTS", "LAG"]

BATCH_SIZE = Histogram(
    "lt_analytics_batch_size_events",
    "Usage events per batch the worker records in one transaction",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
LAG = Histogram(
    "lt_analytics_lag_seconds",
    "From a usage event's occurrence (at the gateway) to its being recorded and checked by the worker",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
DETECTIONS = Counter(
    "lt_analytics_detections_total", "Anomalies detected and announced, by detector", ["kind"]
)
EVENTS = Counter("lt_analytics_events_total", "Usage messages the worker handled, by outcome", ["outcome"])

for _kind in get_args(Kind):  # every series exists from the start (0, not "No data")
    DETECTIONS.labels(_kind)
