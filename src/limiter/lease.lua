-- A lease naming the gateway that does a shared job: KEYS[1] holds the
-- token of its holder. ARGV[1] this gateway's token,
-- ARGV[2] the lease in milliseconds, or 0 to give it up. Returns 1 when
-- this gateway holds it (taken now or renewed) or gave it up, else 0.
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
  return 1
end
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
