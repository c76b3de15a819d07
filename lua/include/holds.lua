-- Pauses by hand (janus pause / janus resume, pause.lua): the releases of a whole
-- dependency, or of one scope, are held until a time or until resumed. The fields are in
-- core.lua (`hold`, `hold:<scope_enc>`). A held dependency refuses at can_release
-- ('paused': a shared limit, the fair queue's head waits); a held scope is set aside like
-- one its own bucket holds (throttled until the hold ends). Nothing waiting is dropped and
-- no attempt is used; submits see the hold in their estimate (dependency_paused when it is
-- longer than max_wait). A timed hold ends by itself: the due work of the first step or
-- fetch after its end clears it and records the event.

--- @include "core"
--- @include "signals"

local function hold_field(scope_enc)
  return 'hold:' .. scope_enc
end

-- A scope's hold field: until_us, scope name (nil, nil when it is not held).
local function hold_get(ctx, scope_enc)
  local raw = redis.call('HGET', ctx.keys.state, hold_field(scope_enc))
  if not raw then
    return nil, nil
  end
  local at, name = string.match(raw, '^(%d+) (.*)$')
  return tonumber(at), name
end

-- The earliest end of a scope's hold (0: none), and the number of held scopes, recounted
-- from the fields themselves; holds whose end has passed are ended (`by` says why, for the
-- event). A scope its hold set aside comes back now (a lower score only: whatever else
-- holds it is checked again when it comes back).
local function hold_scan(ctx, by)
  local all = redis.call('HGETALL', ctx.keys.state)
  local n, nxt = 0, 0
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 5) == 'hold:' then
      local at, name = string.match(all[i + 1], '^(%d+) (.*)$')
      at = tonumber(at) or 0
      if at <= ctx.now then
        redis.call('HDEL', ctx.keys.state, all[i])
        redis.call('ZADD', ctx.keys.throttled, 'XX', 'LT', fmt(math.min(ctx.now, HOLD_FOREVER)),
          string.sub(all[i], 6))
        event(ctx, 'resumed', 'by', by or 'timer', 'scope', name or '')
      else
        n = n + 1
        if at < HOLD_FOREVER and (nxt == 0 or at < nxt) then
          nxt = at
        end
      end
    end
  end
  ctx.hold_n, ctx.hold_next = n, nxt
end

-- Ends the holds whose time has passed (part of every call's due work; cheap: it looks at
-- the scopes' fields only once the earliest of them is due).
local function expire_holds(ctx)
  if ctx.hold > 0 and ctx.hold <= ctx.now then
    ctx.hold = 0
    event(ctx, 'resumed', 'by', 'timer', 'scope', '')
    signal_workers(ctx)
  end
  if ctx.hold_n > 0 and ctx.hold_next > 0 and ctx.hold_next <= ctx.now then
    hold_scan(ctx)
  end
  save_hold(ctx)
end

-- The earliest end of a timed hold, or nil (when the coordinator should look again).
local function hold_due(ctx)
  local t = nil
  if ctx.hold > ctx.now and ctx.hold < HOLD_FOREVER then
    t = ctx.hold
  end
  if ctx.hold_n > 0 and ctx.hold_next > 0 and (not t or ctx.hold_next < t) then
    t = ctx.hold_next
  end
  return t
end
