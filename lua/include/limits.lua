-- Shared helpers: policy loading, GCRA buckets, the release step.
-- The Python loader (janus/scripts.py) inlines this file where a script asks for it.
-- Everything here is local; nothing runs at include time.
--
-- Units: time in microseconds (`*_us`) unless named `_ms`; cost in integer units.
-- A bucket is GCRA: `tat` is the theoretical arrival time; a cost c may pass at time t when
-- max(tat, t) + c * interval - t <= burst * interval, and passing moves tat to
-- max(tat, t) + c * interval. This allows at most burst + W / interval cost in any window W,
-- and interval is rounded up at compile time, so at most burst + rate * W.

local function now_from(arg)
  if arg ~= nil and arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function ms_of(us)
  return math.floor(us / 1000)
end

local function fmt(n)
  -- Lua's tostring gives "1.7e+15" for large numbers; keys, ids and fields need digits.
  return string.format('%d', n)
end

local POLICY_FIELDS = {'interval_us', 'burst', 'max_in_flight', 'max_wait_ms', 'lease_ms',
  'retention_ms', 'max_payload', 'max_cost', 'scope_interval_us', 'scope_burst',
  'scope_weight_milli', 'version'}

-- Returns the compiled policy as a table of numbers, or nil when none is applied.
local function load_policy(policy_key)
  local raw = redis.call('HMGET', policy_key, unpack(POLICY_FIELDS))
  if not raw[1] then
    return nil
  end
  local p = {}
  for i, name in ipairs(POLICY_FIELDS) do
    p[name] = tonumber(raw[i]) or 0
  end
  return p
end

-- Per-scope limits: the named override if the policy has one, else the default scope.
local function scope_limits(policy, scopes_key, scope_enc, cache)
  local hit = cache[scope_enc]
  if hit then
    return hit
  end
  local lim
  local raw = redis.call('HGET', scopes_key, scope_enc)
  if raw then
    local i, b, w = string.match(raw, '^(%d+) (%d+) (%d+)$')
    lim = {interval = tonumber(i), burst = tonumber(b), weight = tonumber(w)}
  else
    lim = {interval = policy.scope_interval_us, burst = policy.scope_burst,
      weight = policy.scope_weight_milli}
  end
  cache[scope_enc] = lim
  return lim
end

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

-- Keep a scope's hash only as long as it remembers something: once every tat it holds is
-- in the past the bucket is full again, which is exactly what a missing key means.
local function expire_scope(scope_key, now, stat, rtat)
  local horizon = math.max(stat, rtat) - now
  redis.call('PEXPIRE', scope_key, math.max(ms_of(horizon), 0) + 1000)
end

-- Live leases: released jobs whose lease deadline (ms) is still ahead.
local function in_flight(inflight_key, now)
  return redis.call('ZCOUNT', inflight_key, '(' .. fmt(ms_of(now)), '+inf')
end

-- Release-time check of the dependency bucket and the in-flight limit (shared by every
-- job of the dependency, so a failure blocks the queue head), then of the scope bucket.
-- Returns ok, blocker ('dependency' | 'in_flight' | 'scope'), earliest retry time (us).
local function can_release(ctx, lim, scope_rtat, cost)
  local p, now = ctx.policy, ctx.now
  local dep_at = gcra_earliest(ctx.dtat, now, cost, p.interval_us, p.burst)
  if dep_at > now then
    return false, 'dependency', dep_at
  end
  if p.max_in_flight > 0 and in_flight(ctx.keys.inflight, now) >= p.max_in_flight then
    local first = redis.call('ZRANGE', ctx.keys.inflight, '(' .. fmt(ms_of(now)), '+inf',
      'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
    local at = now + 1000
    if first[2] then
      at = math.max(tonumber(first[2]) * 1000 + 1, at)
    end
    return false, 'in_flight', at
  end
  local scope_at = gcra_earliest(scope_rtat, now, cost, lim.interval, lim.burst)
  if scope_at > now then
    return false, 'scope', scope_at
  end
  return true, nil, now
end

-- Put one job on the dependency's stream and start its lease. The caller has checked
-- can_release. Stream ids carry release time in ms; they never go backwards even if the
-- server clock (or a test's explicit now) does, because XADD would refuse that.
local function release_job(ctx, job_key, job_enc, job_id, scope, cost, scope_key, lim, rtat)
  local p, now = ctx.policy, ctx.now
  local ms = ms_of(now)
  if ms < ctx.last_ms then
    ms = ctx.last_ms
  end
  local attempt = redis.call('HINCRBY', job_key, 'attempt', 1)
  local deadline_ms = ms_of(now) + p.lease_ms
  local stream_id = redis.call('XADD', ctx.keys.stream, fmt(ms) .. '-*',
    'id', job_id, 'scope', scope, 'attempt', attempt, 'cost', cost)
  redis.call('HSET', job_key, 'status', 'queued', 'released_ms', ms_of(now),
    'stream_id', stream_id, 'lease_deadline_ms', deadline_ms)
  redis.call('PEXPIRE', job_key, p.lease_ms + p.retention_ms)
  redis.call('ZADD', ctx.keys.inflight, deadline_ms, job_enc)
  ctx.dtat = gcra_take(ctx.dtat, now, cost, p.interval_us)
  ctx.last_ms = ms
  local new_rtat = gcra_take(rtat, now, cost, lim.interval)
  local stat = tonumber(redis.call('HGET', scope_key, 'stat')) or 0
  redis.call('HSET', scope_key, 'rtat', fmt(new_rtat))
  expire_scope(scope_key, now, stat, new_rtat)
  return attempt
end

-- Load the dependency's mutable state into ctx; save it back with save_state.
local function load_state(ctx)
  local raw = redis.call('HMGET', ctx.keys.state, 'dtat', 'last_ms', 'queued_cost',
    'queued_count', 'wake_at')
  ctx.dtat = tonumber(raw[1]) or 0
  ctx.last_ms = tonumber(raw[2]) or 0
  ctx.queued_cost = tonumber(raw[3]) or 0
  ctx.queued_count = tonumber(raw[4]) or 0
  ctx.wake_at = tonumber(raw[5])
end

local function save_state(ctx)
  redis.call('HSET', ctx.keys.state, 'dtat', fmt(ctx.dtat), 'last_ms', fmt(ctx.last_ms),
    'queued_cost', fmt(ctx.queued_cost), 'queued_count', fmt(ctx.queued_count))
end
