-- Put back a reservation Redis lost, from its durable record (ARGV: expiry ms, then field, value pairs). Counters
-- are not touched: a counter rebuilt from the ledger already counts the open reservations as reserved.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
