-- Create a counter (limit ARGV[1], used ARGV[2], expiring after ARGV[3] ms if > 0, reserved ARGV[4]: what the
-- open reservations on it hold) unless it exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'limit', ARGV[1], 'used', ARGV[2], 'reserved', ARGV[4] or 0)
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
