"""Checks of the rate guarantee on what was actually released. Pure.

Stream entry ids carry the release time in milliseconds, so the released history of a
dependency is a list of ``(ms, scope, cost)``. An entry stamped ``t`` happened in
``[t, t + 1)``, so a window of stamps ``[a, b]`` spans at most ``b - a + 1`` ms of real time;
the bound checked is therefore ``rate * (W + 1 ms) + burst``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    ms: int
    scope: str
    cost: int


@dataclass(frozen=True)
class WindowReport:
    window_ms: int
    worst_cost: int
    allowed: float
    start_ms: int

    @property
    def ok(self) -> bool:
        return self.worst_cost <= self.allowed + 1e-9


def worst_window(events: Sequence[tuple[int, int]], window_ms: int) -> tuple[int, int]:
    """Largest total cost of events whose stamps lie within ``window_ms - 1`` of each other.

    Returns ``(cost, start_ms)``. Events must be sorted by time.
    """
    best, best_start, total, lo = 0, 0, 0, 0
    for hi in range(len(events)):
        total += events[hi][1]
        while events[hi][0] - events[lo][0] >= window_ms:
            total -= events[lo][1]
            lo += 1
        if total > best:
            best, best_start = total, events[lo][0]
    return best, best_start


def check_rate(
    releases: Iterable[Release], rate: float, burst: int, windows_ms: Iterable[int]
) -> list[WindowReport]:
    """For each window length W: the worst released cost against ``rate * (W + 1ms) + burst``."""
    events = sorted((r.ms, r.cost) for r in releases)
    out = []
    for w in windows_ms:
        cost, start = worst_window(events, w)
        out.append(WindowReport(w, cost, rate * (w + 1) / 1000 + burst, start))
    return out


def by_scope(releases: Iterable[Release]) -> dict[str, list[Release]]:
    out: dict[str, list[Release]] = {}
    for r in releases:
        out.setdefault(r.scope, []).append(r)
    return out
