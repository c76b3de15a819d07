#!lua
-- apply_policy.lua: installs a validated, compiled policy for one dependency, atomically.
--
-- Producers and coordinators read limits only from these two hashes, so every process obeys
-- the applied policy whatever its local files say. Applying the same policy again (same
-- digest) changes nothing, unless the policy is being deleted (delete.lua): applying it then
-- cancels the deletion. Each change is an event (policy_applied, with its version). Bucket
-- state, queued and released work are kept: new limits take effect from the next decision.
--
-- KEYS[1] policy   hash  compiled limits (replaced whole)
-- KEYS[2] scopes   hash  encoded scope -> "interval_us burst weight_milli" (replaced whole)
-- ARGV[1] digest        string  sha256 of the compiled policy
-- ARGV[2] field_count   int     number of (name, value) pairs that follow for KEYS[1]
-- ARGV[3...] pairs      field_count policy pairs, then a scope count, then that many
--                       (encoded scope, "interval_us burst weight_milli") pairs
--
-- Returns 2 integers: version (increases by one per change), changed (1 or 0).
-- Writes: KEYS[1] (the fields, plus `packed`: every field the scripts read, in one string),
-- KEYS[2], events.

--- @include "core"

local digest = ARGV[1]
local old = redis.call('HMGET', KEYS[1], 'digest', 'version', 'deleting')
local version = tonumber(old[2]) or 0
if old[1] == digest and old[3] ~= '1' then
  return {version, 0}
end
version = version + 1

local n = tonumber(ARGV[2])
local fields = {'digest', digest, 'version', version}
for i = 3, 2 + 2 * n do
  fields[#fields + 1] = ARGV[i]
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('HSET', KEYS[1], 'packed', pack_policy(KEYS[1]))
local events = events_key(KEYS[1])
local cancelled = '0'
if old[3] == '1' then
  cancelled = '1'
end
redis.call('XADD', events, 'MAXLEN', '~', EVENTS_KEPT, '*', 'kind', 'policy_applied',
  'at_ms', fmt(ms_of(now_from('', nil))), 'version', fmt(version), 'digest', digest,
  'deletion_cancelled', cancelled)

local at = 3 + 2 * n
local m = tonumber(ARGV[at])
-- In chunks: unpack() of a very long list would overflow Lua's C stack.
local i = at + 1
while i <= at + 2 * m do
  local chunk = {}
  while i <= at + 2 * m and #chunk < 1000 do
    chunk[#chunk + 1] = ARGV[i]
    i = i + 1
  end
  redis.call('HSET', KEYS[2], unpack(chunk))
end
return {version, 1}
