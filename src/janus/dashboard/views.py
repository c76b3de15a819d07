"""What the dashboard shows, computed from the values the Janus API returns.

Pure: no Redis, no clock (the caller passes the Redis time), no web framework. Every page is
a template over the view values built here, so what an SRE reads (rates from counters, a
share against a weight, a quota's reset, a payload shown safely) is unit-tested without a
browser (``tests/unit/test_dashboard_views.py``). Values are plain text: the templates
escape them, and the live refresh sets them with ``textContent``, never as HTML.
"""

from __future__ import annotations

import codecs
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from janus.decisions import (
    DeadLetter,
    DependencyStatus,
    Event,
    JobInfo,
    ScopeLoad,
    ScopeStatus,
)
from janus.errors import InvalidInput
from janus.keys import check_user_name
from janus.policy import parse_duration_ms
from janus.statusview import circuit_text, iso, paused_text, relative

#: Counters the dashboard turns into rates (names of ``jn.counters``).
RATE_COUNTERS = ("started", "started_cost", "completed", "failed")
#: Dead-letter reasons the scripts write (others found in the counters are added).
KNOWN_REASONS = ("attempts_exhausted", "not_retryable", "dependency_deleted")
#: Longest name or text shown whole in a cell (the rest is in the cell's title).
SHORT = 80
DASH = "-"


# -- numbers and times ----------------------------------------------------------------------


def count(n: int | None) -> str:
    """``12,345``; a dash for None."""
    return DASH if n is None else f"{n:,}"


def number(x: float | None, digits: int = 1) -> str:
    """``3.5``, ``1,200``; whole numbers without decimals; a dash for None."""
    if x is None or not math.isfinite(x):
        return DASH
    if abs(x - round(x)) < 1e-9:
        return f"{round(x):,}"
    return f"{x:,.{digits}f}".rstrip("0").rstrip(".")


def rate_per_s(interval_us: int) -> float | None:
    """The policy's rate (cost per second) from its ``interval_us`` (0: none applied)."""
    return 1_000_000 / interval_us if interval_us > 0 else None


def rate_text(rate: float | None) -> str:
    """``20/s``; slow rates per minute or hour (``1/h``), as policies write them."""
    if rate is None:
        return DASH
    if rate >= 1:
        return f"{number(rate, 2)}/s"
    if rate * 60 >= 1:
        return f"{number(rate * 60, 2)}/m"
    return f"{number(rate * 3600, 2)}/h"


def duration(ms: int | None) -> str:
    """``850 ms``, ``12 s``, ``4 min``, ``2.5 h``, ``3.0 d``; a dash for None."""
    if ms is None:
        return DASH
    if ms < 1000:
        return f"{ms} ms"
    s = ms / 1000
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 172_800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def when(ms: int | None, now_ms: int) -> str:
    """``12:04:31 UTC (in 12 s)``; a dash for None."""
    return DASH if ms is None else relative(ms, now_ms)


def clock(ms: int) -> str:
    """``2026-12-01 12:04:31 UTC``: the Redis time a page was read at."""
    return iso(ms)[:19].replace("T", " ") + " UTC"


def short(text: str, limit: int = SHORT) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis): cells stay one line."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_age(text: str) -> int | None:
    """A filter's age (``30m``, ``24h``, ``7d``) in ms; empty: None. Raises ValueError."""
    text = text.strip()
    if not text:
        return None
    ms = parse_duration_ms(text)
    if ms <= 0:
        raise ValueError(f"an age must be longer than 0, got {text!r}")
    return ms


# -- rates from counters ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at_ms: int
    """Redis time of the read."""
    values: Mapping[str, int]


class CounterHistory:
    """The counters of one dependency read over time (one sample per read, at least
    ``min_step_ms`` apart, for ``keep_ms``): rates are differences between two reads, as
    Prometheus' ``rate()`` takes them. Not thread-safe (the app holds a lock)."""

    def __init__(self, keep_ms: int = 300_000, min_step_ms: int = 1000) -> None:
        self.keep_ms = keep_ms
        self.min_step_ms = min_step_ms
        self.samples: list[Sample] = []

    def add(self, at_ms: int, counters: Mapping[str, int]) -> None:
        values = {name: int(counters.get(name, 0)) for name in RATE_COUNTERS}
        if self.samples and at_ms < self.samples[-1].at_ms:
            self.samples = []  # another server's clock (a failover): start again
        if self.samples and at_ms - self.samples[-1].at_ms < self.min_step_ms:
            return
        self.samples.append(Sample(at_ms, values))
        while self.samples and self.samples[0].at_ms < at_ms - self.keep_ms:
            self.samples.pop(0)

    def rates(self) -> dict[str, float | None]:
        """Per second between the last two reads; None before the second read, or when a
        counter went down (the dependency's state was deleted and started again)."""
        if len(self.samples) < 2:
            return dict.fromkeys(RATE_COUNTERS, None)
        return _per_second(self.samples[-2], self.samples[-1])

    def series(self, name: str) -> list[tuple[int, float]]:
        """(end of the interval in Redis ms, per second) for every pair of reads."""
        out = []
        for a, b in zip(self.samples, self.samples[1:], strict=False):
            rate = _per_second(a, b)[name]
            if rate is not None:
                out.append((b.at_ms, rate))
        return out


def _per_second(a: Sample, b: Sample) -> dict[str, float | None]:
    dt = (b.at_ms - a.at_ms) / 1000
    out: dict[str, float | None] = {}
    for name in RATE_COUNTERS:
        diff = b.values.get(name, 0) - a.values.get(name, 0)
        out[name] = diff / dt if dt > 0 and diff >= 0 else None
    return out


# -- the overview ---------------------------------------------------------------------------


Level = Literal["ok", "warn", "bad"]


@dataclass(frozen=True)
class OverviewRow:
    """One dependency on the overview (every value already text)."""

    dependency: str
    policy: str
    rate: str
    burst: str
    tokens: str
    started_s: str
    completed_s: str
    failed_s: str
    in_flight: str
    queued_jobs: str
    queued_cost: str
    oldest_wait: str
    circuit: str
    paused: str
    retry_budget: str
    dead_letters: str
    level: Level
    """bad: circuit open or paused; warn: half-open, dead letters, deleting; else ok."""


def overview_row(
    st: DependencyStatus,
    policy_fields: Mapping[str, str],
    rates: Mapping[str, float | None],
    now_ms: int,
) -> OverviewRow:
    interval = _int_field(policy_fields, "interval_us")
    burst = _int_field(policy_fields, "burst")
    policy = f"v{st.policy_version}" if st.policy_version else "none"
    if st.deleting:
        policy += " (deleting)"
    limit = DASH if st.max_in_flight is None else count(st.max_in_flight)
    oldest = None if st.oldest_waiting_ms is None else max(now_ms - st.oldest_waiting_ms, 0)
    return OverviewRow(
        dependency=st.dependency,
        policy=policy,
        rate=rate_text(rate_per_s(interval)),
        burst=count(burst) if burst else DASH,
        tokens=number(st.tokens),
        started_s=number(rates.get("started")),
        completed_s=number(rates.get("completed")),
        failed_s=number(rates.get("failed")),
        in_flight=f"{count(st.in_flight)} / {limit}",
        queued_jobs=count(st.scheduled),
        queued_cost=count(st.queued_cost),
        oldest_wait=duration(oldest),
        circuit=circuit_text(st, now_ms),
        paused=paused_text(st, now_ms),
        retry_budget=number(st.retry_budget),
        dead_letters=count(st.dead_letters),
        level=level(st),
    )


def level(st: DependencyStatus) -> Level:
    """How loudly a dependency's row is drawn."""
    if st.circuit == "open" or st.held_until_ms is not None or st.paused_until_ms is not None:
        return "bad"
    if st.circuit == "half_open" or st.dead_letters or st.deleting or st.held_scopes:
        return "warn"
    return "ok"


def _int_field(fields: Mapping[str, str], name: str) -> int:
    try:
        return int(fields.get(name, "0") or 0)
    except ValueError:
        return 0


@dataclass(frozen=True)
class Page:
    """One page of a list: its number (from 1), the number of pages, the item range."""

    number: int
    pages: int
    first: int
    last: int
    total: int

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.pages else None


def page_of(total: int, number: int, per_page: int) -> Page:
    """Page ``number`` (clamped to 1..pages) of ``total`` items."""
    pages = max(1, -(-total // per_page))
    number = min(max(number, 1), pages)
    first = (number - 1) * per_page
    return Page(number, pages, first, min(first + per_page, total), total)


# -- a dependency ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """A labelled value of a summary (``label: value``)."""

    key: str
    label: str
    value: str


def dependency_facts(
    st: DependencyStatus,
    policy_fields: Mapping[str, str],
    rates: Mapping[str, float | None],
    now_ms: int,
) -> list[Fact]:
    """The dependency page's summary: the overview's numbers and what else status knows."""
    row = overview_row(st, policy_fields, rates, now_ms)
    lease = _int_field(policy_fields, "lease_ms")
    wait = _int_field(policy_fields, "max_wait_ms")
    attempts = _int_field(policy_fields, "retry_max_attempts")
    next_due = None if st.next_due_us is None else st.next_due_us // 1000
    pairs = [
        ("policy", "policy version", row.policy),
        ("rate", "rate", row.rate),
        ("burst", "burst", row.burst),
        ("tokens", "tokens now", row.tokens),
        ("started_s", "started/s", row.started_s),
        ("completed_s", "completed/s", row.completed_s),
        ("failed_s", "failed/s", row.failed_s),
        ("in_flight", "in flight / max", row.in_flight),
        ("queued_jobs", "queued jobs", row.queued_jobs),
        ("queued_cost", "queued cost", row.queued_cost),
        ("oldest_wait", "oldest wait", row.oldest_wait),
        ("next_due", "next due", when(next_due, now_ms)),
        ("active_scopes", "active scopes", count(st.active_scopes)),
        ("parked", "parked retries", count(st.parked)),
        ("stream", "stream entries", count(st.stream_length)),
        ("circuit", "circuit", row.circuit),
        ("paused", "paused", row.paused),
        ("retry_budget", "retry budget", row.retry_budget),
        ("dead_letters", "dead letters", row.dead_letters),
        ("lease", "lease", duration(lease) if lease else DASH),
        ("max_wait", "max wait", duration(wait) if wait else DASH),
        ("max_attempts", "max attempts", count(attempts) if attempts else DASH),
    ]
    return [Fact(k, label, value) for k, label, value in pairs]


@dataclass(frozen=True)
class ScopeRow:
    """A scope of the dependency page: its queue, its weight and the share it gets."""

    scope: str
    name: str
    """The name as shown (cut to :data:`SHORT`)."""
    waiting_jobs: str
    waiting_cost: str
    place: str
    weight: str
    share: str
    """Its share of the dependency while the active scopes stay backlogged (its weight
    over theirs); a dash when it has nothing ready."""
    quota: str
    quota_resets: str
    paused: str


def scope_row(load: ScopeLoad, status: ScopeStatus | None, now_ms: int) -> ScopeRow:
    held = hold_text(load.held_until_ms, now_ms)
    if status is None:
        return ScopeRow(
            load.scope,
            short(load.scope),
            count(load.waiting_jobs),
            count(load.waiting_cost),
            DASH,
            DASH,
            DASH,
            DASH,
            DASH,
            held,
        )
    return ScopeRow(
        scope=load.scope,
        name=short(load.scope),
        waiting_jobs=count(status.waiting_jobs),
        waiting_cost=count(status.waiting_cost),
        place=status.place,
        weight=number(status.weight, 3),
        share=f"{status.share * 100:.1f}%" if status.place == "active" else DASH,
        quota=quota_text(status),
        quota_resets=when(status.quota_resets_at_ms, now_ms) if status.quota_limit else DASH,
        paused=held,
    )


def scope_rows(
    loads: Iterable[ScopeLoad], statuses: Mapping[str, ScopeStatus], now_ms: int
) -> list[ScopeRow]:
    """Scopes by waiting work, most first (ties: by name), each with its status."""
    ordered = sorted(loads, key=lambda t: (-t.waiting_jobs, -t.waiting_cost, t.scope))
    return [scope_row(t, statuses.get(t.scope), now_ms) for t in ordered]


def quota_text(status: ScopeStatus) -> str:
    """``120 / 1,000 (12.0%) per 1.0 h``; a dash without a quota."""
    if not status.quota_limit:
        return DASH
    used = status.quota_used or 0
    pct = 100 * used / status.quota_limit
    return (
        f"{count(used)} / {count(status.quota_limit)} ({pct:.1f}%)"
        f" per {duration(status.quota_period_ms)}"
    )


def hold_text(held_until_ms: int | None, now_ms: int) -> str:
    if held_until_ms == -1:
        return "until resumed"
    if held_until_ms:
        return f"until {relative(held_until_ms, now_ms)}"
    return "no"


def scope_facts(status: ScopeStatus, held_until_ms: int | None, now_ms: int) -> list[Fact]:
    """One scope's page."""
    pairs = [
        ("place", "place", status.place),
        ("weight", "weight", number(status.weight, 3)),
        ("share", "share", f"{status.share * 100:.1f}%" if status.place == "active" else DASH),
        ("waiting_jobs", "waiting jobs", count(status.waiting_jobs)),
        ("waiting_cost", "waiting cost", count(status.waiting_cost)),
        ("ready_jobs", "ready jobs", count(status.ready_jobs)),
        ("max_queued", "max queued", count(status.max_queued)),
        ("max_queued_cost", "max queued cost", count(status.max_queued_cost)),
        ("quota", "quota", quota_text(status)),
        ("quota_resets", "quota resets", when(status.quota_resets_at_ms, now_ms)),
        ("paused", "paused by hand", hold_text(held_until_ms, now_ms)),
    ]
    return [Fact(k, label, value) for k, label, value in pairs]


@dataclass(frozen=True)
class EventRow:
    event_id: str
    at: str
    kind: str
    fields: str
    level: Level


_LOUD_EVENTS = {"circuit_open", "dead_letter", "lease_reclaimed", "paused", "policy_deleting"}


def event_rows(events: Sequence[Event], now_ms: int) -> list[EventRow]:
    """Events newest first, with their fields as ``name=value`` (times as clock times)."""
    out = []
    for ev in reversed(events):
        parts = []
        for k, v in ev.fields.items():
            if v == "":
                continue
            if k.endswith("_ms") and v.isdigit() and int(v) >= 10**12:
                v = iso(int(v))
            parts.append(f"{k}={short(v)}")
        loud: Level = "warn" if ev.kind in _LOUD_EVENTS else "ok"
        out.append(EventRow(ev.event_id, when(ev.at_ms, now_ms), ev.kind, " ".join(parts), loud))
    return out


# -- the live chart ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    """An SVG line chart of the cost started per second (and failed attempts per second)
    over the last ``span_s`` seconds, against the policy's rate line (cost per second)."""

    width: int
    height: int
    started: str
    """SVG polyline points ("x,y x,y ...")."""
    failed: str
    rate_y: str
    """The rate line's y ("" without a rate)."""
    top: str
    """The value at the top of the chart."""
    rate: str
    latest: str
    span_s: int


def chart(
    started: Sequence[tuple[int, float]],
    failed: Sequence[tuple[int, float]],
    rate: float | None,
    now_ms: int,
    *,
    span_ms: int = 300_000,
    width: int = 640,
    height: int = 160,
) -> Chart:
    """Points for the chart: time runs left to right and ends at ``now_ms``; the y scale
    holds the highest value and the rate line with a little room."""
    shown = [(t, v) for t, v in started if t >= now_ms - span_ms]
    shown_failed = [(t, v) for t, v in failed if t >= now_ms - span_ms]
    peak = max([v for _, v in shown + shown_failed] + [rate or 0.0, 0.0])
    top = nice_ceiling(peak * 1.1) if peak > 0 else 1.0

    def points(series: Sequence[tuple[int, float]]) -> str:
        out = []
        for t, v in series:
            x = width * (1 - (now_ms - t) / span_ms)
            y = height * (1 - min(v, top) / top)
            out.append(f"{x:.1f},{y:.1f}")
        return " ".join(out)

    rate_y = "" if rate is None else f"{height * (1 - min(rate, top) / top):.1f}"
    return Chart(
        width=width,
        height=height,
        started=points(shown),
        failed=points(shown_failed),
        rate_y=rate_y,
        top=number(top, 2),
        rate=rate_text(rate),
        latest=number(shown[-1][1]) if shown else DASH,
        span_s=span_ms // 1000,
    )


def nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``x``."""
    if x <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= x - 1e-12:
            return float(step * power)
    return float(10 * power)


# -- dead letters and jobs ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterRow:
    entry_id: str
    dead_at: str
    job_id: str
    job: str
    """The job id as shown (cut)."""
    scope: str
    scope_name: str
    reason: str
    attempts: str
    error: str
    cost: str


def dead_letter_rows(letters: Iterable[DeadLetter], now_ms: int) -> list[DeadLetterRow]:
    return [
        DeadLetterRow(
            entry_id=d.entry_id,
            dead_at=when(d.dead_ms or entry_ms(d.entry_id), now_ms),
            job_id=d.job_id,
            job=short(d.job_id, 40),
            scope=d.scope,
            scope_name=short(d.scope, 40),
            reason=d.reason,
            attempts=count(d.attempts),
            error=short(d.error, 60),
            cost=count(d.cost),
        )
        for d in letters
    ]


def entry_ms(entry_id: str) -> int:
    """The Redis time (ms) in a stream entry id ``<ms>-<seq>``."""
    head = entry_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def reasons(counters: Mapping[str, int]) -> list[str]:
    """Dead-letter reasons to filter by: the known ones and any the counters name."""
    seen = {name[5:] for name in counters if name.startswith("dead:")}
    return sorted(set(KNOWN_REASONS) | seen)


@dataclass(frozen=True)
class Preview:
    """A payload shown safely: as text when it is UTF-8 without control characters, else
    as a hex dump; at most ``shown`` of its ``size`` bytes."""

    kind: Literal["empty", "text", "hex"]
    text: str
    size: int
    shown: int

    @property
    def truncated(self) -> bool:
        return self.shown < self.size


#: Bytes of a payload a page shows as text, and as a hex dump.
TEXT_PREVIEW = 4096
HEX_PREVIEW = 1024


def payload_preview(
    data: bytes, text_limit: int = TEXT_PREVIEW, hex_limit: int = HEX_PREVIEW
) -> Preview:
    if not data:
        return Preview("empty", "", 0, 0)
    head = data[:text_limit]
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        # A multi-byte character cut by the limit is left out, not an error.
        text = decoder.decode(head, final=len(head) == len(data))
    except UnicodeDecodeError:
        text = None
    if text is not None and not any(_control(ch) for ch in text):
        return Preview("text", text, len(data), len(text.encode("utf-8")))
    shown = data[:hex_limit]
    return Preview("hex", hexdump(shown), len(data), len(shown))


def _control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn")


def hexdump(data: bytes) -> str:
    """``hexdump -C``: offset, 16 bytes in hex, and the printable ASCII ones."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = (
            " ".join(f"{b:02x}" for b in chunk[:8]) + "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        )
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexes:<49} |{text}|")
    return "\n".join(lines)


@dataclass(frozen=True)
class Attempt:
    """One entry of a job's history (an attempt's outcome, or a replay)."""

    attempt: str
    outcome: str
    at: str
    error: str
    consumer: str
    detail: str
    other: str


def history_rows(history: Sequence[Mapping[str, object]], now_ms: int) -> list[Attempt]:
    out = []
    for h in history:
        at = h.get("at_ms")
        rest = {
            k: v
            for k, v in h.items()
            if k not in ("attempt", "outcome", "at_ms", "error", "consumer", "detail")
        }
        out.append(
            Attempt(
                attempt=_str(h.get("attempt")),
                outcome=_str(h.get("outcome")),
                at=when(at, now_ms) if isinstance(at, int) and not isinstance(at, bool) else DASH,
                error=_str(h.get("error")),
                consumer=_str(h.get("consumer")),
                detail=_str(h.get("detail")),
                other=" ".join(f"{k}={_str(v)}" for k, v in sorted(rest.items())),
            )
        )
    return out


def _str(value: object) -> str:
    if value is None or value == "":
        return DASH
    return value if isinstance(value, str) else str(value)


def dead_letter_facts(d: DeadLetter, now_ms: int) -> list[Fact]:
    pairs = [
        ("entry_id", "entry", d.entry_id),
        ("job_id", "job id", d.job_id),
        ("scope", "scope", d.scope),
        ("reason", "reason", d.reason),
        ("attempts", "attempts", count(d.attempts)),
        ("error", "last error", d.error or DASH),
        ("dead_at", "dead at", when(d.dead_ms or entry_ms(d.entry_id), now_ms)),
        ("cost", "cost", count(d.cost)),
        ("payload_size", "payload", f"{count(len(d.payload))} bytes"),
    ]
    return [Fact(k, label, value) for k, label, value in pairs]


def job_facts(job: JobInfo, now_ms: int) -> list[Fact]:
    pairs = [
        ("job_id", "job id", job.id),
        ("status", "status", job.status),
        ("scope", "scope", job.scope),
        ("attempt", "attempt", count(job.attempt)),
        ("cost", "cost", count(job.cost)),
        ("submitted", "submitted", when(job.submitted_ms, now_ms)),
        ("not_before", "not before", when(job.not_before_ms, now_ms)),
        ("started", "attempt started", when(job.started_ms, now_ms)),
        ("lease_deadline", "lease deadline", when(job.lease_deadline_ms, now_ms)),
        ("finished", "finished", when(job.finished_ms, now_ms)),
        ("last_error", "last error", job.last_error or DASH),
        ("payload_size", "payload", f"{count(len(job.payload))} bytes"),
    ]
    return [Fact(k, label, value) for k, label, value in pairs]


# -- actions --------------------------------------------------------------------------------


#: The pause lengths the dependency page offers ("" = until resumed).
PAUSE_CHOICES = (
    ("", "until resumed"),
    ("5m", "5 min"),
    ("15m", "15 min"),
    ("1h", "1 h"),
    ("4h", "4 h"),
)


def pause_for_s(text: str) -> float | None:
    """A pause form's length (``10m``) in seconds; empty: until resumed. Raises
    ValueError for anything else."""
    text = text.strip()
    if not text:
        return None
    ms = parse_duration_ms(text)
    if ms <= 0:
        raise ValueError(f"a pause must last longer than 0, got {text!r}")
    return ms / 1000


def target_text(dependency: str, scope: str | None) -> str:
    """``payments`` / ``payments scope 'acme'`` (the scope cut to :data:`SHORT`)."""
    return dependency if scope is None else f"{dependency} scope {short(scope)!r}"


def replay_summary(result: Mapping[str, str]) -> str:
    """``3 replayed, 1 already_replayed``; ``nothing selected``."""
    counts: dict[str, int] = {}
    for status in result.values():
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n:,} {s}" for s, n in sorted(counts.items())) or "nothing selected"


@dataclass(frozen=True)
class DeadLetterFilter:
    """The dead-letter page's filters, as typed into its form (checked by
    :func:`dead_letter_filter`)."""

    scope: str | None = None
    reason: str | None = None
    newer: str = ""
    """Dead within this long (``1h``); empty: any age."""
    older: str = ""
    """Dead longer ago than this; empty: any age."""
    oldest_first: bool = False
    errors: tuple[str, ...] = field(default=())

    def query(self) -> dict[str, str]:
        """The filter as query parameters (links to further pages keep it)."""
        out = {"scope": self.scope or "", "reason": self.reason or ""}
        out.update(newer=self.newer, older=self.older)
        if self.oldest_first:
            out["order"] = "oldest"
        return {k: v for k, v in out.items() if v}

    def form_fields(self) -> list[tuple[str, str]]:
        """The filter as hidden form fields (the order left out: actions read oldest first).
        The scope is hex-encoded (``scope_hex``): a browser rewrites the line breaks of a
        form field's value, so a name holding one would not come back as it was."""
        return [
            (k + "_hex", v.encode().hex()) if k == "scope" else (k, v)
            for k, v in self.query().items()
            if k != "order"
        ]

    def bounds(self, now_ms: int) -> tuple[int | None, int | None]:
        """(since_ms, until_ms) of the ages, in Redis ms."""
        since = until = None
        newer, older = _age_or_none(self.newer), _age_or_none(self.older)
        if newer is not None:
            since = max(now_ms - newer, 0)
        if older is not None:
            until = max(now_ms - older, 0)
        return since, until


#: What a dead-letter reason looks like (``attempts_exhausted``): the filter accepts no other.
_REASON = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _age_or_none(text: str) -> int | None:
    try:
        return parse_age(text)
    except ValueError:
        return None


def dead_letter_filter(params: Mapping[str, str]) -> DeadLetterFilter:
    """The filters from a query string; unreadable ages are left out and named in
    ``errors`` (the page says so instead of failing)."""
    errors = []
    ages = {}
    scope = params.get("scope") or None
    if scope is not None:
        try:
            check_user_name("scope", scope)
        except InvalidInput as exc:
            errors.append(f"scope: {exc}")
            scope = None
    reason = params.get("reason") or None
    if reason is not None and not _REASON.fullmatch(reason):
        errors.append(f"reason: {short(reason, 40)!r} is not a dead-letter reason")
        reason = None
    for name in ("newer", "older"):
        text = params.get(name, "").strip()
        try:
            parse_age(text)
            ages[name] = text
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
            ages[name] = ""
    return DeadLetterFilter(
        scope=scope,
        reason=reason,
        newer=ages["newer"],
        older=ages["older"],
        oldest_first=params.get("order") == "oldest",
        errors=tuple(errors),
    )
