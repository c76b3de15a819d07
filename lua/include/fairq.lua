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

-- Where is this scope in the fair queue? 'active' | 'throttled' | 'idle' (cached per call).
local function scope_place(ctx, s)
  if not s.place then
    if redis.call('ZSCORE', ctx.keys.active, s.enc) then
      s.place = 'active'
    elseif redis.call('ZSCORE', ctx.keys.throttled, s.enc) then
      s.place = 'throttled'
    else
      s.place = 'idle'
    end
  end
  return s.place
end

-- active_w sums the weights of the active scopes. Each scope remembers the weight it added
-- (aw) and takes back exactly that, so a policy change of its weight cannot make it drift.
local function activate(ctx, s)
  redis.call('ZADD', ctx.keys.active, string.format('%.17g', math.max(ctx.vtime, s.vf)), s.enc)
  ctx.active_w = ctx.active_w + s.lim.weight
  s.aw, s.dirty = s.lim.weight, true
  s.place = 'active'
end

local function deactivate(ctx, s)
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
  s.place = 'throttled'
end

-- A job its scope allows now joins the end (or, given `front`, the head) of the scope's
-- ready line, and the scope the fair queue.
local function enqueue_ready(ctx, s, job_enc, front)
  if front then
    redis.call('LPUSH', ctx.ready_prefix .. s.enc, job_enc)
  else
    redis.call('RPUSH', ctx.ready_prefix .. s.enc, job_enc)
  end
  if scope_place(ctx, s) == 'idle' then
    activate(ctx, s)
  end
end
