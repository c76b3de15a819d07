"""How ``janus status``, ``janus job`` and ``janus scope`` show what they read: a plain table
that stays readable when piped (aligned columns, nothing truncated), human times beside the
raw milliseconds, and JSON documents (``docs/status.schema.json`` describes
``janus status --json``). Pure: the caller passes the current Redis time."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

from janus.decisions import DependencyStatus, Event

#: Fields ending in ``_ms`` holding a Unix time (not a duration) are at least this (2001).
EPOCH_MS_MIN = 10**12

COLUMNS = (
    "dependency",
    "policy",
    "scheduled",
    "queued cost",
    "in flight",
    "stream",
    "parked",
    "scopes",
    "circuit",
    "paused",
    "retry budget",
    "dead letters",
)


def iso(ms: int) -> str:
    """``ms`` (Unix ms) as ISO 8601 UTC with milliseconds, e.g. 2026-12-01T12:04:31.250Z."""
    stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def relative(ms: int, now_ms: int) -> str:
    """``12:04:31 UTC (in 12 s)`` / ``(3 min ago)``: a time and how far it is from now."""
    clock = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%H:%M:%S UTC")
    delta = (ms - now_ms) / 1000
    size = abs(delta)
    if size < 90:
        span = f"{size:.0f} s"
    elif size < 5400:
        span = f"{size / 60:.0f} min"
    elif size < 172_800:
        span = f"{size / 3600:.1f} h"
    else:
        span = f"{size / 86400:.1f} d"
    return f"{clock} ({'in ' + span if delta >= 0 else span + ' ago'})"


def with_iso(data: Any) -> Any:
    """``data`` (dicts and lists, as from JSON) with ``<name>_iso`` beside every
    ``<name>_ms`` that holds a Unix time."""
    if isinstance(data, list):
        return [with_iso(x) for x in data]
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        out[key] = with_iso(value)
        if (
            isinstance(key, str)
            and key.endswith("_ms")
            and isinstance(value, int)
            and not isinstance(value, bool)
            and value >= EPOCH_MS_MIN
        ):
            out[key[:-3] + "_iso"] = iso(value)
    return out


def circuit_text(st: DependencyStatus, now_ms: int) -> str:
    if st.circuit == "open" and st.circuit_open_until_ms:
        text = f"open until {relative(st.circuit_open_until_ms, now_ms)}"
    else:
        text = st.circuit.replace("_", "-")
    if st.circuit_opens > 1 and st.circuit != "closed":
        text += f", opened {st.circuit_opens}x in a row"
    return text


def paused_text(st: DependencyStatus, now_ms: int) -> str:
    """A pause by hand and a Retry-After pause, with their ends; "no" when neither."""
    parts = []
    if st.held_until_ms == -1:
        parts.append("by hand, until resumed")
    elif st.held_until_ms:
        parts.append(f"by hand until {relative(st.held_until_ms, now_ms)}")
    if st.paused_until_ms:
        parts.append(f"retry-after until {relative(st.paused_until_ms, now_ms)}")
    if st.held_scopes:
        parts.append(f"{st.held_scopes} scope(s) by hand")
    return "; ".join(parts) or "no"


def row(st: DependencyStatus, now_ms: int) -> list[str]:
    paused = paused_text(st, now_ms)
    policy = f"v{st.policy_version}" if st.policy_version else "none"
    if st.deleting:
        policy += " (deleting)"
    return [
        st.dependency,
        policy,
        str(st.scheduled),
        str(st.queued_cost),
        str(st.in_flight),
        str(st.stream_length),
        str(st.parked),
        str(st.active_scopes),
        circuit_text(st, now_ms),
        paused,
        "-" if st.retry_budget is None else f"{st.retry_budget:.1f}",
        str(st.dead_letters),
    ]


def grid(header: list[str], rows: list[list[str]]) -> str:
    """Aligned plain text, every cell whole (a terminal's width never truncates it)."""
    everything = [header, *rows]
    widths = [max(len(r[i]) for r in everything) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in everything
    )


def top_text(st: DependencyStatus, now_ms: int) -> str:
    """``payments: top scopes by waiting work: acme 120 jobs (cost 140), ...``."""
    items = []
    for t in st.top_scopes:
        item = f"{t.scope} {t.waiting_jobs} jobs (cost {t.waiting_cost})"
        if t.held_until_ms == -1:
            item += ", paused until resumed"
        elif t.held_until_ms:
            item += f", paused until {relative(t.held_until_ms, now_ms)}"
        items.append(item)
    return f"{st.dependency}: top scopes by waiting work: " + "; ".join(items)


def table(statuses: list[DependencyStatus], now_ms: int) -> str:
    """``janus status``: one line per dependency, then each one's top scopes (when asked
    for and there is waiting work)."""
    text = grid(list(COLUMNS), [row(st, now_ms) for st in statuses])
    if not statuses:
        text += "\n(no dependency has an applied policy under this prefix)"
    tops = [top_text(st, now_ms) for st in statuses if any(t.waiting_jobs for t in st.top_scopes)]
    if tops:
        text += "\n\n" + "\n".join(tops)
    return text


def event_line(ev: Event) -> str:
    """``2026-12-01T12:04:31.250Z  circuit_open  until_ms=... opens=1`` (``janus events``)."""
    fields = " ".join(
        f"{k}={v}" if k != "until_ms" or v in ("-1", "0") else f"until={iso(int(v))}"
        for k, v in ev.fields.items()
        if v != ""
    )
    return f"{iso(ev.at_ms)}  {ev.kind:<18} {fields}".rstrip()


def event_document(ev: Event) -> dict[str, Any]:
    """One event as JSON (``janus events --json``: one object per line)."""
    doc: dict[str, Any] = {"dependency": ev.dependency, "id": ev.event_id, "kind": ev.kind}
    doc["at_ms"] = ev.at_ms
    for key, value in ev.fields.items():  # times as numbers, so they get an _iso twin
        numeric = key.endswith("_ms") and value.lstrip("-").isdigit()
        doc[key] = int(value) if numeric else value
    out: dict[str, Any] = with_iso(doc)
    return out


def document(statuses: list[DependencyStatus], now_ms: int) -> dict[str, Any]:
    """``janus status --json``: the Redis time and every dependency's status."""
    deps = []
    for st in statuses:
        d = dataclasses.asdict(st)
        d["next_due_ms"] = None if st.next_due_us is None else st.next_due_us // 1000
        deps.append(with_iso(d))
    return {"now_ms": now_ms, "now_iso": iso(now_ms), "dependencies": deps}
