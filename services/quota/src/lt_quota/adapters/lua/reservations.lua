-- The fields of many reservations in one call (settlement of a batch): one HGETALL reply per key, empty where
-- Redis holds none.
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
