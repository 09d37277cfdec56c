-- One call per admission: freezes, request buckets, every cap (with the balancer's alternatives), token
-- buckets, then the reservation. Times come from ARGV (the caller's clock): deterministic and testable.
local now = tonumber(ARGV[1])
-- The caller names the reservation (the gateway journals the id before asking): never admit one twice.
if redis.call('EXISTS', KEYS[8]) == 1 then return {'duplicate'} end
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
-- Redis lost recent bucket levels at this time (ms; 0: not lately): a bucket it does not hold counts as full
-- then, and has drained since; never as empty, which would let a burst past the limit.
local full_at = tonumber(ARGV[22])
for i = 1, 4 do
  local v = redis.call('HMGET', KEYS[3 + i], 'level', 'ts', 'win')
  local level = tonumber(v[1]) or 0
  local lost = full_at > 0 and not v[2]
  if strategy == 'fixed_window' then
    if lost and math.floor(full_at / period) == window then
      level = caps[i]
    elseif tonumber(v[3]) ~= window then
      level = 0
    end
    ts[i] = now
  else
    -- leaky bucket (level drains) or token bucket (tokens = capacity - level refill): same rate either way
    local last = tonumber(v[2]) or now
    if lost then level, last = caps[i], full_at end
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
local base = 22 + na
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
-- snug: on some counter, less than twice this reservation stays free. Only then can the next request (up to
-- twice this one) be refused or shortened for tokens this one holds and will not use, so only then must the
-- gateway wait for the release before the answer's last bytes.
local snug = 0
redis.call('DEL', KEYS[8])
for i = 1, nc do
  if grp[i] == 0 or grp[i] == chosen then
    n = n + 1
    local amount = cost(i, grant)
    if rem[i] - amount < 2 * amount then snug = 1 end
    if unit[i] == 'u' and amount > reserved_usd then reserved_usd = amount end
    if pool == '' and grp[i] == chosen then pool = leg[i] end
    redis.call('HINCRBY', KEYS[9 + i], 'reserved', string.format('%d', amount))
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
local src = ARGV[22 + chosen]
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
if rt < 2 * btok then snug = 1 end
return {'ok', reserved, grant, lr, rr, tr, lt, rt, tt, src, reserved_usd, redis.call('HGETALL', KEYS[8]), snug}
