-- Shared helpers for leases and outcomes: the fence every report passes, the attempt
-- history, the circuit breaker's bookkeeping and the one retry decision (used by fail.lua
-- and reclaim.lua; release.lua dead-letters retries the budget could not pay for).
-- Inlined after "limits" (it uses fmt, ms_of, scope_get, ctx).
--
-- A lease is identified by (attempt, token): token is the stream entry id of the release
-- that started the attempt, unique per attempt. A report or heartbeat is accepted only from
-- the holder of the *current* attempt's *live* lease; anything else changes nothing.

local MAX_DETAIL = 8192

-- Check a report against the job record. Returns the record's fields, or nil and why:
-- 'unknown_job' (no record), 'superseded' (another attempt is current, or this attempt
-- already ended and waits for a retry), 'finished' (completed or dead), 'expired' (the
-- lease's deadline passed; the coordinator will reclaim it).
local function fence(job_key, attempt, token, now_ms)
  local f = redis.call('HMGET', job_key, 'status', 'attempt', 'stream_id',
    'lease_deadline_ms', 'id', 'scope', 'scope_enc', 'cost', 'consumer')
  local status = f[1]
  if not status then
    return nil, 'unknown_job'
  end
  if status == 'completed' or status == 'dead' then
    return nil, 'finished'
  end
  if tonumber(f[2]) ~= attempt or f[3] ~= token or
      (status ~= 'queued' and status ~= 'running') then
    return nil, 'superseded'
  end
  if tonumber(f[4]) <= now_ms then
    return nil, 'expired'
  end
  return {status = status, attempt = attempt, token = token, id = f[5], scope = f[6],
    scope_enc = f[7], cost = tonumber(f[8]), consumer = f[9] or ''}
end

-- Append one attempt's outcome to the job's history (a JSON array in the record). The
-- array is extended as text: re-encoding it on every report would cost more than the rest
-- of the report.
local function history_with(job_key, entry)
  if entry.detail and string.len(entry.detail) > MAX_DETAIL then
    entry.detail = string.sub(entry.detail, -MAX_DETAIL)  -- keep the end of a traceback
  end
  local item = cjson.encode(entry)
  local raw = redis.call('HGET', job_key, 'history')
  if raw and string.sub(raw, -1) == ']' and raw ~= '[]' then
    return string.sub(raw, 1, -2) .. ',' .. item .. ']'
  end
  return '[' .. item .. ']'
end

-- End the attempt's stream entry: acknowledged in the given groups, then deleted, so the
-- stream holds only work not yet finished. (XTRIM/MAXLEN would drop unacknowledged work.)
local function end_entry(stream_key, groups, token)
  for _, g in ipairs(groups) do
    redis.call('XACK', stream_key, g, token)
  end
  redis.call('XDEL', stream_key, token)
end

local function signal_wake(ctx, at)
  if not ctx.wake_at or at < ctx.wake_at then
    ctx.wake_at = at
    redis.call('HSET', ctx.keys.state, 'wake_at', fmt(at))
    if redis.call('LLEN', ctx.keys.wake) == 0 then
      redis.call('LPUSH', ctx.keys.wake, '1')
    end
  end
end

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
local function apply_pause(ctx, scope_enc, until_us)
  local p = ctx.policy
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
end

-- Circuit bookkeeping for one outcome (ok = success). The failure ratio is taken over a
-- sliding window approximated by two fixed windows (the previous one weighted by how much
-- of it still overlaps). Closed -> open past the threshold; half-open -> closed after
-- `probes` successes, -> open again on any failure; each consecutive open lasts twice as
-- long, up to open_max.
local function circuit_record(ctx, ok)
  local p = ctx.policy
  if p.circuit_enabled ~= 1 then
    return
  end
  local c, now = ctx.circuit, ctx.now
  local win = p.circuit_window_ms * 1000
  if now >= c.win + win then
    if now >= c.win + 2 * win then
      c.prev_ok, c.prev_fail = 0, 0
    else
      c.prev_ok, c.prev_fail = c.cur_ok, c.cur_fail
    end
    c.cur_ok, c.cur_fail = 0, 0
    c.win = now - (now - c.win) % win
  end
  if ok then
    c.cur_ok = c.cur_ok + 1
  else
    c.cur_fail = c.cur_fail + 1
  end
  ctx.circuit_dirty = true
  local function open()
    c.opens = c.opens + 1
    local d = math.min(p.circuit_open_ms * 2 ^ (c.opens - 1), p.circuit_open_max_ms)
    c.state, c.until_, c.probes, c.probe_ok = 'open', now + d * 1000, 0, 0
  end
  if c.state == 'half_open' then
    if not ok then
      open()
    else
      c.probe_ok = c.probe_ok + 1
      if c.probe_ok >= p.circuit_probes then
        c.state, c.opens = 'closed', 0
        c.cur_ok, c.cur_fail, c.prev_ok, c.prev_fail = 0, 0, 0, 0
        signal_wake(ctx, now)  -- queued work may flow again
      end
    end
  elseif c.state == 'closed' and not ok then
    local weight = 1 - (now - c.win) / win
    local fails = c.prev_fail * weight + c.cur_fail
    local total = (c.prev_ok + c.prev_fail) * weight + c.cur_ok + c.cur_fail
    if total >= p.circuit_min_requests and fails > total * p.circuit_failure_milli / 1000 then
      open()
    end
  end
end

-- Write a job to the dead-letter stream (with its payload and history) and end it.
local function dead_letter(ctx, job_key, job, error, reason, history)
  local now_ms = ms_of(ctx.now)
  local payload = redis.call('HGET', job_key, 'payload') or ''
  redis.call('XADD', ctx.keys.dead, '*', 'id', job.id, 'scope', job.scope, 'cost', job.cost,
    'reason', reason, 'attempts', job.attempt, 'error', error, 'dead_ms', now_ms,
    'history', history, 'payload', payload)
  redis.call('HSET', job_key, 'status', 'dead', 'last_error', error, 'history', history,
    'finished_ms', now_ms, 'dead_reason', reason)
  redis.call('PEXPIRE', job_key, ctx.policy.retention_ms)
end

-- The retry decision, in one place. After attempt `job.attempt` failed with `error`:
-- not retryable -> dead ('not_retryable'); attempts used up -> dead ('attempts_exhausted');
-- else back to the delay queue at now + max(backoff, Retry-After) where it passes the same
-- release-time limits (and the retry budget) as any job. A Retry-After also pauses releases
-- (see apply_pause). Also feeds the circuit breaker: retryable failures count against the
-- dependency. Returns 'retry', at_ms  or  'dead', reason.
local function retry_or_dead(ctx, job_key, job_enc, job, error, retry_after_ms, history)
  local p, now = ctx.policy, ctx.now
  local rules = attempt_rules(ctx, job.scope_enc)
  local can_retry = retryable(rules.retry_on, error)
  if p.max_in_flight > 0 and ctx.queued_count > 0 then
    signal_wake(ctx, now)  -- this attempt's in-flight slot is free: waiting work may go
  end
  if can_retry then
    circuit_record(ctx, false)
  elseif p.circuit_enabled == 1 and ctx.circuit.state == 'half_open' and
      redis.call('HGET', job_key, 'probe') == '1' then
    -- A probe that failed on its own account (the job's fault, not the dependency's) says
    -- nothing about the dependency: its slot goes back so another probe can decide.
    ctx.circuit.probes = math.max(ctx.circuit.probes - 1, 0)
    ctx.circuit_dirty = true
  end
  if not can_retry then
    dead_letter(ctx, job_key, job, error, 'not_retryable', history)
    return 'dead', 'not_retryable'
  end
  local pause_ms = 0
  if retry_after_ms > 0 then
    pause_ms = math.min(retry_after_ms, p.max_retry_after_ms)
    apply_pause(ctx, job.scope_enc, now + pause_ms * 1000)
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
  redis.call('PERSIST', job_key)  -- queued records live as long as they are queued
  redis.call('ZADD', ctx.keys.delayed, fmt(at), job_enc)
  scope_queue(scope_get(ctx, job.scope_enc), 1, job.cost)
  ctx.queued_cost = ctx.queued_cost + job.cost
  ctx.queued_count = ctx.queued_count + 1
  signal_wake(ctx, at)
  return 'retry', ms_of(at)
end
