-- fail.lua: the holder of the current attempt's live lease reports a failure; Janus
-- decides, atomically, whether the job runs again (and when) or is dead-lettered.
--
-- The decision is retry_or_dead in include/outcomes.lua, shared with reclaim.lua: an error
-- kind outside retry_on is dead-lettered (not_retryable); while attempts remain, the job goes
-- back to the delay queue at now + backoff with deterministic jitter (at least the reported
-- retry_after_ms, which also pauses releases, capped at max_retry_after) and passes the same
-- release-time limits and the retry budget as any job; otherwise it is dead-lettered
-- (attempts_exhausted) with its payload and history. Retryable failures feed the circuit.
--
-- KEYS[1] policy    hash    compiled limits, retry_on, per-scope retry rules (read only)
-- KEYS[2] scopes    hash    encoded scope -> "interval_us burst weight_milli" (read only)
-- KEYS[3] state     hash    dtat, queued_cost, queued_count, wake_at, budget, circuit
-- KEYS[4] delayed   zset    queued job ids, score = eligible time (us)
-- KEYS[5] inflight  zset    released job ids, score = lease deadline (ms)
-- KEYS[6] stream    stream  released work
-- KEYS[7] dead      stream  dead letters
-- KEYS[8] wake      list    coordinator wake-up signal (at most one element)
-- ARGV[1] job_prefix      string  key prefix of job records (carries the hash tag)
-- ARGV[2] now_us          int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[3] group           string  the consumer group the worker reads with
-- ARGV[4] job_enc         string  encoded job id
-- ARGV[5] attempt         int     the attempt the caller holds
-- ARGV[6] token           string  the lease token (stream entry id of that attempt)
-- ARGV[7] error           string  error kind (e.g. http_503, timeout, ValueError)
-- ARGV[8] retry_after_ms  int     the dependency asked to wait this long (0 = not given)
-- ARGV[9] detail          string  free text kept in the history (e.g. a traceback)
-- ARGV[10] scope_prefix   string  key prefix of scope buckets (a scope-only pause)
-- ARGV[11] report_id      string  unique per report (not per re-send): a call re-sent after
--                                 its reply was lost gets the same answer
--
-- Returns 4 values: ok (1|0), reason ("" or unknown_job | superseded | finished | expired),
-- decision ("retry" | "dead" | ""), retry_at_ms for a retry, else 0.
-- Writes: the job record, inflight, stream, delayed (retry), dead (dead letter), state
-- (pause, circuit), scope state (waiting counts, scope-only pause), the scope's quota (the
-- attempt's reservation is given back), wake.

--- @include "limits"
--- @include "outcomes"

local now = now_from(ARGV[2])
local now_ms = ms_of(now)
local job_enc = ARGV[4]
local job_key = ARGV[1] .. job_enc
local report = ARGV[11]
local job, why = fence(job_key, tonumber(ARGV[5]), ARGV[6], now_ms)
if not job then
  -- A call re-sent after its reply was lost finds its own report already applied.
  local last = redis.call('HGET', job_key, 'last_report') or ''
  local decision, at = string.match(last, '^' .. report:gsub('%p', '%%%0') .. ':(%a+):(%d+)$')
  if decision then
    return {1, '', decision, tonumber(at)}
  end
  return {0, why, '', 0}
end
local policy = load_policy(KEYS[1])
local ctx = new_ctx(policy, now, ARGV[10], {policy = KEYS[1], scopes = KEYS[2],
  state = KEYS[3], delayed = KEYS[4], inflight = KEYS[5], stream = KEYS[6], dead = KEYS[7],
  wake = KEYS[8]})
load_state(ctx)
local error = ARGV[7]
local history = history_with(job_key, {attempt = job.attempt, outcome = 'failed',
  error = error, consumer = job.consumer, at_ms = now_ms, detail = ARGV[9]})
redis.call('ZREM', KEYS[5], job_enc)
end_entry(KEYS[6], {ARGV[3]}, job.token)
quota_settle(job_key, job_enc, job.attempt, nil, now_ms)  -- a failed attempt gives it back
local decision, at = retry_or_dead(ctx, job_key, job_enc, job, error, tonumber(ARGV[8]),
  history)
save_state(ctx)
scope_flush(ctx)
if decision ~= 'retry' then
  at = 0
end
redis.call('HSET', job_key, 'last_report', report .. ':' .. decision .. ':' .. fmt(at))
return {1, '', decision, at}
