-- Settle a reservation: per leg reserved -= reserved amount, used += actual (ARGV[2 + i]); the token buckets
-- get the difference between the actual tokens (ARGV[2]) and what admission charged them. No-op when settled.
-- Every HINCRBY amount goes through '%d': Lua prints -0 (negating a 0 leg) or a large number as "-0" or
-- "1e+14", which Redis refuses as not an integer.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local r = redis.call('HGETALL', KEYS[1])
local h = {}
for i = 1, #r, 2 do h[r[i]] = r[i + 1] end
for i = 1, tonumber(h['n']) or 0 do
  local k = h['k' .. i]
  if redis.call('EXISTS', k) == 1 then
    redis.call('HINCRBY', k, 'reserved', string.format('%d', -tonumber(h['a' .. i])))
    redis.call('HINCRBY', k, 'used', string.format('%d', tonumber(ARGV[2 + i])))
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
