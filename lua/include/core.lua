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

-- Parsed policies, per policy key, kept for as long as the library is loaded: a call reads
-- the one field `packed` (every POLICY_FIELDS value in order, written by apply_policy.lua)
-- and parses it only when it differs from the one it parsed last (a new version). The table
-- is bounded: it is dropped whole past 1,000 entries (keys of many prefixes, in tests).
local POLICY_CACHE, POLICY_CACHED = {}, 0

-- Returns the compiled policy as a table of numbers (read only: shared between calls), or
-- nil when none is applied. `deleting` (delete.lua) is a field of its own, not in `packed`:
-- `packed` keeps the layout every revision of protocol 1 parses (an older library reading a
-- longer one would index past its field names), and values past the names are ignored.
local function load_policy(policy_key)
  local got = redis.call('HMGET', policy_key, 'packed', 'deleting')
  local raw = got[1]
  if not raw then
    return nil
  end
  local deleting = got[2] or '0'
  local hit = POLICY_CACHE[policy_key]
  if hit and hit.raw == raw and hit.deleting == deleting then
    return hit.p
  end
  local p, i = {}, 0
  for num in string.gmatch(raw, '[^ ]+') do
    i = i + 1
    if POLICY_FIELDS[i] then
      p[POLICY_FIELDS[i]] = tonumber(num)
    end
  end
  p.deleting = tonumber(deleting) or 0
  -- Per-policy constants, computed once per version.
  p.default_lim = {interval = p.scope_interval_us, burst = p.scope_burst,
    weight = p.scope_weight_milli, max_queued = p.scope_max_queued,
    max_queued_cost = p.scope_max_queued_cost, q_limit = p.scope_quota_limit,
    q_period = p.scope_quota_period_ms, q_rolling = p.scope_quota_rolling,
    q_wait = p.scope_quota_wait}
  p.override_cache = {}
  if POLICY_CACHED >= 1000 then
    POLICY_CACHE, POLICY_CACHED = {}, 0
  end
  if not hit then
    POLICY_CACHED = POLICY_CACHED + 1
  end
  POLICY_CACHE[policy_key] = {raw = raw, deleting = deleting, p = p}
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
--
-- Every field a call may set is in this constructor, so the table is sized once: a Lua table
-- that grows field by field is rehashed again and again, which cost more than the decision.
local NO_CIRCUIT = {state = 'closed', until_ = 0, opens = 0, probes = 0, probe_ok = 0, win = 0,
  cur_ok = 0, cur_fail = 0, prev_ok = 0, prev_fail = 0}  -- read only (no circuit breaker)
local NO_BUDGET = {}  -- read only (no retry budget)

local function new_ctx(policy, now, keys, prefixes)
  return {policy = policy, now = now, now_ms = math.floor(now / 1000), keys = keys,
    job_prefix = prefixes.job, scope_prefix = prefixes.scope, ready_prefix = prefixes.ready,
    quota_prefix = prefixes.quota, scopes = {}, inflight_add = {}, steps = 0,
    max_steps = prefixes.max_steps or 1000,
    dtat = 0, last_ms = 0, queued_cost = 0, queued_count = 0, wake_at = false, paused_until = 0,
    vtime = 0, active_w = 0, parked = 0, timer_until = 0, budget = NO_BUDGET,
    circuit = NO_CIRCUIT, st_raw = false, c_raw = false, live = false, exhausted = false,
    reclaimed = 0, retried = 0, dead = 0, moved = 0, circuit_dirty = false,
    workers_signalled = false, coordinator = false, park_seq = 0, fq = false,
    fq_size = prefixes.fq_size or 2, m = {}, ev = {}, hold = 0, hold_n = 0,
    hold_next = 0, hold_raw = false}
end

-- Fleet-wide counters (what `janus exporter` exports): fields 'm:<name>' of the state hash,
-- added up in ctx.m during the call and written when it ends (save_state / flush_counts:
-- one HINCRBY per counter that moved, in the write the call makes anyway). Names: submit:
-- <ready|scheduled>, submit:existing, rejected:<reason>, started, started_cost (their
-- cost), completed, failed,
-- returned, retried, dead:<reason>, lease_expired, circuit:<open|half_open|closed>, paused,
-- and the release lag (a job's start minus its not_before) as a histogram: lag_le:<ms> per
-- bucket (not cumulative: janus.metrics adds them up) and lag_ms_sum.
local function tally(ctx, name, n)
  ctx.m[name] = (ctx.m[name] or 0) + (n or 1)
end

-- Events: the state changes an operator wants to see in order (circuit transitions, pauses
-- and resumes, dead letters, reclaimed leases, policy applied or deleted), appended to the
-- dependency's events stream when the call ends (flush_counts), one entry each: field
-- `kind`, `at_ms` (the call's time), then the event's own fields. The stream keeps about
-- EVENTS_KEPT entries. Its key is the state (or policy) key's with `events` for its last
-- part (same hash tag, so the same slot; no KEYS entry, as with the per-job keys built from
-- the prefixes).
local EVENTS_KEPT = 10000

local function events_key(key)
  return (string.gsub(key, '[^:]+$', 'events'))
end

local function event(ctx, kind, ...)
  ctx.ev[#ctx.ev + 1] = {kind, ...}
end

local function flush_events(state_key, now_ms, list)
  local key = events_key(state_key)
  for _, e in ipairs(list) do
    redis.call('XADD', key, 'MAXLEN', '~', EVENTS_KEPT, '*', 'kind', e[1], 'at_ms',
      fmt(now_ms), unpack(e, 2))
  end
end

local function flush_counts(ctx)
  for name, n in pairs(ctx.m) do
    redis.call('HINCRBY', ctx.keys.state, 'm:' .. name, n)
  end
  ctx.m = {}
  if ctx.ev[1] then
    flush_events(ctx.keys.state, ctx.now_ms, ctx.ev)
    ctx.ev = {}
  end
end

-- Pauses by hand (janus pause, pause.lua; include/holds.lua): the state field `hold` is
-- "<until_us> <n> <next_us>": the whole dependency is held until until_us (0: not held;
-- HOLD_FOREVER: until resumed); n scopes are held, each by a field `hold:<scope_enc>` =
-- "<until_us> <scope name>"; next_us is the earliest end of a scope's hold (when the due
-- work looks at them again). A call reads a scope's field only while n > 0, so no pause
-- costs nothing.
local HOLD_FOREVER = 9000000000000000

local function parse_hold(ctx, raw)
  ctx.hold_raw = raw or false
  if raw then
    local dep, n, nxt = string.match(raw, '^(%d+) (%d+) (%d+)$')
    ctx.hold, ctx.hold_n, ctx.hold_next = tonumber(dep) or 0, tonumber(n) or 0, tonumber(nxt) or 0
  end
end

local function save_hold(ctx)
  local raw = fmt(ctx.hold) .. ' ' .. fmt(ctx.hold_n) .. ' ' .. fmt(ctx.hold_next)
  if raw ~= (ctx.hold_raw or '0 0 0') then
    redis.call('HSET', ctx.keys.state, 'hold', raw)
    ctx.hold_raw = raw
  end
end

-- The dependency's state hash keeps its hot numbers packed in two fields, each ten
-- big-endian doubles (struct '>dddddddddd': one C call to read or write them, and doubles
-- hold every integer here exactly; unchanged means not written):
--   st  dtat last_ms queued_cost queued_count paused_until vtime active_w b_parked b_milli b_at
--   c   c_state c_until c_opens c_probes c_probe_ok c_win c_cur_ok c_cur_fail c_prev_ok c_prev_fail
-- (b_milli and b_at are -1 until the retry budget is first used; c_state is 0 closed, 1 open,
-- 2 half_open). wake_at and timer_until are fields of their own: signals and the coordinator
-- write them alone. janus.calls.STATE_PACKED / CIRCUIT_PACKED name the same fields in order.
local TEN = '>dddddddddd'
local C_NAMES = {[0] = 'closed', [1] = 'open', [2] = 'half_open'}
local C_CODES = {closed = 0, open = 1, half_open = 2}

local function load_state(ctx)
  local p = ctx.policy
  local raw = redis.call('HMGET', ctx.keys.state, 'st', 'wake_at', 'timer_until', 'c', 'hold')
  ctx.st_raw = raw[1]
  parse_hold(ctx, raw[5])
  ctx.wake_at = tonumber(raw[2]) or false
  ctx.timer_until = tonumber(raw[3]) or 0
  if raw[1] and string.len(raw[1]) == 80 then
    local a, b, c, d, e, f, g, h, i, j = struct.unpack(TEN, raw[1])
    ctx.dtat, ctx.last_ms, ctx.queued_cost, ctx.queued_count = a, b, c, d
    ctx.paused_until, ctx.vtime, ctx.active_w, ctx.parked = e, f, g, h
    if p.budget_enabled == 1 then
      local milli, at = i, j
      if milli >= 0 then
        ctx.budget = {milli = milli, at = at}
      else
        ctx.budget = {}
      end
    end
  elseif p.budget_enabled == 1 then
    ctx.budget = {}
  end
  if p.circuit_enabled == 1 then
    ctx.c_raw = raw[4]
    if raw[4] and string.len(raw[4]) == 80 then
      local a, b, c, d, e, f, g, h, i, j = struct.unpack(TEN, raw[4])
      ctx.circuit = {state = C_NAMES[a] or 'closed', until_ = b, opens = c, probes = d,
        probe_ok = e, win = f, cur_ok = g, cur_fail = h, prev_ok = i, prev_fail = j}
    else
      ctx.circuit = {state = 'closed', until_ = 0, opens = 0, probes = 0, probe_ok = 0,
        win = 0, cur_ok = 0, cur_fail = 0, prev_ok = 0, prev_fail = 0}
    end
  end
end

-- Write back the leases this call started (one ZADD per 500 leases rather than one per
-- job; unpack() of a very long list would overflow Lua's stack) and the packed state, when
-- it changed.
local function save_state(ctx)
  local add = ctx.inflight_add
  if #add > 0 then
    for i = 1, #add, 1000 do
      redis.call('ZADD', ctx.keys.inflight, unpack(add, i, math.min(i + 999, #add)))
    end
    ctx.inflight_add = {}
  end
  local b = ctx.budget
  local st = struct.pack(TEN, ctx.dtat, ctx.last_ms, ctx.queued_cost, ctx.queued_count,
    ctx.paused_until, ctx.vtime, ctx.active_w, ctx.parked, b.milli or -1, b.at or -1)
  local c_new = false
  if ctx.circuit_dirty then
    local c = ctx.circuit
    c_new = struct.pack(TEN, C_CODES[c.state], c.until_, c.opens, c.probes, c.probe_ok,
      c.win, c.cur_ok, c.cur_fail, c.prev_ok, c.prev_fail)
    ctx.circuit_dirty = false
  end
  if st ~= ctx.st_raw then
    if c_new and c_new ~= ctx.c_raw then
      redis.call('HSET', ctx.keys.state, 'st', st, 'c', c_new)
      ctx.c_raw = c_new
    else
      redis.call('HSET', ctx.keys.state, 'st', st)
    end
    ctx.st_raw = st
  elseif c_new and c_new ~= ctx.c_raw then
    redis.call('HSET', ctx.keys.state, 'c', c_new)
    ctx.c_raw = c_new
  end
  flush_counts(ctx)
end
