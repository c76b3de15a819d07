#!lua
-- heartbeat.lua: the holder of live leases extends each to now + lease.
--
-- Only the current attempt's live lease can be extended (see the fence in
-- include/leases.lua); an expired lease is never revived, because whoever steps the
-- dependency next may reclaim it and hand the job to someone else. One call extends every
-- lease a worker holds.
--
-- KEYS[1] policy    hash  compiled limits of the dependency (read only: lease_ms)
-- KEYS[2] inflight  zset  started job ids, score = lease deadline (ms)
-- ARGV[1] job_prefix  string  key prefix of job records (carries the hash tag)
-- ARGV[2] now_us      int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[3] count       int     number of leases that follow
-- ARGV[4...] leases   3 values per lease: job_enc, attempt, token
--
-- Returns 3 values per lease: ok (1|0), reason ("" or unknown_job | superseded | finished |
-- expired), lease_deadline_ms (the new deadline; 0 when refused).
-- Writes: job records (lease_deadline_ms), inflight.

--- @include "leases"

local count = tonumber(ARGV[3])
local policy = load_policy(KEYS[1])
local now = now_from(ARGV[2], policy)
local now_ms = ms_of(now)
local out = {}
for i = 1, count do
  local base = 3 + (i - 1) * 3
  local job_enc, attempt, token = ARGV[base + 1], tonumber(ARGV[base + 2]), ARGV[base + 3]
  local job_key = ARGV[1] .. job_enc
  local job, why = fence(job_key, attempt, token, now_ms)
  if job and policy then
    local deadline = now_ms + policy.lease_ms
    redis.call('HSET', job_key, 'lease_deadline_ms', deadline)
    redis.call('ZADD', KEYS[2], 'XX', deadline, job_enc)
    out[#out + 1], out[#out + 2], out[#out + 3] = 1, '', deadline
  else
    out[#out + 1], out[#out + 2], out[#out + 3] = 0, why or 'unknown_job', 0
  end
end
return out
