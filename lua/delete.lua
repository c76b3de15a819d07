#!lua
-- delete.lua: deletes a dependency's policy without losing its work (janus policy delete).
--
-- The first call marks the policy `deleting`: from then on submits of new jobs are
-- rejected (dependency_deleted), while the work already admitted keeps its limits and
-- drains as usual (workers fetch it, coordinators step it, failed attempts are still
-- retried). With drop = 1 a call also moves up to max_steps waiting jobs (scheduled, ready,
-- waiting for a retry, parked) to the dead letters, reason dependency_deleted, with their
-- payload and history: nothing vanishes, and they can be replayed once a policy is applied
-- again. The call that finds nothing waiting and nothing running removes the policy and its
-- scopes: the dependency is unknown from then on; its dead letters, events and counters
-- stay. Applying a policy before that cancels the deletion.
--
-- KEYS[1] policy     hash    compiled limits (the `deleting` mark; removed at the end)
-- KEYS[2] scopes     hash    encoded scope -> its limits (removed at the end)
-- KEYS[3] state      hash    queued counts, fair-queue weight; events
-- KEYS[4] delayed    zset    waiting job ids, score = eligible time (us)
-- KEYS[5] inflight   zset    started job ids, score = lease deadline (ms)
-- KEYS[6] dead       stream  dead letters (of dropped jobs)
-- KEYS[7] active     zset    scopes with ready work
-- KEYS[8] throttled  zset    scopes held by their own bucket, quota or a pause
-- KEYS[9] parked     zset    retries waiting for a retry token
-- KEYS[10] wake      list    coordinator wake-up signal (at most one element)
-- KEYS[11] work      list    idle-worker wake-up signal (at most one element)
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope state (carries the hash tag)
-- ARGV[3] ready_prefix  string  key prefix of per-scope ready lines (carries the hash tag)
-- ARGV[4] quota_prefix  string  key prefix of per-scope quota state (carries the hash tag)
-- ARGV[5] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[6] drop          int     1: dead-letter waiting work; 0: let it drain
-- ARGV[7] max_steps     int     bound on the jobs this call drops
--
-- Returns 4 integers: waiting (jobs still waiting), running (attempts in flight, their
-- leases not yet ended), dropped (by this call), deleted (1: the policy is gone now, or
-- there was none).
-- Writes: policy, scopes, job records, dead, delayed, ready lines, active, throttled,
-- parked, scope state, state, events.

--- @include "due"

local drop = ARGV[6] == '1'
local policy = load_policy(KEYS[1])
local now = now_from(ARGV[5], policy)
if not policy then
  return {0, 0, 0, 1}
end
local ctx = new_ctx(policy, now, {policy = KEYS[1], scopes = KEYS[2], state = KEYS[3],
  delayed = KEYS[4], inflight = KEYS[5], dead = KEYS[6], active = KEYS[7],
  throttled = KEYS[8], parked = KEYS[9], wake = KEYS[10], work = KEYS[11]},
  {job = ARGV[1], scope = ARGV[2], ready = ARGV[3], quota = ARGV[4],
    max_steps = tonumber(ARGV[7])})
load_state(ctx)
-- Dropping must not push dead letters past max_dead_letters (the stream trims its oldest:
-- dropped work would vanish): refused whole, before anything is written.
local keep = policy.max_dead_letters
if not keep or keep < 1 then
  keep = 100000
end
if drop and redis.call('XLEN', KEYS[6]) + ctx.queued_count > keep then
  return redis.error_reply('JANUS_INVALID - dropping ' .. fmt(ctx.queued_count) ..
    ' waiting job(s) would take the dead letters past max_dead_letters (' .. fmt(keep) ..
    ') and trim the oldest: raise max_dead_letters, purge dead letters, or let the work drain')
end
if policy.deleting ~= 1 then
  redis.call('HSET', KEYS[1], 'deleting', '1')
  event(ctx, 'policy_deleting', 'version', fmt(policy.version), 'drop', ARGV[6])
  signal_workers(ctx)  -- (idle workers look once: the drain goes on as usual)
end

-- The due work first (include/due.lua): expired leases are reclaimed here too, so the
-- deletion can end without a coordinator.
step_due(ctx)

-- One waiting job to the dead letters (its record says where it waited: the caller has
-- taken it off that line).
local dropped = 0
local function drop_job(job_enc)
  local job_key = ctx.job_prefix .. job_enc
  local f = redis.call('HMGET', job_key, 'id', 'scope', 'scope_enc', 'cost', 'attempt',
    'status', 'history')
  if not f[1] or f[6] == 'running' or f[6] == 'completed' or f[6] == 'dead' then
    return  -- gone, or not waiting (a stale entry): nothing to drop
  end
  local job = {id = f[1], scope = f[2], cost = tonumber(f[4]) or 1,
    attempt = tonumber(f[5]) or 0}
  dead_letter(ctx, job_key, job, 'dependency deleted', 'dependency_deleted', f[7] or '[]')
  queue_add(ctx, scope_get(ctx, f[3]), -1, -job.cost)
  dropped = dropped + 1
  ctx.steps = ctx.steps + 1
end

if drop then
  for _, zset in ipairs({KEYS[4], KEYS[9]}) do
    local encs = {}
    if steps_left(ctx) > 0 then
      encs = redis.call('ZRANGE', zset, 0, steps_left(ctx) - 1)
    end
    for _, job_enc in ipairs(encs) do
      redis.call('ZREM', zset, job_enc)
      if zset == KEYS[9] then
        ctx.parked = math.max(ctx.parked - 1, 0)
      end
      drop_job(job_enc)
    end
  end
  -- Scopes in the fair queue (or set aside), as many as this call has steps for: each one
  -- emptied leaves its set, so the next call starts with the next one.
  for _, zset in ipairs({KEYS[7], KEYS[8]}) do
    local scopes = {}
    if steps_left(ctx) > 0 then
      scopes = redis.call('ZRANGE', zset, 0, steps_left(ctx) - 1)
    end
    for _, scope_enc in ipairs(scopes) do
      local line = ctx.ready_prefix .. scope_enc
      while steps_left(ctx) > 0 do
        local job_enc = redis.call('LPOP', line)
        if not job_enc then
          break
        end
        drop_job(job_enc)
      end
      if redis.call('LLEN', line) == 0 then
        local s = scope_get(ctx, scope_enc)
        if zset == KEYS[7] then
          deactivate(ctx, s)
        else
          redis.call('ZREM', KEYS[8], scope_enc)
          unthrottle(ctx, s)
        end
      end
    end
  end
end

-- Is anything left? The queues themselves say (a scope in the fair queue or set aside
-- always has a job on its line, so four ZCARDs answer without walking the scopes); the
-- number reported is the state's count of waiting jobs.
local left = redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[9]) +
  redis.call('ZCARD', KEYS[7]) + redis.call('ZCARD', KEYS[8])
local running = redis.call('ZCARD', KEYS[5])
local waiting = 0
if left > 0 then
  waiting = math.max(ctx.queued_count, left)
end
local deleted = 0
save_state(ctx)
scope_flush(ctx)
if left == 0 and running == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[7], KEYS[8])
  ctx.queued_count, ctx.queued_cost, ctx.active_w = 0, 0, 0
  -- Pauses by hand end with the policy: a policy applied later starts unpaused.
  if ctx.hold > 0 then
    ctx.hold = 0
    event(ctx, 'resumed', 'by', 'deletion', 'scope', '')
  end
  if ctx.hold_n > 0 then
    ctx.now = HOLD_FOREVER  -- (every scope's hold is "past": hold_scan ends them all)
    hold_scan(ctx, 'deletion')
    ctx.now = now
  end
  ctx.hold_next = 0
  save_hold(ctx)
  event(ctx, 'policy_deleted', 'version', fmt(policy.version))
  save_state(ctx)
  deleted = 1
end
return {waiting, running, dropped, deleted}
