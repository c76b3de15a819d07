-- Weighted fair sharing between scopes: start-time fair queueing (SFQ, Goyal et al.).
-- Jobs that may run as far as their own scope is concerned wait in their scope's FIFO list
-- (its ready line); `active` holds each scope with waiting work, scored by the virtual
-- start tag of its head job. The dependency serves the smallest tag; serving a job of cost c
-- moves its scope's tag on by c / weight (in cost units x 1e6 / weight_milli) and sets the
-- virtual time to the tag served. A scope that becomes active starts at max(virtual time,
-- its last finish tag), so idle time earns no credit and a newcomer is served within one
-- round: at most one job from each other active scope goes first, i.e. about
-- active_scopes x max_cost / rate. Over any interval in which two scopes stay backlogged,
-- their released cost divided by weight differs by at most max_cost / w1 + max_cost / w2
-- (the SFQ fairness bound). Each step is O(log active scopes). A scope whose own bucket or
-- quota refuses its head is moved to `throttled` (scored by when it may go again) and back,
-- without blocking the others.

--- @include "scopes"

local function tag_step(s, cost)
  return cost * 1000000 / s.lim.weight
end

-- Where is this scope in the fair queue? 'active' | 'throttled' | 'idle', from its own state
-- (aw, th): no sorted-set lookups.
local function scope_place(ctx, s)
  if not s.place then
    if s.aw > 0 then
      s.place = 'active'
    elseif s.th > 0 then
      s.place = 'throttled'
    else
      s.place = 'idle'
    end
  end
  return s.place
end

-- The head of `active`, held in Lua for the length of one call that serves many jobs (a
-- fetch): the first `fq_size` scopes are read once, served from memory, and the tags that
-- changed are written back in one ZADD (fq_flush), instead of a ZRANGE and a ZADD per job.
-- It stays exact: every scope not read sorts after the last one read (the boundary), so
-- while the smallest tag in memory sorts before the boundary it is the true head; once it
-- does not, the tags are written back and the head read again. Entries are removed from
-- Redis at once (ZREM); only tag changes wait for the flush.
local function fq_before(a_tag, a_enc, b_tag, b_enc)
  return a_tag < b_tag or (a_tag == b_tag and a_enc < b_enc)
end

local function fq_load(ctx)
  local raw = redis.call('ZRANGE', ctx.keys.active, 0, ctx.fq_size - 1, 'WITHSCORES')
  local items = {}
  for i = 1, #raw, 2 do
    items[#items + 1] = {enc = raw[i], tag = tonumber(raw[i + 1])}
  end
  local last = items[#items]
  ctx.fq = {items = items, full = #items >= ctx.fq_size, b_tag = last and last.tag or 0,
    b_enc = last and last.enc or '', dirty = {}, n_dirty = 0}
end

local function fq_flush(ctx)
  local fq = ctx.fq
  if fq and fq.n_dirty > 0 then
    local args = {}
    for enc, tag in pairs(fq.dirty) do
      args[#args + 1], args[#args + 2] = string.format('%.17g', tag), enc
    end
    redis.call('ZADD', ctx.keys.active, unpack(args))
    fq.dirty, fq.n_dirty = {}, 0
  end
end

-- The scope with the smallest virtual start tag (ties by name, as the sorted set orders
-- them): {enc, tag}, or nil when no scope is active.
local function fq_head(ctx)
  if not ctx.fq then
    fq_load(ctx)
  end
  local fq = ctx.fq
  local best = nil
  for _, it in ipairs(fq.items) do
    if not best or fq_before(it.tag, it.enc, best.tag, best.enc) then
      best = it
    end
  end
  if best and fq.full and fq_before(fq.b_tag, fq.b_enc, best.tag, best.enc) then
    fq_flush(ctx)  -- a scope not read may come first now: read the head again
    fq_load(ctx)
    return ctx.fq.items[1]
  end
  return best
end

local function fq_remove(ctx, enc)
  local fq = ctx.fq
  if fq then
    for i, it in ipairs(fq.items) do
      if it.enc == enc then
        table.remove(fq.items, i)
        break
      end
    end
    if fq.dirty[enc] then
      fq.dirty[enc], fq.n_dirty = nil, fq.n_dirty - 1
    end
  end
end

-- A served scope's new start tag (written back by fq_flush).
local function fq_retag(ctx, s, tag)
  local fq = ctx.fq
  if not fq then
    redis.call('ZADD', ctx.keys.active, string.format('%.17g', tag), s.enc)
    return
  end
  for _, it in ipairs(fq.items) do
    if it.enc == s.enc then
      it.tag = tag
      break
    end
  end
  if not fq.dirty[s.enc] then
    fq.n_dirty = fq.n_dirty + 1
  end
  fq.dirty[s.enc] = tag
end

-- active_w sums the weights of the active scopes. Each scope remembers the weight it added
-- (aw) and takes back exactly that, so a policy change of its weight cannot make it drift.
local function activate(ctx, s)
  local tag = math.max(ctx.vtime, s.vf)
  redis.call('ZADD', ctx.keys.active, string.format('%.17g', tag), s.enc)
  if ctx.fq then
    fq_remove(ctx, s.enc)
    table.insert(ctx.fq.items, {enc = s.enc, tag = tag})
  end
  ctx.active_w = ctx.active_w + s.lim.weight
  s.aw, s.dirty = s.lim.weight, true
  s.place = 'active'
end

local function deactivate(ctx, s)
  fq_remove(ctx, s.enc)
  if redis.call('ZREM', ctx.keys.active, s.enc) == 1 then
    local w = s.aw
    if w <= 0 then
      w = s.lim.weight
    end
    ctx.active_w = math.max(ctx.active_w - w, 0)
  end
  s.aw, s.dirty = 0, true
  s.place = 'idle'
end

local function throttle(ctx, s, until_us)
  deactivate(ctx, s)
  redis.call('ZADD', ctx.keys.throttled, fmt(until_us), s.enc)
  s.place, s.th, s.dirty = 'throttled', 1, true
end

-- A throttled scope's time has come (its entry in `throttled` was removed by the caller).
local function unthrottle(ctx, s)
  s.place, s.th, s.dirty = 'idle', 0, true
end

-- A job its scope allows now joins the end (or, given `front`, the head) of the scope's
-- ready line, and the scope the fair queue. Returns true when the scope became active (work
-- that idle workers have not been told about).
local function enqueue_ready(ctx, s, job_enc, front)
  if front then
    redis.call('LPUSH', ctx.ready_prefix .. s.enc, job_enc)
  else
    redis.call('RPUSH', ctx.ready_prefix .. s.enc, job_enc)
  end
  if scope_place(ctx, s) == 'idle' then
    activate(ctx, s)
    return true
  end
  return false
end
