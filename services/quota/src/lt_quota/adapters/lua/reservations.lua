-- The fields of many reservations in one call (settlement of a batch), as one JSON array (one reply to parse
-- instead of hundreds): per key the flat HGETALL list, empty where Redis holds none.
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return cjson.encode(out)
