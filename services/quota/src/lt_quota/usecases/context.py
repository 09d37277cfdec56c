"""What every capability shares: settings, Postgres, Redis, the clock, the hot path's caches (keys, the pools
governing a key, session budgets) and the hot counters kept from the ledger.

Postgres is the truth. A counter is (re)built from the ledger under the pool's share lock, so no settlement
is between its ledger write and its counter update while the totals are read."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from leaky_common.errors import Unauthorized
from lt_quota.adapters import repository as repo
from lt_quota.adapters.redis_state import Counter, RedisState
from lt_quota.domain import (
    BucketDefaults,
    BucketSizes,
    Cap,
    Leg,
    bucket_sizes,
    counter_ttl_ms,
    default_bucket_sizes,
    hash_api_key,
    new_id,
    period_of,
    plan,
)
from lt_quota.domain.records import BucketOverrides, KeyRecord, OrgSettings, PoolRecord
from lt_quota.domain.rights import check_session_room
from lt_quota.settings import QuotaSettings

__all__ = ["Clock", "Governing", "QuotaContext", "system_clock"]

Clock = Callable[[], int]
"""Milliseconds since the epoch."""

_CACHE_MAX = 10_000


def system_clock() -> int:
    """Wall-clock milliseconds."""
    return int(time.time() * 1000)


@dataclass
class _CachedKey:
    until: float
    record: KeyRecord | None


@dataclass
class Governing:
    """What governs a key's requests besides the key itself: its pools and the team's vacation state."""

    until: float
    pools: list[PoolRecord]
    vacation: bool


def _bucket_defaults(s: QuotaSettings) -> BucketDefaults:
    sizes = BucketSizes(
        s.key_requests_per_period,
        s.key_tokens_per_period,
        s.user_requests_per_period,
        s.user_tokens_per_period,
    )
    return BucketDefaults(sizes, s.bucket_tiers, s.admin_bucket_multiplier)


class QuotaContext:
    """Shared state of the capabilities over Postgres (truth) and Redis (hot state)."""

    def __init__(self, settings: QuotaSettings, db: asyncpg.Pool, state: RedisState, clock: Clock) -> None:
        self.settings = settings
        self.db = db
        self.state = state
        self.clock = clock
        self.buckets = _bucket_defaults(settings)
        self._keys: dict[str, _CachedKey] = {}
        self._governing: dict[str, Governing] = {}
        self._sessions: dict[tuple[str, str], PoolRecord | None] = {}
        self._full_at = 0  # see `buckets_full_at`
        # The latest admission this process made (ms): buckets only fill by admissions, so none held more
        # than its capacity then, and they only drained afterwards.
        self.last_admitted_ms = 0
        self._full_at_read = -1e9

    def bucket_drain_ms(self) -> int:
        """The longest a full bucket takes to empty (and how long an idle bucket lives in Redis)."""
        s = self.settings
        return int(s.bucket_period_s * 1000 * (s.bucket_burst + 1)) + 1000

    async def buckets_full_at(self) -> int:
        """When Redis lost recent bucket levels (0: not lately), as every quota process learns it: read from
        Redis at most once a second (the process that found the loss knows it at once)."""
        now = time.monotonic()
        if now - self._full_at_read >= 1.0:
            self._full_at_read = now
            self._full_at = await self.state.buckets_full_at()
        return self._full_at

    async def buckets_lost(self, at_ms: int) -> None:
        """Redis lost bucket levels that may have been high: count the missing ones as full at `at_ms`."""
        await self.state.set_buckets_full_at(at_ms, self.bucket_drain_ms())
        self._full_at, self._full_at_read = at_ms, time.monotonic()

    def invalidate(self) -> None:
        """Forget cached keys and governing pools (after a management change that affects admission)."""
        self._keys.clear()
        self._governing.clear()

    def now(self) -> datetime:
        """The clock's time as an aware datetime."""
        return datetime.fromtimestamp(self.clock() / 1000, UTC)

    @staticmethod
    async def timezone(conn: asyncpg.Connection, org_id: str) -> str:
        """The org's time zone (UTC for an unknown org): periods follow its calendar."""
        org = await repo.org_settings(conn, org_id)
        return org.timezone if org else "UTC"

    # --- keys and what governs them (cached for `key_cache_ttl_s`) -----------------------------------------

    async def key_record(self, api_key: str) -> KeyRecord:
        """The record of a live key; 401 if unknown, revoked or expired."""
        key_hash = hash_api_key(api_key)
        now = time.monotonic()
        cached = self._keys.get(key_hash)
        if cached is None or cached.until < now:
            async with self.db.acquire() as conn:
                record = await repo.key_by_hash(conn, key_hash)
            if len(self._keys) >= _CACHE_MAX:
                self._keys.clear()
            cached = _CachedKey(now + self.settings.key_cache_ttl_s, record)
            self._keys[key_hash] = cached
        record = cached.record
        if record is None or record.revoked:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        if record.expires_at is not None and record.expires_at.timestamp() * 1000 <= self.clock():
            raise Unauthorized("API key expired", code="invalid_api_key")
        return record

    async def governing(self, record: KeyRecord) -> Governing:
        """The pools that govern a key's requests and whether a teammate is on vacation."""
        now = time.monotonic()
        found = self._governing.get(record.key_id)
        if found is None or found.until < now:
            async with self.db.acquire() as conn:
                pools = await repo.governing_pools(
                    conn, record.org_id, record.user_id, record.team_id, record.key_id
                )
                vacation = record.team_id is not None and await repo.teammate_on_vacation(
                    conn, record.team_id, record.user_id
                )
            if len(self._governing) >= _CACHE_MAX:
                self._governing.clear()
            found = Governing(now + self.settings.key_cache_ttl_s, pools, vacation)
            self._governing[record.key_id] = found
        return found

    # --- session budgets -----------------------------------------------------------------------------------

    def _remember_session(self, key: tuple[str, str], pool: PoolRecord | None) -> None:
        if len(self._sessions) >= _CACHE_MAX:
            self._sessions.clear()
        self._sessions[key] = pool

    async def session_pool(self, org: OrgSettings, session_id: str, *, bounded: bool = False) -> PoolRecord:
        """The session's budget (a usd pool), created at the org's default on first use. `bounded` (admission):
        a new session beyond the org's `sessions_per_org_per_day` is a 429 (an admin's budget is not bounded)."""
        cached = self._sessions.get((org.id, session_id))
        if cached is not None:
            return cached
        async with self.db.acquire() as conn, conn.transaction():
            pool = await repo.session_pool(conn, org.id, session_id)
            if pool is None:
                if bounded:
                    await repo.lock_org_sessions(conn, org.id)
                    since = self.now() - timedelta(days=1)
                    started = await repo.new_sessions_since(conn, org.id, since)
                    check_session_room(started, self.settings.sessions_per_org_per_day)
                pool_id = await repo.ensure_pool(
                    conn,
                    new_id(),
                    "session",
                    f"{org.id}/{session_id}",
                    org.id,
                    "usd",
                    org.default_session_budget_usd_micros,
                )
                pool = await repo.pool_by_id(conn, pool_id)
        assert pool is not None
        self._remember_session((org.id, session_id), pool)
        return pool

    async def session_budget(self, org: OrgSettings, session_id: str) -> PoolRecord | None:
        """The budget a session's requests must fit: created at the org's default on first use, or, when the
        org's default is 0 (no session budgets), only a budget an admin set for this session."""
        key = (org.id, session_id)
        if key in self._sessions:
            return self._sessions[key]
        if org.default_session_budget_usd_micros > 0:
            return await self.session_pool(org, session_id, bounded=True)
        async with self.db.acquire() as conn:
            pool = await repo.session_pool(conn, org.id, session_id)
        self._remember_session(key, pool)
        return pool

    def forget_session(self, org_id: str, session_id: str) -> None:
        """Drop a cached session budget (its limit changed)."""
        self._sessions.pop((org_id, session_id), None)

    # --- the balancer and bucket sizes, bound to this service's settings, clock and Redis keys -------------

    def counter(self, org_id: str, cap: Cap) -> Counter:
        """The admission script's counter for a cap of one of `org_id`'s pools (its Redis key)."""
        key = (
            self.state.vacation_key(org_id, cap.pool_id, cap.period_key or "-")
            if cap.vacation
            else self.state.pool_key(org_id, cap.pool_id, cap.period_key)
        )
        return Counter(key, cap.label, cap.unit, cap.group, cap.leg, cap.pct)

    def counters(
        self,
        record: KeyRecord,
        pools: list[PoolRecord],
        *,
        provider: str,
        model: str,
        critical: bool,
        vacation: bool,
        session: PoolRecord | None,
    ) -> tuple[list[Counter], list[str]]:
        """The counters of one request's caps and the balancer's alternatives (see `domain.balancer`)."""
        caps, sources = plan(
            record.org,
            pools,
            session,
            provider=provider,
            model=model,
            critical=critical,
            vacation=vacation,
            now_ms=self.clock(),
        )
        return [self.counter(record.org_id, c) for c in caps], sources

    def default_bucket_sizes(
        self, org: OrgSettings | None, tier: str, role: str, team: BucketOverrides | None = None
    ) -> BucketSizes:
        """Bucket sizes of a key without its own (the team's, else the org's, else the service's, scaled by
        tier and role)."""
        return default_bucket_sizes(self.buckets, org, tier, role, team)

    def bucket_sizes(self, record: KeyRecord) -> BucketSizes:
        """The bucket sizes one admission of this key uses."""
        return bucket_sizes(self.buckets, record)

    # --- hot counters from the ledger ----------------------------------------------------------------------

    async def load_pools(self, pool_ids: list[str] | None = None) -> int:
        """Load the current-period counters of pools missing from Redis (used = ledger, reserved = the open
        reservations' durable records); returns how many.
        One transaction holds the pools' share locks while the totals are read."""
        now = self.clock()
        loaded = 0
        async with self.db.acquire() as conn, conn.transaction():
            pools = await (repo.pools_by_ids(conn, pool_ids) if pool_ids else repo.pools_to_load(conn))
            await repo.lock_pools(conn, [p.id for p in pools], share=True)
            zones = {o: await self.timezone(conn, o) for o in {p.org_id for p in pools}}
            periods = {p.id: period_of(p.period, now, zones[p.org_id]) for p in pools}
            used = await repo.period_totals(conn, [(p.id, periods[p.id].key) for p in pools])
            keys = {p.id: self.state.pool_key(p.org_id, p.id, periods[p.id].key) for p in pools}
            reserved = await repo.open_reserved(conn, list(keys.values()))
            for pool in pools:
                per = periods[pool.id]
                loaded += await self.state.load_counter(
                    keys[pool.id],
                    pool.limit,
                    used.get(pool.id, 0),
                    counter_ttl_ms(per.end, self.clock()),
                    reserved.get(keys[pool.id], 0),
                )
        return loaded

    async def load_counter(self, key: str, pool_id: str, period_key: str, vacation: bool) -> bool:
        """Create a counter from the ledger if Redis lacks it (under the pool's share lock)."""
        async with self.db.acquire() as conn, conn.transaction():
            pool = (await repo.lock_pools(conn, [pool_id], share=True)).get(pool_id)
            if pool is None:
                return False
            used = await repo.ledger_sum(conn, pool_id, period_key, "vacation_share" if vacation else None)
            per = period_of(pool.period, self.clock(), await self.timezone(conn, pool.org_id))
            ttl_ms = counter_ttl_ms(per.end, self.clock()) if period_key else 0
            reserved = (await repo.open_reserved(conn, [key])).get(key, 0)
            return await self.state.load_counter(key, 0 if vacation else pool.limit, used, ttl_ms, reserved)

    async def load_missing(self, counters: list[Counter]) -> None:
        """Rebuild from the ledger the counters Redis lacks (a new period or session, or Redis lost them)."""
        states = await self.state.counter_states([c.key for c in counters])
        for c in counters:
            if states[c.key] is None:
                leg = Leg.parse(c.key, c.leg, c.unit)
                await self.load_counter(c.key, leg.pool_id, leg.period_key, leg.vacation)

    async def sync_limit(self, pool_id: str) -> None:
        """Make Redis hold a pool's limit from Postgres (after a credit, debit, approval or admin change)."""
        async with self.db.acquire() as conn:
            pool = await repo.pool_by_id(conn, pool_id)
            tz = await self.timezone(conn, pool.org_id) if pool else "UTC"
        self._governing.clear()
        if pool is None:
            return
        key = self.state.pool_key(pool.org_id, pool.id, period_of(pool.period, self.clock(), tz).key)
        if not await self.state.set_limit(key, pool.limit):
            await self.load_pools([pool_id])
