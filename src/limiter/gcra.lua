-- The GCRA of gcra_fn.lua (prepended) over KEYS and ARGV, as described
-- there.
local t = redis.call('TIME')
return gcra(KEYS, ARGV, tonumber(t[1]) * 1000000 + tonumber(t[2]))
