-- release.lua: the coordinator's step. Releases waiting work to the stream: fairly between
-- scopes, within every release-time limit.
--
-- 1. Jobs whose eligible time has come leave the delay queue for their scope's ready line
--    (in eligible-time order, so each scope's work keeps its order).
-- 2. Throttled scopes whose time has come re-enter the fair queue.
-- 3. The fair queue (start-time fair queueing, include/limits.lua) picks the scope with the
--    smallest virtual start tag; its head job is checked against the dependency bucket,
--    the circuit and the in-flight limit (shared: a refusal ends the step and says when to
--    come back), then against its scope's own bucket and quota (a refusal throttles only
--    that scope), then, for a retry, against the retry budget (no token: the job waits in
--    the delay queue, and past budget.max_wait is dead-lettered retry_budget_exhausted).
--    Work that arrives late (a paused coordinator) is thus re-spaced by the buckets, never
--    dumped. Each step is O(log active scopes) per job.
--
-- KEYS[1] policy     hash    compiled limits of the dependency (read only)
-- KEYS[2] scopes     hash    encoded scope -> its limits (read only)
-- KEYS[3] state      hash    dtat, last_ms, queued_cost, queued_count, wake_at, vtime, ...
-- KEYS[4] delayed    zset    waiting job ids, score = eligible time (us)
-- KEYS[5] inflight   zset    released job ids, score = lease deadline (ms)
-- KEYS[6] stream     stream  released work
-- KEYS[7] dead       stream  dead letters (retries the budget could not pay for in time)
-- KEYS[8] active     zset    scopes with ready work, score = virtual start tag of the head
-- KEYS[9] throttled  zset    scopes held by their own bucket or quota, score = until (us)
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope state (carries the hash tag)
-- ARGV[3] ready_prefix  string  key prefix of per-scope ready lines (carries the hash tag)
-- ARGV[4] quota_prefix  string  key prefix of per-scope quota state (carries the hash tag)
-- ARGV[5] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[6] max_steps     int     most jobs to move or release in this call (bounds its run)
--
-- Returns 6 integers: released (jobs), released_cost, throttled (scopes held back in this
-- step), next_us (when to call again: when the blocking limit frees or the next job or scope
-- comes due; -1 when nothing waits), now_us (the time the step used), budget_dead (retries
-- dead-lettered for want of budget).
-- Writes: delayed, ready lines, active, throttled, job records, dead, scope state, quota
-- state, state (including wake_at = next_us, read by submit.lua to decide whether the
-- coordinator must be woken early), inflight (adds released jobs; drops leases that ended
-- more than the retention ago), stream.

--- @include "limits"
--- @include "outcomes"

local job_prefix = ARGV[1]
local now = now_from(ARGV[5])
local max_steps = tonumber(ARGV[6])
local FAR = 9000000000000000

local policy = load_policy(KEYS[1])
if not policy then
  return {0, 0, 0, -1, now, 0}
end

local ctx = new_ctx(policy, now, ARGV[2], {policy = KEYS[1], scopes = KEYS[2],
  state = KEYS[3], delayed = KEYS[4], inflight = KEYS[5], stream = KEYS[6], dead = KEYS[7],
  active = KEYS[8], throttled = KEYS[9]})
ctx.ready_prefix, ctx.quota_prefix = ARGV[3], ARGV[4]
load_state(ctx)
local released, released_cost, throttled, budget_dead = 0, 0, 0, 0
local budget_cursor = 0
local blocked_at = nil
local steps = 0

-- Release one waiting job (the caller checked can_release): the fair queue's bookkeeping
-- (virtual time, the scope's finish tag) and the waiting counts.
local function serve(sc, tag, job_enc, f, cost, attempt)
  ctx.vtime = tag
  sc.vf = tag + tag_step(sc, cost)
  release_job(ctx, job_prefix .. job_enc, job_enc, f[1], f[2], cost, sc, attempt, {})
  scope_queue(sc, -1, -cost)
  ctx.queued_cost = math.max(ctx.queued_cost - cost, 0)
  ctx.queued_count = math.max(ctx.queued_count - 1, 0)
  released = released + 1
  released_cost = released_cost + cost
end

-- 1. due jobs -> their scope's ready line. While nothing waits in the fair queue, a due
-- first attempt whose every check passes goes straight out (what the fair queue would do
-- at once anyway); the rest join the ready lines, where the fair queue orders them.
local shared_blocked = false
while steps < max_steps do
  local head = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if not head[1] or tonumber(head[2]) > now then
    break
  end
  steps = steps + 1
  local job_enc = head[1]
  redis.call('ZREM', KEYS[4], job_enc)
  local f = redis.call('HMGET', job_prefix .. job_enc, 'id', 'scope', 'cost', 'attempt',
    'not_before_ms', 'scope_enc')
  if f[6] then
    local sc = scope_get(ctx, f[6])
    local cost = tonumber(f[3])
    local sent = false
    if not shared_blocked and (tonumber(f[4]) or 0) == 0 and active_count(ctx) == 0 and
        scope_place(ctx, sc) == 'idle' then
      local ok, blocker, at = can_release(ctx, sc, cost)
      if ok then
        serve(sc, math.max(ctx.vtime, sc.vf), job_enc, f, cost, 1)
        sent = true
      elseif blocker ~= 'scope' and blocker ~= 'quota' then
        shared_blocked = true
      end
    end
    if not sent then
      enqueue_ready(ctx, sc, job_enc)
    end
  else
    -- A waiting record has no TTL, so this only happens if someone deleted it by hand.
    ctx.queued_count = math.max(ctx.queued_count - 1, 0)
  end
end

-- 2. throttled scopes whose time has come
for _, scope_enc in ipairs(redis.call('ZRANGE', KEYS[9], '-inf', fmt(now), 'BYSCORE')) do
  redis.call('ZREM', KEYS[9], scope_enc)
  local sc = scope_get(ctx, scope_enc)
  sc.place = 'idle'
  if redis.call('LLEN', ctx.ready_prefix .. scope_enc) > 0 then
    activate(ctx, sc)
  end
end

-- 3. serve the fair queue
while steps < max_steps do
  local head = redis.call('ZRANGE', KEYS[8], 0, 0, 'WITHSCORES')
  if not head[1] then
    break
  end
  steps = steps + 1
  local scope_enc, tag = head[1], tonumber(head[2])
  local sc = scope_get(ctx, scope_enc)
  sc.place = 'active'
  local line = ctx.ready_prefix .. scope_enc
  local job_enc = redis.call('LINDEX', line, 0)
  local f = nil
  if job_enc then
    f = redis.call('HMGET', job_prefix .. job_enc, 'id', 'scope', 'cost', 'attempt',
      'not_before_ms')
  end
  if not job_enc then
    deactivate(ctx, sc)  -- an empty line cannot stay in the fair queue
  elseif not f[1] then
    redis.call('LPOP', line)  -- a record deleted by hand
    scope_queue(sc, -1, 0)
    ctx.queued_count = math.max(ctx.queued_count - 1, 0)
  else
    local job_key = job_prefix .. job_enc
    local cost = tonumber(f[3])
    local attempt = (tonumber(f[4]) or 0) + 1
    local ok, blocker, at = can_release(ctx, sc, cost)
    if not ok and (blocker == 'scope' or blocker == 'quota') then
      throttle(ctx, sc, at)  -- only this scope waits; the others go on
      throttled = throttled + 1
    elseif not ok then
      blocked_at = at
      break
    else
      local go = true
      if attempt > 1 and policy.budget_enabled == 1 then
        -- A retry also needs a token from the retry budget. Without one it waits in the
        -- delay queue (it is not dropped), at most budget.max_wait past its due time.
        local got, token_at = budget_take(ctx)
        if not got then
          go = false
          redis.call('LPOP', line)
          if redis.call('LLEN', line) == 0 then
            deactivate(ctx, sc)
          end
          local give_up = (tonumber(f[5]) + policy.budget_max_wait_ms) * 1000
          if now >= give_up then
            local job = {id = f[1], scope = f[2], cost = cost, attempt = attempt - 1}
            local history = history_with(job_key, {attempt = attempt, outcome = 'dead',
              error = 'retry_budget_exhausted', at_ms = ms_of(now)})
            dead_letter(ctx, job_key, job, 'retry_budget_exhausted', 'retry_budget_exhausted',
              history)
            scope_queue(sc, -1, -cost)
            ctx.queued_cost = math.max(ctx.queued_cost - cost, 0)
            ctx.queued_count = math.max(ctx.queued_count - 1, 0)
            budget_dead = budget_dead + 1
          else
            -- Look again when a token could be there: tokens arrive at most at
            -- min_per_second + ratio x the dependency's rate, so waiting retries are spaced
            -- that far apart (never idle while tokens come in, never re-examined in a loop).
            local inflow = policy.budget_mps_milli + policy.budget_ratio_milli * 1000000 /
              policy.interval_us
            local spacing = math.ceil(1000000000 / math.max(inflow, 1))
            local wait_to = math.max(now + spacing, budget_cursor)
            if token_at and token_at < wait_to then
              wait_to = math.max(token_at, budget_cursor)
            end
            wait_to = math.min(wait_to, give_up)
            budget_cursor = wait_to + spacing
            redis.call('ZADD', KEYS[4], fmt(wait_to), job_enc)
          end
        end
      end
      if go then
        redis.call('LPOP', line)
        serve(sc, tag, job_enc, f, cost, attempt)
        if redis.call('LLEN', line) == 0 then
          deactivate(ctx, sc)
        else
          redis.call('ZADD', KEYS[8], string.format('%.17g', sc.vf), scope_enc)
        end
      end
    end
  end
end

-- When to come back: a shared limit that blocked, more work than this step could take,
-- the next job or throttled scope coming due.
local next_us = -1
if blocked_at then
  next_us = blocked_at
elseif steps >= max_steps then
  next_us = now
else
  local d = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  local t = redis.call('ZRANGE', KEYS[9], 0, 0, 'WITHSCORES')
  if d[2] then
    next_us = tonumber(d[2])
  end
  if t[2] and (next_us < 0 or tonumber(t[2]) < next_us) then
    next_us = tonumber(t[2])
  end
end

-- Forget leases that ended longer ago than the retention: their job records have expired
-- too (a released record lives lease + retention), so the entry no longer means anything.
-- This keeps the in-flight index bounded even if nothing ever reports an outcome.
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. fmt(ms_of(now) - policy.retention_ms))

save_state(ctx)
scope_flush(ctx)
local wake_at = next_us
if wake_at < 0 then
  wake_at = FAR
end
redis.call('HSET', KEYS[3], 'wake_at', fmt(wake_at))
return {released, released_cost, throttled, next_us, now, budget_dead}
