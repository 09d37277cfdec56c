-- Settle many reservations in one call (settlement of a batch of usage events). KEYS[1] is the expiry index,
-- KEYS[1 + j] reservation j; ARGV[1] is JSON: per reservation [id, actual tokens, [charged amount per leg]]
-- (one argument, not thousands, to pack). Per reservation exactly what settle.lua does; returns 1 per
-- reservation settled, 0 if Redis did not hold it.
local plans = cjson.decode(ARGV[1])
local out = {}
for j = 1, #KEYS - 1 do
  local key = KEYS[1 + j]
  local id, actual, amounts = plans[j][1], tonumber(plans[j][2]), plans[j][3]
  if redis.call('EXISTS', key) == 0 then
    out[j] = 0
  else
    local r = redis.call('HGETALL', key)
    local h = {}
    for i = 1, #r, 2 do h[r[i]] = r[i + 1] end
    for i = 1, math.min(tonumber(h['n']) or 0, #amounts) do
      local k = h['k' .. i]
      if redis.call('EXISTS', k) == 1 then
        redis.call('HINCRBY', k, 'reserved', string.format('%d', -tonumber(h['a' .. i])))
        redis.call('HINCRBY', k, 'used', string.format('%d', amounts[i]))
      end
    end
    local delta = actual - (tonumber(h['btok']) or 0)
    if delta ~= 0 then
      for _, b in ipairs({h['bk1'], h['bk2']}) do
        if b and redis.call('EXISTS', b) == 1 then
          local level = (tonumber(redis.call('HGET', b, 'level')) or 0) + delta
          if level < 0 then level = 0 end
          redis.call('HSET', b, 'level', string.format('%.6f', level))
        end
      end
    end
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], id)
    out[j] = 1
  end
end
return out
