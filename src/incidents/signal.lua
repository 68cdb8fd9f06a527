-- One signal, one key: counts the event (unless ARGV[2] is `read`) and
-- returns the window's figure, the usual volume (-1 while learning or
-- without a baseline) and the recent queue ids ("ms:qid", newest first).
-- KEYS: the current slice, baseline hash, recent list, then the older
-- slices that overlap the window (see `window.rs`).
-- ARGV: sum|distinct, add|read, ttl ms, now ms, window ms, baseline 1|0,
-- learn ms, added, recent entry or "", then the amount (sum) or the
-- values (distinct).
local kind, op, ttl = ARGV[1], ARGV[2], ARGV[3]
local now, len = tonumber(ARGV[4]), tonumber(ARGV[5])
if op == 'add' then
  if kind == 'sum' then
    local n = tonumber(ARGV[10] or '0')
    if n > 0 then
      redis.call('INCRBY', KEYS[1], n)
      redis.call('PEXPIRE', KEYS[1], ttl)
    end
  elseif #ARGV >= 10 then
    redis.call('PFADD', KEYS[1], unpack(ARGV, 10))
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  if ARGV[9] ~= '' then
    redis.call('LPUSH', KEYS[3], ARGV[9])
    redis.call('LTRIM', KEYS[3], 0, 49)
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
end
local slices = {KEYS[1]}
for i = 4, #KEYS do slices[#slices + 1] = KEYS[i] end
local figure = 0
if kind == 'sum' then
  for _, k in ipairs(slices) do
    figure = figure + tonumber(redis.call('GET', k) or '0')
  end
else
  figure = redis.call('PFCOUNT', unpack(slices))
end
local usual = -1
if ARGV[6] == '1' then
  local alpha = 2.0 / 25.0
  local period = math.floor(now / len)
  local b = redis.call('HMGET', KEYS[2], 'first', 'period', 'count', 'mean')
  local first = tonumber(b[1] or '') or now
  local p = tonumber(b[2] or '') or period
  local count = tonumber(b[3] or '') or 0
  local mean = tonumber(b[4] or '') or 0
  if period > p then
    mean = alpha * count + (1 - alpha) * mean
    local empty = period - p - 1
    if empty > 10000 then empty = 10000 end
    mean = mean * (1 - alpha) ^ empty
    count = 0
    p = period
  end
  if now - first >= tonumber(ARGV[7]) then usual = mean end
  if op == 'add' then
    count = count + tonumber(ARGV[8])
    redis.call('HSET', KEYS[2], 'first', string.format('%.0f', first), 'period', string.format('%.0f', p),
      'count', tostring(count), 'mean', tostring(mean))
    redis.call('PEXPIRE', KEYS[2], math.max(tonumber(ARGV[7]) * 2, 7 * 86400000))
  end
end
return {tostring(figure), tostring(usual), redis.call('LRANGE', KEYS[3], 0, 49)}
