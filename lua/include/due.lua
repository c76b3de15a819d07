-- Stepping a dependency: the work that comes due with time, done by whoever calls next (a
-- worker's fetch or a coordinator's step), each call bounded by ctx.max_steps.
--
--   reclaim_expired  attempts whose lease expired are ended (failed, "lease_expired") and
--                    sent through the retry decision
--   move_due         waiting jobs whose time has come leave the delay queue for their
--                    scope's ready line (in time order, so each scope keeps its order)
--   wake_throttled   scopes set aside by their own bucket or quota rejoin the fair queue
--   expire_holds     pauses by hand whose time has passed end (include/holds.lua)
--   unpark_retries   retries parked for want of a retry token rejoin their ready line,
--                    as many as there are tokens (each token set aside for its retry)
--   pick             the fair queue's next job that may be released now
--   next_event       when something next comes due (for the coordinator's timer)
--
-- So no job's fate depends on one coordinator being up: any fetch does the same work.

--- @include "release"
--- @include "leases"
--- @include "retry"
--- @include "holds"

local function steps_left(ctx)
  local n = ctx.max_steps - ctx.steps
  if n <= 0 then
    ctx.exhausted = true
  end
  return n
end

local function reclaim_expired(ctx)
  local n = steps_left(ctx)
  if n <= 0 then
    return
  end
  local expired = redis.call('ZRANGE', ctx.keys.inflight, '-inf', fmt(ctx.now_ms), 'BYSCORE',
    'LIMIT', 0, n)
  for _, job_enc in ipairs(expired) do
    ctx.steps = ctx.steps + 1
    local job_key = ctx.job_prefix .. job_enc
    local f = redis.call('HMGET', job_key, 'status', 'attempt', 'token', 'lease_deadline_ms',
      'id', 'scope', 'cost', 'held', 'scope_enc')
    local deadline = tonumber(f[4])
    redis.call('ZREM', ctx.keys.inflight, job_enc)
    if f[1] == 'running' and deadline and deadline <= ctx.now_ms then
      local job = {attempt = tonumber(f[2]), token = f[3], id = f[5], scope = f[6],
        cost = tonumber(f[7]), scope_enc = f[9]}
      local stream, group, consumer = held_parts(f[8])
      local history = history_with(job_key, {attempt = job.attempt, outcome = 'failed',
        error = 'lease_expired', consumer = consumer, at_ms = ctx.now_ms})
      end_entry(stream, group, job.token)
      quota_settle(job_key, job_enc, job.attempt, job.cost, ctx.now_ms)  -- it may have spent
      local decision = retry_or_dead(ctx, job_key, job_enc, job, 'lease_expired', 0, history)
      ctx.reclaimed = ctx.reclaimed + 1
      tally(ctx, 'lease_expired')
      event(ctx, 'lease_reclaimed', 'job', job.id, 'scope', job.scope, 'attempt',
        fmt(job.attempt), 'consumer', consumer or '', 'decision', decision)
      if decision == 'retry' then
        ctx.retried = ctx.retried + 1
      else
        ctx.dead = ctx.dead + 1
      end
    elseif f[1] == 'running' and deadline then
      redis.call('ZADD', ctx.keys.inflight, deadline, job_enc)  -- extended meanwhile
    end
  end
  ctx.live = false
end

local function move_due(ctx)
  local n = steps_left(ctx)
  if n <= 0 then
    return
  end
  local due = redis.call('ZRANGE', ctx.keys.delayed, '-inf', fmt(ctx.now), 'BYSCORE', 'LIMIT',
    0, n)
  for i = 1, #due, 1000 do
    redis.call('ZREM', ctx.keys.delayed, unpack(due, i, math.min(i + 999, #due)))
  end
  for _, job_enc in ipairs(due) do
    ctx.steps = ctx.steps + 1
    local scope_enc = redis.call('HGET', ctx.job_prefix .. job_enc, 'scope_enc')
    if scope_enc then
      enqueue_ready(ctx, scope_get(ctx, scope_enc), job_enc)
    else
      -- A waiting record has no TTL, so this only happens if someone deleted it by hand.
      ctx.queued_count = math.max(ctx.queued_count - 1, 0)
    end
  end
  ctx.moved = ctx.moved + #due
end

local function wake_throttled(ctx)
  local n = steps_left(ctx)
  if n <= 0 then
    return
  end
  local due = redis.call('ZRANGE', ctx.keys.throttled, '-inf', fmt(ctx.now), 'BYSCORE',
    'LIMIT', 0, n)
  for _, scope_enc in ipairs(due) do
    ctx.steps = ctx.steps + 1
    redis.call('ZREM', ctx.keys.throttled, scope_enc)
    local s = scope_get(ctx, scope_enc)
    unthrottle(ctx, s)
    if redis.call('LLEN', ctx.ready_prefix .. scope_enc) > 0 then
      activate(ctx, s)
    end
  end
end

local function unpark_retries(ctx)
  if ctx.parked <= 0 then
    return
  end
  local free = ctx.policy.budget_enabled ~= 1  -- the budget was turned off: all may go
  if not free and not budget_available(ctx) then
    return
  end
  local n = steps_left(ctx)
  if not free then
    n = math.min(math.floor(ctx.budget.milli / 1000), n)
  end
  if n <= 0 then
    return
  end
  local heads = redis.call('ZRANGE', ctx.keys.parked, 0, n - 1)
  for _, job_enc in ipairs(heads) do
    ctx.steps = ctx.steps + 1
    redis.call('ZREM', ctx.keys.parked, job_enc)
    ctx.parked = math.max(ctx.parked - 1, 0)
    local job_key = ctx.job_prefix .. job_enc
    local scope_enc = redis.call('HGET', job_key, 'scope_enc')
    if scope_enc then
      -- The token is set aside for this retry now (`bpaid`), so the next look at the
      -- budget is when the token after it arrives, not again and again until it is fetched.
      if not free then
        budget_take(ctx)
        redis.call('HSET', job_key, 'bpaid', 1)
      end
      enqueue_ready(ctx, scope_get(ctx, scope_enc), job_enc)
    else
      ctx.queued_count = math.max(ctx.queued_count - 1, 0)
    end
  end
  if #heads == 0 then
    ctx.parked = 0  -- the count drifted (a key deleted by hand): the line is empty
  end
end

-- All the work that comes due with time, in order.
local function step_due(ctx)
  expire_holds(ctx)
  reclaim_expired(ctx)
  move_due(ctx)
  wake_throttled(ctx)
  unpark_retries(ctx)
end

-- The fair queue's next job that may be released now. Scopes whose own bucket or quota
-- refuses their head are set aside (throttled) without blocking the others; a retry the
-- budget cannot pay for is parked (it keeps its place in its scope's waiting work, uses no
-- attempt and is never dead-lettered for waiting). Returns the job, or nil and the time a
-- shared limit (dependency bucket, circuit, in-flight) frees up, or nil, nil when nothing
-- is ready. Out of steps: nil, now (call again at once).
local function pick(ctx)
  while steps_left(ctx) > 0 do
    local head = fq_head(ctx)
    if not head then
      return nil, nil
    end
    ctx.steps = ctx.steps + 1
    local scope_enc, tag = head.enc, head.tag
    local s = scope_get(ctx, scope_enc)
    s.place = 'active'
    local line = ctx.ready_prefix .. scope_enc
    -- Taken off the line at once (the usual outcome); put back on a refusal.
    local job_enc = redis.call('LPOP', line)
    local f = nil
    if job_enc then
      f = redis.call('HMGET', ctx.job_prefix .. job_enc, 'id', 'scope', 'cost', 'attempt',
        'bpaid', 'payload', 'not_before_ms')
    end
    if not job_enc then
      deactivate(ctx, s)  -- an empty line cannot stay in the fair queue
    elseif not f[1] then
      queue_add(ctx, s, -1, 0)  -- a record deleted by hand
    else
      local cost = tonumber(f[3])
      local attempt = (tonumber(f[4]) or 0) + 1
      local ok, blocker, at = can_release(ctx, s, cost)
      if not ok and (blocker == 'scope' or blocker == 'quota') then
        redis.call('LPUSH', line, job_enc)
        throttle(ctx, s, at)  -- only this scope waits; the others go on
      elseif not ok then
        redis.call('LPUSH', line, job_enc)
        return nil, at
      elseif attempt > 1 and ctx.policy.budget_enabled == 1 and not f[5] and
          not budget_available(ctx) then
        if redis.call('LLEN', line) == 0 then
          deactivate(ctx, s)
        end
        ctx.park_seq = ctx.park_seq + 1
        redis.call('ZADD', ctx.keys.parked, string.format('%.17g', ctx.now + ctx.park_seq / 1000),
          job_enc)
        ctx.parked = ctx.parked + 1
      else
        return {enc = job_enc, id = f[1], scope = f[2], cost = cost, attempt = attempt,
          sc = s, tag = tag, line = line, bpaid = f[5] ~= false and f[5] ~= nil,
          payload = f[6] or '', not_before_ms = tonumber(f[7])}
      end
    end
  end
  return nil, ctx.now
end

-- The fair queue's bookkeeping once `job` (from pick) is released: it leaves its line, its
-- scope's tag moves on by cost / weight, the virtual time becomes the tag served.
local function served(ctx, job)
  local s = job.sc
  ctx.vtime = job.tag
  s.vf = job.tag + tag_step(s, job.cost)
  queue_add(ctx, s, -1, -job.cost)
  if redis.call('LLEN', job.line) == 0 then
    deactivate(ctx, s)
  else
    fq_retag(ctx, s, s.vf)
  end
end

-- When something next comes due: `blocked_at` (a shared limit that refused the fair
-- queue's head), the delay queue's head, a throttled scope, the earliest lease deadline (a
-- reclaim), a retry token for parked retries. -1 when nothing is pending; now when this
-- call ran out of steps.
local function next_event(ctx, blocked_at)
  if ctx.exhausted then
    return ctx.now
  end
  local t = blocked_at
  local function consider(x)
    if x and (not t or x < t) then
      t = x
    end
  end
  local d = redis.call('ZRANGE', ctx.keys.delayed, 0, 0, 'WITHSCORES')
  consider(tonumber(d[2]))
  local th = redis.call('ZRANGE', ctx.keys.throttled, 0, 0, 'WITHSCORES')
  consider(tonumber(th[2]))
  local l = redis.call('ZRANGE', ctx.keys.inflight, 0, 0, 'WITHSCORES')
  if l[2] then
    consider((tonumber(l[2]) + 1) * 1000)  -- a deadline at ms t has passed at t + 1 ms
  end
  if ctx.parked > 0 then
    consider(budget_token_at(ctx))
  end
  consider(hold_due(ctx))  -- (its end is an event, with or without work waiting)
  if not t then
    return -1
  end
  return math.max(t, ctx.now)
end
