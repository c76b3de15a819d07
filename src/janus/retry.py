"""Retry math as pure functions of (policy, attempt, job id): the same numbers the Lua
computes (``lua/include/retry.lua``), for documentation, tests and capacity planning.

Backoff before the attempt that follows failed attempt ``n`` (1-based)::

    e = min(max, base * factor ** (n - 1))
    none          e
    full          u * e
    equal         e / 2 + u * e / 2
    decorrelated  min(max, base + u * (max(3 * previous_delay, base) - base))

``u`` in [0, 1) comes from SHA-1 of ``"<job id>:<n>"``: deterministic (the same history gives
the same schedule, in every process) and different per job (no thundering herd). A
Retry-After reported by the worker raises the delay to at least that (capped by
``max_retry_after``). Delays are whole milliseconds, rounded down.
"""

from __future__ import annotations

import hashlib
import math
import re

from janus.policy import AttemptPolicy

_TWO_DIGITS = re.compile(r"[0-9]{2}")


def jitter_unit(job_id: str, attempt: int) -> float:
    """A number in [0, 1) fixed by (job id, attempt)."""
    digest = hashlib.sha1(f"{job_id}:{attempt}".encode(), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) / 4294967296


def backoff_ms(
    rules: AttemptPolicy, job_id: str, attempt: int, previous_delay_ms: int | None = None
) -> int:
    """Delay before the attempt after failed attempt ``attempt`` (see the module docstring)."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    base, cap = rules.backoff_base_ms, rules.backoff_max_ms
    factor = round(rules.backoff_factor * 1000) / 1000  # what the policy hash stores
    try:
        e = base * factor ** (attempt - 1)
    except OverflowError:
        e = math.inf if base > 0 else 0.0  # 0 x a huge growth is still 0
    e = min(e, cap)
    u = jitter_unit(job_id, attempt)
    if rules.jitter == "none":
        d = e
    elif rules.jitter == "full":
        d = u * e
    elif rules.jitter == "equal":
        d = e / 2 + u * e / 2
    else:
        prev = base if previous_delay_ms is None else previous_delay_ms
        d = min(cap, base + u * (max(prev * 3, base) - base))
    return math.floor(d)


def schedule_ms(rules: AttemptPolicy, job_id: str) -> list[int]:
    """Every delay a job that keeps failing would get, attempt by attempt."""
    delays: list[int] = []
    previous: int | None = None
    for attempt in range(1, rules.max_attempts):
        previous = backoff_ms(rules, job_id, attempt, previous)
        delays.append(previous)
    return delays


def retryable(retry_on: tuple[str, ...], kind: str) -> bool:
    """Is error ``kind`` retried under ``retry_on``? An expired lease always is."""
    if kind == "lease_expired":
        return True
    for pattern in retry_on:
        if pattern in ("*", kind):
            return True
        if (
            len(pattern) > 2
            and pattern.endswith("xx")
            and len(kind) == len(pattern)
            and kind.startswith(pattern[:-2])
            and _TWO_DIGITS.fullmatch(kind[-2:])
        ):
            return True
    return False
