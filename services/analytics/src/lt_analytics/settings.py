"""Analytics settings (env prefix LT_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from leaky_common.events import Topics
from leaky_common.settings import ServiceSettings
from lt_analytics.domain.thresholds import Thresholds


class AnalyticsSettings(ServiceSettings):
    """The API and the faust worker share these; the worker's consumer group is the faust app id."""

    service_name: str = "analytics"
    port: int = 8083

    consumer_group: str = "analytics"
    usage_topic: str = Topics.USAGE
    # faust wants a data directory even with the in-memory store; None -> a folder under the system temp dir.
    faust_datadir: Path | None = None
    db_pool_max: int = 5
    # The worker records up to `batch_max` events per transaction, waiting at most `batch_within_s` to fill one.
    # A larger batch merges more rollup rows per transaction (1000 drains faster than 500, docs/benchmarks.md);
    # a much larger one delays detection (2000: up to 6 s).
    batch_max: int = Field(default=1000, ge=1, le=10_000)
    batch_within_s: float = 0.05
    # A stopping worker waits this long for the batch it is writing to commit; cut off, the batch rolls back and
    # its events, never acked, are delivered again to whoever owns the partition next.
    stop_write_wait_s: float = Field(default=5.0, ge=0, le=60)
    # Events faust's consumer may hold ahead of the worker. Once that many wait, faust stops fetching, and its
    # fetch loop then sleeps up to a second before it asks again: with 4,096 (faust's default) the worker sat
    # idle for 0.4-0.7 s after each 4,096 events of a backlog. It works through 16,384 in about 2.5 s, longer
    # than that sleep. Costs about 8 MB more at the peak of a backlog.
    stream_buffer_max: int = Field(default=16_384, ge=1, le=1_000_000)
    # Retention: the request log is partitioned by UTC day and the rollups by UTC month; the worker drops a
    # partition once all of it is older than this many days, and creates the next week's partitions ahead.
    request_log_retention_days: int = Field(default=90, ge=1, le=3650)
    rollup_retention_days: int = Field(default=800, ge=1, le=36500)
    partition_maintenance_interval_s: float = Field(default=3600.0, ge=1.0)
    # The worker's own /metrics (and /health) port, on `host` (faust's web server is off); 0: any free port.
    worker_metrics_port: int = 8087

    # Global detector defaults, as JSON (LT_ANOMALY_THRESHOLDS='{"loop_consecutive": 3}'); unset fields keep
    # their defaults. The thresholds API overrides them globally and per org at run time.
    anomaly_thresholds: Thresholds = Thresholds()
    # How long the worker caches threshold overrides read from the database.
    thresholds_cache_s: float = 5.0
