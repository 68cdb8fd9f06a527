-- Renews members' expiry: KEYS[i] holds ARGV[i + 1]; ARGV[1] = lease µs.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', string.format('%.0f', now + lease), ARGV[i + 1])
  redis.call('PEXPIRE', key, math.ceil(lease / 1000) + 1000)
end
return #KEYS
