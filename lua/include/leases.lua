-- Leases: the fence every report and heartbeat passes, the attempt history, and the end of
-- an attempt's stream entry.
--
-- A lease is identified by (attempt, token): token is the stream entry id under which the
-- attempt was handed to its worker, unique per attempt. A report or heartbeat is accepted
-- only from the holder of the *current* attempt's *live* lease; anything else changes
-- nothing.

--- @include "core"

local MAX_DETAIL = 8192

-- Check a report against the job record. Returns the record's fields, or nil and why:
-- 'unknown_job' (no record), 'superseded' (another attempt is current, or this attempt
-- already ended and waits for a retry), 'finished' (completed or dead), 'expired' (the
-- lease's deadline passed; whoever steps the dependency next reclaims it).
local function fence(job_key, attempt, token, now_ms)
  local f = redis.call('HMGET', job_key, 'status', 'attempt', 'token', 'lease_deadline_ms',
    'id', 'scope', 'scope_enc', 'cost', 'consumer', 'stream', 'group')
  local status = f[1]
  if not status then
    return nil, 'unknown_job'
  end
  if status == 'completed' or status == 'dead' then
    return nil, 'finished'
  end
  if status ~= 'running' or tonumber(f[2]) ~= attempt or f[3] ~= token then
    return nil, 'superseded'
  end
  if tonumber(f[4]) <= now_ms then
    return nil, 'expired'
  end
  return {attempt = attempt, token = token, id = f[5], scope = f[6], scope_enc = f[7],
    cost = tonumber(f[8]), consumer = f[9] or '', stream = f[10], group = f[11]}
end

-- The last `n` bytes of `s`, starting on a UTF-8 character boundary (never inside one).
local function utf8_tail(s, n)
  if string.len(s) <= n then
    return s
  end
  local i = string.len(s) - n + 1
  while i <= string.len(s) do
    local b = string.byte(s, i)
    if b < 0x80 or b >= 0xC0 then
      break
    end
    i = i + 1  -- a continuation byte: the character started before the cut
  end
  return string.sub(s, i)
end

-- Append one attempt's outcome to the job's history (a JSON array in the record). The
-- array is extended as text: re-encoding it on every report would cost more than the rest
-- of the report.
local function history_with(job_key, entry)
  if entry.detail then
    entry.detail = utf8_tail(entry.detail, MAX_DETAIL)  -- keep the end of a traceback
  end
  local item = cjson.encode(entry)
  local raw = redis.call('HGET', job_key, 'history')
  if raw and string.sub(raw, -1) == ']' and raw ~= '[]' then
    return string.sub(raw, 1, -2) .. ',' .. item .. ']'
  end
  return '[' .. item .. ']'
end

-- End an attempt's stream entry: acknowledged in its group (it leaves the consumer's
-- pending list), then deleted, so a stream holds only attempts that are running.
-- (XTRIM/MAXLEN would drop entries of running attempts.)
local function end_entry(stream_key, group, token)
  if stream_key and stream_key ~= '' then
    if group and group ~= '' then
      redis.call('XACK', stream_key, group, token)
    end
    redis.call('XDEL', stream_key, token)
  end
end
