-- submit.lua: admission. Decides, for each job of a batch, released | scheduled | rejected.
--
-- Design (see janus/store.py for the map): the scope's own bucket is reserved here, at
-- submit time; it fixes when the job may run as far as its scope is concerned (eligible).
-- The dependency's share is decided at release time, fairly between scopes (start-time fair
-- queueing, see include/limits.lua), together with the dependency bucket, the in-flight
-- limit, the circuit and the scope's quota. So a flood from one scope never books the
-- dependency's future capacity ahead of a scope that arrives later, and not_before_ms is an
-- estimate and a lower bound.
--
-- A job is released at once only when its scope allows it now, no other work waits (no
-- scope in the fair queue, nothing due in the delay queue) and every release-time check
-- passes. Otherwise it waits: in its scope's ready line when its scope allows it now, else
-- in the delay queue until it does. It is rejected, with nothing kept, when its scope's
-- waiting line is full (max_queued / max_queued_cost: scope_queue_full), its quota is spent
-- and the policy says reject (quota_exhausted), or the estimated wait exceeds max_wait
-- (max_wait_exceeded, or circuit_open / dependency_paused when that is what holds it).
-- A job id that already exists returns that job's state and changes nothing, so a repeated
-- call is a no-op.
--
-- KEYS[1] policy     hash    compiled limits of the dependency (read only)
-- KEYS[2] scopes     hash    encoded scope -> its limits (read only)
-- KEYS[3] state      hash    dtat, last_ms, queued_cost, queued_count, wake_at, vtime, ...
-- KEYS[4] delayed    zset    waiting job ids, score = eligible time (us)
-- KEYS[5] inflight   zset    released job ids, score = lease deadline (ms)
-- KEYS[6] stream     stream  released work
-- KEYS[7] wake       list    coordinator wake-up signal (at most one element)
-- KEYS[8] active     zset    scopes with ready work, score = virtual start tag of the head
-- KEYS[9] throttled  zset    scopes held by their own bucket or quota, score = until (us)
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope state (carries the hash tag)
-- ARGV[3] ready_prefix  string  key prefix of per-scope ready lines (carries the hash tag)
-- ARGV[4] quota_prefix  string  key prefix of per-scope quota state (carries the hash tag)
-- ARGV[5] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[6] count         int     number of jobs that follow
-- ARGV[7...] jobs       6 values per job: job_enc, job_id, scope_enc, scope, cost, payload
--
-- Returns 7 values per job, in order: status ("released" | "scheduled" | "rejected"),
-- reason ("" | "unknown_dependency" | "max_wait_exceeded" | "circuit_open" |
-- "dependency_paused" | "scope_queue_full" | "quota_exhausted"), not_before_ms,
-- retry_after_ms (-1 when there is none), created (1 if this call created the job, 0 if it
-- already existed), attempt, state (the job record's status: "" when rejected).
-- Raises (nothing written) "JANUS_INVALID <index> <detail>" when a job's cost exceeds
-- max_cost or its payload exceeds max_payload.
--
-- Writes: job records, scope state, ready lines, active, state, delayed, inflight, stream,
-- quota state, wake.

--- @include "limits"

local job_prefix = ARGV[1]
local now = now_from(ARGV[5])
local count = tonumber(ARGV[6])
local FIELDS = 6
local FIRST = 6

local policy = load_policy(KEYS[1])
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

local ctx = new_ctx(policy, now, ARGV[2], {policy = KEYS[1], scopes = KEYS[2],
  state = KEYS[3], delayed = KEYS[4], inflight = KEYS[5], stream = KEYS[6],
  active = KEYS[8], throttled = KEYS[9]})
ctx.ready_prefix, ctx.quota_prefix = ARGV[3], ARGV[4]
load_state(ctx)
local out = {}
local dirty = false
local wake_at = nil
local now_ms = ms_of(now)
local others_waiting = nil  -- is any work waiting (fair queue or due in the delay queue)?

local function emit(status, reason, nb_ms, ra_ms, created, attempt, state)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = status, reason, nb_ms, ra_ms
  out[n + 5], out[n + 6], out[n + 7] = created, attempt, state
end

local function reject(reason, at)
  emit('rejected', reason, math.ceil(at / 1000), math.ceil((at - now) / 1000), 0, 0, '')
end

for i = 1, count do
  local base = FIRST + (i - 1) * FIELDS
  local job_enc, job_id = ARGV[base + 1], ARGV[base + 2]
  local scope_enc, scope = ARGV[base + 3], ARGV[base + 4]
  local cost, payload = tonumber(ARGV[base + 5]), ARGV[base + 6]
  local job_key = job_prefix .. job_enc

  local existing = {}
  if redis.call('EXISTS', job_key) == 1 then
    existing = redis.call('HMGET', job_key, 'status', 'not_before_ms', 'attempt')
  end
  if existing[1] then
    local st = existing[1]
    local status = 'released'
    if st == 'scheduled' or st == 'failed' then
      status = 'scheduled'
    end
    emit(status, '', tonumber(existing[2]) or 0, -1, 0, tonumber(existing[3]) or 0, st)
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
    -- The quota must also fit everything this scope already has waiting.
    local q_at = quota_at(ctx, sc, sc.qc + cost)
    if full_at then
      reject('scope_queue_full', full_at)
    elseif lim.q_limit > 0 and lim.q_wait == 0 and (not q_at or q_at > now) then
      reject('quota_exhausted', q_at or (now + lim.q_period * 1000))
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
      local not_before = math.max(eligible, dep_at, q_at or now)
      local circuit_at = circuit_blocks(ctx)
      if circuit_at and ctx.circuit.state == 'open' then
        not_before = math.max(not_before, circuit_at)
      end
      if not_before - now > policy.max_wait_ms * 1000 then
        local reason = 'max_wait_exceeded'
        if circuit_at and ctx.circuit.state == 'open' and circuit_at >= not_before then
          reason = 'circuit_open'
        elseif q_at and q_at >= not_before and q_at > now then
          reason = 'quota_exhausted'
        elseif ctx.paused_until > now or sc.pu > now then
          reason = 'dependency_paused'
        end
        reject(reason, not_before)
      else
        dirty = true
        sc.stat = gcra_take(sc.stat, eligible, cost, lim.interval)
        sc.dirty = true
        local nb_ms = math.ceil(not_before / 1000)
        local record = {'id', job_id, 'scope', scope, 'scope_enc', scope_enc, 'cost', cost,
          'payload', payload, 'submitted_ms', now_ms, 'not_before_ms', nb_ms}

        local released = false
        if eligible <= now then
          if others_waiting == nil then
            others_waiting = redis.call('ZCARD', KEYS[8]) > 0 or (ctx.queued_count > 0 and
              redis.call('ZCOUNT', KEYS[4], '-inf', fmt(now)) > 0)
          end
          if not others_waiting and can_release(ctx, sc, cost) then
            local t = math.max(ctx.vtime, sc.vf)
            ctx.vtime, sc.vf = t, t + tag_step(sc, cost)
            release_job(ctx, job_key, job_enc, job_id, scope, cost, sc, 1, record)
            emit('released', '', now_ms, -1, 1, 1, 'queued')
            released = true
          end
        end
        if not released then
          local n = #record
          record[n + 1], record[n + 2] = 'status', 'scheduled'
          record[n + 3], record[n + 4] = 'attempt', 0
          redis.call('HSET', job_key, unpack(record))
          if eligible <= now then
            enqueue_ready(ctx, sc, job_enc)
            others_waiting = true
          else
            redis.call('ZADD', KEYS[4], fmt(eligible), job_enc)
          end
          scope_queue(sc, 1, cost)
          ctx.queued_cost = ctx.queued_cost + cost
          ctx.queued_count = ctx.queued_count + 1
          local at = math.max(eligible, dep_at)
          if not wake_at or at < wake_at then
            wake_at = at
          end
          emit('scheduled', '', nb_ms, -1, 1, 0, 'scheduled')
        end
      end
    end
  end
end

if dirty or ctx.circuit_dirty then
  save_state(ctx)
  scope_flush(ctx)
end
if wake_at and (not ctx.wake_at or wake_at < ctx.wake_at) then
  redis.call('HSET', KEYS[3], 'wake_at', fmt(wake_at))
  if redis.call('LLEN', KEYS[7]) == 0 then
    redis.call('LPUSH', KEYS[7], '1')
  end
end
return out
