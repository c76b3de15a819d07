#!lua
-- step.lua: the coordinator's step. Does the dependency's due work and wakes a worker when
-- something may be released; releases nothing itself (only a worker's fetch does).
--
-- The due work (include/due.lua), bounded by max_steps: expired leases are reclaimed (each
-- a failed attempt, "lease_expired", sent through the retry decision), jobs whose time has
-- come move from the delay queue to their scope's ready line, throttled scopes and parked
-- retries come back. Then the fair queue's head is checked against the release-time limits
-- (setting aside scopes their own limits hold, parking retries without a budget token): if
-- a job may be released now, one idle worker is woken (`work`). The reply says when the next
-- step is worth running: the next job or scope coming due, a lease deadline, a retry token,
-- the time a shared limit that holds the head frees up. "Work is ready but no worker took
-- it" is not an event: workers fetch when they are free, so an idle coordinator with waiting
-- work and no workers costs nothing.
--
-- KEYS[1] policy     hash    compiled limits of the dependency (read only)
-- KEYS[2] scopes     hash    encoded scope -> its limits (read only)
-- KEYS[3] state      hash    dtat, queued counts, wake_at, vtime, budget, circuit, ...
-- KEYS[4] delayed    zset    waiting job ids, score = eligible time (us)
-- KEYS[5] inflight   zset    started job ids, score = lease deadline (ms)
-- KEYS[6] dead       stream  dead letters (of reclaimed attempts)
-- KEYS[7] active     zset    scopes with ready work, score = virtual start tag of the head
-- KEYS[8] throttled  zset    scopes held by their own bucket or quota, score = until (us)
-- KEYS[9] parked     zset    retries waiting for a retry token, in arrival order
-- KEYS[10] wake      list    coordinator wake-up signal (at most one element)
-- KEYS[11] work      list    idle-worker wake-up signal (at most one element)
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope state (carries the hash tag)
-- ARGV[3] ready_prefix  string  key prefix of per-scope ready lines (carries the hash tag)
-- ARGV[4] quota_prefix  string  key prefix of per-scope quota state (carries the hash tag)
-- ARGV[5] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[6] max_steps     int     bound on the due work of this call
-- ARGV[7] timer_ms      int     how long this coordinator vouches to step again (workers
--                               rely on it instead of timing the dependency themselves)
--
-- Returns 7 integers: reclaimed, retried, dead_lettered (of the reclaimed attempts), moved
-- (jobs that came due), ready (1 if a job may be released now), next_us (when to step
-- again; -1 when nothing is pending), now_us (the time the step used).
-- Writes: job records, inflight, streams (entries of reclaimed attempts), dead, delayed,
-- ready lines, active, throttled, parked, scope state, quota state, state (wake_at = next_us,
-- timer_until), work.

--- @include "due"

local FAR = 9000000000000000
local policy = load_policy(KEYS[1])
local now = now_from(ARGV[5], policy)
if not policy then
  return {0, 0, 0, 0, 0, -1, now}
end
local ctx = new_ctx(policy, now, {policy = KEYS[1], scopes = KEYS[2], state = KEYS[3],
  delayed = KEYS[4], inflight = KEYS[5], dead = KEYS[6], active = KEYS[7],
  throttled = KEYS[8], parked = KEYS[9], wake = KEYS[10], work = KEYS[11]},
  {job = ARGV[1], scope = ARGV[2], ready = ARGV[3], quota = ARGV[4],
    max_steps = tonumber(ARGV[6])})
load_state(ctx)
ctx.coordinator = true
step_due(ctx)
local job, blocked_at = pick(ctx)
local ready = 0
if job then
  redis.call('LPUSH', job.line, job.enc)  -- (pick took it off its line: it stays first)
  ready = 1
  signal_workers(ctx)
end
fq_flush(ctx)
local next_us = next_event(ctx, blocked_at)
save_state(ctx)
scope_flush(ctx)
local wake_at = next_us
if wake_at < 0 then
  wake_at = FAR
end
redis.call('HSET', KEYS[3], 'wake_at', fmt(wake_at), 'timer_until',
  fmt(ctx.now_ms + tonumber(ARGV[7])))
return {ctx.reclaimed, ctx.retried, ctx.dead, ctx.moved, ready, next_us,
  now}
