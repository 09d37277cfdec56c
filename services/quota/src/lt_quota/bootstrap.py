"""The composition root: builds Postgres, Redis, the publisher, the elected outbox relay, the consumer, the
reservation sweeper and every use case from settings. The HTTP app (`main`) runs it in its lifespan; the
consumer and the sweeper run in the same process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from leaky_common.db import apply_migrations, create_database, create_pool, database_url_for
from leaky_common.events import Topics
from leaky_common.kafka import EventConsumer, EventPublisher, ensure_topics
from leaky_common.kafka_batch import BatchEventConsumer
from leaky_common.outbox import ElectedRelay
from leaky_common.store_spans import TracedRedis
from leaky_common.tasks import cancel_and_wait
from lt_quota.adapters.redis_packing import pack_with_hiredis
from lt_quota.adapters.redis_state import RedisState
from lt_quota.handlers import make_handler, make_usage_batch_handler
from lt_quota.settings import QuotaSettings
from lt_quota.usecases.admission import Admission
from lt_quota.usecases.context import Clock, QuotaContext, system_clock
from lt_quota.usecases.freezes import Freezes
from lt_quota.usecases.management import (
    Approvals,
    Keys,
    Management,
    Orgs,
    Pools,
    PoolViews,
    Sessions,
    Teams,
    TokenAliases,
    Users,
)
from lt_quota.usecases.reservations import DurableReservations
from lt_quota.usecases.settlement import Settlement
from lt_quota.usecases.settlement_batch import BatchSettlement
from lt_quota.usecases.signin import SignIn
from lt_quota.usecases.thresholds import Thresholds
from lt_quota.usecases.topups import TopUps

__all__ = ["Quota", "compose", "run_quota"]

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class Quota:
    """The quota service, composed: its infrastructure and the use cases over it."""

    ctx: QuotaContext
    admission: Admission
    settlement: Settlement
    topups: TopUps
    freezes: Freezes
    thresholds: Thresholds
    management: Management
    durable: DurableReservations
    signin: SignIn
    consumer: BatchEventConsumer | None = None
    commands: EventConsumer | None = None

    @property
    def db(self) -> asyncpg.Pool:
        """Postgres, the truth."""
        return self.ctx.db

    @property
    def state(self) -> RedisState:
        """Redis, the hot state."""
        return self.ctx.state


def _management(ctx: QuotaContext, admission: Admission, settlement: Settlement) -> Management:
    views = PoolViews(ctx)
    return Management(
        views=views,
        users=Users(ctx),
        teams=Teams(ctx, views),
        orgs=Orgs(ctx),
        pools=Pools(ctx, views),
        keys=Keys(ctx),
        approvals=Approvals(ctx),
        sessions=Sessions(ctx, views),
        tokens=TokenAliases(ctx, views, admission, settlement),
    )


def compose(settings: QuotaSettings, db: asyncpg.Pool, state: RedisState, clock: Clock) -> Quota:
    """Every use case over one shared context."""
    ctx = QuotaContext(settings, db, state, clock)
    freezes = Freezes(ctx)
    thresholds = Thresholds(ctx)
    durable = DurableReservations(ctx, freezes)
    admission = Admission(ctx, freezes, durable)
    settlement = Settlement(ctx, thresholds, durable)
    return Quota(
        ctx=ctx,
        admission=admission,
        settlement=settlement,
        topups=TopUps(ctx),
        freezes=freezes,
        thresholds=thresholds,
        management=_management(ctx, admission, settlement),
        durable=durable,
        signin=SignIn(ctx),
    )


async def _open_database(url: str, size: int) -> asyncpg.Pool:
    """Connect, creating the service's database on first start."""
    try:
        return await create_pool(url, max_size=size)
    except asyncpg.InvalidCatalogNameError:
        name = urlsplit(url).path.lstrip("/")
        await create_database(database_url_for(url, "postgres"), name)
        return await create_pool(url, max_size=size)


async def _open_state(settings: QuotaSettings, stack: contextlib.AsyncExitStack) -> RedisState:
    if settings.redis_cluster:
        cluster: RedisCluster[str] = RedisCluster.from_url(
            settings.redis_url,
            decode_responses=True,
            max_connections=settings.redis_max_connections,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        stack.push_async_callback(cluster.aclose)  # type: ignore[attr-defined]  # stubs predate aclose
        # The same command API for everything RedisState uses (scripts, pipelines without transactions, strings).
        return RedisState(cast("Redis[str]", cluster), settings.redis_prefix)
    # Bounded, waiting pool: a burst of admissions queues for a connection instead of opening hundreds.
    redis_pool: BlockingConnectionPool[Any] = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=5,
        decode_responses=True,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
    )
    pack_with_hiredis(redis_pool)
    stack.push_async_callback(redis_pool.aclose)  # type: ignore[attr-defined]  # stubs predate aclose
    redis: Redis[str] = TracedRedis(connection_pool=redis_pool, decode_responses=True)
    return RedisState(redis, settings.redis_prefix)


async def _sweep_forever(settlement: Settlement, interval_s: float) -> None:
    while True:
        try:
            charged = await settlement.sweep_expired()
            if charged:
                logger.info("charged %d expired reservations", charged)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reservation sweep failed; will retry")
        await asyncio.sleep(interval_s)


async def _start_sweeper(quota: Quota, interval_s: float, stack: contextlib.AsyncExitStack) -> None:
    sweeper = asyncio.create_task(_sweep_forever(quota.settlement, interval_s), name="sweeper")

    async def stop_sweeper() -> None:
        await cancel_and_wait(sweeper)

    stack.push_async_callback(stop_sweeper)


async def _start_messaging(quota: Quota, settings: QuotaSettings, stack: contextlib.AsyncExitStack) -> None:
    """The publisher, the elected outbox relay and the consumer of usage and commands."""
    await ensure_topics(
        settings,
        [
            Topics.USAGE,
            Topics.QUOTA_COMMANDS,
            Topics.FREEZE_REQUESTS,
            Topics.SAGA_REPLIES,
            Topics.QUOTA_EVENTS,
        ],
    )
    publisher = EventPublisher(settings)
    await publisher.start()
    stack.push_async_callback(publisher.stop)
    relay = ElectedRelay(settings.database_url, quota.db, publisher)
    await relay.start()
    stack.push_async_callback(relay.stop)
    # Usage events and commands on separate consumers: a command never waits behind a usage backlog.
    consumer = BatchEventConsumer(
        settings,
        group_id=settings.consumer_group,
        topics=[Topics.USAGE],
        handler=make_handler(quota.settlement, quota.topups, quota.freezes),
        batch_handler=make_usage_batch_handler(BatchSettlement(quota.settlement)),
        publisher=publisher,
    )
    commands = EventConsumer(
        settings,
        group_id=f"{settings.consumer_group}-commands",
        topics=[Topics.QUOTA_COMMANDS, Topics.FREEZE_REQUESTS],
        handler=make_handler(quota.settlement, quota.topups, quota.freezes),
        publisher=publisher,
    )
    for c in (consumer, commands):
        await c.start()
        stack.push_async_callback(c.stop)
    quota.consumer, quota.commands = consumer, commands


@contextlib.asynccontextmanager
async def run_quota(settings: QuotaSettings, clock: Clock | None = None) -> AsyncIterator[Quota]:
    """Open everything, prepare the hot state (bootstrap admin, counters, freezes), start the consumer, the
    relay and the sweeper; close it all on exit. `clock` (ms since epoch) is injectable for tests."""
    async with contextlib.AsyncExitStack() as stack:
        db = await _open_database(settings.database_url, settings.db_pool_size)
        stack.push_async_callback(db.close)
        await apply_migrations(db, MIGRATIONS)
        state = await _open_state(settings, stack)
        quota = compose(settings, db, state, clock or system_clock)
        if settings.bootstrap_admin_key:
            await quota.management.orgs.bootstrap_admin(settings.bootstrap_admin_key)
        # Redis may have lost its data while quota was down: open reservations back first (restore_freezes
        # marks Redis restored), then the counters (they start with what the open reservations hold).
        await quota.durable.recover()
        loaded = await quota.ctx.load_pools()
        frozen = await quota.freezes.restore_freezes()
        logger.info("loaded %d pools and %d frozen targets into redis", loaded, frozen)
        await quota.durable.start()
        stack.push_async_callback(quota.durable.stop)
        await _start_messaging(quota, settings, stack)
        await _start_sweeper(quota, settings.sweep_interval_s, stack)
        yield quota
