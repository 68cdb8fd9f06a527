-- GCRA over `keys`, with `args` = (emission µs, burst, cells, member,
-- ahead) per key. A member (`distinct_recipients`: the recipient, else "")
-- already recorded under `<key>|seen|<member>` in its window costs
-- nothing. `ahead`: cells the gateway would take ahead for the key, to
-- spend in process (`rate_limits.redis.reserve`); granted only when the
-- bucket stays at most half full with them.
-- Returns {0, fills, granted} when every key passes (and then stores each
-- new TAT with an expiry at which the bucket is full again, and records
-- the members for a period; fills: how full each bucket is now, in
-- thousandths; granted: the cells taken ahead for each key; both
-- comma-separated), or {i, wait µs} for the key that must wait longest,
-- storing nothing.
local function gcra(keys, args, now)
  local seen = {}
  local new = {}
  local worst, worst_wait = 0, -1
  for i, key in ipairs(keys) do
    local emission = tonumber(args[5 * i - 4])
    local burst = tonumber(args[5 * i - 3])
    local cells = tonumber(args[5 * i - 2])
    local member = args[5 * i - 1]
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
  local fills, granted = {}, {}
  for i, key in ipairs(keys) do
    local emission = tonumber(args[5 * i - 4])
    local capacity = emission * tonumber(args[5 * i - 3])
    local ahead = tonumber(args[5 * i])
    granted[i] = 0
    -- Taken ahead only by a key's last check in the batch, and only while
    -- the bucket stays at most half full.
    if ahead > 0 and seen[key] == new[i] and seen[key] + emission * ahead - now <= capacity / 2 then
      seen[key] = seen[key] + emission * ahead
      new[i] = seen[key]
      granted[i] = ahead
    end
  end
  for i, key in ipairs(keys) do
    local capacity = tonumber(args[5 * i - 4]) * tonumber(args[5 * i - 3])
    local tat = seen[key]
    local ttl = math.ceil((tat - now) / 1000) + 1000
    redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl)
    local member = args[5 * i - 1]
    if member ~= '' then
      redis.call('SET', key .. '|seen|' .. member, '1', 'PX', math.ceil(capacity / 1000), 'NX')
    end
    fills[i] = string.format('%.0f', math.min(1000, math.floor((tat - now) * 1000 / capacity + 0.5)))
  end
  return {0, table.concat(fills, ','), table.concat(granted, ',')}
end
