#!lua
-- submit.lua: admission. Decides, for each job of a batch, ready | scheduled | rejected.
--
-- Design (see janus/store.py for the map): the scope's own bucket is reserved here, at
-- submit time; it fixes when the job may run as far as its scope is concerned (eligible).
-- Nothing is released here: a job is released only when a worker asks for work (fetch.lua),
-- which checks the dependency's share (start-time fair queueing between scopes, see
-- include/fairq.lua), the dependency bucket, the in-flight limit, the circuit, the retry
-- budget and the scope's quota at that moment. So a flood from one scope never books the
-- dependency's future capacity ahead of a scope that arrives later, work waiting for a
-- worker waits in Janus's queues (where the limits apply), and not_before_ms is an estimate
-- and a lower bound.
--
-- A job its scope allows now joins its scope's ready line (and an idle worker is woken);
-- otherwise it waits in the delay queue until its scope allows it (and the coordinator is
-- woken if that is earlier than it planned to look). It is rejected, with nothing kept,
-- when its scope's waiting line is full (max_queued / max_queued_cost: scope_queue_full),
-- or the estimated wait exceeds max_wait (max_wait_exceeded, or quota_exhausted /
-- circuit_open / dependency_paused when that is what holds it: a Retry-After or a pause by
-- hand, include/holds.lua), or the dependency is being deleted (dependency_deleted: its
-- waiting work drains, delete.lua). The quota counts the
-- scope's waiting work too and fits it into later windows; with on_exhausted: wait the
-- quota's wait is not bounded by max_wait. A job id that already exists returns that job's state and changes
-- nothing, so a repeated call is a no-op.
--
-- KEYS[1] policy     hash    compiled limits of the dependency (read only)
-- KEYS[2] scopes     hash    encoded scope -> its limits (read only)
-- KEYS[3] state      hash    dtat, queued_cost, queued_count, wake_at, vtime, circuit, ...
-- KEYS[4] delayed    zset    waiting job ids, score = eligible time (us)
-- KEYS[5] wake       list    coordinator wake-up signal (at most one element)
-- KEYS[6] work       list    idle-worker wake-up signal (at most one element)
-- KEYS[7] active     zset    scopes with ready work, score = virtual start tag of the head
-- KEYS[8] throttled  zset    scopes held by their own bucket or quota, score = until (us)
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope state (carries the hash tag)
-- ARGV[3] ready_prefix  string  key prefix of per-scope ready lines (carries the hash tag)
-- ARGV[4] quota_prefix  string  key prefix of per-scope quota state (carries the hash tag)
-- ARGV[5] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[6] count         int     number of jobs that follow
-- ARGV[7...] jobs       6 values per job: job_enc, job_id, scope_enc, scope, cost, payload
--
-- Returns 7 values per job: status, reason, not_before_ms, retry_after_ms, created, attempt,
-- state. status: "ready" (its scope allows it now and nothing known holds it: the next
-- worker that asks may take it) | "scheduled" (waits until at least not_before_ms) |
-- "rejected"; reason: "" | "unknown_dependency" | "max_wait_exceeded" | "circuit_open" |
-- "dependency_paused" | "scope_queue_full" | "quota_exhausted" | "dependency_deleted";
-- retry_after_ms: -1 when there is none (held until resumed, being deleted); created: 1 if this call created the job, 0 if it already existed; state:
-- the job record's status ("" when rejected).
-- Raises (nothing written) "JANUS_INVALID <index> <detail>" when a job's cost exceeds
-- max_cost or its payload exceeds max_payload.
--
-- Writes: job records, scope state, ready lines, active, state, delayed, quota state (a
-- rolling log pruned), wake, work.

--- @include "quota"
--- @include "circuit"
--- @include "buckets"
--- @include "fairq"

local job_prefix = ARGV[1]
local count = tonumber(ARGV[6])
local FIELDS = 6
local FIRST = 6

local policy = load_policy(KEYS[1])
local now = now_from(ARGV[5], policy)
if not policy then
  local out = {}
  for i = 1, count do
    for _, v in ipairs({'rejected', 'unknown_dependency', 0, -1, 0, 0, ''}) do
      out[#out + 1] = v
    end
  end
  return out
end

-- Validate the whole batch before writing anything.
for i = 1, count do
  local base = FIRST + (i - 1) * FIELDS
  local cost = tonumber(ARGV[base + 5])
  local size = string.len(ARGV[base + 6])
  if not cost or cost < 1 or cost ~= math.floor(cost) then
    return redis.error_reply('JANUS_INVALID ' .. i .. ' cost must be an integer >= 1')
  end
  if cost > policy.max_cost then
    return redis.error_reply('JANUS_INVALID ' .. i .. ' cost ' .. fmt(cost) ..
      ' can never be admitted: max_cost is ' .. fmt(policy.max_cost))
  end
  if size > policy.max_payload then
    return redis.error_reply('JANUS_INVALID ' .. i .. ' payload is ' .. fmt(size) ..
      ' bytes; max_payload is ' .. fmt(policy.max_payload))
  end
end

local ctx = new_ctx(policy, now, {policy = KEYS[1], scopes = KEYS[2], state = KEYS[3],
  delayed = KEYS[4], wake = KEYS[5], work = KEYS[6], active = KEYS[7], throttled = KEYS[8]},
  {job = job_prefix, scope = ARGV[2], ready = ARGV[3], quota = ARGV[4]})
load_state(ctx)
local out = {}
local dirty = false
local wake_at = nil
local now_ms = ctx.now_ms

local function emit(status, reason, nb_ms, ra_ms, created, attempt, state)
  if reason ~= '' then
    tally(ctx, 'rejected:' .. reason)
  elseif created == 1 then
    tally(ctx, 'submit:' .. status)
  else
    tally(ctx, 'submit:existing')
  end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = status, reason, nb_ms, ra_ms
  out[n + 5], out[n + 6], out[n + 7] = created, attempt, state
end

-- Times that go back to the caller are kept within 100 years (an extreme policy can
-- estimate further; Lua would turn that into a nonsensical integer).
local HORIZON = 100 * 365 * 86400 * 1000000

local function reject(reason, at)
  if at >= HOLD_FOREVER then  -- held until resumed by hand: no time to give
    emit('rejected', reason, 0, -1, 0, 0, '')
    return
  end
  at = math.min(at, now + HORIZON)
  emit('rejected', reason, math.ceil(at / 1000), math.ceil((at - now) / 1000), 0, 0, '')
end

for i = 1, count do
  local base = FIRST + (i - 1) * FIELDS
  local job_enc, job_id = ARGV[base + 1], ARGV[base + 2]
  local scope_enc, scope = ARGV[base + 3], ARGV[base + 4]
  local cost, payload = tonumber(ARGV[base + 5]), ARGV[base + 6]
  local job_key = job_prefix .. job_enc

  local existing = redis.call('HMGET', job_key, 'status', 'not_before_ms', 'attempt')
  if existing[1] then
    local st = existing[1]
    local nb = tonumber(existing[2]) or 0
    local status = 'ready'
    if (st == 'scheduled' or st == 'failed') and nb > now_ms then
      status = 'scheduled'
    end
    emit(status, '', nb, -1, 0, tonumber(existing[3]) or 0, st)
  elseif policy.deleting == 1 then
    emit('rejected', 'dependency_deleted', 0, -1, 0, 0, '')  -- draining (delete.lua)
  else
    local sc = scope_get(ctx, scope_enc)
    local lim = sc.lim
    local eligible = gcra_earliest(sc.stat, now, cost, lim.interval, lim.burst)
    local full_at = nil
    if (lim.max_queued > 0 and sc.qn + 1 > lim.max_queued) or
        (lim.max_queued_cost > 0 and sc.qc + cost > lim.max_queued_cost) then
      -- Backpressure: about when the line will have drained enough, at the scope's rate.
      full_at = now + math.max(sc.qc + cost - math.max(lim.max_queued_cost, 0), 1) * lim.interval
    end
    -- The quota must also fit everything this scope already has waiting (in later windows,
    -- if need be).
    local q_at = quota_at(ctx, sc, sc.qc + cost)
    if full_at then
      reject('scope_queue_full', full_at)
    else
      -- Estimate: the scope's eligibility, the quota, the circuit, and the dependency's
      -- capacity after the cost served first: this scope's own waiting work, and what the
      -- fair queue gives the other active scopes until this job's virtual start tag (their
      -- weights times the virtual time in between).
      local tag = math.max(ctx.vtime, sc.vf) + sc.qc * 1000000 / lim.weight
      local others = ctx.active_w
      if sc.qn > 0 then
        others = others - lim.weight  -- it has work waiting: it is (most likely) active
      end
      local ahead = sc.qc + (tag - ctx.vtime) * math.max(others, 0) / 1000000
      local dep_at = gcra_earliest(ctx.dtat, now, ahead + cost, policy.interval_us, policy.burst)
      local bounded = math.max(eligible, dep_at)
      local circuit_at = circuit_blocks(ctx)
      if circuit_at and ctx.circuit.state == 'open' then
        bounded = math.max(bounded, circuit_at)
      end
      local held = math.max(ctx.hold, sc.hold)  -- a pause by hand (include/holds.lua)
      if held > now then
        bounded = math.max(bounded, held)
      end
      -- max_wait bounds every wait, the quota's too unless the policy says on_exhausted:
      -- wait (then the job is held until its quota admits it, however long).
      local not_before = math.max(bounded, q_at)
      if lim.q_wait == 0 then
        bounded = not_before
      end
      if bounded - now > policy.max_wait_ms * 1000 then
        local reason = 'max_wait_exceeded'
        if held > now and held >= bounded then
          reason = 'dependency_paused'
        elseif circuit_at and ctx.circuit.state == 'open' and circuit_at >= bounded then
          reason = 'circuit_open'
        elseif lim.q_wait == 0 and q_at >= bounded and q_at > now then
          reason = 'quota_exhausted'
        elseif ctx.paused_until > now or sc.pu > now then
          reason = 'dependency_paused'
        end
        reject(reason, bounded)
      else
        dirty = true
        sc.stat = gcra_take(sc.stat, eligible, cost, lim.interval)
        sc.dirty = true
        local nb_ms = math.ceil(math.min(not_before, now + HORIZON) / 1000)
        redis.call('HSET', job_key, 'id', job_id, 'scope', scope, 'scope_enc', scope_enc,
          'cost', cost, 'payload', payload, 'submitted_ms', now_ms, 'not_before_ms', nb_ms,
          'status', 'scheduled', 'attempt', 0)
        if eligible <= now then
          -- A scope already in the fair queue had its idle worker told when it joined (and
          -- a fetch that leaves work behind tells the next one): only a newcomer signals.
          if enqueue_ready(ctx, sc, job_enc) then
            signal_workers(ctx)
          end
        else
          redis.call('ZADD', KEYS[4], fmt(eligible), job_enc)
          if not wake_at or eligible < wake_at then
            wake_at = eligible
          end
        end
        queue_add(ctx, sc, 1, cost)
        local status = 'scheduled'
        if not_before <= now then
          status = 'ready'
        end
        emit(status, '', nb_ms, -1, 1, 0, 'scheduled')
      end
    end
  end
end

if dirty or ctx.circuit_dirty then
  save_state(ctx)
  scope_flush(ctx)
else
  flush_counts(ctx)  -- a call that decided nothing new still counts its decisions
end
if wake_at then
  signal_coordinator(ctx, wake_at)
end
return out
