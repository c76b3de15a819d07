-- Hard cost quotas per scope: a cost budget per period, reserved at release (when a worker
-- takes the job) and settled by the worker's report. Fixed windows keep
-- {win, used, reserved} in the scope's quota hash; rolling windows keep every reservation in
-- a log (zset scored by release time, member "cost:job:attempt") and its total in `sum`.

--- @include "core"

local function quota_load(ctx, s)
  if s.quota then
    return s.quota
  end
  local lim = s.lim
  local key = ctx.quota_prefix .. s.enc
  local q = {key = key, log = key .. ':log'}
  local raw = redis.call('HMGET', key, 'win', 'used', 'reserved', 'sum')
  if lim.q_rolling == 1 then
    local cut = ms_of(ctx.now) - lim.q_period
    local sum = tonumber(raw[4]) or 0
    local gone = redis.call('ZRANGE', q.log, '-inf', '(' .. fmt(cut + 1), 'BYSCORE')
    for _, m in ipairs(gone) do
      sum = sum - tonumber(string.match(m, '^(%d+):'))
    end
    q.total = math.max(sum, 0)
    if #gone > 0 then
      -- Pruned entries leave the stored total at once, whether or not this call reserves.
      redis.call('ZREMRANGEBYSCORE', q.log, '-inf', '(' .. fmt(cut + 1))
      redis.call('HSET', key, 'sum', fmt(q.total))
    end
  else
    local win = math.floor(ms_of(ctx.now) / lim.q_period)
    q.win = win
    if tonumber(raw[1]) == win then
      q.used, q.reserved = tonumber(raw[2]) or 0, tonumber(raw[3]) or 0
    else
      q.used, q.reserved = 0, 0
    end
    q.total = q.used + q.reserved
  end
  s.quota = q
  return q
end

-- Earliest time (us) at which `need` more cost fits the scope's quota: now when it fits. A
-- `need` beyond what is left (a submit counts the scope's waiting work too) fits in a later
-- window: fixed windows hold the limit each from the next reset on; a rolling window frees
-- each charge one period after it was made. An estimate (a lower bound): jobs do not split
-- across windows.
local function quota_at(ctx, s, need)
  local lim = s.lim
  if lim.q_limit <= 0 then
    return ctx.now
  end
  local q = quota_load(ctx, s)
  local limit, period_us = lim.q_limit, lim.q_period * 1000
  if q.total + need <= limit then
    return ctx.now
  end
  local over = q.total + need - limit
  if lim.q_rolling ~= 1 then
    return (q.win + math.ceil(over / limit)) * period_us
  end
  local log = redis.call('ZRANGE', q.log, 0, -1, 'WITHSCORES')
  local last_ms = ctx.now_ms
  for i = 1, #log, 2 do
    over = over - (tonumber(string.match(log[i], '^(%d+):')) or 0)
    last_ms = tonumber(log[i + 1])
    if over <= 0 then
      return (last_ms + lim.q_period) * 1000
    end
  end
  -- Even an empty window is too small for all of it: whole periods more.
  return (last_ms + lim.q_period) * 1000 + (math.ceil(over / limit) - 1) * period_us
end

local function quota_save(ctx, s)
  local q = s.quota
  if not q then
    return
  end
  local ttl = s.lim.q_period * 2 + 1000
  if s.lim.q_rolling == 1 then
    redis.call('HSET', q.key, 'sum', fmt(q.total))
    redis.call('PEXPIRE', q.log, ttl)
  else
    redis.call('HSET', q.key, 'win', fmt(q.win), 'used', fmt(q.used), 'reserved',
      fmt(q.reserved))
  end
  redis.call('PEXPIRE', q.key, ttl)
end

-- Reserve a started attempt's declared cost; the record remembers where (and the TTL the
-- quota's keys keep), for settlement.
local function quota_reserve(ctx, s, job_key, job_enc, attempt, cost)
  if s.lim.q_limit <= 0 then
    return
  end
  local q = quota_load(ctx, s)
  local now_ms = ms_of(ctx.now)
  local ttl = s.lim.q_period * 2 + 1000
  if s.lim.q_rolling == 1 then
    local member = fmt(cost) .. ':' .. job_enc .. ':' .. fmt(attempt)
    redis.call('ZADD', q.log, now_ms, member)
    redis.call('HSET', job_key, 'q_key', q.key, 'q_member', member, 'q_at', now_ms, 'q_amt',
      cost, 'q_ttl', ttl)
  else
    q.reserved = q.reserved + cost
    redis.call('HSET', job_key, 'q_key', q.key, 'q_win', q.win, 'q_amt', cost, 'q_ttl', ttl)
  end
  q.total = q.total + cost
  quota_save(ctx, s)
end

-- Settle a started attempt's reservation. Quotas count what may have been spent: an
-- attempt a worker took is charged `actual` (its report's actual cost; the declared cost when
-- the report gives none, when it failed, or when its lease expired: a worker killed after
-- calling the model did spend); only an attempt returned unstarted is refunded (`actual`
-- nil). Independent of the policy in force now: the record says where the reservation is.
-- `marked` false: the caller read the record's q_key and there is none (nothing to do).
local function quota_settle(job_key, job_enc, attempt, actual, now_ms, marked)
  if marked == false then
    return
  end
  local f = redis.call('HMGET', job_key, 'q_key', 'q_member', 'q_at', 'q_amt', 'q_win',
    'q_ttl')
  if not f[1] then
    return
  end
  local key, amt = f[1], tonumber(f[4])
  redis.call('HDEL', job_key, 'q_key', 'q_member', 'q_at', 'q_amt', 'q_win', 'q_ttl')
  if f[2] then
    local log = key .. ':log'
    if redis.call('ZREM', log, f[2]) == 1 then
      local sum = (tonumber(redis.call('HGET', key, 'sum')) or 0) - amt
      if actual and actual > 0 then
        redis.call('ZADD', log, f[3], fmt(actual) .. ':' .. job_enc .. ':' .. fmt(attempt))
        sum = sum + actual
        -- ZREM of the only member deleted the log: the one ZADD'ed now needs its TTL again.
        redis.call('PEXPIRE', log, tonumber(f[6]) or 86400000)
      end
      redis.call('HSET', key, 'sum', fmt(math.max(sum, 0)))
    end
  else
    local q = redis.call('HMGET', key, 'win', 'used', 'reserved')
    if q[1] and q[1] == f[5] then
      local used = tonumber(q[2]) or 0
      if actual then
        used = used + actual
      end
      redis.call('HSET', key, 'used', fmt(used), 'reserved',
        fmt(math.max((tonumber(q[3]) or 0) - amt, 0)))
    end
  end
end
