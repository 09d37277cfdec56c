"""Quota's hot state in Redis: counters, reservations, rate-limit buckets and freezes, changed only by Lua.

Layout (every key starts with the configured prefix, `lt:` by default):
    pool:<pool_id>[:<period_key>]       hash  limit, used, reserved   (a pool's counter for one period)
    vac:<team_pool_id>:<period_key>     hash  used, reserved          (vacation share borrowed from a team pool)
    res:<reservation_id>                hash  n, k<i>/a<i>/u<i>/d<i> per leg, pool, amount, src, btok, bk1, bk2,
                                              user, request, expires
    res:by_expiry                       zset  reservation_id scored by expiry (ms)
    bucket:<key|user>:<id>:<req|tok>    hash  level (float: what is used), ts (ms), win (fixed windows)
    freeze:<user|key|session>:<id>      string reason, with the freeze's TTL (none: until lifted); a
                                        session's id is `<org>/<session>`
    restored                            string set once freezes are restored; gone = Redis lost its data

Postgres is the truth: every counter can be rebuilt from the ledger (`used`), reservations are charged from
the ledger's idempotent rows, and the scripts only keep the hot copy exact between rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

__all__ = ["AdmitArgs", "Counter", "PoolState", "RedisState"]

# One call per admission: freezes, request buckets, every cap (with the balancer's alternatives), token
# buckets, then the reservation. Times come from ARGV (the caller's clock): deterministic and testable.
_ADMIT = """
local now = tonumber(ARGV[1])
local why = redis.call('GET', KEYS[1])
if why then return {'frozen', 'user', why} end
why = redis.call('GET', KEYS[2])
if why then return {'frozen', 'key', why} end
if ARGV[15] == '1' then
  why = redis.call('GET', KEYS[3])
  if why then return {'frozen', 'session', why} end
end

local period = tonumber(ARGV[11])
local strategy = ARGV[12]
local names = {'key_requests', 'key_tokens', 'user_requests', 'user_tokens'}
-- ARGV[7..10] are the amounts per period: the leak (or refill) rate. A token bucket may hold a burst of
-- more than one period's worth (ARGV[21] times); a leaky bucket and a fixed window hold exactly that.
local caps, rates = {}, {}
local burst = 1
if strategy == 'token_bucket' then burst = tonumber(ARGV[21]) end
for i = 1, 4 do
  rates[i] = tonumber(ARGV[6 + i]) / period
  caps[i] = math.floor(tonumber(ARGV[6 + i]) * burst)
end
local lv, ts, win = {}, {}, {}
local window = math.floor(now / period)
for i = 1, 4 do
  local v = redis.call('HMGET', KEYS[3 + i], 'level', 'ts', 'win')
  local level = tonumber(v[1]) or 0
  if strategy == 'fixed_window' then
    if tonumber(v[3]) ~= window then level = 0 end
    ts[i] = now
  else
    -- leaky bucket (level drains) or token bucket (tokens = capacity - level refill): same rate either way
    local last = tonumber(v[2]) or now
    local elapsed = now - last
    if elapsed < 0 then elapsed = 0 end
    level = level - elapsed * rates[i]
    if level < 0 then level = 0 end
    ts[i] = math.max(last, now)
  end
  lv[i] = level
end

-- Time (ms) until bucket i has room for `cost`, or 0 if it has room now.
local function wait_ms(i, cost)
  local over = lv[i] + cost - caps[i]
  if over <= 0 then return 0 end
  if strategy == 'fixed_window' then return (window + 1) * period - now end
  return math.ceil(over / rates[i])
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

-- Counters: group 0 must always fit (org pools, key caps, session budget); groups 1..na are the balancer's
-- alternatives in order (personal, priority bypass, vacation share): the first that fits provides the tokens.
local prompt = tonumber(ARGV[2])
local max_out = tonumber(ARGV[3])
local min_out = tonumber(ARGV[4])
local pin = tonumber(ARGV[5])
local pout = tonumber(ARGV[6])
local nc = tonumber(ARGV[19])
local na = tonumber(ARGV[20])
local base = 21 + na
local lim, rem, unit, grp, label, leg = {}, {}, {}, {}, {}, {}
for i = 1, nc do
  local o = base + 5 * (i - 1)
  label[i] = ARGV[o + 1]
  unit[i] = ARGV[o + 2]
  grp[i] = tonumber(ARGV[o + 3])
  local pct = tonumber(ARGV[o + 4])
  leg[i] = ARGV[o + 5]
  local v = redis.call('HMGET', KEYS[9 + i], 'limit', 'used', 'reserved')
  if not v[2] then return {'nopool', KEYS[9 + i]} end
  if pct > 0 then lim[i] = math.floor(lim[i - 1] * pct / 100) else lim[i] = tonumber(v[1]) end
  rem[i] = lim[i] - tonumber(v[2]) - (tonumber(v[3]) or 0)
end

local prompt_usd = math.ceil(prompt * pin / 1000000)
-- The most output tokens counter i can still pay for after the prompt (negative: not even the prompt).
local function room(i)
  if unit[i] == 't' then return rem[i] - prompt end
  local left = rem[i] - prompt_usd
  if left < 0 then return -1 end
  if pout == 0 or left * 1000000 >= max_out * pout then return max_out end
  return math.floor(left * 1000000 / pout)
end
local function cost(i, out)
  if unit[i] == 't' then return prompt + out end
  return math.ceil((prompt * pin + out * pout) / 1000000)
end

local g0 = max_out
local tight = 0
for i = 1, nc do
  if grp[i] == 0 then
    local r = room(i)
    if r < g0 then g0 = r; tight = i end
  end
end
if g0 < min_out and tight > 0 then return {'quota', label[tight], math.max(rem[tight], 0)} end

local chosen, grant = 0, 0
for a = 1, na do
  local g, any = g0, false
  for i = 1, nc do
    if grp[i] == a then
      any = true
      local r = room(i)
      if r < g then g = r end
    end
  end
  if any and g >= min_out then chosen = a; grant = g; break end
end
if chosen == 0 then
  for i = 1, nc do
    if grp[i] == 1 then return {'quota', label[i], math.max(rem[i], 0)} end
  end
  return {'quota', 'personal', 0}
end

-- Token buckets are charged the prompt plus the expected output (the grant, or less when the client set no
-- max_tokens), and corrected to the actual usage at settlement. No room: 429, never a silently short grant.
local bucket_out = tonumber(ARGV[18])
if bucket_out < 0 or bucket_out > grant then bucket_out = grant end
local btok = prompt + bucket_out
denial = rate_denial(2, 4, btok)
if denial then return denial end

local reserved, reserved_usd, pool = prompt + grant, 0, ''
local n = 0
redis.call('DEL', KEYS[8])
for i = 1, nc do
  if grp[i] == 0 or grp[i] == chosen then
    n = n + 1
    local amount = cost(i, grant)
    if unit[i] == 'u' and amount > reserved_usd then reserved_usd = amount end
    if pool == '' and grp[i] == chosen then pool = leg[i] end
    redis.call('HINCRBY', KEYS[9 + i], 'reserved', amount)
    redis.call('HSET', KEYS[8], 'k' .. n, KEYS[9 + i], 'a' .. n, amount, 'u' .. n, unit[i], 'd' .. n, leg[i])
  end
end
for i = 1, 4 do
  local c = btok
  if i % 2 == 1 then c = 1 end
  lv[i] = lv[i] + c
  redis.call('HSET', KEYS[3 + i], 'level', string.format('%.6f', lv[i]), 'ts', string.format('%d', ts[i]),
    'win', window)
  redis.call('PEXPIRE', KEYS[3 + i], math.ceil(period * (burst + 1)) + 1000)
end
local src = ARGV[21 + chosen]
redis.call('HSET', KEYS[8], 'n', n, 'pool', pool, 'amount', reserved, 'src', src, 'btok', btok,
  'bk1', KEYS[5], 'bk2', KEYS[7], 'user', ARGV[16], 'request', ARGV[17], 'expires', ARGV[14])
redis.call('ZADD', KEYS[9], ARGV[14], ARGV[13])

local function view(i1, i2)
  local r1 = math.floor(caps[i1] - lv[i1])
  local r2 = math.floor(caps[i2] - lv[i2])
  local i = i1
  if r2 < r1 then i = i2 end
  local rest = math.max(math.floor(caps[i] - lv[i]), 0)
  if strategy == 'fixed_window' then return caps[i], rest, (window + 1) * period - now end
  return caps[i], rest, math.ceil(lv[i] / rates[i])
end
local lr, rr, tr = view(1, 3)
local lt, rt, tt = view(2, 4)
return {'ok', reserved, grant, lr, rr, tr, lt, rt, tt, src, reserved_usd}
"""

# Settle a reservation: per leg reserved -= reserved amount, used += actual (ARGV[2 + i]); the token buckets
# get the difference between the actual tokens (ARGV[2]) and what admission charged them. No-op when settled.
_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local r = redis.call('HGETALL', KEYS[1])
local h = {}
for i = 1, #r, 2 do h[r[i]] = r[i + 1] end
for i = 1, tonumber(h['n']) or 0 do
  local k = h['k' .. i]
  if redis.call('EXISTS', k) == 1 then
    redis.call('HINCRBY', k, 'reserved', -tonumber(h['a' .. i]))
    redis.call('HINCRBY', k, 'used', tonumber(ARGV[2 + i]))
  end
end
local delta = tonumber(ARGV[2]) - (tonumber(h['btok']) or 0)
if delta ~= 0 then
  for _, b in ipairs({h['bk1'], h['bk2']}) do
    if b and redis.call('EXISTS', b) == 1 then
      local level = (tonumber(redis.call('HGET', b, 'level')) or 0) + delta
      if level < 0 then level = 0 end
      redis.call('HSET', b, 'level', string.format('%.6f', level))
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

_LOAD_COUNTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'limit', ARGV[1], 'used', ARGV[2], 'reserved', 0)
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""

# Rebuild `used` from the ledger while keeping live reservations (the caller holds the pool's row lock).
_RESYNC_USED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'used', ARGV[1])
return 1
"""

_SET_LIMIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'limit', ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Counter:
    """One cap an admission must fit: a pool's counter for the current period (or a vacation share).

    `group` 0 must always fit; 1.. are the balancer's alternatives. `pct` > 0 makes the limit that share of
    the previous counter's limit (the vacation share of a team pool). `leg` is `pool_id|period_key|source`,
    what settlement needs to write the ledger row.
    """

    key: str
    label: str
    unit: str  # 't' tokens, 'u' micro-dollars
    group: int
    leg: str
    pct: int = 0


@dataclass(frozen=True)
class AdmitArgs:
    """Inputs of one admission."""

    now_ms: int
    user_id: str
    key_id: str
    session_id: str | None  # `<org>/<session>`: what a session freeze is kept under
    reservation_id: str
    request_id: str
    expires_ms: int
    prompt_tokens: int
    max_output_tokens: int
    min_output_tokens: int
    bucket_output_tokens: int
    input_price: int
    output_price: int
    key_requests: int
    key_tokens: int
    user_requests: int
    user_tokens: int
    period_ms: int
    strategy: str
    burst: float
    sources: tuple[str, ...]
    counters: tuple[Counter, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PoolState:
    """A counter's live numbers."""

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
        self._load_counter = redis.register_script(_LOAD_COUNTER)
        self._resync_used = redis.register_script(_RESYNC_USED)
        self._set_limit = redis.register_script(_SET_LIMIT)

    def pool_key(self, pool_id: str, period_key: str = "") -> str:
        return f"{self._p}pool:{pool_id}" + (f":{period_key}" if period_key else "")

    def vacation_key(self, team_pool_id: str, period_key: str) -> str:
        return f"{self._p}vac:{team_pool_id}:{period_key}"

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
            self.reservation_key(a.reservation_id),
            self.expiry_key,
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
            *a.sources,
        ]
        for c in a.counters:
            args.extend((c.label, c.unit, c.group, c.pct, c.leg))
        return cast(list[Any], await self._admit(keys=keys, args=args))

    async def settle(self, reservation_id: str, actual_tokens: int, leg_amounts: list[int]) -> bool:
        """Apply a settlement; False if the reservation was already settled (or never existed)."""
        keys = [self.reservation_key(reservation_id), self.expiry_key]
        return bool(await self._settle(keys=keys, args=[reservation_id, actual_tokens, *leg_amounts]))

    async def reservation(self, reservation_id: str) -> dict[str, str] | None:
        """The reservation's fields, or None once settled. A reservation made before legs existed (one
        personal pool, no period) is given its one leg, so an upgrade settles it like the others."""
        key = self.reservation_key(reservation_id)
        data = await self.redis.hgetall(key)
        if data and "n" not in data and "pool" in data:
            legacy: dict[str | bytes, str] = {
                "n": "1",
                "k1": self.pool_key(data["pool"]),
                "a1": data.get("amount", "0"),
                "u1": "t",
                "d1": f"{data['pool']}||p",
            }
            await self.redis.hset(key, mapping=legacy)
            data.update({str(k): v for k, v in legacy.items()})
        return data or None

    async def expired_reservations(self, now_ms: int, limit: int = 100) -> list[str]:
        """Reservation ids whose TTL ended at or before `now_ms`."""
        ids = await self.redis.zrangebyscore(self.expiry_key, "-inf", now_ms, start=0, num=limit)
        return [str(i) for i in ids]

    async def forget_reservation(self, reservation_id: str) -> None:
        """Drop a dangling expiry entry whose reservation hash is gone."""
        await self.redis.zrem(self.expiry_key, reservation_id)

    async def load_counter(self, key: str, limit: int, used: int, ttl_ms: int = 0) -> bool:
        """Create a counter if missing (expiring after `ttl_ms` if > 0); True if it was created."""
        return bool(await self._load_counter(keys=[key], args=[limit, used, ttl_ms]))

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

    async def pool_states(self, pool_ids: list[str]) -> dict[str, PoolState | None]:
        """Live numbers of pools without a period, by pool id."""
        states = await self.counter_states([self.pool_key(p) for p in pool_ids])
        return {p: states[self.pool_key(p)] for p in pool_ids}

    async def mark_restored(self) -> None:
        """Note that freezes were written from Postgres; the marker vanishes when Redis loses its data."""
        await self.redis.set(f"{self._p}restored", "1")

    async def was_lost(self) -> bool:
        """True if Redis lost its data since the last `mark_restored`."""
        return not await self.redis.exists(f"{self._p}restored")

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
