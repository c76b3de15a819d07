-- The retry decision, in one place (used by report.lua for failures and by the lease
-- reclaim in include/due.lua): retry at T, or dead-letter with a reason. Also the rules it
-- reads (per-scope overrides), the backoff with deterministic jitter, and a Retry-After
-- pause.

--- @include "scopes"
--- @include "circuit"

-- The retry rules of a job's scope: its override (policy field "retry:<scope>") or the
-- dependency's own.
local function attempt_rules(ctx, scope_enc)
  local p = ctx.policy
  local raw = redis.call('HMGET', ctx.keys.policy, 'retry:' .. scope_enc, 'retry_on')
  if raw[1] then
    local m, b, f, c, j, on = string.match(raw[1], '^(%d+) (%d+) (%d+) (%d+) (%d+) (.*)$')
    return {max_attempts = tonumber(m), base = tonumber(b), factor = tonumber(f),
      cap = tonumber(c), jitter = tonumber(j), retry_on = on}
  end
  return {max_attempts = p.retry_max_attempts, base = p.backoff_base_ms,
    factor = p.backoff_factor_milli, cap = p.backoff_max_ms, jitter = p.backoff_jitter,
    retry_on = raw[2] or '*'}
end

-- Does `retry_on` (comma-separated kinds, "*", or patterns ending in "xx") cover `kind`?
-- An expired lease is always retried: the worker, not the job, failed.
local function retryable(retry_on, kind)
  if kind == 'lease_expired' then
    return true
  end
  for pat in string.gmatch(retry_on, '[^,]+') do
    if pat == '*' or pat == kind then
      return true
    end
    local n = string.len(pat)
    if n > 2 and string.sub(pat, -2) == 'xx' and string.len(kind) == n and
        string.sub(kind, 1, n - 2) == string.sub(pat, 1, n - 2) and
        string.match(string.sub(kind, -2), '^%d%d$') then
      return true
    end
  end
  return false
end

-- A number in [0, 1) fixed by (job id, attempt): the same history gives the same schedule,
-- different jobs spread out. Mirrors janus.retry.jitter_unit.
local function jitter_unit(job_id, attempt)
  local h = redis.sha1hex(job_id .. ':' .. fmt(attempt))
  return tonumber(string.sub(h, 1, 8), 16) / 4294967296
end

-- Delay (ms) before the attempt after `attempt`: e = min(cap, base * factor^(attempt-1)),
-- then jitter: none = e; full = u*e; equal = e/2 + u*e/2; decorrelated =
-- min(cap, base + u * (max(3 * previous delay, base) - base)). Mirrors janus.retry.backoff_ms.
local function backoff_ms(rules, job_id, attempt, prev_ms)
  local base, cap = rules.base, rules.cap
  local e = base * (rules.factor / 1000) ^ (attempt - 1)
  if e > cap then
    e = cap
  end
  local u = jitter_unit(job_id, attempt)
  local d
  if rules.jitter == 0 then
    d = e
  elseif rules.jitter == 1 then
    d = u * e
  elseif rules.jitter == 2 then
    d = e / 2 + u * e / 2
  else
    local prev = prev_ms or base
    d = base + u * (math.max(prev * 3, base) - base)
    if d > cap then
      d = cap
    end
  end
  return math.floor(d)
end

-- A worker's Retry-After pauses releases until `until_us` for the whole dependency
-- (pause_on_retry_after = dependency), the job's scope only (scope), or nobody (none). The
-- pause moves the bucket so that it is empty at `until_us`: releases then resume at the
-- policy rate, never with a catch-up burst.
local function apply_pause(ctx, scope_enc, scope_name, until_us)
  local p = ctx.policy
  tally(ctx, 'paused')
  if p.pause_on_retry_after ~= 2 then
    local scope = ''
    if p.pause_on_retry_after == 1 then
      scope = scope_name
    end
    event(ctx, 'paused', 'by', 'retry_after', 'scope', scope, 'until_ms', fmt(ms_of(until_us)))
  end
  if p.pause_on_retry_after == 0 then
    ctx.paused_until = math.max(ctx.paused_until, until_us)
    ctx.dtat = math.max(ctx.dtat, until_us + (p.burst - 1) * p.interval_us)
  elseif p.pause_on_retry_after == 1 then
    local s = scope_get(ctx, scope_enc)
    local empty_at = until_us + (s.lim.burst - 1) * s.lim.interval
    s.pu = math.max(s.pu, until_us)
    s.rtat = math.max(s.rtat, empty_at)
    s.stat = math.max(s.stat, empty_at)
    s.dirty = true
  end
  if p.pause_on_retry_after ~= 2 then
    signal_coordinator(ctx, until_us)  -- waiting work may go again then
  end
end

-- Write a job to the dead-letter stream (with its payload and history) and end it. The
-- stream keeps about max_dead_letters entries (the oldest are trimmed; replay.lua drops
-- their replay marks), so a dependency failing for months cannot fill the memory.
local function dead_letter(ctx, job_key, job, error, reason, history)
  tally(ctx, 'dead:' .. reason)
  event(ctx, 'dead_letter', 'job', job.id, 'scope', job.scope, 'reason', reason, 'attempts',
    fmt(job.attempt), 'error', string.sub(error, 1, 200))
  local payload = redis.call('HGET', job_key, 'payload') or ''
  local keep = ctx.policy.max_dead_letters
  if not keep or keep < 1 then
    keep = 100000
  end
  redis.call('XADD', ctx.keys.dead, 'MAXLEN', '~', keep, '*', 'id', job.id, 'scope',
    job.scope, 'cost', job.cost, 'reason', reason, 'attempts', job.attempt, 'error', error,
    'dead_ms', ctx.now_ms, 'history', history, 'payload', payload)
  redis.call('HSET', job_key, 'status', 'dead', 'last_error', error, 'history', history,
    'finished_ms', ctx.now_ms, 'dead_reason', reason)
  redis.call('PEXPIRE', job_key, ctx.policy.retention_ms)
end

-- After attempt `job.attempt` (which a worker took) failed with `error`: not retryable ->
-- dead ('not_retryable'); attempts used up -> dead ('attempts_exhausted'); else back to the
-- delay queue at now + max(backoff, Retry-After), where it passes the same release-time
-- limits (and the retry budget) as any job. A Retry-After also pauses releases (see
-- apply_pause). Retryable failures count against the dependency in the circuit breaker.
-- The caller has already ended the attempt's lease and stream entry. Returns 'retry', at_ms
-- or 'dead', reason.
local function retry_or_dead(ctx, job_key, job_enc, job, error, retry_after_ms, history)
  local p, now = ctx.policy, ctx.now
  local rules = attempt_rules(ctx, job.scope_enc)
  local can_retry = retryable(rules.retry_on, error)
  if p.max_in_flight > 0 and ctx.queued_count > 0 then
    signal_workers(ctx)  -- this attempt's in-flight slot is free: waiting work may go
  end
  if can_retry then
    circuit_record(ctx, false)
  else
    -- A failure on the job's own account says nothing about the dependency; if it was a
    -- half-open probe, its slot goes back so another probe can decide.
    circuit_unprobe(ctx, job_key)
  end
  if not can_retry then
    dead_letter(ctx, job_key, job, error, 'not_retryable', history)
    return 'dead', 'not_retryable'
  end
  local pause_ms = 0
  if retry_after_ms > 0 then
    pause_ms = math.min(retry_after_ms, p.max_retry_after_ms)
    apply_pause(ctx, job.scope_enc, job.scope, now + pause_ms * 1000)
  end
  if job.attempt >= rules.max_attempts then
    dead_letter(ctx, job_key, job, error, 'attempts_exhausted', history)
    return 'dead', 'attempts_exhausted'
  end
  local prev = tonumber(redis.call('HGET', job_key, 'last_delay_ms'))
  local delay = math.max(backoff_ms(rules, job.id, job.attempt, prev), pause_ms)
  local at = now + delay * 1000
  redis.call('HSET', job_key, 'status', 'failed', 'last_error', error, 'history', history,
    'not_before_ms', ms_of(at), 'last_delay_ms', delay)
  redis.call('PERSIST', job_key)  -- waiting records live as long as they wait
  redis.call('ZADD', ctx.keys.delayed, fmt(at), job_enc)
  queue_add(ctx, scope_get(ctx, job.scope_enc), 1, job.cost)
  signal_coordinator(ctx, at)
  tally(ctx, 'retried')
  return 'retry', ms_of(at)
end
