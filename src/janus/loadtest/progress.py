"""The live view of a load run: elapsed time, submits, releases, completions and
rejections per second, from the sampler's counters. A rich live table on a terminal; a
plain line every 5 s when piped (a CI log stays readable)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


def rates(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Per second over the last two samples: submitted, rejected, started, completed,
    failed, and rejections by reason (``rejected:<reason>``)."""
    if len(samples) < 2:
        return {}
    a, b = samples[-2], samples[-1]
    dt = max(b["t"] - a["t"], 1e-6)
    out: dict[str, float] = {}
    for dep, now in b["deps"].items():
        before = a["deps"].get(dep, {}).get("counters", {})
        for name, value in now["counters"].items():
            delta = (value - before.get(name, 0)) / dt
            kind = name.split(":", 1)[0]
            if kind == "submit":
                out["submitted"] = out.get("submitted", 0.0) + delta
            elif kind == "rejected":
                out["submitted"] = out.get("submitted", 0.0) + delta
                out["rejected"] = out.get("rejected", 0.0) + delta
                out[name] = out.get(name, 0.0) + delta
            elif kind in ("started", "completed", "failed", "retried"):
                out[kind] = out.get(kind, 0.0) + delta
    return out


class Progress:
    def __init__(self, live: bool) -> None:
        self.live_mode = live
        self.console = Console(file=sys.stdout)
        self.live: Live | None = None
        self.last_plain = 0.0
        self.notes: list[str] = []

    def __enter__(self) -> Progress:
        if self.live_mode:
            self.live = Live(
                self._table({}, 0.0, 0.0, {}),
                console=self.console,
                refresh_per_second=2,
                transient=True,
            )
            self.live.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.__exit__(et, e, tb)

    def log(self, line: str) -> None:
        self.notes.append(line)
        if self.live is not None:
            self.live.console.print(line)
        else:
            print(line, flush=True)

    def update(self, state: dict[str, Any]) -> None:
        r = rates(state["samples"])
        last = state["samples"][-1]["deps"]
        depth = {d: (v["scheduled"], v["in_flight"]) for d, v in last.items()}
        if self.live is not None:
            self.live.update(self._table(r, state["elapsed"], state["duration"], depth))
        elif time.monotonic() - self.last_plain >= 5:
            self.last_plain = time.monotonic()
            waiting = sum(w for w, _ in depth.values())
            print(
                f"[{state['elapsed']:5.1f}s] submitted {r.get('submitted', 0):7.1f}/s  "
                f"started {r.get('started', 0):7.1f}/s  completed {r.get('completed', 0):7.1f}/s  "
                f"rejected {r.get('rejected', 0):6.1f}/s  waiting {waiting}",
                flush=True,
            )

    @staticmethod
    def _table(
        r: dict[str, float], elapsed: float, duration: float, depth: dict[str, tuple[int, int]]
    ) -> Table:
        phase = "load" if elapsed <= duration else "drain"
        t = Table(title=f"janus bench  {elapsed:5.1f} s ({phase}, load {duration:g} s)")
        t.add_column("per second")
        t.add_column("value", justify="right")
        for name in ("submitted", "started", "completed", "failed", "retried", "rejected"):
            t.add_row(name, f"{r.get(name, 0.0):.1f}")
        for name in sorted(k for k in r if k.startswith("rejected:")):
            t.add_row(f"  {name.split(':', 1)[1]}", f"{r[name]:.1f}")
        for dep, (waiting, running) in sorted(depth.items()):
            t.add_row(f"{dep}: waiting / in flight", f"{waiting} / {running}")
        return t
