"""The composition root: builds the pool, repositories, detectors and use cases from settings, for the HTTP
app (`main.py`) and the faust worker (`worker.py`); the worker also gets the publisher and elected relay."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from leaky_common.db import apply_migrations, create_pool
from leaky_common.events import Topics
from leaky_common.kafka import EventPublisher, ensure_topics
from leaky_common.outbox import ElectedRelay
from lt_analytics.adapters.partitions import PartitionKeeper, partitioned_tables
from lt_analytics.adapters.repository import MIGRATIONS
from lt_analytics.adapters.thresholds import ThresholdStore
from lt_analytics.handlers import UsageHandler
from lt_analytics.settings import AnalyticsSettings
from lt_analytics.usecases.detect import AnomalyDetector
from lt_analytics.usecases.ingest import Ingest
from lt_analytics.usecases.reports import Reports

__all__ = ["Analytics", "WorkerRuntime", "open_analytics", "start_worker"]

# Detections should reach quota quickly: a frozen agent stops burning money sooner.
RELAY_INTERVAL_S = 0.2


@dataclass(frozen=True, slots=True)
class Analytics:
    """What both entry points share: the pool (migrations applied) and the use cases built on it."""

    settings: AnalyticsSettings
    pool: asyncpg.Pool
    reports: Reports
    ingest: Ingest

    async def close(self) -> None:
        """Close the pool."""
        await self.pool.close()


async def open_analytics(settings: AnalyticsSettings) -> Analytics:
    """Pool and migrations (advisory-locked, so the API and worker may race), then the use cases."""
    pool = await create_pool(settings.database_url, max_size=settings.db_pool_max)
    try:
        await apply_migrations(pool, MIGRATIONS)
    except BaseException:
        await pool.close()
        raise
    detector = AnomalyDetector(ThresholdStore(settings.anomaly_thresholds, ttl_s=settings.thresholds_cache_s))
    return Analytics(
        settings=settings,
        pool=pool,
        reports=Reports(pool, settings.anomaly_thresholds),
        ingest=Ingest(pool, detector),
    )


@dataclass(frozen=True, slots=True)
class WorkerRuntime:
    """The worker's share: the usage handler, and the publisher the elected relay sends the outbox with."""

    analytics: Analytics
    handler: UsageHandler
    publisher: EventPublisher
    relay: ElectedRelay
    partitions: PartitionKeeper

    async def stop(self) -> None:
        """Stop relaying and partition upkeep, then the publisher, then the pool."""
        await self.partitions.stop()
        await self.relay.stop()
        await self.publisher.stop()
        await self.analytics.close()


async def start_worker(settings: AnalyticsSettings) -> WorkerRuntime:
    """Everything the faust worker needs before it starts: topics, handler and the outbox relay (one relay
    per service, elected among the worker instances)."""
    analytics = await open_analytics(settings)
    await ensure_topics(settings, [settings.usage_topic, Topics.ALERTS, Topics.FREEZE_REQUESTS])
    publisher = EventPublisher(settings)
    await publisher.start()
    relay = ElectedRelay(settings.database_url, analytics.pool, publisher, interval_s=RELAY_INTERVAL_S)
    await relay.start()
    specs = partitioned_tables(settings.request_log_retention_days, settings.rollup_retention_days)
    partitions = PartitionKeeper(analytics.pool, specs, settings.partition_maintenance_interval_s)
    await partitions.start()
    return WorkerRuntime(analytics, UsageHandler(analytics.ingest), publisher, relay, partitions)
