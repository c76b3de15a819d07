-- One scope's limits and state, read on first use in a call and written back once
-- (scope_flush). State fields: stat = submit-side reservation tat, rtat = release-side tat,
-- pu = paused until (a Retry-After for this scope only), vf = virtual finish tag of its last
-- release (fair queueing), qn / qc = jobs / cost it has waiting (scheduled, ready, parked
-- or retrying), aw = the weight it added to the fair queue's active weight.

--- @include "core"

local function scope_limits(ctx, scope_enc)
  local p = ctx.policy
  if p.scope_overrides > 0 then
    local raw = redis.call('HGET', ctx.keys.scopes, scope_enc)
    if raw then
      local v = {}
      for num in string.gmatch(raw, '%d+') do
        v[#v + 1] = tonumber(num)
      end
      return {interval = v[1], burst = v[2], weight = v[3], max_queued = v[4],
        max_queued_cost = v[5], q_limit = v[6], q_period = v[7], q_rolling = v[8],
        q_wait = v[9]}
    end
  end
  return {interval = p.scope_interval_us, burst = p.scope_burst, weight = p.scope_weight_milli,
    max_queued = p.scope_max_queued, max_queued_cost = p.scope_max_queued_cost,
    q_limit = p.scope_quota_limit, q_period = p.scope_quota_period_ms,
    q_rolling = p.scope_quota_rolling, q_wait = p.scope_quota_wait}
end

local function scope_get(ctx, scope_enc)
  local s = ctx.scopes[scope_enc]
  if s then
    return s
  end
  local key = ctx.scope_prefix .. scope_enc
  local raw = redis.call('HMGET', key, 'stat', 'rtat', 'pu', 'vf', 'qn', 'qc', 'aw')
  s = {key = key, enc = scope_enc, lim = scope_limits(ctx, scope_enc),
    stat = tonumber(raw[1]) or 0, rtat = tonumber(raw[2]) or 0, pu = tonumber(raw[3]) or 0,
    vf = tonumber(raw[4]) or 0, qn = tonumber(raw[5]) or 0, qc = tonumber(raw[6]) or 0,
    aw = tonumber(raw[7]) or 0, dirty = false}
  ctx.scopes[scope_enc] = s
  return s
end

-- Write back every scope this call changed. A scope's hash lives only as long as it
-- remembers something: while it has work waiting (or weight in the fair queue) it is kept,
-- bounded by that work; otherwise it expires once every time it holds is past, when a
-- missing key means exactly the same thing (a full bucket, no debt).
local function scope_flush(ctx)
  for _, s in pairs(ctx.scopes) do
    if s.dirty then
      redis.call('HSET', s.key, 'stat', fmt(s.stat), 'rtat', fmt(s.rtat), 'pu', fmt(s.pu),
        'vf', string.format('%.17g', s.vf), 'qn', fmt(s.qn), 'qc', fmt(s.qc), 'aw', fmt(s.aw))
      if s.qn > 0 or s.aw > 0 then
        redis.call('PERSIST', s.key)
      else
        local horizon = math.max(s.stat, s.rtat, s.pu) - ctx.now
        redis.call('PEXPIRE', s.key, math.max(ms_of(horizon), 0) + 1000)
      end
    end
  end
end

-- Work entering (+) or leaving (-) a scope's waiting work, and the dependency's totals.
local function queue_add(ctx, s, jobs, cost)
  s.qn = math.max(s.qn + jobs, 0)
  s.qc = math.max(s.qc + cost, 0)
  s.dirty = true
  ctx.queued_count = math.max(ctx.queued_count + jobs, 0)
  ctx.queued_cost = math.max(ctx.queued_cost + cost, 0)
end
