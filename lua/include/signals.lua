-- Signals: the two lists through which a script says "look again" without anyone polling.
--
-- `wake` (coordinators): the state field `wake_at` is the time by which a coordinator has
-- promised to step the dependency again. A script that creates an earlier event (work due
-- sooner, a retry, a limit freeing up) lowers it and pushes one element, which the
-- coordinator's watcher BLPOPs, so its local sleep is cut short.
-- `work` (idle workers): one element means "something may be released now"; an idle worker
-- BLPOPs it and fetches. At most one element is kept: a worker that fetches and leaves work
-- behind pushes it again, so idle workers wake one after another, never all at once.

--- @include "core"

local function signal_coordinator(ctx, at)
  if ctx.coordinator then
    return  -- the coordinator's own step sets wake_at from its reply
  end
  if not ctx.wake_at or at < ctx.wake_at then
    ctx.wake_at = at
    redis.call('HSET', ctx.keys.state, 'wake_at', fmt(at))
    if redis.call('LLEN', ctx.keys.wake) == 0 then
      redis.call('LPUSH', ctx.keys.wake, '1')
    end
  end
end

local function signal_workers(ctx)
  if not ctx.workers_signalled then
    ctx.workers_signalled = true
    if redis.call('LLEN', ctx.keys.work) == 0 then
      redis.call('LPUSH', ctx.keys.work, '1')
    end
  end
end
