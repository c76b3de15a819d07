-- Shared helpers for leases and outcomes: the fence every report passes, the attempt
-- history, and the one retry decision (used by fail.lua and reclaim.lua).
-- Inlined after "limits" (it uses fmt, ms_of).
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

-- Append one attempt's outcome to the job's history (a JSON array in the record).
local function history_with(job_key, entry)
  local raw = redis.call('HGET', job_key, 'history')
  local h = {}
  if raw then
    h = cjson.decode(raw)
  end
  if entry.detail and string.len(entry.detail) > MAX_DETAIL then
    entry.detail = string.sub(entry.detail, -MAX_DETAIL)  -- keep the end of a traceback
  end
  h[#h + 1] = entry
  return cjson.encode(h)
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

-- Delay before attempt n + 1 after attempt n failed: base * factor^(n-1), capped.
-- Mirrors janus.retry.backoff_ms (a test checks they agree).
local function backoff_ms(p, attempt)
  local d = p.backoff_base_ms * (p.backoff_factor_milli / 1000) ^ (attempt - 1)
  if d > p.backoff_max_ms then
    d = p.backoff_max_ms
  end
  return math.floor(d)
end

-- The retry decision, in one place. After attempt `job.attempt` failed with `error`:
-- retry at now + backoff (at least retry_after_ms) while attempts remain, else dead-letter.
-- A retry goes back to the delay queue and passes the same release-time limits as any job.
-- Returns 'retry', at_ms  or  'dead', reason.
local function retry_or_dead(ctx, job_key, job_enc, job, error, retry_after_ms, history)
  local p, now = ctx.policy, ctx.now
  local now_ms = ms_of(now)
  if job.attempt < p.retry_max_attempts then
    local delay = math.max(backoff_ms(p, job.attempt), retry_after_ms)
    local at = now + delay * 1000
    redis.call('HSET', job_key, 'status', 'failed', 'last_error', error, 'history', history,
      'not_before_ms', ms_of(at))
    redis.call('PERSIST', job_key)  -- queued records live as long as they are queued
    redis.call('ZADD', ctx.keys.delayed, fmt(at), job_enc)
    ctx.queued_cost = ctx.queued_cost + job.cost
    ctx.queued_count = ctx.queued_count + 1
    signal_wake(ctx, at)
    return 'retry', ms_of(at)
  end
  local reason = 'attempts_exhausted'
  local payload = redis.call('HGET', job_key, 'payload') or ''
  redis.call('XADD', ctx.keys.dead, '*', 'id', job.id, 'scope', job.scope, 'cost', job.cost,
    'reason', reason, 'attempts', job.attempt, 'error', error, 'dead_ms', now_ms,
    'history', history, 'payload', payload)
  redis.call('HSET', job_key, 'status', 'dead', 'last_error', error, 'history', history,
    'finished_ms', now_ms, 'dead_reason', reason)
  redis.call('PEXPIRE', job_key, p.retention_ms)
  return 'dead', reason
end
