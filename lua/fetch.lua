#!lua
-- fetch.lua: a worker asks for up to `count` jobs; Janus releases them to it, atomically.
--
-- This is the release step: a job leaves Janus's queues only here, when a live worker asks
-- for work, so nothing ever sits released with a running lease and nobody to run it, and
-- the limits bind when the dependency feels the work (started cost per window W is at most
-- rate * W + burst, per dependency and per scope, whatever the workers do). First the call
-- does the dependency's due work (include/due.lua: expired leases reclaimed, due jobs moved
-- to their ready lines, throttled scopes and parked retries back), bounded by max_steps, so
-- no job's fate depends on a coordinator being up. Then, up to `count` times, the fair
-- queue's next job that passes every release-time limit (dependency bucket, circuit,
-- in-flight, the scope's bucket and quota, the retry budget for a retry) is started: its
-- entry is added to the group's stream and delivered to this consumer in the same step
-- (XREADGROUP: the consumer's pending entries list is the delivery record), its record
-- becomes `running` and its lease starts now.
--
-- A re-sent call is answered from the first one: the consumer's last fetch (its id and the
-- jobs it got) is kept in `fetch_log`, so when redis-py re-sends a fetch whose reply was
-- lost (a timeout, a stall, a dropped connection), it gets the same jobs back and nothing
-- new is released. Work left behind wakes the next idle worker (`work`); a limit that blocks
-- until later wakes the coordinator at that time (`wake`). A missing group or stream (a new
-- group, Redis restarted empty) is created.
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
-- KEYS[12] groups    set     consumer groups of the dependency
-- KEYS[13] stream    stream  this group's stream: one entry per running attempt
-- KEYS[14] fetch_log string  this consumer's last fetch (its id, then job and token of
--                            each job it got), TTL 2 x lease
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope state (carries the hash tag)
-- ARGV[3] ready_prefix  string  key prefix of per-scope ready lines (carries the hash tag)
-- ARGV[4] quota_prefix  string  key prefix of per-scope quota state (carries the hash tag)
-- ARGV[5] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[6] group         string  the consumer group
-- ARGV[7] consumer      string  the consumer (worker) name
-- ARGV[8] count         int     most jobs to take
-- ARGV[9] fetch_id      string  chosen by the worker per fetch, kept across its re-sends
-- ARGV[10] max_steps    int     bound on the due work and fair-queue steps of this call
--
-- Returns 6 header values, then 7 values per job. Header: status ("ok" | "repeat" (the
-- answer of an earlier call with this fetch_id) | "unknown_dependency"), now_ms, next_us
-- (when more may be released: -1 when nothing waits), timer (1 if a coordinator stepped the
-- dependency recently), group_created (1 | 0), jobs (how many follow). Per job: job_id,
-- scope, attempt, cost, token (its stream entry id), lease_deadline_ms, payload.
-- Writes: job records, inflight, stream, groups, fetch_log, delayed, ready lines, active,
-- throttled, parked, scope state, quota state, dead (reclaimed attempts out of attempts),
-- state, wake, work.

--- @include "due"

local group, consumer, fetch_id = ARGV[6], ARGV[7], ARGV[9]
local held = KEYS[13] .. '\0' .. group .. '\0' .. consumer
local count = tonumber(ARGV[8])
local job_prefix = ARGV[1]

local policy = load_policy(KEYS[1])
local now = now_from(ARGV[5], policy)
local now_ms = math.floor(now / 1000)
if not policy then
  return {'unknown_dependency', now_ms, -1, 0, 0, 0}
end

-- A re-send of a fetch this consumer already got an answer for: the same jobs, as they are
-- now (each still running on this consumer in that attempt), and nothing new.
local last = redis.call('GET', KEYS[14])
if last then
  local words = {}
  for w in string.gmatch(last, '[^ ]+') do
    words[#words + 1] = w
  end
  if words[1] == fetch_id then
    local out = {'repeat', now_ms, -1, 0, 0, 0}
    local n = 0
    for i = 2, #words, 2 do
      local f = redis.call('HMGET', job_prefix .. words[i], 'status', 'attempt', 'token',
        'held', 'id', 'scope', 'cost', 'lease_deadline_ms', 'payload')
      if f[1] == 'running' and f[3] == words[i + 1] and f[4] == held then
        n = n + 1
        for _, v in ipairs({f[5], f[6], tonumber(f[2]), tonumber(f[7]), f[3], tonumber(f[8]),
            f[9] or ''}) do
          out[#out + 1] = v
        end
      end
    end
    out[6] = n
    return out
  end
end

local ctx = new_ctx(policy, now, {policy = KEYS[1], scopes = KEYS[2], state = KEYS[3],
  delayed = KEYS[4], inflight = KEYS[5], dead = KEYS[6], active = KEYS[7],
  throttled = KEYS[8], parked = KEYS[9], wake = KEYS[10], work = KEYS[11], groups = KEYS[12]},
  {job = job_prefix, scope = ARGV[2], ready = ARGV[3], quota = ARGV[4],
    max_steps = tonumber(ARGV[10]), fq_size = math.min(count, 200) + 1})
load_state(ctx)
step_due(ctx)

local c = {stream = KEYS[13], group = group, consumer = consumer, held = held}
local out = {'ok', now_ms, -1, 0, 0, 0}
local tokens, log = {}, {fetch_id}
local blocked_at = nil
while #tokens < count do
  local job, at = pick(ctx)
  if not job then
    blocked_at = at
    break
  end
  served(ctx, job)
  local token, deadline, payload = start_attempt(ctx, c, job)
  tokens[#tokens + 1] = token
  log[#log + 1], log[#log + 2] = job.enc, token
  for _, v in ipairs({job.id, job.scope, job.attempt, job.cost, token, deadline, payload}) do
    out[#out + 1] = v
  end
end

if #tokens > 0 then
  if deliver(ctx, c, tokens) then
    out[5] = 1
  end
  redis.call('SET', KEYS[14], table.concat(log, ' '), 'PX', 2 * policy.lease_ms + 1000)
end
fq_flush(ctx)
local next_us = next_event(ctx, blocked_at)
if #tokens >= count and redis.call('ZCARD', KEYS[7]) > 0 then
  signal_workers(ctx)  -- more may be ready: the next idle worker looks
end
if next_us >= 0 then
  signal_coordinator(ctx, next_us)
end
save_state(ctx)
scope_flush(ctx)
out[3] = next_us
if ctx.timer_until > now_ms then
  out[4] = 1
end
out[6] = #tokens
return out
