-- The suppressed recipients shared through Redis: KEYS[1] the hash
-- (address -> JSON record), KEYS[2] its version, raised by every change so
-- that each gateway knows to read the hash again.
-- ARGV[1] what: 'hard' (a hard failure), 'add' (by hand) or 'remove';
-- ARGV[2] the address; ARGV[3] now (unix seconds);
-- 'hard': ARGV[4] the status, ARGV[5] after, ARGV[6] for (seconds);
-- 'add': ARGV[4] until.
-- Returns the record (JSON), or for 'remove' 1 when it was known, else 0.
local what, addr, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
if what == 'remove' then
  local n = redis.call('HDEL', KEYS[1], addr)
  redis.call('INCR', KEYS[2])
  return n
end
local e
if what == 'add' then
  e = { hard = 0, status = 'by hand', first = now, last = now, ['until'] = tonumber(ARGV[4]) }
else
  local old = redis.call('HGET', KEYS[1], addr)
  e = old and cjson.decode(old) or { hard = 0, status = '', first = now, last = now, ['until'] = 0 }
  -- A suppression that ran out starts the count again.
  if e['until'] ~= 0 and e['until'] <= now then
    e = { hard = 0, status = '', first = now, last = now, ['until'] = 0 }
  end
  e.hard = e.hard + 1
  e.status = ARGV[4]
  e.last = now
  if e.hard >= tonumber(ARGV[5]) then
    e['until'] = now + tonumber(ARGV[6])
  end
end
local json = cjson.encode(e)
redis.call('HSET', KEYS[1], addr, json)
redis.call('INCR', KEYS[2])
return json
