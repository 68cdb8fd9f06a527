-- Saves the keys' state (dkim.rotation, shared): KEYS[1] the state hash
-- (fields version, ring), KEYS[2] the driving lease, KEYS[3..] sealed
-- private keys: the first ARGV[4] of them set to ARGV[5..], the rest
-- deleted. ARGV[1] the driver's lease token ('' for an operator's
-- request), ARGV[2] the version read, ARGV[3] the ring as JSON.
-- Returns the new version; 0 when the state changed since it was read,
-- -1 when the lease is another gateway's.
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v ~= tonumber(ARGV[2]) then
  return 0
end
local n = tonumber(ARGV[4])
for i = 1, n do
  redis.call('SET', KEYS[2 + i], ARGV[4 + i])
end
for i = 3 + n, #KEYS do
  redis.call('DEL', KEYS[i])
end
redis.call('HSET', KEYS[1], 'version', v + 1, 'ring', ARGV[3])
return v + 1
