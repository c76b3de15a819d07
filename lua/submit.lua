-- submit.lua: admission. Decides, for each job of a batch, released | scheduled | rejected.
--
-- Design (see janus/store.py for the full note): the scope's own bucket is reserved here, at
-- submit time, which fixes the job's place in the delay queue (score = the earliest time its
-- scope allows it). The dependency's bucket and in-flight limit are taken only at release
-- time, so a flood from one scope never books the dependency's future capacity ahead of a
-- scope that arrives later. not_before_ms is therefore a lower bound: the scope reservation,
-- or a dependency estimate from the queue ahead, whichever is later.
--
-- A job is released at once only when its scope allows it now, nothing due is queued ahead
-- of it, and the dependency bucket and in-flight limit allow it now. A job id that already
-- exists returns that job's state and changes nothing, so a repeated call is a no-op.
--
-- KEYS[1] policy    hash    compiled limits of the dependency (read only)
-- KEYS[2] scopes    hash    encoded scope -> "interval_us burst weight_milli" (read only)
-- KEYS[3] state     hash    dtat, last_ms, queued_cost, queued_count, wake_at
-- KEYS[4] delayed   zset    queued job ids, score = eligible time (us)
-- KEYS[5] inflight  zset    released job ids, score = lease deadline (ms)
-- KEYS[6] stream    stream  released work
-- KEYS[7] wake      list    coordinator wake-up signal (at most one element)
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope buckets (carries the hash tag)
-- ARGV[3] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[4] count         int     number of jobs that follow
-- ARGV[5...] jobs       6 values per job: job_enc, job_id, scope_enc, scope, cost, payload
--
-- Returns 7 values per job, in order: status ("released" | "scheduled" | "rejected"),
-- reason ("" | "unknown_dependency" | "max_wait_exceeded" | "circuit_open" |
-- "dependency_paused"), not_before_ms, retry_after_ms
-- (-1 when there is none),
-- created (1 if this call created the job, 0 if it already existed), attempt, state
-- (the job record's status: "" when rejected, "scheduled", "queued", ...).
-- Raises (nothing written) "JANUS_INVALID <index> <field> <detail>" when a job's cost exceeds
-- max_cost or its payload exceeds max_payload.
--
-- Writes: job records, scope buckets, state, delayed, inflight, stream, wake.

--- @include "limits"

local job_prefix, scope_prefix = ARGV[1], ARGV[2]
local now = now_from(ARGV[3])
local count = tonumber(ARGV[4])
local FIELDS = 6

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
  local base = 4 + (i - 1) * FIELDS
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

local ctx = new_ctx(policy, now, scope_prefix, {policy = KEYS[1], scopes = KEYS[2],
  state = KEYS[3], delayed = KEYS[4], inflight = KEYS[5], stream = KEYS[6]})
load_state(ctx)
local out = {}
local dirty = false
local wake_needed = false
local now_ms = ms_of(now)

local function emit(status, reason, nb_ms, ra_ms, created, attempt, state)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = status, reason, nb_ms, ra_ms
  out[n + 5], out[n + 6], out[n + 7] = created, attempt, state
end

for i = 1, count do
  local base = 4 + (i - 1) * FIELDS
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

    -- Queue ahead of this job: everything due no later than it. Costs are estimated from
    -- the queue's mean so this stays O(log n); an empty queue needs no look at all.
    local ahead_n, ahead_cost = 0, 0
    if ctx.queued_count > 0 then
      ahead_n = redis.call('ZCOUNT', KEYS[4], '-inf', fmt(eligible))
      ahead_cost = ahead_n * ctx.queued_cost / ctx.queued_count
    end
    local dep_at = gcra_earliest(ctx.dtat, now, ahead_cost + cost, policy.interval_us,
      policy.burst)
    local not_before = math.max(eligible, dep_at)
    local circuit_at = circuit_blocks(ctx)
    if circuit_at and ctx.circuit.state == 'open' then
      not_before = math.max(not_before, circuit_at)
    end
    local wait_ms = math.ceil((not_before - now) / 1000)

    if not_before - now > policy.max_wait_ms * 1000 then
      -- Name what holds the job back: an open circuit, a Retry-After pause, or plain load.
      local reason = 'max_wait_exceeded'
      if circuit_at and ctx.circuit.state == 'open' and circuit_at >= not_before then
        reason = 'circuit_open'
      elseif ctx.paused_until > now or sc.pu > now then
        reason = 'dependency_paused'
      end
      emit('rejected', reason, math.ceil(not_before / 1000), wait_ms, 0, 0, '')
    else
      dirty = true
      sc.stat = gcra_take(sc.stat, eligible, cost, lim.interval)
      sc.dirty = true
      local nb_ms = math.ceil(not_before / 1000)
      local record = {'id', job_id, 'scope', scope, 'scope_enc', scope_enc, 'cost', cost,
        'payload', payload, 'submitted_ms', now_ms, 'not_before_ms', nb_ms}

      local released = false
      if eligible <= now and ahead_n == 0 then
        if can_release(ctx, sc, cost) then
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
        redis.call('ZADD', KEYS[4], fmt(eligible), job_enc)
        ctx.queued_cost = ctx.queued_cost + cost
        ctx.queued_count = ctx.queued_count + 1
        if not ctx.wake_at or eligible < ctx.wake_at then
          ctx.wake_at = eligible
          wake_needed = true
        end
        emit('scheduled', '', nb_ms, -1, 1, 0, 'scheduled')
      end
    end
  end
end

if dirty or ctx.circuit_dirty then
  save_state(ctx)
  scope_flush(ctx)
end
if wake_needed then
  redis.call('HSET', KEYS[3], 'wake_at', fmt(ctx.wake_at))
  if redis.call('LLEN', KEYS[7]) == 0 then
    redis.call('LPUSH', KEYS[7], '1')
  end
end
return out
