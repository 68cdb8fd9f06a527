-- GCRA over `keys`, with `args` = (emission µs, burst, cells, member) per
-- key. A member (`distinct_recipients`: the recipient, else "") already
-- recorded under `<key>|seen|<member>` in its window costs nothing.
-- Returns {0, fills} when every key passes (and then stores each new TAT
-- with an expiry at which the bucket is full again, and records the
-- members for a period; fills: how full each bucket is now, in
-- thousandths, comma-separated), or {i, wait µs} for the key that must
-- wait longest, storing nothing.
local function gcra(keys, args, now)
  local seen = {}
  local new = {}
  local worst, worst_wait = 0, -1
  for i, key in ipairs(keys) do
    local emission = tonumber(args[4 * i - 3])
    local burst = tonumber(args[4 * i - 2])
    local cells = tonumber(args[4 * i - 1])
    local member = args[4 * i]
    if member ~= '' and redis.call('EXISTS', key .. '|seen|' .. member) == 1 then
      cells = 0
    end
    local capacity = emission * burst
    local cost = emission * cells
    local tat = seen[key] or tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    local wait
    if cost > capacity then
      wait = 1e15
    else
      wait = tat + cost - capacity - now
    end
    if wait > 0 then
      seen[key] = tat
      if wait > worst_wait then worst, worst_wait = i, wait end
    else
      seen[key] = tat + cost
      new[i] = tat + cost
    end
  end
  if worst > 0 then
    return {worst, string.format('%.0f', worst_wait)}
  end
  local fills = {}
  for i, key in ipairs(keys) do
    local capacity = tonumber(args[4 * i - 3]) * tonumber(args[4 * i - 2])
    local ttl = math.ceil((new[i] - now) / 1000) + 1000
    redis.call('SET', key, string.format('%.0f', new[i]), 'PX', ttl)
    local member = args[4 * i]
    if member ~= '' then
      redis.call('SET', key .. '|seen|' .. member, '1', 'PX', math.ceil(capacity / 1000), 'NX')
    end
    fills[i] = string.format('%.0f', math.min(1000, math.floor((new[i] - now) * 1000 / capacity + 0.5)))
  end
  return {0, table.concat(fills, ',')}
end
