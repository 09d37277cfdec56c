-- Set a loaded counter's limit; no-op when it is not loaded.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'limit', ARGV[1])
return 1
