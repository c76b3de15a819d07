-- Token buckets as GCRA. `tat` is the theoretical arrival time; a cost c may pass at time t
-- when max(tat, t) + c * interval - t <= burst * interval, and passing moves tat to
-- max(tat, t) + c * interval. This allows at most burst + W / interval cost in any window
-- W, and interval is rounded up when the policy is compiled, so at most burst + rate * W.

-- Earliest time >= now at which `cost` fits a bucket whose state is `tat`.
local function gcra_earliest(tat, now, cost, interval, burst)
  local t = tat + cost * interval - burst * interval
  if t < now then
    return now
  end
  return t
end

-- New tat after `cost` passes at time `at`.
local function gcra_take(tat, at, cost, interval)
  if tat < at then
    tat = at
  end
  return tat + cost * interval
end
