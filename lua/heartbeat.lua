-- heartbeat.lua: the holder of a live lease extends it to now + lease.
--
-- Only the current attempt's live lease can be extended (see the fence in
-- include/outcomes.lua); an expired lease is never revived, because the coordinator may
-- already be about to hand the job to someone else.
--
-- KEYS[1] policy    hash  compiled limits of the dependency (read only: lease_ms)
-- KEYS[2] inflight  zset  released job ids, score = lease deadline (ms)
-- ARGV[1] job_prefix  string  key prefix of job records (carries the hash tag)
-- ARGV[2] now_us      int     explicit time in microseconds, or "" to use Redis TIME
-- ARGV[3] job_enc     string  encoded job id
-- ARGV[4] attempt     int     the attempt the caller holds
-- ARGV[5] token       string  the lease token (stream entry id of that attempt)
--
-- Returns 3 values: ok (1|0), reason ("" or unknown_job | superseded | finished | expired),
-- lease_deadline_ms (the new deadline; 0 when refused).
-- Writes: the job record (lease_deadline_ms, TTL), inflight.

--- @include "limits"
--- @include "outcomes"

local now = now_from(ARGV[2])
local now_ms = ms_of(now)
local job_key = ARGV[1] .. ARGV[3]
local job, why = fence(job_key, tonumber(ARGV[4]), ARGV[5], now_ms)
if not job then
  return {0, why, 0}
end
local p = redis.call('HMGET', KEYS[1], 'lease_ms', 'retention_ms')
local lease_ms, retention_ms = tonumber(p[1]), tonumber(p[2])
local deadline = now_ms + lease_ms
redis.call('HSET', job_key, 'lease_deadline_ms', deadline)
redis.call('PEXPIRE', job_key, lease_ms + retention_ms)
redis.call('ZADD', KEYS[2], 'XX', deadline, ARGV[3])
return {1, '', deadline}
