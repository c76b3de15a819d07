#!lua
-- pause.lua: holds the releases of a dependency, or of one of its scopes, by hand (for a
-- time or until resumed), or resumes them (include/holds.lua).
--
-- Work keeps waiting while held: nothing is dropped, no attempt is used, running attempts
-- run on. Pausing what is paused sets the new end; resuming what is not paused by hand
-- answers not_paused. A resume does not cut short a Retry-After pause (that one is in the
-- buckets, and ends when the dependency said it would).
--
-- KEYS[1] policy     hash    compiled limits of the dependency (read only)
-- KEYS[2] state      hash    the hold fields; events
-- KEYS[3] throttled  zset    scopes set aside until a time (a resumed scope comes back now)
-- KEYS[4] wake       list    coordinator wake-up signal (at most one element)
-- KEYS[5] work       list    idle-worker wake-up signal (at most one element)
-- ARGV[1] scope_enc  string  the encoded scope, or "" for the whole dependency
-- ARGV[2] scope      string  the scope's name (for the event), or ""
-- ARGV[3] for_ms     int     hold for this long; -1: until resumed; 0: resume
-- ARGV[4] now_us     int     explicit time in microseconds, or "" to use Redis TIME
--
-- Returns 3 values: status ("paused" | "resumed" | "not_paused" | "unknown_dependency"),
-- until_ms (when the hold ends; -1: until resumed; 0: not held), held_scopes (how many
-- scopes are held now).
-- Raises (nothing written) "JANUS_INVALID - for_ms ..." when for_ms is not -1 or 0 to ten
-- years.
-- Writes: state (hold fields, wake_at), events, throttled, wake, work.

--- @include "holds"

local MAX_FOR_MS = 10 * 365 * 86400 * 1000
local policy = load_policy(KEYS[1])
local now = now_from(ARGV[4], policy)
local scope_enc, scope = ARGV[1], ARGV[2]
local for_ms = tonumber(ARGV[3])
if not for_ms or for_ms ~= math.floor(for_ms) or for_ms < -1 or for_ms > MAX_FOR_MS then
  return redis.error_reply('JANUS_INVALID - for_ms must be -1 (until resumed), 0 (resume) ' ..
    'or a whole number of milliseconds up to ten years')
end
if not policy then
  return {'unknown_dependency', 0, 0}
end
local ctx = new_ctx(policy, now, {policy = KEYS[1], state = KEYS[2], throttled = KEYS[3],
  wake = KEYS[4], work = KEYS[5]}, {})
load_state(ctx)
expire_holds(ctx)  -- (a timed hold that ended unseen gets its event before this change)
local status, until_us = 'paused', 0
if for_ms ~= 0 then
  until_us = HOLD_FOREVER
  if for_ms > 0 then
    until_us = now + for_ms * 1000
  end
end
local until_ms = -1
if until_us == 0 then
  until_ms = 0
elseif until_us < HOLD_FOREVER then
  until_ms = ms_of(until_us)
end

if scope_enc == '' then
  if until_us == 0 then
    if ctx.hold > now then
      ctx.hold, status = 0, 'resumed'
      event(ctx, 'resumed', 'by', 'hand', 'scope', '')
      signal_workers(ctx)
    else
      status = 'not_paused'
    end
  else
    ctx.hold = until_us
    tally(ctx, 'held')
    event(ctx, 'paused', 'by', 'hand', 'scope', '', 'until_ms', fmt(until_ms))
  end
else
  local held_until = hold_get(ctx, scope_enc)
  if until_us == 0 then
    if held_until then
      redis.call('HDEL', KEYS[2], hold_field(scope_enc))
      ctx.hold_n = math.max(ctx.hold_n - 1, 0)
    end
    if held_until and held_until > now then
      status = 'resumed'
      event(ctx, 'resumed', 'by', 'hand', 'scope', scope)
      -- Set aside by its hold: it comes back with the next due work, now.
      if redis.call('ZSCORE', KEYS[3], scope_enc) then
        redis.call('ZADD', KEYS[3], 'XX', fmt(now), scope_enc)
      end
      signal_workers(ctx)
    else
      status = 'not_paused'
    end
  else
    if not held_until then
      ctx.hold_n = ctx.hold_n + 1
    end
    redis.call('HSET', KEYS[2], hold_field(scope_enc), fmt(until_us) .. ' ' .. scope)
    -- Set aside by an earlier, longer hold: it now waits only until this one ends.
    redis.call('ZADD', KEYS[3], 'XX', 'LT', fmt(until_us), scope_enc)
    tally(ctx, 'held')
    event(ctx, 'paused', 'by', 'hand', 'scope', scope, 'until_ms', fmt(until_ms))
  end
  if ctx.hold_n > 0 then
    -- (recount, and the earliest end: a resumed or re-timed scope may have been it)
    hold_scan(ctx)
  else
    ctx.hold_next = 0
  end
end
save_hold(ctx)
local due = hold_due(ctx)
if due then
  signal_coordinator(ctx, due)  -- the end of the hold is an event
end
flush_counts(ctx)
return {status, until_ms, ctx.hold_n}
