-- One scope's limits and state, read on first use in a call and written back once, packed
-- in the one field `v` of the scope's hash as eight big-endian doubles (struct '>dddddddd';
-- written only when it changed):
--   v  stat rtat pu vf qn qc aw th
-- stat = submit-side reservation tat, rtat = release-side tat, pu = paused until (a
-- Retry-After for this scope only), vf = virtual finish tag of its last release (fair
-- queueing), qn / qc = jobs / cost it has waiting (scheduled, ready, parked or retrying),
-- aw = the weight it added to the fair queue's active weight (> 0 exactly while it is in
-- `active`), th = 1 while it is in `throttled` (so its place in the fair queue is known
-- without asking the sorted sets). janus.calls.SCOPE_PACKED names the same fields in order.

--- @include "core"

-- A scope's limits (read only: shared by the calls that use this policy version): its
-- override, parsed once per policy version, or the default scope's.
local function scope_limits(ctx, scope_enc)
  local p = ctx.policy
  if p.scope_overrides > 0 then
    local cached = p.override_cache[scope_enc]
    if cached then
      return cached
    end
    local raw = redis.call('HGET', ctx.keys.scopes, scope_enc)
    local lim = p.default_lim
    if raw then
      local v = {}
      for num in string.gmatch(raw, '%d+') do
        v[#v + 1] = tonumber(num)
      end
      lim = {interval = v[1], burst = v[2], weight = v[3], max_queued = v[4],
        max_queued_cost = v[5], q_limit = v[6], q_period = v[7], q_rolling = v[8],
        q_wait = v[9]}
    end
    if p.override_cached == nil or p.override_cached < 10000 then
      p.override_cache[scope_enc] = lim
      p.override_cached = (p.override_cached or 0) + 1
    end
    return lim
  end
  return p.default_lim
end

local function scope_get(ctx, scope_enc)
  local s = ctx.scopes[scope_enc]
  if s then
    return s
  end
  local key = ctx.scope_prefix .. scope_enc
  local raw = redis.call('HGET', key, 'v')
  local stat, rtat, pu, vf, qn, qc, aw, th = 0, 0, 0, 0, 0, 0, 0, 0
  if raw and string.len(raw) == 64 then
    stat, rtat, pu, vf, qn, qc, aw, th = struct.unpack('>dddddddd', raw)
  end
  local hold = 0  -- held by hand until (core.lua: read only while some scope is held)
  if ctx.hold_n > 0 then
    local raw_hold = redis.call('HGET', ctx.keys.state, 'hold:' .. scope_enc)
    hold = raw_hold and tonumber(string.match(raw_hold, '^%d+')) or 0
  end
  -- (every field in the constructor: the table is sized once)
  s = {key = key, enc = scope_enc, lim = scope_limits(ctx, scope_enc), stat = stat,
    rtat = rtat, pu = pu, vf = vf, qn = qn, qc = qc, aw = aw, th = th, dirty = false,
    place = false, quota = false, raw = raw or false, hold = hold,
    kept = raw ~= false and raw ~= nil and (qn > 0 or aw > 0 or th > 0)}
  ctx.scopes[scope_enc] = s
  return s
end

-- Write back every scope this call changed. A scope's hash lives only as long as it
-- remembers something: while it has work waiting (or weight in the fair queue) it is kept,
-- bounded by that work; otherwise it expires once every time it holds is past, when a
-- missing key means exactly the same thing (a full bucket, no debt).
local function scope_flush(ctx)
  for _, s in pairs(ctx.scopes) do
    if s.dirty then
      local v = struct.pack('>dddddddd', s.stat, s.rtat, s.pu, s.vf, s.qn, s.qc, s.aw, s.th)
      if v ~= s.raw then
        redis.call('HSET', s.key, 'v', v)
        s.raw = v
      end
      local keep = s.qn > 0 or s.aw > 0 or s.th > 0
      if keep then
        if not s.kept then
          redis.call('PERSIST', s.key)
        end
      else
        local horizon = math.max(s.stat, s.rtat, s.pu) - ctx.now
        redis.call('PEXPIRE', s.key, math.max(ms_of(horizon), 0) + 1000)
      end
      s.kept = keep
      s.dirty = false
    end
  end
end

-- Work entering (+) or leaving (-) a scope's waiting work, and the dependency's totals.
local function queue_add(ctx, s, jobs, cost)
  s.qn = math.max(s.qn + jobs, 0)
  s.qc = math.max(s.qc + cost, 0)
  s.dirty = true
  ctx.queued_count = math.max(ctx.queued_count + jobs, 0)
  ctx.queued_cost = math.max(ctx.queued_cost + cost, 0)
end
