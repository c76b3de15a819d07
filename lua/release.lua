-- release.lua: the coordinator's step. Moves due work from the delay queue to the stream,
-- through the release-time limits, in queue order (score, then job id).
--
-- For the head of the queue: if the dependency bucket or the in-flight limit refuses it,
-- nothing else can go either (they are shared), so the step stops and reports when to come
-- back. If only the job's own scope bucket refuses it (its work arrived late, e.g. after the
-- coordinator was paused), the job is re-spaced: its score moves to the time its scope
-- allows, and the step goes on with the next job. Late work is never dumped in a burst.
--
-- KEYS[1] policy    hash    compiled limits of the dependency (read only)
-- KEYS[2] scopes    hash    encoded scope -> "interval_us burst weight_milli" (read only)
-- KEYS[3] state     hash    dtat, last_ms, queued_cost, queued_count, wake_at
-- KEYS[4] delayed   zset    queued job ids, score = eligible time (us)
-- KEYS[5] inflight  zset    released job ids, score = lease deadline (ms)
-- KEYS[6] stream    stream  released work
-- KEYS[7] dead      stream  dead letters (retries the budget could not pay for in time)
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope buckets (carries the hash tag)
-- ARGV[3] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[4] max_steps     int     most queue entries to look at in this call (bounds its run time)
--
-- A retry (attempt > 1) also takes a token from the retry budget; one that finds none waits
-- and, past budget.max_wait, is dead-lettered with reason retry_budget_exhausted.
--
-- Returns 6 integers: released (jobs), released_cost, respaced (jobs moved later: scope
-- re-spacing or waiting for the budget), next_us (when to call again: the head's due time
-- or when the blocking limit frees; -1 when the queue is empty), now_us (the time the step
-- used), budget_dead (retries dead-lettered for want of budget).
--
-- Writes: delayed, job records, dead, scope buckets, state (including wake_at = next_us, read by
-- submit.lua to decide whether the coordinator must be woken early), inflight (adds released
-- jobs; drops leases that ended more than the retention ago), stream.

--- @include "limits"
--- @include "outcomes"

local job_prefix, scope_prefix = ARGV[1], ARGV[2]
local now = now_from(ARGV[3])
local max_steps = tonumber(ARGV[4])
local FAR = 9000000000000000

local policy = load_policy(KEYS[1])
if not policy then
  return {0, 0, 0, -1, now, 0}
end

local ctx = new_ctx(policy, now, scope_prefix, {policy = KEYS[1], scopes = KEYS[2],
  state = KEYS[3], delayed = KEYS[4], inflight = KEYS[5], stream = KEYS[6], dead = KEYS[7]})
load_state(ctx)
local released, released_cost, respaced, budget_dead = 0, 0, 0, 0
local budget_cursor = 0
local next_us = -1

for _ = 1, max_steps do
  local head = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if not head[1] then
    next_us = -1
    break
  end
  local job_enc, score = head[1], tonumber(head[2])
  if score > now then
    next_us = score
    break
  end
  local job_key = job_prefix .. job_enc
  local f = redis.call('HMGET', job_key, 'id', 'scope', 'scope_enc', 'cost', 'attempt',
    'not_before_ms')
  if not f[1] then
    -- A queued record has no TTL, so this only happens if someone deleted it by hand.
    redis.call('ZREM', KEYS[4], job_enc)
    ctx.queued_count = math.max(ctx.queued_count - 1, 0)
  else
    local cost = tonumber(f[4])
    local sc = scope_get(ctx, f[3])
    local attempt = (tonumber(f[5]) or 0) + 1
    local ok, blocker, at = can_release(ctx, sc, cost)
    if ok and attempt > 1 and policy.budget_enabled == 1 then
      -- A retry also needs a token from the retry budget. Without one it waits (it is not
      -- dropped), at most budget.max_wait past its due time; then it is dead-lettered.
      local got, token_at = budget_take(ctx)
      if not got then
        ok, blocker = false, 'budget'
        local give_up = (tonumber(f[6]) + policy.budget_max_wait_ms) * 1000
        at = math.max(token_at or (now + 1000000), budget_cursor)
        if now >= give_up then
          local job = {id = f[1], scope = f[2], cost = cost, attempt = attempt - 1}
          local history = history_with(job_key, {attempt = attempt, outcome = 'dead',
            error = 'retry_budget_exhausted', at_ms = ms_of(now)})
          dead_letter(ctx, job_key, job, 'retry_budget_exhausted', 'retry_budget_exhausted',
            history)
          redis.call('ZREM', KEYS[4], job_enc)
          ctx.queued_cost = math.max(ctx.queued_cost - cost, 0)
          ctx.queued_count = math.max(ctx.queued_count - 1, 0)
          budget_dead = budget_dead + 1
          at = nil
        else
          at = math.min(at, give_up)
          if policy.budget_mps_milli > 0 then
            budget_cursor = at + math.ceil(1000000000 / policy.budget_mps_milli)
          end
        end
      end
    end
    if ok then
      release_job(ctx, job_key, job_enc, f[1], f[2], cost, sc, attempt, {})
      redis.call('ZREM', KEYS[4], job_enc)
      ctx.queued_cost = math.max(ctx.queued_cost - cost, 0)
      ctx.queued_count = math.max(ctx.queued_count - 1, 0)
      released = released + 1
      released_cost = released_cost + cost
    elseif blocker == 'budget' then
      if at then
        redis.call('ZADD', KEYS[4], fmt(at), job_enc)  -- after the jobs that may go now
        respaced = respaced + 1
      end
    elseif blocker == 'scope' then
      -- The scope's work is late (e.g. the coordinator was paused): move it to when the
      -- scope allows it, one interval after the last job this scope had moved, so a large
      -- backlog is re-spaced once, in submit order, instead of dumped or re-examined.
      if sc.rcur > at then
        at = sc.rcur
      end
      redis.call('ZADD', KEYS[4], fmt(at), job_enc)
      sc.rcur = at + cost * sc.lim.interval
      sc.dirty = true
      respaced = respaced + 1
    else
      next_us = at
      break
    end
  end
  next_us = now  -- ran out of steps with work still due: come back at once
end

-- Forget leases that ended longer ago than the retention: their job records have expired
-- too (a released record lives lease + retention), so the entry no longer means anything.
-- This keeps the in-flight index bounded even if nothing ever reports an outcome.
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. fmt(ms_of(now) - policy.retention_ms))

if next_us == now and redis.call('ZCARD', KEYS[4]) == 0 then
  next_us = -1
end
save_state(ctx)
scope_flush(ctx)
local wake_at = next_us
if wake_at < 0 then
  wake_at = FAR
end
redis.call('HSET', KEYS[3], 'wake_at', fmt(wake_at))
return {released, released_cost, respaced, next_us, now, budget_dead}
