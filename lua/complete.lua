-- complete.lua: the holder of the current attempt's live lease reports success.
--
-- Accepted at most once per job: the fence refuses expired, superseded and finished
-- attempts, so a zombie worker's late report changes nothing. The entry is acknowledged
-- and deleted in the same step (never a bare XACK from the worker: XACK checks no owner).
--
-- KEYS[1] policy    hash    compiled limits (read only)
-- KEYS[2] state     hash    queued_count, wake_at, circuit breaker
-- KEYS[3] inflight  zset    released job ids, score = lease deadline (ms)
-- KEYS[4] stream    stream  released work
-- KEYS[5] wake      list    coordinator wake-up signal (at most one element)
-- ARGV[1] job_prefix  string  key prefix of job records (carries the hash tag)
-- ARGV[2] now_us      int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[3] group       string  the consumer group the worker reads with
-- ARGV[4] job_enc     string  encoded job id
-- ARGV[5] attempt     int     the attempt the caller holds
-- ARGV[6] token       string  the lease token (stream entry id of that attempt)
-- ARGV[7] actual_cost int     the cost the job really used, for the scope's quota (-1: as
--                             declared)
-- ARGV[8] report_id   string  unique per report (not per re-send): a call re-sent after its
--                             reply was lost gets the same answer; a second report is refused
--
-- Returns 2 values: ok (1|0), reason ("" or unknown_job | superseded | finished | expired).
-- Writes: the job record (status completed, history, TTL = retention), inflight, stream,
-- the scope's quota (the reservation settles to the actual cost),
-- the circuit breaker's counts (state), and the wake signal when work waits for the
-- in-flight slot this frees or the circuit closes.

--- @include "limits"
--- @include "outcomes"

local now = now_from(ARGV[2])
local now_ms = ms_of(now)
local job_enc = ARGV[4]
local job_key = ARGV[1] .. job_enc
local report = ARGV[8]
local job, why = fence(job_key, tonumber(ARGV[5]), ARGV[6], now_ms)
if not job then
  -- A call re-sent after its reply was lost finds its own report already applied.
  if redis.call('HGET', job_key, 'last_report') == report .. ':completed' then
    return {1, ''}
  end
  return {0, why}
end
local history = history_with(job_key, {attempt = job.attempt, outcome = 'completed',
  consumer = job.consumer, at_ms = now_ms})
redis.call('HSET', job_key, 'status', 'completed', 'finished_ms', now_ms, 'history', history,
  'last_report', report .. ':completed')
local actual = tonumber(ARGV[7])
if actual < 0 then
  actual = job.cost
end
quota_settle(job_key, job_enc, job.attempt, actual, now_ms)
local p = redis.call('HMGET', KEYS[1], 'retention_ms', 'circuit_enabled', 'max_in_flight')
redis.call('PEXPIRE', job_key, tonumber(p[1]))
redis.call('ZREM', KEYS[3], job_enc)
end_entry(KEYS[4], {ARGV[3]}, job.token)
if tonumber(p[2]) == 1 or tonumber(p[3]) > 0 then
  local policy = load_policy(KEYS[1])
  local ctx = new_ctx(policy, now, '', {policy = KEYS[1], state = KEYS[2], inflight = KEYS[3],
    wake = KEYS[5]})
  load_state(ctx)
  circuit_record(ctx, true)
  if policy.max_in_flight > 0 and ctx.queued_count > 0 then
    signal_wake(ctx, now)  -- work may be waiting for the slot this frees: look now
  end
  if ctx.circuit_dirty then
    save_state(ctx)
  end
end
return {1, ''}
