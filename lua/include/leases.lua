-- Leases: the fence every report and heartbeat passes, the attempt history, and the end of
-- an attempt's stream entry.
--
-- A lease is identified by (attempt, token): token is the stream entry id under which the
-- attempt was handed to its worker, unique per attempt. A report or heartbeat is accepted
-- only from the holder of the *current* attempt's *live* lease; anything else changes
-- nothing.

--- @include "core"

local MAX_DETAIL = 8192

-- A running record's `held` field: stream, group and consumer, NUL-separated.
local function held_parts(held)
  if not held then
    return '', '', ''
  end
  local stream, group, consumer = string.match(held, '^([^%z]*)%z([^%z]*)%z(.*)$')
  return stream or '', group or '', consumer or ''
end

-- Check a report against the job record. Returns the record's fields, or nil and why:
-- 'unknown_job' (no record), 'superseded' (another attempt is current, or this attempt
-- already ended and waits for a retry), 'finished' (completed or dead), 'expired' (the
-- lease's deadline passed; whoever steps the dependency next reclaims it).
-- With `full`, the record's history, quota reservation marker and last report come along
-- (what a report needs, in the same read); a refused check also returns the last report (a
-- re-sent report is answered from it).
local function fence(job_key, attempt, token, now_ms, full)
  local f
  if full then
    f = redis.call('HMGET', job_key, 'status', 'attempt', 'token', 'lease_deadline_ms', 'id',
      'scope', 'scope_enc', 'cost', 'held', 'history', 'q_key', 'last_report')
  else
    f = redis.call('HMGET', job_key, 'status', 'attempt', 'token', 'lease_deadline_ms', 'id',
      'scope', 'scope_enc', 'cost', 'held')
  end
  local status = f[1]
  if not status then
    return nil, 'unknown_job', f[12]
  end
  if status == 'completed' or status == 'dead' then
    return nil, 'finished', f[12]
  end
  if status ~= 'running' or tonumber(f[2]) ~= attempt or f[3] ~= token then
    return nil, 'superseded', f[12]
  end
  if tonumber(f[4]) <= now_ms then
    return nil, 'expired', f[12]
  end
  local stream, group, consumer = held_parts(f[9])
  return {attempt = attempt, token = token, id = f[5], scope = f[6], scope_enc = f[7],
    cost = tonumber(f[8]), consumer = consumer, stream = stream, group = group,
    history = f[10] or false, q_key = f[11] or false}
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
local function history_with(job_key, entry, raw)
  if entry.detail then
    entry.detail = utf8_tail(entry.detail, MAX_DETAIL)  -- keep the end of a traceback
  end
  local item = cjson.encode(entry)
  if raw == nil then
    raw = redis.call('HGET', job_key, 'history')  -- (callers that read it already pass it)
  end
  if raw and string.sub(raw, -1) == ']' and raw ~= '[]' then
    return string.sub(raw, 1, -2) .. ',' .. item .. ']'
  end
  return '[' .. item .. ']'
end

-- Ends of stream entries collected during a call, flushed in one XACK and one XDEL per
-- stream (a report of 50 outcomes: 2 commands, not 100).
local function end_later(pending, stream_key, group, token)
  if stream_key and stream_key ~= '' then
    local k = stream_key .. '\n' .. (group or '')
    local ids = pending[k]
    if not ids then
      ids = {stream = stream_key, group = group or ''}
      pending[k] = ids
    end
    ids[#ids + 1] = token
  end
end

local function end_flush(pending)
  for _, ids in pairs(pending) do
    for i = 1, #ids, 1000 do
      local last = math.min(i + 999, #ids)
      if ids.group ~= '' then
        redis.call('XACK', ids.stream, ids.group, unpack(ids, i, last))
      end
      redis.call('XDEL', ids.stream, unpack(ids, i, last))
    end
  end
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
