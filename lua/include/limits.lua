-- Shared helpers: policy, dependency state, scope buckets, the release step.
-- The Python loader (janus/scripts.py) inlines this file where a script asks for it.
-- Everything here is local; nothing runs at include time.
--
-- Units: time in microseconds (`*_us`, and unsuffixed times) unless named `_ms`; cost in
-- integer units. A bucket is GCRA: `tat` is the theoretical arrival time; a cost c may pass
-- at time t when max(tat, t) + c * interval - t <= burst * interval, and passing moves tat to
-- max(tat, t) + c * interval. This allows at most burst + W / interval cost in any window W,
-- and interval is rounded up at compile time, so at most burst + rate * W.
--
-- One call reads each piece of state once and writes it once: the dependency's state hash
-- (load_state / save_state) and each scope's bucket hash (scope_get / scope_flush) are cached
-- in `ctx` for the whole call, so a batch of 500 jobs costs a few commands per job.

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
  'scope_weight_milli', 'scope_overrides', 'retry_max_attempts', 'backoff_base_ms',
  'backoff_factor_milli', 'backoff_max_ms', 'version'}

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

-- ctx: one call's view of a dependency. keys: {scopes, state, delayed, inflight, stream,
-- dead, wake}, each as the calling script received it (a script names only what it uses).
local function new_ctx(policy, now, scope_prefix, keys)
  return {policy = policy, now = now, scope_prefix = scope_prefix, scopes = {},
    inflight_add = {}, keys = keys}
end

local function load_state(ctx)
  local raw = redis.call('HMGET', ctx.keys.state, 'dtat', 'last_ms', 'queued_cost',
    'queued_count', 'wake_at')
  ctx.dtat = tonumber(raw[1]) or 0
  ctx.last_ms = tonumber(raw[2]) or 0
  ctx.queued_cost = tonumber(raw[3]) or 0
  ctx.queued_count = tonumber(raw[4]) or 0
  ctx.wake_at = tonumber(raw[5])
end

-- Write back the dependency's state and the leases this call started (one ZADD per 500
-- leases rather than one per job; unpack() of a very long list would overflow Lua's stack).
local function save_state(ctx)
  local add = ctx.inflight_add
  for i = 1, #add, 1000 do
    redis.call('ZADD', ctx.keys.inflight, unpack(add, i, math.min(i + 999, #add)))
  end
  ctx.inflight_add = {}
  redis.call('HSET', ctx.keys.state, 'dtat', fmt(ctx.dtat), 'last_ms', fmt(ctx.last_ms),
    'queued_cost', fmt(ctx.queued_cost), 'queued_count', fmt(ctx.queued_count))
end

-- One scope's limits and bucket state, read on first use in this call:
-- stat = submit-side reservation tat, rtat = release-side tat, rcur = the time after the
-- last job this scope had re-spaced (keeps re-spaced work in submit order).
local function scope_get(ctx, scope_enc)
  local s = ctx.scopes[scope_enc]
  if s then
    return s
  end
  local p = ctx.policy
  local lim
  if p.scope_overrides > 0 then
    local raw = redis.call('HGET', ctx.keys.scopes, scope_enc)
    if raw then
      local i, b, w = string.match(raw, '^(%d+) (%d+) (%d+)$')
      lim = {interval = tonumber(i), burst = tonumber(b), weight = tonumber(w)}
    end
  end
  if not lim then
    lim = {interval = p.scope_interval_us, burst = p.scope_burst, weight = p.scope_weight_milli}
  end
  local key = ctx.scope_prefix .. scope_enc
  local raw = redis.call('HMGET', key, 'stat', 'rtat', 'rcur')
  s = {key = key, lim = lim, stat = tonumber(raw[1]) or 0, rtat = tonumber(raw[2]) or 0,
    rcur = tonumber(raw[3]) or 0, dirty = false}
  ctx.scopes[scope_enc] = s
  return s
end

-- Write back every scope bucket this call changed. A scope's hash lives only as long as it
-- remembers something: once every time it holds is in the past its bucket is full again,
-- which is exactly what a missing key means.
local function scope_flush(ctx)
  for _, s in pairs(ctx.scopes) do
    if s.dirty then
      redis.call('HSET', s.key, 'stat', fmt(s.stat), 'rtat', fmt(s.rtat), 'rcur', fmt(s.rcur))
      local horizon = math.max(s.stat, s.rtat, s.rcur) - ctx.now
      redis.call('PEXPIRE', s.key, math.max(ms_of(horizon), 0) + 1000)
    end
  end
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

-- Live leases (released jobs whose lease deadline, in ms, is still ahead), counted once per
-- call and then kept up to date in ctx.
local function live_leases(ctx)
  if not ctx.live then
    ctx.live = redis.call('ZCOUNT', ctx.keys.inflight, '(' .. fmt(ms_of(ctx.now)), '+inf')
  end
  return ctx.live
end

-- Release-time check of the dependency bucket and the in-flight limit (shared by every
-- job of the dependency, so a failure blocks the queue head), then of the scope bucket.
-- Returns ok, blocker ('dependency' | 'in_flight' | 'scope'), earliest retry time (us).
local function can_release(ctx, s, cost)
  local p, now = ctx.policy, ctx.now
  local dep_at = gcra_earliest(ctx.dtat, now, cost, p.interval_us, p.burst)
  if dep_at > now then
    return false, 'dependency', dep_at
  end
  if p.max_in_flight > 0 and live_leases(ctx) >= p.max_in_flight then
    local first = redis.call('ZRANGE', ctx.keys.inflight, '(' .. fmt(ms_of(now)), '+inf',
      'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
    local at = now + 1000
    if first[2] then
      at = math.max(tonumber(first[2]) * 1000 + 1, at)
    elseif ctx.inflight_add[1] then  -- every live lease was started by this very call
      at = math.max(ctx.inflight_add[1] * 1000 + 1, at)
    end
    return false, 'in_flight', at
  end
  local scope_at = gcra_earliest(s.rtat, now, cost, s.lim.interval, s.lim.burst)
  if scope_at > now then
    return false, 'scope', scope_at
  end
  return true, nil, now
end

-- Put one job on the dependency's stream and start its lease; the caller has checked
-- can_release. `fields` are extra job-record fields written in the same HSET (a new job's
-- whole record). Stream ids carry release time in ms and never go backwards, even if the
-- server clock (or a test's explicit now) does, because XADD would refuse that.
local function release_job(ctx, job_key, job_enc, job_id, scope, cost, s, attempt, fields)
  local p, now = ctx.policy, ctx.now
  local ms = ms_of(now)
  if ms < ctx.last_ms then
    ms = ctx.last_ms
  end
  local deadline_ms = ms_of(now) + p.lease_ms
  local stream_id = redis.call('XADD', ctx.keys.stream, fmt(ms) .. '-*',
    'id', job_id, 'scope', scope, 'attempt', attempt, 'cost', cost)
  local n = #fields
  fields[n + 1], fields[n + 2] = 'status', 'queued'
  fields[n + 3], fields[n + 4] = 'attempt', attempt
  fields[n + 5], fields[n + 6] = 'released_ms', ms_of(now)
  fields[n + 7], fields[n + 8] = 'stream_id', stream_id
  fields[n + 9], fields[n + 10] = 'lease_deadline_ms', deadline_ms
  fields[n + 11], fields[n + 12] = 'consumer', ''
  redis.call('HSET', job_key, unpack(fields))
  redis.call('PEXPIRE', job_key, p.lease_ms + p.retention_ms)
  local add = ctx.inflight_add
  add[#add + 1], add[#add + 2] = deadline_ms, job_enc
  if ctx.live then
    ctx.live = ctx.live + 1
  end
  ctx.dtat = gcra_take(ctx.dtat, now, cost, p.interval_us)
  ctx.last_ms = ms
  s.rtat = gcra_take(s.rtat, now, cost, s.lim.interval)
  s.dirty = true
end
