"""Quota's hot state in Redis: pools, reservations, leaky buckets and freezes, changed only by Lua scripts.

Layout (every key starts with the configured prefix, `lt:` by default):
    pool:<pool_id>                      hash  limit, used, reserved
    res:<reservation_id>                hash  pool, amount, user, request, expires
    res:by_expiry                       zset  reservation_id scored by expiry (ms)
    bucket:<key|user>:<id>:<req|tok>    hash  level (float), ts (ms)
    freeze:<user|key|session>:<id>      string reason, with the freeze's TTL (none: until lifted)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

__all__ = ["AdmitArgs", "PoolState", "RedisState"]

# One call per admission: freezes, request buckets, budget (grant), token buckets, then commit all of it.
# Times come from ARGV (the caller's clock) so the script is deterministic and testable; works on Redis 6.2+.
_ADMIT = """
local now = tonumber(ARGV[1])
local why = redis.call('GET', KEYS[1])
if why then return {'frozen', 'user', why} end
why = redis.call('GET', KEYS[2])
if why then return {'frozen', 'key', why} end
if ARGV[13] == '1' then
  why = redis.call('GET', KEYS[3])
  if why then return {'frozen', 'session', why} end
end

local period = tonumber(ARGV[9])
local names = {'key_requests', 'key_tokens', 'user_requests', 'user_tokens'}
local caps = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
local lv = {}
local ts = {}
for i = 1, 4 do
  local v = redis.call('HMGET', KEYS[3 + i], 'level', 'ts')
  local level = tonumber(v[1]) or 0
  local last = tonumber(v[2]) or now
  local elapsed = now - last
  if elapsed < 0 then elapsed = 0 end
  level = level - elapsed * caps[i] / period
  if level < 0 then level = 0 end
  lv[i] = level
  ts[i] = math.max(last, now)
end

-- Time (ms) until bucket i has room for `cost`, or 0 if it has room now.
local function wait_ms(i, cost)
  local over = lv[i] + cost - caps[i]
  if over <= 0 then return 0 end
  return math.ceil(over * period / caps[i])
end

local function rate_denial(i1, i2, cost)
  local w1 = wait_ms(i1, cost)
  local w2 = wait_ms(i2, cost)
  if w1 == 0 and w2 == 0 then return nil end
  if w1 >= w2 then return {'rate', names[i1], w1} end
  return {'rate', names[i2], w2}
end

local denial = rate_denial(1, 3, 1)
if denial then return denial end

local pool = redis.call('HMGET', KEYS[8], 'limit', 'used', 'reserved')
if not pool[1] then return {'nopool'} end
local remaining = tonumber(pool[1]) - (tonumber(pool[2]) or 0) - (tonumber(pool[3]) or 0)
local prompt = tonumber(ARGV[2])
local min_out = tonumber(ARGV[4])
local grant = math.min(tonumber(ARGV[3]), remaining - prompt)
if grant < min_out then return {'quota', math.max(remaining, 0)} end

-- The grant must also fit both token buckets, otherwise it is a rate limit, not a budget problem.
local headroom = math.floor(math.min(caps[2] - lv[2], caps[4] - lv[4]))
if headroom - prompt < grant then grant = headroom - prompt end
if grant < min_out then
  denial = rate_denial(2, 4, prompt + min_out)
  if denial then return denial end
  return {'rate', 'tokens', 1000}
end

local reserved = prompt + grant
for i = 1, 4 do
  local cost = reserved
  if i % 2 == 1 then cost = 1 end
  lv[i] = lv[i] + cost
  redis.call('HSET', KEYS[3 + i], 'level', string.format('%.6f', lv[i]), 'ts', string.format('%d', ts[i]))
  redis.call('PEXPIRE', KEYS[3 + i], math.ceil(period) + 1000)
end
redis.call('HINCRBY', KEYS[8], 'reserved', reserved)
redis.call('HSET', KEYS[9], 'pool', ARGV[12], 'amount', reserved, 'user', ARGV[14], 'request', ARGV[15],
  'expires', ARGV[11])
redis.call('ZADD', KEYS[10], ARGV[11], ARGV[10])

local function view(i1, i2)
  local r1 = math.floor(caps[i1] - lv[i1])
  local r2 = math.floor(caps[i2] - lv[i2])
  local i = i1
  if r2 < r1 then i = i2 end
  local rem = math.max(math.floor(caps[i] - lv[i]), 0)
  return caps[i], rem, math.ceil(lv[i] * period / caps[i])
end
local lr, rr, tr = view(1, 3)
local lt, rt, tt = view(2, 4)
return {'ok', reserved, grant, lr, rr, tr, lt, rt, tt}
"""

# Settle a reservation at `actual`: reserved -= reserved amount, used += actual. No-op when already settled.
_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local amount = tonumber(redis.call('HGET', KEYS[1], 'amount')) or 0
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'reserved', -amount)
  redis.call('HINCRBY', KEYS[3], 'used', ARGV[2])
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

_LOAD_POOL = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'limit', ARGV[1], 'used', ARGV[2], 'reserved', 0)
return 1
"""

_SET_LIMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'limit', ARGV[1])
return 1
"""


@dataclass(frozen=True)
class AdmitArgs:
    """Inputs of one admission."""

    now_ms: int
    user_id: str
    key_id: str
    session_id: str | None
    pool_id: str
    reservation_id: str
    request_id: str
    expires_ms: int
    prompt_tokens: int
    max_output_tokens: int
    min_output_tokens: int
    key_requests: int
    key_tokens: int
    user_requests: int
    user_tokens: int
    period_ms: int


@dataclass(frozen=True)
class PoolState:
    """A pool's live numbers."""

    limit: int
    used: int
    reserved: int


class RedisState:
    """Typed access to the Lua scripts and keys above."""

    def __init__(self, redis: Redis[str], prefix: str = "lt:") -> None:
        self.redis = redis
        self._p = prefix
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)
        self._load_pool = redis.register_script(_LOAD_POOL)
        self._set_limit = redis.register_script(_SET_LIMIT)

    def pool_key(self, pool_id: str) -> str:
        return f"{self._p}pool:{pool_id}"

    def reservation_key(self, reservation_id: str) -> str:
        return f"{self._p}res:{reservation_id}"

    @property
    def expiry_key(self) -> str:
        return f"{self._p}res:by_expiry"

    def freeze_key(self, target_type: str, target_id: str) -> str:
        return f"{self._p}freeze:{target_type}:{target_id}"

    def bucket_key(self, scope: str, scope_id: str, kind: str) -> str:
        return f"{self._p}bucket:{scope}:{scope_id}:{kind}"

    async def admit(self, a: AdmitArgs) -> list[Any]:
        """Run the admission script once (EVALSHA); returns its raw reply."""
        keys = [
            self.freeze_key("user", a.user_id),
            self.freeze_key("key", a.key_id),
            self.freeze_key("session", a.session_id or ""),
            self.bucket_key("key", a.key_id, "req"),
            self.bucket_key("key", a.key_id, "tok"),
            self.bucket_key("user", a.user_id, "req"),
            self.bucket_key("user", a.user_id, "tok"),
            self.pool_key(a.pool_id),
            self.reservation_key(a.reservation_id),
            self.expiry_key,
        ]
        args: list[str | int] = [
            a.now_ms,
            a.prompt_tokens,
            a.max_output_tokens,
            a.min_output_tokens,
            a.key_requests,
            a.key_tokens,
            a.user_requests,
            a.user_tokens,
            a.period_ms,
            a.reservation_id,
            a.expires_ms,
            a.pool_id,
            "1" if a.session_id else "0",
            a.user_id,
            a.request_id,
        ]
        return cast(list[Any], await self._admit(keys=keys, args=args))

    async def settle(self, reservation_id: str, pool_id: str, actual: int) -> bool:
        """Apply a settlement; False if the reservation was already settled (or never existed)."""
        keys = [self.reservation_key(reservation_id), self.expiry_key, self.pool_key(pool_id)]
        return bool(await self._settle(keys=keys, args=[reservation_id, actual]))

    async def reservation(self, reservation_id: str) -> dict[str, str] | None:
        """The reservation's fields, or None once settled."""
        data = await self.redis.hgetall(self.reservation_key(reservation_id))
        return data or None

    async def expired_reservations(self, now_ms: int, limit: int = 100) -> list[str]:
        """Reservation ids whose TTL ended at or before `now_ms`."""
        ids = await self.redis.zrangebyscore(self.expiry_key, "-inf", now_ms, start=0, num=limit)
        return [str(i) for i in ids]

    async def forget_reservation(self, reservation_id: str) -> None:
        """Drop a dangling expiry entry whose reservation hash is gone."""
        await self.redis.zrem(self.expiry_key, reservation_id)

    async def load_pool(self, pool_id: str, limit: int, used: int) -> bool:
        """Create the pool's hash if missing; True if it was created."""
        return bool(await self._load_pool(keys=[self.pool_key(pool_id)], args=[limit, used]))

    async def set_limit(self, pool_id: str, limit: int) -> bool:
        """Set a loaded pool's limit; False if the pool is not in Redis."""
        return bool(await self._set_limit(keys=[self.pool_key(pool_id)], args=[limit]))

    async def pool_states(self, pool_ids: list[str]) -> dict[str, PoolState | None]:
        """Live numbers of several pools (None for pools not loaded)."""
        pipe = self.redis.pipeline(transaction=False)
        for pool_id in pool_ids:
            pipe.hmget(self.pool_key(pool_id), ["limit", "used", "reserved"])
        rows = await pipe.execute()
        out: dict[str, PoolState | None] = {}
        for pool_id, row in zip(pool_ids, rows, strict=True):
            out[pool_id] = (
                None if row[0] is None else PoolState(int(row[0]), int(row[1] or 0), int(row[2] or 0))
            )
        return out

    async def freeze(self, target_type: str, target_id: str, reason: str, ttl_ms: int | None) -> None:
        """Freeze a user, key or session for `ttl_ms` (None: until unfrozen)."""
        key = self.freeze_key(target_type, target_id)
        if ttl_ms is None:
            await self.redis.set(key, reason)
        else:
            await self.redis.set(key, reason, px=max(ttl_ms, 1))

    async def unfreeze(self, target_type: str, target_id: str) -> None:
        """Lift a freeze."""
        await self.redis.delete(self.freeze_key(target_type, target_id))
