-- Core helpers: time, numbers, the compiled policy, and one call's view of a dependency
-- (`ctx`: the policy, the time and the dependency's state hash, read once and written once).
--
-- Units: time in microseconds (`*_us`, and unsuffixed times) unless named `_ms`; cost in
-- integer units; the retry budget in milli-tokens. Lua numbers are doubles: every value
-- kept here stays below 2^53 (timestamps in us are ~1.8e15).

-- The one clock: Redis TIME. An explicit time (`arg`, in us) is honoured only for a
-- dependency whose policy was applied in test mode (by janus.testing: the policy field
-- test_clock = 1, which `janus doctor` and the coordinator report loudly); anywhere else it
-- is refused, before anything is written, so no caller can move time for everyone.
local function now_from(arg, policy)
  if arg ~= nil and arg ~= '' and policy then  -- (no policy: nothing is written anyway)
    if policy.test_clock ~= 1 then
      error({err = 'JANUS_INVALID - explicit time is refused: the dependency is not in test ' ..
        'mode (only janus.testing applies policies that accept a test clock)'})
    end
    local n = tonumber(arg)
    if not n or n ~= math.floor(n) or n < 0 or n > 4000000000000000 then
      error({err = 'JANUS_INVALID - explicit time must be whole microseconds since 1970'})
    end
    return n
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
  'scope_quota_period_ms', 'scope_quota_rolling', 'scope_quota_wait', 'version', 'test_clock',
  'max_dead_letters'}

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

-- ctx: one call's view of a dependency. `keys` holds the keys the calling script received,
-- by name (a script names only what it uses); `prefixes` the key prefixes of per-job and
-- per-scope keys (job, scope, ready, quota), which carry the dependency's hash tag.
local function new_ctx(policy, now, keys, prefixes)
  return {policy = policy, now = now, now_ms = math.floor(now / 1000), keys = keys,
    job_prefix = prefixes.job, scope_prefix = prefixes.scope, ready_prefix = prefixes.ready,
    quota_prefix = prefixes.quota, scopes = {}, inflight_add = {}, steps = 0,
    max_steps = prefixes.max_steps or 1000}
end

local STATE_FIELDS = {'dtat', 'last_ms', 'queued_cost', 'queued_count', 'wake_at',
  'paused_until', 'b_milli', 'b_at', 'c_state', 'c_until', 'c_opens', 'c_probes',
  'c_probe_ok', 'c_win', 'c_cur_ok', 'c_cur_fail', 'c_prev_ok', 'c_prev_fail', 'vtime',
  'active_w', 'b_parked', 'timer_until'}

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
  ctx.parked = n[21] or 0
  ctx.timer_until = n[22] or 0
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
    fmt(ctx.active_w), 'b_parked', fmt(ctx.parked)}
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
