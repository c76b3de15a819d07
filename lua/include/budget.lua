-- The retry budget (milli-tokens), refilled lazily: `min_per_second` over time, `ratio` per
-- first attempt released, capped at `window` worth of both. A retry is released only with a
-- token; one that finds none is parked in the dependency's budget line (`parked`, FIFO)
-- and moves back to its scope's ready line when tokens are there, so a parked retry costs
-- nothing while it waits and is looked at once per token, not in a loop.

--- @include "core"

local function budget_refill(ctx)
  local p, b = ctx.policy, ctx.budget
  if not b.milli then
    b.milli, b.at = 0, ctx.now
  end
  local rate_per_s = 1000000 / p.interval_us
  local cap = (p.budget_mps_milli + p.budget_ratio_milli * rate_per_s) * p.budget_window_ms / 1000
  local gained = math.floor(p.budget_mps_milli * (ctx.now - b.at) / 1000000)
  if gained > 0 then
    b.milli, b.at = math.min(cap, b.milli + gained), ctx.now
  elseif b.at > ctx.now then
    b.at = ctx.now
  end
  return cap
end

-- Is there a whole token now?
local function budget_available(ctx)
  budget_refill(ctx)
  return ctx.budget.milli >= 1000
end

local function budget_take(ctx)
  ctx.budget.milli = ctx.budget.milli - 1000
end

-- A first attempt was released: it deposits `ratio` milli-tokens.
local function budget_deposit(ctx)
  local cap = budget_refill(ctx)
  ctx.budget.milli = math.min(cap, ctx.budget.milli + ctx.policy.budget_ratio_milli)
end

-- When time alone will have refilled one whole token (nil: only first attempts refill it).
local function budget_token_at(ctx)
  local p, b = ctx.policy, ctx.budget
  if p.budget_enabled ~= 1 or p.budget_mps_milli <= 0 then
    return nil
  end
  budget_refill(ctx)
  if b.milli >= 1000 then
    return ctx.now
  end
  return b.at + math.ceil((1000 - b.milli) * 1000000 / p.budget_mps_milli)
end
