#!lua
-- replay.lua: sends dead-lettered jobs back through admission, on an operator's request.
--
-- Each replayed job starts over (attempt 0, status scheduled, due now) with its payload,
-- scope and cost from the dead letter and its history kept (plus a "replayed" entry); it
-- then passes the same release-time limits as any job. The dead letter itself stays until
-- purged (or trimmed past max_dead_letters); a per-dependency set of replayed entry ids
-- makes a second replay of the same entry a no-op (marks of trimmed entries are dropped
-- here), and a job whose record is active again (resubmitted or replayed) is left alone.
--
-- KEYS[1] policy    hash    compiled limits (read only: must exist)
-- KEYS[2] scopes    hash    encoded scope -> its limits (read only)
-- KEYS[3] state     hash    queued_cost, queued_count, wake_at
-- KEYS[4] delayed   zset    queued job ids, score = eligible time (us)
-- KEYS[5] dead      stream  dead letters (read only)
-- KEYS[6] replayed  zset    replayed dead-letter entry ids, score = the entry's time (ms)
-- KEYS[7] wake      list    coordinator wake-up signal (at most one element)
-- KEYS[8] work      list    idle-worker wake-up signal (at most one element)
-- ARGV[1] job_prefix    string  key prefix of job records (carries the hash tag)
-- ARGV[2] scope_prefix  string  key prefix of scope state (carries the hash tag)
-- ARGV[3] now_us        int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[4] count         int     number of entries that follow
-- ARGV[5...] entries    3 values per entry: entry_id (of the dead letter), job_enc, scope_enc
--
-- Returns one status per entry: "replayed" | "missing" (no such dead letter) |
-- "already_replayed" | "active" (the job id is in use again), or "unknown_dependency" for
-- every entry when no policy is applied.
-- Writes: job records, delayed, state, scope state (waiting counts), replayed, wake, work.

--- @include "scopes"
--- @include "signals"

local job_prefix = ARGV[1]
local count = tonumber(ARGV[4])
local out = {}
local policy = load_policy(KEYS[1])
local now = now_from(ARGV[3], policy)
local now_ms = ms_of(now)
if not policy then
  for i = 1, count do
    out[i] = 'unknown_dependency'
  end
  return out
end
local ctx = new_ctx(policy, now, {policy = KEYS[1], scopes = KEYS[2], state = KEYS[3],
  delayed = KEYS[4], wake = KEYS[7], work = KEYS[8]}, {job = job_prefix, scope = ARGV[2]})
load_state(ctx)
local dirty = false
for i = 1, count do
  local base = 4 + (i - 1) * 3
  local entry_id, job_enc, scope_enc = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local job_key = job_prefix .. job_enc
  local found = redis.call('XRANGE', KEYS[5], entry_id, entry_id)
  local status = redis.call('HGET', job_key, 'status')
  if not found[1] then
    out[i] = 'missing'
  elseif redis.call('ZSCORE', KEYS[6], entry_id) then
    out[i] = 'already_replayed'
  elseif status and status ~= 'dead' and status ~= 'completed' then
    out[i] = 'active'
  else
    local f = {}
    local raw = found[1][2]
    for j = 1, #raw, 2 do
      f[raw[j]] = raw[j + 1]
    end
    local h = {}
    if f.history and f.history ~= '' then
      h = cjson.decode(f.history)
    end
    h[#h + 1] = {outcome = 'replayed', at_ms = now_ms, dead_letter = entry_id}
    redis.call('DEL', job_key)
    redis.call('HSET', job_key, 'id', f.id, 'scope', f.scope, 'scope_enc', scope_enc,
      'cost', f.cost, 'payload', f.payload or '', 'attempt', 0, 'status', 'scheduled',
      'submitted_ms', now_ms, 'not_before_ms', now_ms, 'history', cjson.encode(h))
    redis.call('ZADD', KEYS[4], fmt(now), job_enc)
    redis.call('ZADD', KEYS[6], string.match(entry_id, '^(%d+)-'), entry_id)
    queue_add(ctx, scope_get(ctx, scope_enc), 1, tonumber(f.cost))
    dirty = true
    out[i] = 'replayed'
  end
end
-- Marks of dead letters trimmed away (max_dead_letters) mean nothing any more.
local oldest = redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', 1)
if oldest[1] then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. string.match(oldest[1][1], '^(%d+)-'))
else
  redis.call('DEL', KEYS[6])
end
if dirty then
  save_state(ctx)
  scope_flush(ctx)
  signal_coordinator(ctx, now)  -- due now: moved to its ready line by the next step
  signal_workers(ctx)
end
return out
