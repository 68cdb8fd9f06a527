-- A message from the key of an open incident. KEYS: the hash, the held
-- list. ARGV: queue id or "", 1 if held, the most held ids kept.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'messages', 1)
if ARGV[1] ~= '' then
  if redis.call('HEXISTS', KEYS[1], 'first') == 0 then
    redis.call('HSET', KEYS[1], 'first', ARGV[1])
  end
  redis.call('HSET', KEYS[1], 'last', ARGV[1])
  if ARGV[2] == '1' and redis.call('LLEN', KEYS[2]) < tonumber(ARGV[3]) then
    redis.call('RPUSH', KEYS[2], ARGV[1])
    redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
  end
end
return 1
