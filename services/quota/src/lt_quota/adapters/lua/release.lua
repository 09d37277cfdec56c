-- Release the unused part of a reservation once its answer is complete (before the client has all of it):
-- each leg keeps only what was used (its amount and its counter's `reserved` shrink, never grow) and the token
-- buckets are corrected to the actual tokens. Settlement later charges the shrunk amounts, or the sweep does at
-- expiry. Returns the reservation's fields after the release, or 0 if it was released or settled before.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'rel') == 1 then return 0 end
local r = redis.call('HGETALL', KEYS[1])
local h = {}
for i = 1, #r, 2 do h[r[i]] = r[i + 1] end
local tokens = tonumber(ARGV[1])
local usd = tonumber(ARGV[2])
for i = 1, tonumber(h['n']) or 0 do
  local a = tonumber(h['a' .. i])
  local used = tokens
  if h['u' .. i] == 'u' then used = usd end
  if used < a then
    local k = h['k' .. i]
    if redis.call('EXISTS', k) == 1 then redis.call('HINCRBY', k, 'reserved', string.format('%d', used - a)) end
    redis.call('HSET', KEYS[1], 'a' .. i, used)
  end
end
if tokens < (tonumber(h['amount']) or 0) then redis.call('HSET', KEYS[1], 'amount', tokens) end
local delta = tokens - (tonumber(h['btok']) or 0)
if delta ~= 0 then
  for _, b in ipairs({h['bk1'], h['bk2']}) do
    if b and redis.call('EXISTS', b) == 1 then
      local level = (tonumber(redis.call('HGET', b, 'level')) or 0) + delta
      if level < 0 then level = 0 end
      redis.call('HSET', b, 'level', string.format('%.6f', level))
    end
  end
end
redis.call('HSET', KEYS[1], 'btok', tokens, 'rel', 1)
return redis.call('HGETALL', KEYS[1])
