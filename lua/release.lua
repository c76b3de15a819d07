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
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope buckets (carries the hash tag)
-- ARGV[3] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[4] max_steps     int     most queue entries to look at in this call (bounds its run time)
--
-- Returns 5 integers: released (jobs), released_cost, respaced (jobs), next_us (when to call
-- again: the head's due time or when the blocking limit frees; -1 when the queue is empty),
-- now_us (the time the step used).
--
-- Writes: delayed, job records, scope buckets, state (including wake_at = next_us, read by
-- submit.lua to decide whether the coordinator must be woken early), inflight (adds released
-- jobs; drops leases that ended more than the retention ago), stream.

--- @include "limits"

local job_prefix, scope_prefix = ARGV[1], ARGV[2]
local now = now_from(ARGV[3])
local max_steps = tonumber(ARGV[4])
local FAR = 9000000000000000

local policy = load_policy(KEYS[1])
if not policy then
  return {0, 0, 0, -1, now}
end

local ctx = new_ctx(policy, now, scope_prefix, {scopes = KEYS[2], state = KEYS[3],
  delayed = KEYS[4], inflight = KEYS[5], stream = KEYS[6]})
load_state(ctx)
local released, released_cost, respaced = 0, 0, 0
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
  local f = redis.call('HMGET', job_key, 'id', 'scope', 'scope_enc', 'cost', 'attempt')
  if not f[1] then
    -- A queued record has no TTL, so this only happens if someone deleted it by hand.
    redis.call('ZREM', KEYS[4], job_enc)
    ctx.queued_count = math.max(ctx.queued_count - 1, 0)
  else
    local cost = tonumber(f[4])
    local sc = scope_get(ctx, f[3])
    local ok, blocker, at = can_release(ctx, sc, cost)
    if ok then
      release_job(ctx, job_key, job_enc, f[1], f[2], cost, sc, (tonumber(f[5]) or 0) + 1, {})
      redis.call('ZREM', KEYS[4], job_enc)
      ctx.queued_cost = math.max(ctx.queued_cost - cost, 0)
      ctx.queued_count = math.max(ctx.queued_count - 1, 0)
      released = released + 1
      released_cost = released_cost + cost
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
return {released, released_cost, respaced, next_us, now}
