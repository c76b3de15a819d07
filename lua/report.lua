#!lua
-- report.lua: a worker reports the outcomes of attempts it holds, many in one call.
--
-- Each outcome is fenced on its own (include/leases.lua: only the current attempt's live
-- lease may report) and applied on its own; a refused one changes nothing and does not stop
-- the others. Outcomes:
--   completed  the job is done (at most once): its record keeps the history for the
--              retention, its quota reservation settles to actual_cost (-1: as declared)
--   failed     Janus decides, atomically, whether the job runs again and when, or is
--              dead-lettered (retry_or_dead in include/retry.lua: retry_on, max_attempts,
--              backoff with deterministic jitter, Retry-After pauses, circuit breaker); the
--              attempt is charged to the quota: actual_cost, or as declared (-1)
--   returned   the worker gives back a job it never started (shutting down, or its lease
--              was too short to start it): the attempt does not count, its quota
--              reservation and retry token are given back, and the job goes back to the head
--              of its scope's ready line
-- Every outcome ends the attempt's stream entry (acknowledged, then deleted) and frees its
-- in-flight slot. Each carries a report id: a call re-sent after its reply was lost finds
-- its outcomes already applied and gets the same answers.
--
-- KEYS[1] policy     hash    compiled limits, retry_on, per-scope retry rules (read only)
-- KEYS[2] scopes     hash    encoded scope -> its limits (read only)
-- KEYS[3] state      hash    dtat, queued counts, wake_at, budget, circuit, ...
-- KEYS[4] delayed    zset    waiting job ids, score = eligible time (us)
-- KEYS[5] inflight   zset    started job ids, score = lease deadline (ms)
-- KEYS[6] dead       stream  dead letters
-- KEYS[7] active     zset    scopes with ready work, score = virtual start tag of the head
-- KEYS[8] throttled  zset    scopes held by their own bucket or quota, score = until (us)
-- KEYS[9] wake       list    coordinator wake-up signal (at most one element)
-- KEYS[10] work      list    idle-worker wake-up signal (at most one element)
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope state (carries the hash tag)
-- ARGV[3] ready_prefix  string  key prefix of per-scope ready lines (carries the hash tag)
-- ARGV[4] quota_prefix  string  key prefix of per-scope quota state (carries the hash tag)
-- ARGV[5] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[6] count         int     number of outcomes that follow
-- ARGV[7...] outcomes   9 values per outcome: job_enc, attempt, token, report_id, outcome,
--                       actual_cost, error, retry_after_ms, detail
--
-- Returns 4 values per outcome: ok (1|0), reason ("" or unknown_job | superseded |
-- finished | expired), decision ("completed" | "retry" | "dead" | "returned"; "" when
-- refused), retry_at_ms (for a retry; else 0).
-- Raises (nothing written) "JANUS_INVALID <index> <detail>" for an outcome it cannot read.
-- Writes: job records, inflight, streams (acks and deletes), delayed, dead, ready lines,
-- active, scope state, quota state, state (budget, circuit, pauses, counts), wake, work.

--- @include "due"

local FIELDS, FIRST = 9, 6
local count = tonumber(ARGV[6])
local job_prefix = ARGV[1]
local KINDS = {completed = true, failed = true, returned = true}
local MAX_COST, MAX_MS = 1000000000000000, 3153600000000  -- 1e15; 100 years

-- An integer in [lo, hi], or nil (numbers from a worker are never trusted to fit).
local function int_in(raw, lo, hi)
  local n = tonumber(raw)
  if n and n == math.floor(n) and n >= lo and n <= hi then
    return n
  end
  return nil
end

for i = 1, count do
  local base = FIRST + (i - 1) * FIELDS
  local why = nil
  if not KINDS[ARGV[base + 5]] then
    why = 'outcome must be completed, failed or returned'
  elseif not int_in(ARGV[base + 2], 1, MAX_COST) then
    why = 'attempt must be an integer >= 1'
  elseif not int_in(ARGV[base + 6], -1, MAX_COST) then
    why = 'actual_cost must be an integer between 0 and 10^15'
  elseif not int_in(ARGV[base + 8], 0, MAX_MS) then
    why = 'retry_after_ms must be an integer between 0 and 100 years'
  end
  if why then
    return redis.error_reply('JANUS_INVALID ' .. i .. ' ' .. why)
  end
end

local policy = load_policy(KEYS[1])
local now = now_from(ARGV[5], policy)
local ctx = nil
if policy then
  ctx = new_ctx(policy, now, {policy = KEYS[1], scopes = KEYS[2], state = KEYS[3],
    delayed = KEYS[4], inflight = KEYS[5], dead = KEYS[6], active = KEYS[7],
    throttled = KEYS[8], wake = KEYS[9], work = KEYS[10]},
    {job = job_prefix, scope = ARGV[2], ready = ARGV[3], quota = ARGV[4]})
  load_state(ctx)
end
local now_ms = ms_of(now)
local out = {}

local function emit(ok, reason, decision, at)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = ok, reason, decision, at
end

local ended, leases = {}, {}  -- stream entries and in-flight entries to end, in bulk
for i = 1, count do
  local base = FIRST + (i - 1) * FIELDS
  local job_enc, attempt, token = ARGV[base + 1], tonumber(ARGV[base + 2]), ARGV[base + 3]
  local report, kind = ARGV[base + 4], ARGV[base + 5]
  local job_key = job_prefix .. job_enc
  local job, why, last = fence(job_key, attempt, token, now_ms, true)
  if job and not ctx then
    job, why, last = nil, 'unknown_job', redis.call('HGET', job_key, 'last_report')
  end
  if not job then
    -- A call re-sent after its reply was lost finds its own report already applied.
    local decision, at = string.match(last or '', '^' .. report:gsub('%p', '%%%0') ..
      ':(%a+):(%d+)$')
    if decision then
      emit(1, '', decision, tonumber(at))
    else
      emit(0, why, '', 0)
    end
  else
    leases[#leases + 1] = job_enc
    end_later(ended, job.stream, job.group, token)
    local decision, at = kind, 0
    tally(ctx, kind)  -- completed | failed | returned
    if kind == 'completed' then
      local history = history_with(job_key, {attempt = attempt, outcome = 'completed',
        consumer = job.consumer, at_ms = now_ms}, job.history)
      local actual = tonumber(ARGV[base + 6])
      if actual < 0 then
        actual = job.cost
      end
      quota_settle(job_key, job_enc, attempt, actual, now_ms, job.q_key ~= false)
      redis.call('HSET', job_key, 'status', 'completed', 'finished_ms', now_ms, 'history',
        history, 'last_report', report .. ':completed:0')
      redis.call('PEXPIRE', job_key, policy.retention_ms)
      circuit_record(ctx, true)
      if policy.max_in_flight > 0 and ctx.queued_count > 0 then
        signal_workers(ctx)  -- work may be waiting for the slot this frees
      end
    else
      if kind == 'failed' then
        local error = ARGV[base + 7]
        local history = history_with(job_key, {attempt = attempt, outcome = 'failed',
          error = error, consumer = job.consumer, at_ms = now_ms, detail = ARGV[base + 9]},
          job.history)
        local actual = tonumber(ARGV[base + 6])
        if actual < 0 then
          actual = job.cost  -- a failed attempt may have spent its cost: it is charged
        end
        quota_settle(job_key, job_enc, attempt, actual, now_ms, job.q_key ~= false)
        decision, at = retry_or_dead(ctx, job_key, job_enc, job, error,
          tonumber(ARGV[base + 8]), history)
        if decision ~= 'retry' then
          decision, at = 'dead', 0
        end
      else
        -- returned unstarted: as if this attempt had never been released
        local history = history_with(job_key, {attempt = attempt, outcome = 'returned',
          consumer = job.consumer, at_ms = now_ms}, job.history)
        quota_settle(job_key, job_enc, attempt, nil, now_ms, job.q_key ~= false)
        circuit_unprobe(ctx, job_key)
        if attempt > 1 and policy.budget_enabled == 1 then
          budget_refill(ctx)
          ctx.budget.milli = ctx.budget.milli + 1000
        end
        local status = 'scheduled'
        if attempt > 1 then
          status = 'failed'
        end
        redis.call('HSET', job_key, 'status', status, 'attempt', attempt - 1, 'history',
          history, 'not_before_ms', now_ms)
        redis.call('HDEL', job_key, 'token', 'lease_deadline_ms', 'held', 'probe',
          'started_ms')
        local s = scope_get(ctx, job.scope_enc)
        enqueue_ready(ctx, s, job_enc, true)
        queue_add(ctx, s, 1, job.cost)
        signal_workers(ctx)
      end
      redis.call('HSET', job_key, 'last_report', report .. ':' .. decision .. ':' .. fmt(at))
    end
    emit(1, '', decision, at)
  end
end
if #leases > 0 then
  for j = 1, #leases, 1000 do
    redis.call('ZREM', KEYS[5], unpack(leases, j, math.min(j + 999, #leases)))
  end
  end_flush(ended)
end
if ctx then
  save_state(ctx)
  scope_flush(ctx)
end
return out
