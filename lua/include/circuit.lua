-- The circuit breaker of a dependency: its gate (checked at release) and its bookkeeping
-- (one outcome at a time). State lives in the dependency's state hash (`c_*` fields).
--
-- Closed -> open when, over the last `window`, at least `min_requests` outcomes were seen
-- and the failure share exceeds `failure_ratio` (a sliding window approximated by two fixed
-- windows, the previous one weighted by how much of it still overlaps). Open: nothing is
-- released for open_for, doubling per consecutive open up to open_max. Then half-open:
-- `probes` jobs are released; they all succeed -> closed, any fails -> open again.

--- @include "signals"

-- nil when the circuit lets work through now, else the time to look again. Moves
-- open -> half_open once open_for has passed.
local function circuit_blocks(ctx)
  local p = ctx.policy
  if p.circuit_enabled ~= 1 then
    return nil
  end
  local c = ctx.circuit
  if c.state == 'open' then
    if ctx.now < c.until_ then
      return c.until_
    end
    c.state, c.probes, c.probe_ok = 'half_open', 0, 0
    ctx.circuit_dirty = true
    tally(ctx, 'circuit:half_open')
    event(ctx, 'circuit_half_open', 'probes', fmt(p.circuit_probes))
  end
  if c.state == 'half_open' and c.probes >= p.circuit_probes then
    return ctx.now + p.circuit_open_ms * 1000  -- probes are out; their reports decide
  end
  return nil
end

-- Record one outcome (ok = success) of an attempt a worker took.
local function circuit_record(ctx, ok)
  local p = ctx.policy
  if p.circuit_enabled ~= 1 then
    return
  end
  local c, now = ctx.circuit, ctx.now
  local win = p.circuit_window_ms * 1000
  if now >= c.win + win then
    if now >= c.win + 2 * win then
      c.prev_ok, c.prev_fail = 0, 0
    else
      c.prev_ok, c.prev_fail = c.cur_ok, c.cur_fail
    end
    c.cur_ok, c.cur_fail = 0, 0
    c.win = now - (now - c.win) % win
  end
  if ok then
    c.cur_ok = c.cur_ok + 1
  else
    c.cur_fail = c.cur_fail + 1
  end
  ctx.circuit_dirty = true
  local function open()
    c.opens = c.opens + 1
    local d = math.min(p.circuit_open_ms * 2 ^ (c.opens - 1), p.circuit_open_max_ms)
    c.state, c.until_, c.probes, c.probe_ok = 'open', now + d * 1000, 0, 0
    tally(ctx, 'circuit:open')
    event(ctx, 'circuit_open', 'until_ms', fmt(ms_of(c.until_)), 'opens', fmt(c.opens))
    signal_coordinator(ctx, c.until_)  -- half-open is due then
  end
  if c.state == 'half_open' then
    if not ok then
      open()
    else
      c.probe_ok = c.probe_ok + 1
      if c.probe_ok >= p.circuit_probes then
        c.state, c.opens = 'closed', 0
        tally(ctx, 'circuit:closed')
        event(ctx, 'circuit_closed')
        c.cur_ok, c.cur_fail, c.prev_ok, c.prev_fail = 0, 0, 0, 0
        if ctx.queued_count > 0 then
          signal_workers(ctx)  -- queued work may flow again
        end
      end
    end
  elseif c.state == 'closed' and not ok then
    local weight = 1 - (now - c.win) / win
    local fails = c.prev_fail * weight + c.cur_fail
    local total = (c.prev_ok + c.prev_fail) * weight + c.cur_ok + c.cur_fail
    if total >= p.circuit_min_requests and fails > total * p.circuit_failure_milli / 1000 then
      open()
    end
  end
end

-- A probe attempt that ended without saying anything about the dependency (returned
-- unstarted, or failed on its own account) gives its probe slot back.
local function circuit_unprobe(ctx, job_key)
  if ctx.policy.circuit_enabled == 1 and ctx.circuit.state == 'half_open' and
      redis.call('HGET', job_key, 'probe') == '1' then
    ctx.circuit.probes = math.max(ctx.circuit.probes - 1, 0)
    ctx.circuit_dirty = true
  end
end
