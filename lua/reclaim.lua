-- reclaim.lua: the coordinator ends attempts whose lease expired (the worker died, hung or
-- lost its connection) and sends each through the retry decision.
--
-- The lease index is the in-flight sorted set (score = deadline): expired entries are found
-- in O(log n) without scanning the stream. Each expired attempt is recorded as failed with
-- error "lease_expired", frees its in-flight slot, its stream entry is acknowledged in every
-- group and deleted, and retry_or_dead (include/outcomes.lua) decides what happens next. A
-- late report from that attempt is then refused by the fence: at most one completion.
--
-- KEYS[1] policy    hash    compiled limits, retry_on, per-scope retry rules (read only)
-- KEYS[2] scopes    hash    encoded scope -> "interval_us burst weight_milli" (read only)
-- KEYS[3] state     hash    dtat, queued_cost, queued_count, wake_at, budget, circuit
-- KEYS[4] delayed   zset    queued job ids, score = eligible time (us)
-- KEYS[5] inflight  zset    released job ids, score = lease deadline (ms)
-- KEYS[6] stream    stream  released work
-- KEYS[7] dead      stream  dead letters
-- KEYS[8] wake      list    coordinator wake-up signal (at most one element)
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[3] max_steps     int     most expired leases handled in this call
-- ARGV[4] scope_prefix  string  key prefix of scope buckets
--
-- Returns 4 integers: reclaimed, retried, dead_lettered, next_deadline_ms (the earliest
-- live lease, when to look again; -1 when nothing is in flight).
-- Writes: job records, inflight, stream, delayed, dead, state, scope state, quota state
-- (reservations of reclaimed attempts are given back), wake.

--- @include "limits"
--- @include "outcomes"

local job_prefix = ARGV[1]
local now = now_from(ARGV[2])
local now_ms = ms_of(now)
local policy = load_policy(KEYS[1])
if not policy then
  return {0, 0, 0, -1}
end
local expired = redis.call('ZRANGE', KEYS[5], '-inf', fmt(now_ms), 'BYSCORE', 'LIMIT', 0,
  tonumber(ARGV[3]))
local reclaimed, retried, dead = 0, 0, 0
if #expired > 0 then
  local ctx = new_ctx(policy, now, ARGV[4], {policy = KEYS[1], scopes = KEYS[2],
    state = KEYS[3], delayed = KEYS[4], inflight = KEYS[5], stream = KEYS[6], dead = KEYS[7],
    wake = KEYS[8]})
  load_state(ctx)
  local groups = {}
  if redis.call('EXISTS', KEYS[6]) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[6])) do
      for j = 1, #g, 2 do
        if g[j] == 'name' then
          groups[#groups + 1] = g[j + 1]
        end
      end
    end
  end
  for _, job_enc in ipairs(expired) do
    local job_key = job_prefix .. job_enc
    local f = redis.call('HMGET', job_key, 'status', 'attempt', 'stream_id',
      'lease_deadline_ms', 'id', 'scope', 'cost', 'consumer', 'scope_enc')
    local status, deadline = f[1], tonumber(f[4])
    redis.call('ZREM', KEYS[5], job_enc)
    if (status == 'queued' or status == 'running') and deadline and deadline <= now_ms then
      local job = {attempt = tonumber(f[2]), token = f[3], id = f[5], scope = f[6],
        cost = tonumber(f[7]), scope_enc = f[9]}
      local history = history_with(job_key, {attempt = job.attempt, outcome = 'failed',
        error = 'lease_expired', consumer = f[8] or '', at_ms = now_ms})
      end_entry(KEYS[6], groups, job.token)
      quota_settle(job_key, job_enc, job.attempt, nil, now_ms)
      local decision = retry_or_dead(ctx, job_key, job_enc, job, 'lease_expired', 0, history)
      reclaimed = reclaimed + 1
      if decision == 'retry' then
        retried = retried + 1
      else
        dead = dead + 1
      end
    elseif (status == 'queued' or status == 'running') and deadline then
      redis.call('ZADD', KEYS[5], deadline, job_enc)  -- extended meanwhile: keep tracking
    end
  end
  save_state(ctx)
  scope_flush(ctx)
end
local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
local next_ms = -1
if first[2] then
  next_ms = tonumber(first[2])
end
return {reclaimed, retried, dead, next_ms}
