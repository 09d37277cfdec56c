-- Rebuild `used` from the ledger while keeping live reservations (the caller holds the pool's row lock).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'used', ARGV[1])
return 1
