-- Shared helpers: policy, dependency state, scope buckets, the release-time checks and the
-- release step. The Python loader (janus/scripts.py) inlines this file where a script asks
-- for it. Everything here is local; nothing runs at include time.
--
-- Units: time in microseconds (`*_us`, and unsuffixed times) unless named `_ms`; cost in
-- integer units; budget in milli-tokens. A bucket is GCRA: `tat` is the theoretical arrival
-- time; a cost c may pass at time t when max(tat, t) + c * interval - t <= burst * interval,
-- and passing moves tat to max(tat, t) + c * interval. This allows at most
-- burst + W / interval cost in any window W, and interval is rounded up at compile time, so
-- at most burst + rate * W.
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
  'backoff_factor_milli', 'backoff_max_ms', 'backoff_jitter', 'max_retry_after_ms',
  'pause_on_retry_after', 'budget_enabled', 'budget_ratio_milli', 'budget_mps_milli',
  'budget_max_wait_ms', 'budget_window_ms', 'circuit_enabled', 'circuit_failure_milli',
  'circuit_min_requests', 'circuit_window_ms', 'circuit_open_ms', 'circuit_open_max_ms',
  'circuit_probes', 'scope_max_queued', 'scope_max_queued_cost', 'scope_quota_limit',
  'scope_quota_period_ms', 'scope_quota_rolling', 'scope_quota_wait', 'version'}

-- Returns the compiled policy as a table of numbers, or nil when none is applied. It is read
-- from one field, `packed` (every POLICY_FIELDS value in order, written by apply_policy.lua):
-- one short string parses much faster than an HMGET of every field, on every call.
local function load_policy(policy_key)
  local raw = redis.call('HGET', policy_key, 'packed')
  if not raw then
    return nil
  end
  local p, i = {}, 0
  for num in string.gmatch(raw, '[^ ]+') do
    i = i + 1
    p[POLICY_FIELDS[i]] = tonumber(num)
  end
  return p
end

-- The `packed` field for the policy hash as it stands (used by apply_policy.lua).
local function pack_policy(policy_key)
  local raw = redis.call('HMGET', policy_key, unpack(POLICY_FIELDS))
  local out = {}
  for i = 1, #POLICY_FIELDS do
    out[i] = raw[i] or '0'
  end
  return table.concat(out, ' ')
end

-- ctx: one call's view of a dependency. keys: {policy, scopes, state, delayed, inflight,
-- stream, dead, wake}, each as the calling script received it (a script names only what
-- it uses).
local function new_ctx(policy, now, scope_prefix, keys)
  return {policy = policy, now = now, scope_prefix = scope_prefix, scopes = {},
    inflight_add = {}, keys = keys}
end

local STATE_FIELDS = {'dtat', 'last_ms', 'queued_cost', 'queued_count', 'wake_at',
  'paused_until', 'b_milli', 'b_at', 'c_state', 'c_until', 'c_opens', 'c_probes',
  'c_probe_ok', 'c_win', 'c_cur_ok', 'c_cur_fail', 'c_prev_ok', 'c_prev_fail', 'vtime',
  'active_w'}

local function load_state(ctx)
  local raw = redis.call('HMGET', ctx.keys.state, unpack(STATE_FIELDS))
  local n = {}
  for i = 1, #STATE_FIELDS do
    n[i] = tonumber(raw[i])
  end
  ctx.dtat = n[1] or 0
  ctx.last_ms = n[2] or 0
  ctx.queued_cost = n[3] or 0
  ctx.queued_count = n[4] or 0
  ctx.wake_at = n[5]
  ctx.paused_until = n[6] or 0
  ctx.budget = {milli = n[7], at = n[8]}
  ctx.circuit = {state = raw[9] or 'closed', until_ = n[10] or 0, opens = n[11] or 0,
    probes = n[12] or 0, probe_ok = n[13] or 0, win = n[14] or 0, cur_ok = n[15] or 0,
    cur_fail = n[16] or 0, prev_ok = n[17] or 0, prev_fail = n[18] or 0}
  ctx.vtime = n[19] or 0
  ctx.active_w = n[20] or 0
end

-- Write back the dependency's state and the leases this call started (one ZADD per 500
-- leases rather than one per job; unpack() of a very long list would overflow Lua's stack).
local function save_state(ctx)
  local add = ctx.inflight_add
  for i = 1, #add, 1000 do
    redis.call('ZADD', ctx.keys.inflight, unpack(add, i, math.min(i + 999, #add)))
  end
  ctx.inflight_add = {}
  local f = {'dtat', fmt(ctx.dtat), 'last_ms', fmt(ctx.last_ms), 'queued_cost',
    fmt(ctx.queued_cost), 'queued_count', fmt(ctx.queued_count), 'paused_until',
    fmt(ctx.paused_until), 'vtime', string.format('%.17g', ctx.vtime), 'active_w',
    fmt(ctx.active_w)}
  if ctx.budget.milli then
    f[#f + 1], f[#f + 2] = 'b_milli', fmt(ctx.budget.milli)
    f[#f + 1], f[#f + 2] = 'b_at', fmt(ctx.budget.at)
  end
  if ctx.circuit_dirty then
    local c = ctx.circuit
    local more = {'c_state', c.state, 'c_until', fmt(c.until_), 'c_opens', c.opens,
      'c_probes', c.probes, 'c_probe_ok', c.probe_ok, 'c_win', fmt(c.win), 'c_cur_ok',
      c.cur_ok, 'c_cur_fail', c.cur_fail, 'c_prev_ok', c.prev_ok, 'c_prev_fail', c.prev_fail}
    for _, v in ipairs(more) do
      f[#f + 1] = v
    end
  end
  redis.call('HSET', ctx.keys.state, unpack(f))
end

-- One scope's limits and state, read on first use in this call: stat = submit-side
-- reservation tat, rtat = release-side tat, pu = paused until (a Retry-After for this scope
-- only), vf = virtual finish tag of its last release (fair queueing), qn / qc = jobs / cost it
-- has waiting (scheduled, ready or retrying).
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
      local v = {}
      for num in string.gmatch(raw, '%d+') do
        v[#v + 1] = tonumber(num)
      end
      lim = {interval = v[1], burst = v[2], weight = v[3], max_queued = v[4],
        max_queued_cost = v[5], q_limit = v[6], q_period = v[7], q_rolling = v[8],
        q_wait = v[9]}
    end
  end
  if not lim then
    lim = {interval = p.scope_interval_us, burst = p.scope_burst, weight = p.scope_weight_milli,
      max_queued = p.scope_max_queued, max_queued_cost = p.scope_max_queued_cost,
      q_limit = p.scope_quota_limit, q_period = p.scope_quota_period_ms,
      q_rolling = p.scope_quota_rolling, q_wait = p.scope_quota_wait}
  end
  local key = ctx.scope_prefix .. scope_enc
  local raw = redis.call('HMGET', key, 'stat', 'rtat', 'pu', 'vf', 'qn', 'qc', 'aw')
  s = {key = key, enc = scope_enc, lim = lim, stat = tonumber(raw[1]) or 0,
    rtat = tonumber(raw[2]) or 0, pu = tonumber(raw[3]) or 0, vf = tonumber(raw[4]) or 0,
    qn = tonumber(raw[5]) or 0, qc = tonumber(raw[6]) or 0, aw = tonumber(raw[7]) or 0,
    dirty = false}
  ctx.scopes[scope_enc] = s
  return s
end

-- Write back every scope this call changed. A scope's hash lives only as long as it
-- remembers something: while it has work waiting it is kept (bounded by that work);
-- otherwise it expires once every time it holds is past, when a missing key means exactly
-- the same thing (a full bucket, no debt).
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

-- Work entering / leaving a scope's waiting line (scheduled, ready or retrying).
local function scope_queue(s, jobs, cost)
  s.qn = math.max(s.qn + jobs, 0)
  s.qc = math.max(s.qc + cost, 0)
  s.dirty = true
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

-- Weighted fair sharing between scopes: start-time fair queueing (SFQ, Goyal et al.).
-- Jobs that may run (their own scope's limits allow them) wait in their scope's FIFO list;
-- `active` holds each scope with waiting work, scored by the virtual start tag of its head
-- job. The dependency serves the smallest tag; serving a job of cost c moves its scope's tag
-- on by c / weight (in cost units x 1e6 / weight_milli) and sets the virtual time to the tag
-- served. A scope that becomes active starts at max(virtual time, its last finish tag), so
-- idle time earns no credit and a newcomer is served within one round: at most one job
-- from each other active scope goes first, i.e. about active_scopes x max_cost / rate. Over
-- any interval in which two scopes stay backlogged, their released cost divided by weight
-- differs by at most max_cost / w1 + max_cost / w2 (the SFQ fairness bound). Each step is
-- O(log active scopes). A scope whose own bucket or quota refuses its head is moved to
-- `throttled` (scored by when it may go again) and back, without blocking the others.

local function tag_step(s, cost)
  return cost * 1000000 / s.lim.weight
end

-- Where is this scope in the fair queue? 'active' | 'throttled' | 'idle' (cached per call).
local function scope_place(ctx, s)
  if not s.place then
    if redis.call('ZSCORE', ctx.keys.active, s.enc) then
      s.place = 'active'
    elseif redis.call('ZSCORE', ctx.keys.throttled, s.enc) then
      s.place = 'throttled'
    else
      s.place = 'idle'
    end
  end
  return s.place
end

local function active_count(ctx)
  if not ctx.active_n then
    ctx.active_n = redis.call('ZCARD', ctx.keys.active)
  end
  return ctx.active_n
end

-- active_w sums the weights of the active scopes. Each scope remembers the weight it added
-- (aw) and takes back exactly that, so a policy change of its weight cannot make it drift.
local function activate(ctx, s)
  active_count(ctx)
  redis.call('ZADD', ctx.keys.active, string.format('%.17g', math.max(ctx.vtime, s.vf)), s.enc)
  ctx.active_w = ctx.active_w + s.lim.weight
  ctx.active_n = ctx.active_n + 1
  s.aw, s.dirty = s.lim.weight, true
  s.place = 'active'
end

local function deactivate(ctx, s)
  active_count(ctx)
  if redis.call('ZREM', ctx.keys.active, s.enc) == 1 then
    local w = s.aw
    if w <= 0 then
      w = s.lim.weight
    end
    ctx.active_w = math.max(ctx.active_w - w, 0)
    ctx.active_n = math.max(ctx.active_n - 1, 0)
  end
  s.aw, s.dirty = 0, true
  s.place = 'idle'
end

local function throttle(ctx, s, until_us)
  deactivate(ctx, s)
  redis.call('ZADD', ctx.keys.throttled, fmt(until_us), s.enc)
  s.place = 'throttled'
end

-- A job its scope allows now joins the scope's ready line (and the scope the fair queue).
local function enqueue_ready(ctx, s, job_enc)
  redis.call('RPUSH', ctx.ready_prefix .. s.enc, job_enc)
  if scope_place(ctx, s) == 'idle' then
    activate(ctx, s)
  end
end

-- Quotas: a hard cost budget per scope and period, reserved at release. Fixed windows keep
-- {win, used, reserved} in the scope's quota hash; rolling windows keep every reservation in
-- a log (zset scored by release time, member "cost:job:attempt") and its total in `sum`.
local function quota_load(ctx, s)
  if s.quota then
    return s.quota
  end
  local lim = s.lim
  local key = ctx.quota_prefix .. s.enc
  local q = {key = key, log = key .. ':log'}
  local raw = redis.call('HMGET', key, 'win', 'used', 'reserved', 'sum')
  if lim.q_rolling == 1 then
    local cut = ms_of(ctx.now) - lim.q_period
    local sum = tonumber(raw[4]) or 0
    local gone = redis.call('ZRANGE', q.log, '-inf', '(' .. fmt(cut + 1), 'BYSCORE')
    for _, m in ipairs(gone) do
      sum = sum - tonumber(string.match(m, '^(%d+):'))
    end
    q.total = math.max(sum, 0)
    if #gone > 0 then
      -- Pruned entries leave the stored total at once, whether or not this call reserves.
      redis.call('ZREMRANGEBYSCORE', q.log, '-inf', '(' .. fmt(cut + 1))
      redis.call('HSET', key, 'sum', fmt(q.total))
    end
  else
    local win = math.floor(ms_of(ctx.now) / lim.q_period)
    q.win = win
    if tonumber(raw[1]) == win then
      q.used, q.reserved = tonumber(raw[2]) or 0, tonumber(raw[3]) or 0
    else
      q.used, q.reserved = 0, 0
    end
    q.total = q.used + q.reserved
  end
  s.quota = q
  return q
end

-- Earliest time (us) at which `need` more cost fits the scope's quota (now when it fits;
-- nil when it never can).
local function quota_at(ctx, s, need)
  local lim = s.lim
  if lim.q_limit <= 0 then
    return ctx.now
  end
  if need > lim.q_limit then
    return nil
  end
  local q = quota_load(ctx, s)
  if q.total + need <= lim.q_limit then
    return ctx.now
  end
  if lim.q_rolling ~= 1 then
    local until_ms = (q.win + 1) * lim.q_period
    if need <= lim.q_limit then
      return until_ms * 1000
    end
    return nil
  end
  local over = q.total + need - lim.q_limit
  local log = redis.call('ZRANGE', q.log, 0, -1, 'WITHSCORES')
  for i = 1, #log, 2 do
    over = over - tonumber(string.match(log[i], '^(%d+):'))
    if over <= 0 then
      return (tonumber(log[i + 1]) + lim.q_period) * 1000
    end
  end
  return ctx.now + lim.q_period * 1000
end

local function quota_save(ctx, s)
  local q = s.quota
  if not q then
    return
  end
  local ttl = s.lim.q_period * 2 + 1000
  if s.lim.q_rolling == 1 then
    redis.call('HSET', q.key, 'sum', fmt(q.total))
    redis.call('PEXPIRE', q.log, ttl)
  else
    redis.call('HSET', q.key, 'win', fmt(q.win), 'used', fmt(q.used), 'reserved',
      fmt(q.reserved))
  end
  redis.call('PEXPIRE', q.key, ttl)
end

-- Reserve a released job's declared cost; the record remembers where, for settlement.
local function quota_reserve(ctx, s, job_key, job_enc, attempt, cost)
  if s.lim.q_limit <= 0 then
    return
  end
  local q = quota_load(ctx, s)
  local now_ms = ms_of(ctx.now)
  if s.lim.q_rolling == 1 then
    local member = fmt(cost) .. ':' .. job_enc .. ':' .. fmt(attempt)
    redis.call('ZADD', q.log, now_ms, member)
    redis.call('HSET', job_key, 'q_key', q.key, 'q_member', member, 'q_at', now_ms, 'q_amt', cost)
  else
    q.reserved = q.reserved + cost
    redis.call('HSET', job_key, 'q_key', q.key, 'q_win', q.win, 'q_amt', cost)
  end
  q.total = q.total + cost
  quota_save(ctx, s)
end

-- Settle a released job's reservation: to `actual` (a success reporting its actual cost),
-- or to nothing (a failed, reclaimed or dead attempt gives it back). Independent of the
-- policy in force now: the record says where the reservation lives.
local function quota_settle(job_key, job_enc, attempt, actual, now_ms)
  local f = redis.call('HMGET', job_key, 'q_key', 'q_member', 'q_at', 'q_amt', 'q_win')
  if not f[1] then
    return
  end
  local key, amt = f[1], tonumber(f[4])
  redis.call('HDEL', job_key, 'q_key', 'q_member', 'q_at', 'q_amt', 'q_win')
  if f[2] then
    local log = key .. ':log'
    if redis.call('ZREM', log, f[2]) == 1 then
      local sum = (tonumber(redis.call('HGET', key, 'sum')) or 0) - amt
      if actual and actual > 0 then
        redis.call('ZADD', log, f[3], fmt(actual) .. ':' .. job_enc .. ':' .. fmt(attempt))
        sum = sum + actual
      end
      redis.call('HSET', key, 'sum', fmt(math.max(sum, 0)))
    end
  else
    local q = redis.call('HMGET', key, 'win', 'used', 'reserved')
    if q[1] and q[1] == f[5] then
      local used = tonumber(q[2]) or 0
      if actual then
        used = used + actual
      end
      redis.call('HSET', key, 'used', fmt(used), 'reserved',
        fmt(math.max((tonumber(q[3]) or 0) - amt, 0)))
    end
  end
end

-- The circuit breaker's gate: nil when it lets work through now, else the time to look
-- again. Moves open -> half_open once open_for has passed.
local function circuit_blocks(ctx)
  local p = ctx.policy
  if p.circuit_enabled ~= 1 then
    return nil
  end
  local c = ctx.circuit
  if c.state == 'open' then
    if ctx.now < c.until_ then
      return c.until_
    end
    c.state, c.probes, c.probe_ok = 'half_open', 0, 0
    ctx.circuit_dirty = true
  end
  if c.state == 'half_open' and c.probes >= p.circuit_probes then
    return ctx.now + p.circuit_open_ms * 1000  -- probes are out; their reports decide
  end
  return nil
end

-- Release-time checks: the dependency bucket (which also carries a Retry-After pause), the
-- circuit and the in-flight limit are shared by every job of the dependency, so a refusal
-- blocks the queue head; the scope bucket (and a scope-only pause) concerns one scope.
-- Returns ok, blocker ('dependency' | 'circuit' | 'in_flight' | 'scope'), earliest retry
-- time (us).
local function can_release(ctx, s, cost)
  local p, now = ctx.policy, ctx.now
  local dep_at = gcra_earliest(ctx.dtat, now, cost, p.interval_us, p.burst)
  if dep_at > now then
    return false, 'dependency', dep_at
  end
  local circuit_at = circuit_blocks(ctx)
  if circuit_at then
    return false, 'circuit', circuit_at
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
  local q_at = quota_at(ctx, s, cost)
  if not q_at or q_at > now then
    return false, 'quota', q_at or (now + s.lim.q_period * 1000)
  end
  return true, nil, now
end

-- The retry budget (milli-tokens), refilled lazily: min_per_second over time, ratio per
-- first attempt released, capped at `window` worth of both.
local function budget_refill(ctx)
  local p, b = ctx.policy, ctx.budget
  if not b.milli then
    b.milli, b.at = 0, ctx.now
  end
  local rate_per_s = 1000000 / p.interval_us
  local cap = (p.budget_mps_milli + p.budget_ratio_milli * rate_per_s) * p.budget_window_ms / 1000
  local gained = math.floor(p.budget_mps_milli * (ctx.now - b.at) / 1000000)
  if gained > 0 then
    b.milli, b.at = math.min(cap, b.milli + gained), ctx.now
  elseif b.at > ctx.now then
    b.at = ctx.now
  end
  return cap
end

-- Take one retry token: true, or false and when one will be there (nil: only first
-- attempts can refill it).
local function budget_take(ctx)
  budget_refill(ctx)
  local p, b = ctx.policy, ctx.budget
  if b.milli >= 1000 then
    b.milli = b.milli - 1000
    return true, nil
  end
  if p.budget_mps_milli <= 0 then
    return false, nil
  end
  return false, ctx.now + math.ceil((1000 - b.milli) * 1000000 / p.budget_mps_milli)
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
  local probe = 0
  if p.circuit_enabled == 1 and ctx.circuit.state == 'half_open' then
    probe = 1
  end
  fields[n + 13], fields[n + 14] = 'probe', probe
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
  quota_reserve(ctx, s, job_key, job_enc, attempt, cost)
  if p.circuit_enabled == 1 and ctx.circuit.state == 'half_open' then
    ctx.circuit.probes = ctx.circuit.probes + 1
    ctx.circuit_dirty = true
  end
  if attempt == 1 and p.budget_enabled == 1 then
    local cap = budget_refill(ctx)
    ctx.budget.milli = math.min(cap, ctx.budget.milli + p.budget_ratio_milli)
  end
end
