"""Quota's hot state in Redis: counters, reservations, rate-limit buckets and freezes, changed only by Lua.

Layout (every key starts with the configured prefix, `lt:` by default). The keys one admission touches all
carry their org's hash tag `{<tag>}` (`org_tag`: 8 hex digits of the org id's SHA-1), so they share one hash slot
and the scripts run unchanged on Redis Cluster, each org's keys on one node; a reservation id begins with its
org's tag, so the keys of a settlement or release follow from the id alone:
    {tag}:pool:<pool_id>[:<period_key>]    hash  limit, used, reserved   (a pool's counter for one period)
    {tag}:vac:<team_pool_id>:<period_key>  hash  used, reserved          (vacation share borrowed from a team pool)
    {tag}:res:<reservation_id>             hash  n, k<i>/a<i>/u<i>/d<i> per leg, pool, amount, src, btok, bk1,
                                                 bk2, user, request, expires
                                                 rel (set once released: a<i> and amount are then what was used)
    {tag}:res:by_expiry                    zset  the org's reservation ids scored by expiry (ms)
    {tag}:bucket:<key|user>:<id>:<req|tok> hash  level (float: what is used), ts (ms), win (fixed windows)
    {tag}:freeze:<user|key|session>:<id>   string reason, with the freeze's TTL (none: until lifted); a
                                                 session's id is `<org>/<session>`
Service-wide keys, each used alone:
    restored                            string set once freezes are restored; gone = Redis lost its data
    buckets_full_at                     string ms when Redis was found to have lost recent bucket levels;
                                        until it expires, a missing bucket counts as full at that time
    login:<acct|addr>:<sha256>          string login attempts in the current window (expires with it)

Postgres is the truth: every counter can be rebuilt from the ledger (`used`), reservations are charged from
the ledger's idempotent rows, and the scripts only keep the hot copy exact between rebuilds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from leaky_common.client_spans import name_script
from leaky_common.contracts import org_tag
from lt_quota.adapters.admit_args import AdmitArgs, Counter
from lt_quota.adapters.script_pipeline import ScriptCall, ScriptPipeline

__all__ = ["AdmitArgs", "Counter", "PoolState", "RedisState", "org_tag", "reservation_fields"]

_TAG_LEN = len(org_tag(None))

logger = logging.getLogger(__name__)


def _grouped(ids: list[str]) -> dict[str, list[int]]:
    """Positions of `ids` by their reservation's tag (one script call per hash slot)."""
    groups: dict[str, list[int]] = {}
    for i, rid in enumerate(ids):
        groups.setdefault(rid[:_TAG_LEN], []).append(i)
    return groups


def _script(name: str) -> str:
    """The text of one Lua script shipped in `lt_quota/adapters/lua/`."""
    return (resources.files("lt_quota.adapters") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class PoolState:
    """A counter's live numbers."""

    limit: int
    used: int
    reserved: int


def reservation_fields(raw: Any) -> dict[str, str]:
    """A hash's fields from a script's HGETALL reply (a flat list of field, value)."""
    items = [str(v) for v in raw]
    return dict(zip(items[::2], items[1::2], strict=True))


class RedisState:
    """Typed access to the Lua scripts (`adapters/lua/*.lua`) and the keys above."""

    def __init__(self, redis: Redis[str], prefix: str = "lt:") -> None:
        self.redis = redis
        self._cluster = isinstance(redis, RedisCluster)
        self._pipeline = ScriptPipeline(redis)
        self._p = prefix
        self._admit_lua = _script("admit")
        self._admit = self._register("admit", self._admit_lua)
        self._settle = self._register("settle")
        self._load_counter = self._register("load_counter")
        self._resync_used = self._register("resync_used")
        self._set_limit = self._register("set_limit")
        self._release = self._register("release")
        self._settle_many = self._register("settle_many")
        self._restore_reservation = self._register("restore_reservation")
        self._reservations = self._register("reservations")
        self._count_attempt = self._register("count_attempt")

    def _register(self, name: str, source: str | None = None) -> AsyncScript:
        """Register a script with redis-py, and its name for the EVALSHA spans (`client_spans`)."""
        text = source if source is not None else _script(name)
        name_script(hashlib.sha1(text.encode()).hexdigest(), name)  # noqa: S324 - Redis's own script id
        return self.redis.register_script(text)

    def _t(self, org_id: str | None) -> str:
        return f"{self._p}{{{org_tag(org_id)}}}:"

    def pool_key(self, org_id: str | None, pool_id: str, period_key: str = "") -> str:
        return f"{self._t(org_id)}pool:{pool_id}" + (f":{period_key}" if period_key else "")

    def vacation_key(self, org_id: str | None, team_pool_id: str, period_key: str) -> str:
        return f"{self._t(org_id)}vac:{team_pool_id}:{period_key}"

    def reservation_key(self, reservation_id: str) -> str:
        return f"{self._p}{{{reservation_id[:_TAG_LEN]}}}:res:{reservation_id}"

    def expiry_key(self, reservation_id: str) -> str:
        """The expiry set of the reservation's org (`reservation_id` or a bare tag)."""
        return f"{self._p}{{{reservation_id[:_TAG_LEN]}}}:res:by_expiry"

    def freeze_key(self, org_id: str | None, target_type: str, target_id: str) -> str:
        return f"{self._t(org_id)}freeze:{target_type}:{target_id}"

    def bucket_key(self, org_id: str | None, scope: str, scope_id: str, kind: str) -> str:
        return f"{self._t(org_id)}bucket:{scope}:{scope_id}:{kind}"

    async def admit(self, a: AdmitArgs) -> list[Any]:
        """Run the admission script once (EVALSHA); returns its raw reply."""
        keys, args = self._admit_call(a)
        if self._cluster:  # its pipelines refuse EVALSHA
            return cast(list[Any], await self._admit(keys=keys, args=args))
        (reply,) = await self._pipeline.run_together([(self._admit, keys, args)], "admit")
        if isinstance(reply, Exception):
            raise reply
        return cast(list[Any], reply)

    async def release_then_admit(
        self, releases: Sequence[tuple[str, int, int]], a: AdmitArgs
    ) -> tuple[list[dict[str, str] | None], list[Any]]:
        """Releases (reservation id, tokens, micro-dollars used), then an admission, in one round trip: a pipeline
        on one connection, which Redis runs in this order (on Redis Cluster, whose pipelines refuse scripts, one
        call after the other). Returns each release's fields after (None if released or settled before, never
        existed, or failed: its usage event settles it) and the admission's raw reply."""
        if self._cluster:  # its pipelines refuse EVALSHA: the releases, then the admission, one call each
            alone = await asyncio.gather(*(self.release(r, tokens, usd) for r, tokens, usd in releases))
            return list(alone), await self.admit(a)
        keys, args = self._admit_call(a)
        calls: list[ScriptCall] = [
            (self._release, [self.reservation_key(r)], [tokens, usd]) for r, tokens, usd in releases
        ]
        calls.append((self._admit, keys, args))
        *release_replies, admit_reply = await self._pipeline.run_together(calls, "admit")
        if isinstance(admit_reply, Exception):
            raise admit_reply
        released: list[dict[str, str] | None] = []
        for reply in release_replies:
            if isinstance(reply, Exception):
                logger.warning(
                    "a release riding on an admission failed (%s); its usage event settles it", reply
                )
            released.append(reservation_fields(reply) if reply and not isinstance(reply, Exception) else None)
        return released, cast(list[Any], admit_reply)

    def _admit_call(self, a: AdmitArgs) -> tuple[list[str], list[str | int | float]]:
        """The admission script's keys and arguments."""
        org = a.org_id
        keys = [
            self.freeze_key(org, "user", a.user_id),
            self.freeze_key(org, "key", a.key_id),
            self.freeze_key(org, "session", a.session_id or ""),
            self.bucket_key(org, "key", a.key_id, "req"),
            self.bucket_key(org, "key", a.key_id, "tok"),
            self.bucket_key(org, "user", a.user_id, "req"),
            self.bucket_key(org, "user", a.user_id, "tok"),
            self.reservation_key(a.reservation_id),
            self.expiry_key(a.reservation_id),
            *(c.key for c in a.counters),
        ]
        args: list[str | int | float] = [
            a.now_ms,
            a.prompt_tokens,
            a.max_output_tokens,
            a.min_output_tokens,
            a.input_price,
            a.output_price,
            a.key_requests,
            a.key_tokens,
            a.user_requests,
            a.user_tokens,
            a.period_ms,
            a.strategy,
            a.reservation_id,
            a.expires_ms,
            "1" if a.session_id else "0",
            a.user_id,
            a.request_id,
            a.bucket_output_tokens,
            len(a.counters),
            len(a.sources),
            a.burst,
            a.buckets_full_at,
            *a.sources,
        ]
        for c in a.counters:
            args.extend((c.label, c.unit, c.group, c.pct, c.leg))
        return keys, args

    async def admission_script_ready(self) -> bool:
        """Load the admission script (compiled by Redis, no key touched): True when Redis holds it."""
        client: Any = self.redis  # SCRIPT LOAD is untyped in types-redis
        try:
            async with asyncio.timeout(2.0):
                sha = await client.script_load(self._admit_lua)
        except (RedisError, OSError, TimeoutError):
            return False
        return bool(sha == hashlib.sha1(self._admit_lua.encode()).hexdigest())  # noqa: S324 - Redis's own id

    async def settle(self, reservation_id: str, actual_tokens: int, leg_amounts: list[int]) -> bool:
        """Apply a settlement; False if the reservation was already settled (or never existed)."""
        keys = [self.reservation_key(reservation_id), self.expiry_key(reservation_id)]
        return bool(await self._settle(keys=keys, args=[reservation_id, actual_tokens, *leg_amounts]))

    async def release(self, reservation_id: str, tokens: int, usd_micros: int) -> dict[str, str] | None:
        """Shrink an open reservation to what its answer used; its fields after, or None if it was released or
        settled before (or never existed)."""
        raw = await self._release(keys=[self.reservation_key(reservation_id)], args=[tokens, usd_micros])
        return reservation_fields(raw) if raw else None

    async def settle_many(self, settlements: list[tuple[str, int, list[int]]]) -> list[bool]:
        """Apply many settlements (reservation id, actual tokens, amount per leg), one call per org's hash slot
        (the calls run concurrently); per settlement, False if Redis did not hold the reservation (settled
        before, or lost)."""
        if not settlements:
            return []
        out = [False] * len(settlements)
        groups = _grouped([r for r, _, _ in settlements])

        async def one(positions: list[int]) -> None:
            part = [settlements[i] for i in positions]
            keys = [self.expiry_key(part[0][0]), *(self.reservation_key(r) for r, _, _ in part)]
            plans = orjson.dumps([[r, tokens, amounts] for r, tokens, amounts in part]).decode()
            for i, v in zip(positions, await self._settle_many(keys=keys, args=[plans]), strict=True):
                out[i] = bool(v)

        await asyncio.gather(*(one(p) for p in groups.values()))
        return out

    async def reservations(self, reservation_ids: list[str]) -> list[dict[str, str] | None]:
        """The fields of many reservations, one round trip per org's hash slot (None where Redis holds none)."""
        if not reservation_ids:
            return []
        out: list[dict[str, str] | None] = [None] * len(reservation_ids)

        async def one(positions: list[int]) -> None:
            keys = [self.reservation_key(reservation_ids[i]) for i in positions]
            rows = orjson.loads(await self._reservations(keys=keys))
            for i, row in zip(positions, rows, strict=True):
                out[i] = reservation_fields(row) if row else None

        await asyncio.gather(*(one(p) for p in _grouped(reservation_ids).values()))
        return out

    async def restore_reservation(self, reservation_id: str, expires_ms: int, fields: dict[str, str]) -> bool:
        """Put back a reservation Redis lost (from its durable record); False if Redis still holds it."""
        flat = [v for item in fields.items() for v in item]
        keys = [self.reservation_key(reservation_id), self.expiry_key(reservation_id)]
        return bool(await self._restore_reservation(keys=keys, args=[expires_ms, reservation_id, *flat]))

    async def reservation(self, reservation_id: str) -> dict[str, str] | None:
        """The reservation's fields, or None once settled (or lost, or left under the key layout before hash
        tags: such a reservation is settled from its usage event and the ledger, like a lost one)."""
        data = await self.redis.hgetall(self.reservation_key(reservation_id))
        return data or None

    async def expired_reservations(self, tags: list[str], now_ms: int, limit: int = 100) -> list[str]:
        """Reservation ids of the orgs with these tags whose TTL ended at or before `now_ms` (one pipeline)."""
        if not tags:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for tag in tags:
            pipe.zrangebyscore(self.expiry_key(tag), "-inf", now_ms, start=0, num=limit)
        found = [str(i) for ids in await pipe.execute() for i in ids]
        return found[:limit]

    async def open_reservations(self, tags: list[str]) -> int:
        """How many reservations Redis holds for the orgs with these tags (charged or not yet swept)."""
        if not tags:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for tag in tags:
            pipe.zcard(self.expiry_key(tag))
        return sum(int(n) for n in await pipe.execute())

    async def forget_reservation(self, reservation_id: str) -> None:
        """Drop a dangling expiry entry whose reservation hash is gone."""
        await self.redis.zrem(self.expiry_key(reservation_id), reservation_id)

    async def load_counter(self, key: str, limit: int, used: int, ttl_ms: int = 0, reserved: int = 0) -> bool:
        """Create a counter if missing (expiring after `ttl_ms` if > 0), holding `reserved` for the open
        reservations it already has; True if it was created."""
        return bool(await self._load_counter(keys=[key], args=[limit, used, ttl_ms, reserved]))

    async def resync_used(self, key: str, used: int) -> bool:
        """Set a loaded counter's `used` to the ledger's figure; False if the counter is not loaded."""
        return bool(await self._resync_used(keys=[key], args=[used]))

    async def set_limit(self, key: str, limit: int) -> bool:
        """Set a loaded counter's limit; False if it is not in Redis."""
        return bool(await self._set_limit(keys=[key], args=[limit]))

    async def counter_states(self, keys: list[str]) -> dict[str, PoolState | None]:
        """Live numbers of several counters (None for counters not loaded)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, ["limit", "used", "reserved"])
        rows = await pipe.execute()
        out: dict[str, PoolState | None] = {}
        for key, row in zip(keys, rows, strict=True):
            out[key] = None if row[1] is None else PoolState(int(row[0] or 0), int(row[1]), int(row[2] or 0))
        return out

    async def pool_states(self, org_id: str, pool_ids: list[str]) -> dict[str, PoolState | None]:
        """Live numbers of an org's pools without a period, by pool id."""
        states = await self.counter_states([self.pool_key(org_id, p) for p in pool_ids])
        return {p: states[self.pool_key(org_id, p)] for p in pool_ids}

    async def mark_restored(self) -> None:
        """Note that freezes were written from Postgres; the marker vanishes when Redis loses its data."""
        await self.redis.set(f"{self._p}restored", "1")

    async def set_buckets_full_at(self, now_ms: int, window_ms: int) -> None:
        """Buckets Redis lost count as full at `now_ms` for `window_ms` (the longest a full bucket drains)."""
        await self.redis.set(f"{self._p}buckets_full_at", str(now_ms), px=max(window_ms, 1))

    async def buckets_full_at(self) -> int:
        """When Redis lost recent bucket levels (0: not within a bucket's drain time)."""
        value = await self.redis.get(f"{self._p}buckets_full_at")
        return int(value) if value else 0

    async def was_lost(self) -> bool:
        """True if Redis lost its data since the last `mark_restored`."""
        return not await self.redis.exists(f"{self._p}restored")

    def login_key(self, kind: str, subject: str) -> str:
        """The attempt counter of one account or client address (hashed: no email or address in Redis)."""
        return f"{self._p}login:{kind}:{hashlib.sha256(subject.encode()).hexdigest()}"

    async def count_attempt(self, key: str, window_ms: int) -> tuple[int, int]:
        """Count one attempt in `key`'s fixed window: (attempts so far in it, ms until it ends)."""
        n, ttl = await self._count_attempt(keys=[key], args=[window_ms])
        return int(n), int(ttl)

    async def clear_attempts(self, key: str) -> None:
        """Forget the attempts counted in `key` (a successful login clears its account's count)."""
        await self.redis.delete(key)

    async def freeze(
        self, org_id: str | None, target_type: str, target_id: str, reason: str, ttl_ms: int | None
    ) -> None:
        """Freeze one of an org's users, keys or sessions for `ttl_ms` (None: until unfrozen)."""
        key = self.freeze_key(org_id, target_type, target_id)
        if ttl_ms is None:
            await self.redis.set(key, reason)
        else:
            await self.redis.set(key, reason, px=max(ttl_ms, 1))

    async def unfreeze(self, org_id: str | None, target_type: str, target_id: str) -> None:
        """Lift a freeze."""
        await self.redis.delete(self.freeze_key(org_id, target_type, target_id))
