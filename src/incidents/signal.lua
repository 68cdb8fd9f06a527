-- Every signal of one event, in one call: for each, counts the event
-- (unless its op is `read`) and returns the window's figure, the usual
-- volume (-1 while learning or without a baseline) and the recent queue
-- ids ("ms:qid", newest first).
-- ARGV[1]: how many signals. Then, per signal, its number of keys and of
-- arguments, followed by those arguments: sum|distinct, add|read, ttl ms,
-- now ms, window ms, baseline 1|0, learn ms, added, recent entry or "",
-- then the amount (sum) or the values (distinct).
-- KEYS, per signal in turn: the current slice, baseline hash, recent
-- list, then the older slices that overlap the window (see `window.rs`);
-- after the signals' keys, incident hashes to read as they are once the
-- event is counted (their fields, flat, as the last element returned).
local function one(K, A)
  local kind, op, ttl = A[1], A[2], A[3]
  local now, len = tonumber(A[4]), tonumber(A[5])
  if op == 'add' then
    if kind == 'sum' then
      local n = tonumber(A[10] or '0')
      if n > 0 then
        redis.call('INCRBY', K[1], n)
        redis.call('PEXPIRE', K[1], ttl)
      end
    elseif #A >= 10 then
      redis.call('PFADD', K[1], unpack(A, 10))
      redis.call('PEXPIRE', K[1], ttl)
    end
    if A[9] ~= '' then
      redis.call('LPUSH', K[3], A[9])
      redis.call('LTRIM', K[3], 0, 49)
      redis.call('PEXPIRE', K[3], ttl)
    end
  end
  local slices = {K[1]}
  for i = 4, #K do slices[#slices + 1] = K[i] end
  local figure = 0
  if kind == 'sum' then
    for _, k in ipairs(slices) do
      figure = figure + tonumber(redis.call('GET', k) or '0')
    end
  else
    figure = redis.call('PFCOUNT', unpack(slices))
  end
  local usual = -1
  if A[6] == '1' then
    local alpha = 2.0 / 25.0
    local period = math.floor(now / len)
    local b = redis.call('HMGET', K[2], 'first', 'period', 'count', 'mean')
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
    if now - first >= tonumber(A[7]) then usual = mean end
    if op == 'add' then
      count = count + tonumber(A[8])
      redis.call('HSET', K[2], 'first', string.format('%.0f', first), 'period', string.format('%.0f', p),
        'count', tostring(count), 'mean', tostring(mean))
      redis.call('PEXPIRE', K[2], math.max(tonumber(A[7]) * 2, 7 * 86400000))
    end
  end
  return {tostring(figure), tostring(usual), redis.call('LRANGE', K[3], 0, 49)}
end

local out = {}
local k, a = 0, 1
for s = 1, tonumber(ARGV[1]) do
  local nk, na = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 2
  local K, A = {}, {}
  for i = 1, nk do K[i] = KEYS[k + i] end
  for i = 1, na do A[i] = ARGV[a + i] end
  k, a = k + nk, a + na
  out[s] = one(K, A)
end
if k < #KEYS then
  local read = {}
  for i = k + 1, #KEYS do read[#read + 1] = redis.call('HGETALL', KEYS[i]) end
  out[#out + 1] = read
end
return out
