-- fail.lua: the holder of the current attempt's live lease reports a failure; Janus
-- decides, atomically, whether the job runs again (and when) or is dead-lettered.
--
-- The decision is retry_or_dead in include/outcomes.lua, shared with reclaim.lua: while
-- attempts remain, the job goes back to the delay queue at now + backoff (at least the
-- reported retry_after_ms) and passes the same release-time limits as any job; otherwise it
-- is written to the dead-letter stream with its payload and history.
--
-- KEYS[1] policy    hash    compiled limits (read only)
-- KEYS[2] state     hash    queued_cost, queued_count, wake_at
-- KEYS[3] delayed   zset    queued job ids, score = eligible time (us)
-- KEYS[4] inflight  zset    released job ids, score = lease deadline (ms)
-- KEYS[5] stream    stream  released work
-- KEYS[6] dead      stream  dead letters
-- KEYS[7] wake      list    coordinator wake-up signal (at most one element)
-- ARGV[1] job_prefix      string  key prefix of job records (carries the hash tag)
-- ARGV[2] now_us          int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[3] group           string  the consumer group the worker reads with
-- ARGV[4] job_enc         string  encoded job id
-- ARGV[5] attempt         int     the attempt the caller holds
-- ARGV[6] token           string  the lease token (stream entry id of that attempt)
-- ARGV[7] error           string  error kind (e.g. http_503, timeout, ValueError)
-- ARGV[8] retry_after_ms  int     the dependency asked to wait this long (0 = not given)
-- ARGV[9] detail          string  free text kept in the history (e.g. a traceback)
--
-- Returns 4 values: ok (1|0), reason ("" or unknown_job | superseded | finished | expired),
-- decision ("retry" | "dead" | ""), retry_at_ms for a retry, else 0.
-- Writes: the job record, inflight, stream, delayed (retry), dead (dead letter), state, wake.

--- @include "limits"
--- @include "outcomes"

local now = now_from(ARGV[2])
local now_ms = ms_of(now)
local job_enc = ARGV[4]
local job_key = ARGV[1] .. job_enc
local job, why = fence(job_key, tonumber(ARGV[5]), ARGV[6], now_ms)
if not job then
  return {0, why, '', 0}
end
local policy = load_policy(KEYS[1])
local ctx = new_ctx(policy, now, '', {state = KEYS[2], delayed = KEYS[3], inflight = KEYS[4],
  stream = KEYS[5], dead = KEYS[6], wake = KEYS[7]})
load_state(ctx)
local error = ARGV[7]
local history = history_with(job_key, {attempt = job.attempt, outcome = 'failed',
  error = error, consumer = job.consumer, at_ms = now_ms, detail = ARGV[9]})
redis.call('ZREM', KEYS[4], job_enc)
end_entry(KEYS[5], {ARGV[3]}, job.token)
local decision, at = retry_or_dead(ctx, job_key, job_enc, job, error, tonumber(ARGV[8]),
  history)
save_state(ctx)
if decision == 'retry' then
  return {1, '', decision, at}
end
return {1, '', decision, 0}
