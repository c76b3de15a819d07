-- Release: the checks a job passes when a worker asks for work, and the hand-off itself.
-- A released job is a started attempt: it is on the worker's group stream, delivered to
-- that worker (it is in the worker's pending entries list), and its lease runs.

--- @include "buckets"
--- @include "fairq"
--- @include "quota"
--- @include "circuit"
--- @include "budget"

-- Live leases (attempts whose lease deadline, in ms, is still ahead), counted once per call
-- and then kept up to date in ctx.
local function live_leases(ctx)
  if not ctx.live then
    ctx.live = redis.call('ZCOUNT', ctx.keys.inflight, '(' .. fmt(ctx.now_ms), '+inf')
  end
  return ctx.live
end

-- Release-time checks: a pause by hand, the dependency bucket (which also carries a
-- Retry-After pause), the circuit and the in-flight limit are shared by every job of the
-- dependency, so a refusal blocks the queue head; the scope's pause by hand, its bucket (and
-- a scope-only Retry-After pause) and its quota concern one scope. Returns ok, blocker
-- ('paused' | 'dependency' | 'circuit' | 'in_flight' | 'scope' | 'quota'), earliest time to
-- look again (us).
local function can_release(ctx, s, cost)
  local p, now = ctx.policy, ctx.now
  if ctx.hold > now then
    return false, 'paused', ctx.hold
  end
  local dep_at = gcra_earliest(ctx.dtat, now, cost, p.interval_us, p.burst)
  if dep_at > now then
    return false, 'dependency', dep_at
  end
  local circuit_at = circuit_blocks(ctx)
  if circuit_at then
    return false, 'circuit', circuit_at
  end
  if p.max_in_flight > 0 and live_leases(ctx) >= p.max_in_flight then
    local first = redis.call('ZRANGE', ctx.keys.inflight, '(' .. fmt(ctx.now_ms), '+inf',
      'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
    local at = now + 1000
    if first[2] then
      at = math.max(tonumber(first[2]) * 1000 + 1000, at)
    elseif ctx.inflight_add[1] then  -- every live lease was started by this very call
      at = math.max(ctx.inflight_add[1] * 1000 + 1000, at)
    end
    return false, 'in_flight', at
  end
  if s.hold > now then
    return false, 'scope', s.hold
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

-- Start attempt `job.attempt` of a picked job on consumer `c` ({stream, group, consumer,
-- held = stream NUL group NUL consumer}):
-- XADD its entry (stream ids carry the release time in ms and never go backwards, even if
-- the clock does), make the record `running` with its lease, take the buckets, the quota
-- reservation, a half-open probe slot and (first attempts) deposit into the retry budget.
-- The caller checked can_release (and the budget, for a retry). Returns token, deadline_ms,
-- payload.
-- Release-lag histogram buckets (ms; core.lua's tally names lag_le:<ms>).
local LAG_BUCKETS = {5, 25, 100, 500, 1000, 5000, 30000, 120000}

local function tally_lag(ctx, not_before_ms)
  local lag = math.max(ctx.now_ms - (not_before_ms or ctx.now_ms), 0)
  local le = 'inf'
  for _, b in ipairs(LAG_BUCKETS) do
    if lag <= b then
      le = b
      break
    end
  end
  tally(ctx, 'lag_le:' .. le)
  tally(ctx, 'lag_ms_sum', lag)
end

local function start_attempt(ctx, c, job)
  local p = ctx.policy
  tally(ctx, 'started')
  tally(ctx, 'started_cost', job.cost)
  tally_lag(ctx, job.not_before_ms)
  local ms = ctx.now_ms
  if ms < ctx.last_ms then
    ms = ctx.last_ms
  end
  local job_key = ctx.job_prefix .. job.enc
  local deadline = ctx.now_ms + p.lease_ms
  -- The entry carries only the job id: it is a delivery record, the job is in its record.
  local token = redis.call('XADD', c.stream, fmt(ms) .. '-*', 'id', job.id)
  local probe = 0
  if p.circuit_enabled == 1 and ctx.circuit.state == 'half_open' then
    probe = 1
    ctx.circuit.probes = ctx.circuit.probes + 1
    ctx.circuit_dirty = true
  end
  -- `held`: the stream, group and consumer that hold the attempt, NUL-separated (names may
  -- not contain NUL), in one field.
  redis.call('HSET', job_key, 'status', 'running', 'attempt', job.attempt, 'started_ms',
    ctx.now_ms, 'token', token, 'lease_deadline_ms', deadline, 'held', c.held, 'probe', probe)
  local add = ctx.inflight_add
  add[#add + 1], add[#add + 2] = deadline, job.enc
  if ctx.live then
    ctx.live = ctx.live + 1
  end
  ctx.dtat = gcra_take(ctx.dtat, ctx.now, job.cost, p.interval_us)
  ctx.last_ms = ms
  local s = job.sc
  s.rtat = gcra_take(s.rtat, ctx.now, job.cost, s.lim.interval)
  s.dirty = true
  quota_reserve(ctx, s, job_key, job.enc, job.attempt, job.cost)
  if p.budget_enabled == 1 then
    if job.attempt == 1 then
      budget_deposit(ctx)
    elseif job.bpaid then
      redis.call('HDEL', job_key, 'bpaid')  -- its token was set aside when it was unparked
    else
      budget_take(ctx)
    end
  end
  return token, deadline, job.payload
end

-- The stream id just before `id` ("ms-seq"), so that a group created there delivers `id`
-- and what follows it, and nothing older.
local function id_before(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if tonumber(seq) > 0 then
    return ms .. '-' .. fmt(tonumber(seq) - 1)
  end
  return fmt(tonumber(ms) - 1) .. '-18446744073709551615'
end

-- Deliver the entries this call just added (`tokens`, in order) to the consumer: XREADGROUP
-- hands over the group's new entries, which are exactly these, so the consumer's pending
-- entries list records what it holds. A missing group (or stream: Redis restarted empty, a
-- new group) is created just before the first of them. Returns true when it was created.
local function deliver(ctx, c, tokens)
  local n = #tokens
  if n == 0 then
    return false
  end
  local function read()
    return redis.pcall('XREADGROUP', 'GROUP', c.group, c.consumer, 'COUNT', n, 'STREAMS',
      c.stream, '>')
  end
  local got = read()
  -- The usual case: exactly our entries, in order (ids only grow, so first and last decide).
  if type(got) == 'table' and got[1] and not got.err then
    local entries = got[1][2]
    if #entries == n and entries[1][1] == tokens[1] and entries[n][1] == tokens[n] then
      return false
    end
  end
  local created = false
  if type(got) == 'table' and got.err then
    if not string.find(got.err, 'NOGROUP', 1, true) then
      return false  -- cannot happen for a stream we just wrote; the leases still hold
    end
    redis.call('XGROUP', 'CREATE', c.stream, c.group, id_before(tokens[1]))
    redis.call('SADD', ctx.keys.groups, c.group)
    created = true
    got = read()
  end
  -- Anything else the group had not delivered is not Janus's: acknowledge and drop it, and
  -- read on until ours are delivered (a stream only Janus writes never has any).
  local mine = {}
  for _, t in ipairs(tokens) do
    mine[t] = true
  end
  local delivered, reads = 0, 1
  while true do
    local entries = {}
    if type(got) == 'table' and got[1] then
      entries = got[1][2]
    end
    for _, entry in ipairs(entries) do
      if mine[entry[1]] then
        delivered = delivered + 1
      else
        redis.call('XACK', c.stream, c.group, entry[1])
        redis.call('XDEL', c.stream, entry[1])
      end
    end
    if delivered >= n or #entries == 0 or reads >= 10 then
      break
    end
    got, reads = read(), reads + 1
  end
  return created
end
