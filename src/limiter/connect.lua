-- A new connection, in one round trip: the places this gateway's closed
-- connections gave back removed, then a place among the client's open
-- connections if fewer than the cap hold one, then the connection rate of
-- gcra_fn.lua (prepended), all or nothing.
-- KEYS[1]: the client's open connections (a sorted set of members, each
-- scored by when its lease ends, µs); ARGV[1]: the cap (0: none),
-- ARGV[2]: this connection's member, ARGV[3]: the lease (µs), ARGV[4]:
-- how many places given back (n).
-- KEYS[2..n+1] and ARGV[5..n+4]: each place given back, its sorted set
-- and member.
-- The rest of KEYS and ARGV: the rate limits, as gcra_fn.lua takes them.
-- Returns {-1, ''} when the cap is reached (nothing counted), GCRA's
-- {i, wait} when a rate refuses (nothing counted: the place is not taken),
-- else {0, fills} with the place taken.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local gone = tonumber(ARGV[4])
for i = 1, gone do
  redis.call('ZREM', KEYS[1 + i], ARGV[4 + i])
end
local cap = tonumber(ARGV[1])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= cap then
    return {-1, ''}
  end
end
local keys, args = {}, {}
for i = 2 + gone, #KEYS do keys[#keys + 1] = KEYS[i] end
for i = 5 + gone, #ARGV do args[#args + 1] = ARGV[i] end
local result = {0, ''}
if #keys > 0 then
  result = gcra(keys, args, now)
end
if result[1] == 0 and cap > 0 then
  local lease = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], string.format('%.0f', now + lease), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease / 1000) + 1000)
end
return result
