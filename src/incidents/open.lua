-- Opens an incident unless one is open for the key (then extends it).
-- KEYS: the incident hash, the index set, the held list. ARGV: the
-- incident's fixed part (JSON), now s, until s, index member, ttl ms.
-- Returns 1 when opened, 0 when extended.
local u = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if u > tonumber(ARGV[2]) then
  if tonumber(ARGV[3]) > u then
    redis.call('HSET', KEYS[1], 'until', ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    redis.call('PEXPIRE', KEYS[3], ARGV[5])
  end
  return 0
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'until', ARGV[3], 'messages', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
