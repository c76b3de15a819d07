-- start.lua: a worker takes the jobs it just read from the stream (XREADGROUP).
--
-- An entry is taken only if it belongs to the job's current attempt (attempt and token, the
-- entry id, match the record), the job is still waiting to run, and its lease is live; then
-- the job becomes `running` on this consumer. A stale entry (superseded attempt, finished
-- or unknown job, expired lease) is acknowledged and deleted here and reported as not
-- taken, so no worker ever runs it. The lease itself started at release and is unchanged.
--
-- KEYS[1] stream    stream  the dependency's released work
-- ARGV[1] job_prefix  string  key prefix of job records (carries the hash tag)
-- ARGV[2] now_us      int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[3] group       string  the consumer group the entries were read with
-- ARGV[4] consumer    string  the consumer (worker) name
-- ARGV[5] count       int     number of entries that follow
-- ARGV[6...] entries  3 values per entry: job_enc, token (stream entry id), attempt
--
-- Returns 8 values per entry: taken (1|0), job id ("" if unknown), scope, cost, attempt,
-- lease_deadline_ms, payload, reason ("" when taken; else unknown_job | superseded |
-- finished | expired).
-- Writes: job records (status, consumer, started_ms); stream (acks and deletes stale entries).

--- @include "limits"
--- @include "outcomes"

local job_prefix = ARGV[1]
local now = now_from(ARGV[2])
local now_ms = ms_of(now)
local group, consumer = ARGV[3], ARGV[4]
local count = tonumber(ARGV[5])
local out = {}

for i = 1, count do
  local base = 5 + (i - 1) * 3
  local job_enc, token, attempt = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
  local job_key = job_prefix .. job_enc
  local job, why = fence(job_key, attempt, token, now_ms)
  if job and job.status ~= 'queued' and job.consumer ~= consumer then
    job, why = nil, 'superseded'  -- taken by another consumer: a stream entry is run once
  end
  -- (running on this very consumer: a re-sent call after a lost reply; it gets the same
  -- answer, so the job is not left running with nobody running it)
  local n = #out
  if job then
    local f = redis.call('HMGET', job_key, 'lease_deadline_ms', 'payload')
    redis.call('HSET', job_key, 'status', 'running', 'consumer', consumer, 'started_ms', now_ms)
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 1, job.id, job.scope, job.cost
    out[n + 5], out[n + 6], out[n + 7], out[n + 8] = attempt, tonumber(f[1]), f[2], ''
  else
    end_entry(KEYS[1], {group}, token)
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 0, '', '', 0
    out[n + 5], out[n + 6], out[n + 7], out[n + 8] = attempt, 0, '', why
  end
end
return out
