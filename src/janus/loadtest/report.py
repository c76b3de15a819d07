"""A load run's figures, its thresholds, and the report files (``report.json``,
``report.md``, PNG plots). :func:`build` is pure (a :class:`~janus.loadtest.run.RawRun` in,
a JSON-able dict out); :func:`write` renders it.

How each figure is made:

* **overshoot**: the attempts' release times (stream ids, Redis ms, recorded by the workers
  before each handler runs) checked with :func:`janus.measure.check_rate`: for windows of
  1 s, 10 s and the whole run, the worst started cost against ``rate * (W + 1 ms) + burst``;
  the overshoot is how far the worst window went beyond it (0 when the limit held).
* **lost / double runs**: from the job records read back after the drain: an accepted job
  with no record is lost; one whose history holds two "completed" outcomes ran twice.
  Unfinished (still waiting at the end of the drain) is reported beside them, not as lost.
* **latencies** (HDR histograms, 3 significant digits): *decision* from each submit's
  intended send time to its reply (open loop: no coordinated omission); *release lag* from a
  job's ``not_before`` (what its decision promised) to its first release; *end to end* from
  the intended send to the handler's success.
* **amplification**: attempts started per distinct job attempted, within each fault window
  (and over the run); the **load factor** of a window is its attempts per job accepted in
  it (below 1 when a circuit holds calls back); **Jain's index** of started cost per weight,
  while the load ran (after the ramp), over the scopes that were backlogged (accepted more
  than their weighted share of the rate).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from janus.loadtest.run import RawRun
from janus.measure import Release, check_rate

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
SCHEMA_VERSION = 1


def _hist_ms(values: list[int]) -> Any:
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, 3_600_000, 3)
    for v in values:
        h.record_value(min(max(int(v), 1), 3_600_000))
    return h


def _percentiles(h: Any, scale: float) -> dict[str, float | int | None]:
    """p50 .. p99.9, max and count of an HDR histogram, in ms (``scale`` converts)."""
    n = h.get_total_count()
    out: dict[str, float | int | None] = {"count": n}
    for p in PERCENTILES:
        key = f"p{p:g}".replace(".", "_")
        out[key] = round(h.get_value_at_percentile(p) * scale, 3) if n else None
    out["max"] = round(h.get_max_value() * scale, 3) if n else None
    return out


def _jain(xs: list[float]) -> float | None:
    if len(xs) < 2 or not any(xs):
        return None
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


PEER = "limits + naive retries"


def build(raw: RawRun, peer: RawRun | None = None) -> dict[str, Any]:
    """Every figure of the run, and each threshold's verdict; with ``peer`` (``--compare``)
    the same figures of the peer's run under ``compare`` (the thresholds judge Janus)."""
    report = _figures(raw)
    verdicts = thresholds(report, raw)
    report["thresholds"] = verdicts
    report["passed"] = all(t["ok"] for t in verdicts)
    if peer is not None:
        other = _figures(peer)
        report["compare"] = {
            "peer": PEER,
            "totals": other["totals"],
            "latency": other["latency"],
            "faults": other["faults"],
            "dependencies": {
                dep: {
                    k: d[k]
                    for k in (
                        "accepted",
                        "completed",
                        "lost",
                        "dead",
                        "attempts",
                        "overshoot",
                        "windows",
                        "rejected",
                        "started_per_second",
                        "started_cost_per_second",
                    )
                }
                for dep, d in other["dependencies"].items()
            },
        }
    return report


def _figures(raw: RawRun) -> dict[str, Any]:
    """Every figure of one run (Janus's or the peer's)."""
    from hdrh.histogram import HdrHistogram

    sc = raw.scenario
    duration_ms = int(sc.duration * 1000)
    decision = HdrHistogram(1, 3_600_000_000, 3)
    accepted: dict[str, tuple[str, str, int, int, int]] = {}
    outcomes: Counter[tuple[str, str]] = Counter()
    per_second_decisions: defaultdict[int, Counter[str]] = defaultdict(Counter)
    intended = 0
    for doc in raw.producers:
        decision.add(HdrHistogram.decode(doc["latency_hdr"].encode()))
        intended += doc["intended"]
        for sec, dep, _scope, outcome, n in doc["counts"]:
            outcomes[(dep, outcome)] += n
            per_second_decisions[sec][outcome.split(":")[0]] += n
        for job_id, dep, scope, cost, nb, sent in doc["accepted"]:
            accepted[job_id] = (dep, scope, cost, nb, sent)
    first_start: dict[str, int] = {}
    attempts_by_job: Counter[str] = Counter()
    deps: dict[str, Any] = {}
    for dep, lim in raw.limits.items():
        starts = [s for s in raw.starts if s[5] == dep]
        releases = [Release(ms, scope, cost) for _, _, ms, cost, scope, _ in starts]
        windows = sorted({1000, 10_000, max(duration_ms, 1000)})
        checks = check_rate(releases, lim.rate, lim.burst, windows) if releases else []
        overshoot = max((max(c.worst_cost - c.allowed, 0.0) for c in checks), default=0.0)
        for job_id, attempt, ms, *_ in starts:
            attempts_by_job[job_id] += 1
            if attempt == 1 or job_id not in first_start:
                first_start[job_id] = min(ms, first_start.get(job_id, ms))
        fates = raw.fates.get(dep, {})
        status = Counter(f[0] or "missing" for f in fates.values())
        lost = sorted(j for j, f in fates.items() if f[0] is None)
        doubles = sorted(j for j, f in fates.items() if f[2] > 1)
        acc_n = len(fates)
        # Shares: started cost per scope while the load ran (after the ramp, before the
        # drain: when the backlogged scopes all had work waiting), against the weights.
        lo = raw.t0_ms + int(sc.producers.ramp * 1000)
        hi = raw.t0_ms + duration_ms
        by_scope: Counter[str] = Counter()
        for _, _, ms, cost, scope, _ in starts:
            if lo <= ms < hi:
                by_scope[scope] += cost
        demand: Counter[str] = Counter()
        for d, scope, cost, _, _ in accepted.values():
            if d == dep:
                demand[scope] += cost
        total_w = sum(lim.weights.values()) or 1.0
        fair = {s: lim.rate * sc.duration * w / total_w for s, w in lim.weights.items()}
        backlogged = [s for s in lim.weights if demand[s] > fair[s]]
        jain = _jain([by_scope[s] / lim.weights[s] for s in backlogged])
        per_second = Counter((ms - raw.t0_ms) // 1000 for _, _, ms, _, _, _ in starts)
        cost_per_second: Counter[int] = Counter()
        for _, _, ms, cost, _, _ in starts:
            cost_per_second[(ms - raw.t0_ms) // 1000] += cost
        deps[dep] = {
            "rate": lim.rate,
            "burst": lim.burst,
            "accepted": acc_n,
            "rejected": {
                o.split(":", 1)[1]: n
                for (d, o), n in outcomes.items()
                if d == dep and o.startswith("rejected:")
            },
            "errors": {
                o.split(":", 1)[1]: n
                for (d, o), n in outcomes.items()
                if d == dep and o.startswith("error:")
            },
            "completed": status.get("completed", 0),
            "dead": dict(Counter(raw.dead.get(dep, {}).values())),
            "unfinished": sum(status.get(s, 0) for s in ("scheduled", "failed", "running")),
            "lost": len(lost),
            "lost_ids": lost[:20],
            "double_runs": len(doubles),
            "double_ids": doubles[:20],
            "attempts": len(starts),
            "overshoot": round(overshoot, 3),
            "windows": [
                {
                    "window_ms": c.window_ms,
                    "worst_cost": c.worst_cost,
                    "allowed": round(c.allowed, 3),
                    "start_ms": c.start_ms,
                }
                for c in checks
            ],
            "scopes": {
                s: {
                    "weight": lim.weights[s],
                    "started_cost": by_scope[s],
                    "share": round(by_scope[s] / max(sum(by_scope.values()), 1), 4),
                    "weight_share": round(lim.weights[s] / total_w, 4),
                    "accepted_cost": demand[s],
                    "backlogged": s in backlogged,
                }
                for s in sorted(lim.weights)
            },
            "jain": None if jain is None else round(jain, 4),
            "started_per_second": [per_second.get(i, 0) for i in range(_seconds(raw))],
            "started_cost_per_second": [cost_per_second.get(i, 0) for i in range(_seconds(raw))],
            "counters": raw.counters.get(dep, {}),
        }
    lags = [
        max(first_start[j] - nb, 0) for j, (_, _, _, nb, _) in accepted.items() if j in first_start
    ]
    e2e = [ms for _, _, ms in raw.completions]
    faults = []
    for f in sc.faults:
        lo, hi = raw.t0_ms + int(f.at * 1000), raw.t0_ms + int((f.until or f.at) * 1000)
        inside = [s[0] for s in raw.starts if lo <= s[2] < hi]
        amp = len(inside) / len(set(inside)) if inside else None
        arrived = sum(1 for *_, sent in accepted.values() if lo <= sent < hi)
        faults.append(
            {
                "kind": f.kind,
                "at_s": f.at,
                "until_s": f.until,
                "attempts": len(inside),
                "jobs_attempted": len(set(inside)),
                "jobs_accepted": arrived,
                "amplification": None if amp is None else round(amp, 3),
                "load_factor": round(len(inside) / arrived, 3) if arrived else None,
            }
        )
    attempted = len(attempts_by_job)
    overall_amp = sum(attempts_by_job.values()) / attempted if attempted else None
    fault_amps = [
        f["amplification"]
        for f in faults
        if f["amplification"] is not None and f["kind"] in ("outage", "throttle")
    ]
    totals = {
        "intended": intended,
        "accepted": sum(d["accepted"] for d in deps.values()),
        "completed": sum(d["completed"] for d in deps.values()),
        "lost": sum(d["lost"] for d in deps.values()),
        "double_runs": sum(d["double_runs"] for d in deps.values()),
        "unfinished": sum(d["unfinished"] for d in deps.values()),
        "overshoot": max((d["overshoot"] for d in deps.values()), default=0.0),
        "amplification": None if overall_amp is None else round(overall_amp, 3),
        "fault_amplification": max(fault_amps) if fault_amps else None,
        "jain_min": min((d["jain"] for d in deps.values() if d["jain"] is not None), default=None),
    }
    latency = {
        "decision_ms": _percentiles(decision, 0.001),
        "release_lag_ms": _percentiles(_hist_ms(lags), 1.0),
        "e2e_ms": _percentiles(_hist_ms(e2e), 1.0),
    }
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "scenario": {
            "name": sc.name,
            "description": sc.description,
            "duration_s": sc.duration,
            "drain_s": sc.drain,
            "ended_s": round(raw.ended_s, 3),
        },
        "redis": raw.redis,
        "totals": totals,
        "dependencies": deps,
        "latency": latency,
        "faults": faults,
        "timeline": _timeline(raw, per_second_decisions),
        "events": raw.events[:1000],
    }
    return report


def _seconds(raw: RawRun) -> int:
    return max(math.ceil(raw.ended_s), 1)


def _timeline(raw: RawRun, decisions: dict[int, Counter[str]]) -> dict[str, Any]:
    """Per sample: queue depth, in flight, Redis CPU % and memory; per second: decisions."""
    points = []
    prev = None
    for s in raw.samples:
        cpu_pct = None
        if prev is not None and s["t"] > prev["t"]:
            cpu_pct = 100 * (s["redis"]["cpu_s"] - prev["redis"]["cpu_s"]) / (s["t"] - prev["t"])
        points.append(
            {
                "t": s["t"],
                "scheduled": sum(d["scheduled"] for d in s["deps"].values()),
                "in_flight": sum(d["in_flight"] for d in s["deps"].values()),
                "redis_cpu_pct": None if cpu_pct is None else round(cpu_pct, 2),
                "redis_memory_mb": round(s["redis"]["used_memory"] / 1e6, 3),
            }
        )
        prev = s
    seconds = _seconds(raw)
    return {
        "samples": points,
        "decisions_per_second": [dict(decisions.get(i, {})) for i in range(seconds)],
    }


def thresholds(report: dict[str, Any], raw: RawRun) -> list[dict[str, Any]]:
    """Each bound the scenario set: its value in this run and whether it held."""
    t = raw.scenario.thresholds
    totals, lat = report["totals"], report["latency"]
    accepted = totals["accepted"] or 1
    checks: list[tuple[str, float | None, float | None, str]] = [
        ("overshoot", t.overshoot, totals["overshoot"], "max"),
        ("lost", t.lost, totals["lost"], "max"),
        ("double_runs", t.double_runs, totals["double_runs"], "max"),
        ("release_lag_p99_ms", _ms(t.release_lag_p99), lat["release_lag_ms"]["p99"], "max"),
        ("decision_p99_ms", _ms(t.decision_p99), lat["decision_ms"]["p99"], "max"),
        ("e2e_p99_ms", _ms(t.e2e_p99), lat["e2e_ms"]["p99"], "max"),
        (
            "amplification",
            t.amplification,
            totals["fault_amplification"] or totals["amplification"],
            "max",
        ),
        ("jain_min", t.jain_min, totals["jain_min"], "min"),
        (
            "min_completed_ratio",
            t.min_completed_ratio,
            round(totals["completed"] / accepted, 4),
            "min",
        ),
    ]
    out = []
    for name, bound, value, kind in checks:
        if bound is None:
            continue
        if value is None:
            ok = kind == "max" and name not in ("jain_min",)  # nothing measured: nothing broke
        else:
            ok = value <= bound + 1e-9 if kind == "max" else value >= bound - 1e-9
        out.append({"name": name, "bound": bound, "kind": kind, "value": value, "ok": ok})
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# -- rendering ---------------------------------------------------------------------------

PLOTS = ("started_cost.png", "shares.png", "latency.png", "attempts.png", "queue.png", "redis.png")


def write(report: dict[str, Any], raw: RawRun, out: Path) -> list[Path]:
    """report.json, report.md and the plots into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.json", out / "report.md"]
    files[0].write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    files += _plots(report, raw, out)
    files[1].write_text(markdown(report))
    return files


def markdown(report: dict[str, Any]) -> str:
    sc, tot, lat = report["scenario"], report["totals"], report["latency"]
    verdict = "PASSED" if report["passed"] else "FAILED"
    versions = ", ".join(sorted(set(report["redis"]["versions"].values())))
    lines = [
        f"# janus bench: {sc['name']} — {verdict}",
        "",
        sc["description"].strip() or "",
        "",
        f"Ran {sc['duration_s']:g} s of load, then drained; ended at {sc['ended_s']:g} s. "
        f"Redis: {report['redis']['url']} (redis-server {versions}).",
        "",
        "## Thresholds",
        "",
        "| threshold | bound | value | result |",
        "|---|---|---|---|",
    ]
    for t in report["thresholds"]:
        op = "<=" if t["kind"] == "max" else ">="
        lines.append(
            f"| {t['name']} | {op} {t['bound']:g} | {_fmt(t['value'])} | "
            f"{'PASS' if t['ok'] else '**FAIL**'} |"
        )
    lines += [
        "",
        "## Totals",
        "",
        "| figure | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in tot.items()],
        "",
        "## Latency (ms)",
        "",
        "| | count | p50 | p90 | p99 | p99.9 | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in lat.items():
        lines.append(
            f"| {name} | {p['count']} | {_fmt(p['p50'])} | {_fmt(p['p90'])} | "
            f"{_fmt(p['p99'])} | {_fmt(p['p99_9'])} | {_fmt(p['max'])} |"
        )
    for dep, d in report["dependencies"].items():
        lines += [
            "",
            f"## {dep} (rate {d['rate']:g}/s, burst {d['burst']})",
            "",
            f"accepted {d['accepted']}, completed {d['completed']}, dead {d['dead'] or 0}, "
            f"unfinished {d['unfinished']}, lost {d['lost']}, ran twice {d['double_runs']}, "
            f"attempts {d['attempts']}, rejected {d['rejected'] or 0}",
            "",
            "| window | worst started cost | allowed (rate x W + burst) |",
            "|---|---|---|",
            *[
                f"| {w['window_ms'] / 1000:g} s | {w['worst_cost']} | {w['allowed']:g} |"
                for w in d["windows"]
            ],
            "",
            "| scope | weight share | started share | backlogged |",
            "|---|---|---|---|",
            *[
                f"| {s} | {v['weight_share']:.3f} | {v['share']:.3f} | {v['backlogged']} |"
                for s, v in d["scopes"].items()
            ],
            "",
            f"Jain's index (backlogged scopes, cost per weight): {_fmt(d['jain'])}",
        ]
    if report["faults"]:
        lines += [
            "",
            "## Faults",
            "",
            "| fault | from | until | attempts | jobs attempted | amplification | load factor |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in report["faults"]:
            lines.append(
                f"| {f['kind']} | {f['at_s']:g} s | {f['until_s']:g} s | {f['attempts']} | "
                f"{f['jobs_attempted']} | {_fmt(f['amplification'])} | {_fmt(f['load_factor'])} |"
            )
    if "compare" in report:
        lines += _compare_lines(report)
    lines += ["", "## Plots", ""]
    lines += [f"![{p}]({p})" for p in PLOTS]
    lines += ["", 'How to read them: see the README, section "The SRE load benchmark".', ""]
    return "\n".join(lines)


def _compare_lines(report: dict[str, Any]) -> list[str]:
    """Janus and the peer side by side (``--compare``): the same arrivals, the same Redis."""
    c = report["compare"]
    j_tot, p_tot = report["totals"], c["totals"]
    j_lat, p_lat = report["latency"], c["latency"]
    rows = [
        ("accepted", j_tot["accepted"], p_tot["accepted"]),
        ("completed", j_tot["completed"], p_tot["completed"]),
        ("lost", j_tot["lost"], p_tot["lost"]),
        ("ran twice", j_tot["double_runs"], p_tot["double_runs"]),
        ("overshoot (cost beyond rate x W + burst)", j_tot["overshoot"], p_tot["overshoot"]),
        ("attempts per job (run)", j_tot["amplification"], p_tot["amplification"]),
        (
            "attempts per job (fault windows)",
            j_tot["fault_amplification"],
            p_tot["fault_amplification"],
        ),
        ("decision p99 (ms)", j_lat["decision_ms"]["p99"], p_lat["decision_ms"]["p99"]),
        ("end to end p99 (ms)", j_lat["e2e_ms"]["p99"], p_lat["e2e_ms"]["p99"]),
    ]
    lines = [
        "",
        f"## Compared with {c['peer']}",
        "",
        "The same arrivals (same seeds), the same handler and faults, the same Redis: "
        "a `limits` moving window (rate per 1 s) in front of a plain list, workers that "
        "retry on their own (exponential backoff, the policy's max_attempts; no circuit, "
        "no budget, no lease).",
        "",
        f"| figure | Janus | {c['peer']} |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {_fmt(a)} | {_fmt(b)} |" for name, a, b in rows]
    return lines


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if v != int(v) else f"{int(v)}"
    return str(v)


def _plots(report: dict[str, Any], raw: RawRun, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    faults = [f for f in raw.scenario.faults]

    def shade(ax: Any) -> None:
        for f in faults:
            if f.until > f.at:
                ax.axvspan(f.at, f.until, color="tab:red", alpha=0.12, lw=0)
            else:
                ax.axvline(f.at, color="tab:red", alpha=0.5, lw=1, ls="--")

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=90)
        plt.close(fig)
        files.append(path)

    # 1. started cost per second against the rate line and the rate*W + burst envelope.
    fig, ax = plt.subplots(figsize=(9, 4))
    compare = report.get("compare", {}).get("dependencies", {})
    for dep, d in report["dependencies"].items():
        ys = d["started_cost_per_second"]
        ax.step(range(len(ys)), ys, where="post", label=f"{dep}: started cost / s")
        if dep in compare:
            ys = compare[dep]["started_cost_per_second"]
            ax.step(range(len(ys)), ys, where="post", ls="--", alpha=0.8, label=f"{dep}: {PEER}")
        ax.axhline(d["rate"], color="black", lw=1, ls="--", label=f"{dep}: rate {d['rate']:g}/s")
        ax.axhline(
            d["rate"] + d["burst"], color="gray", lw=1, ls=":", label=f"{dep}: rate x 1 s + burst"
        )
    shade(ax)
    ax.set_xlabel("seconds since start (red: fault windows)")
    ax.set_ylabel("cost started per second")
    ax.set_title("Started cost per second vs the limit")
    ax.legend(fontsize=8, loc="upper right")
    save(fig, "started_cost.png")

    # 2. per-scope shares vs weights.
    fig, ax = plt.subplots(figsize=(9, 4))
    labels, got, want = [], [], []
    for dep, d in report["dependencies"].items():
        for s, v in d["scopes"].items():
            labels.append(f"{dep}/{s}")
            got.append(v["share"])
            want.append(v["weight_share"])
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], want, width=0.4, label="weight share")
    ax.bar([i + 0.2 for i in x], got, width=0.4, label="started share")
    ax.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share of started cost")
    ax.set_title("Per-scope shares vs weights")
    ax.legend(fontsize=8)
    save(fig, "shares.png")

    # 3. latency percentiles.
    fig, ax = plt.subplots(figsize=(9, 4))
    keys = ("p50", "p90", "p99", "p99_9", "max")
    for i, (name, p) in enumerate(report["latency"].items()):
        vals = [p[k] or 0 for k in keys]
        ax.bar([j + (i - 1) * 0.27 for j in range(len(keys))], vals, width=0.27, label=name)
    ax.set_xticks(range(len(keys)), ["p50", "p90", "p99", "p99.9", "max"])
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylabel("milliseconds (log)")
    ax.set_title("Decision latency, release lag, end to end (HDR percentiles)")
    ax.legend(fontsize=8)
    save(fig, "latency.png")

    # 4. attempts per second (amplification shows during the faults).
    fig, ax = plt.subplots(figsize=(9, 4))
    for dep, d in report["dependencies"].items():
        ys = d["started_per_second"]
        ax.step(range(len(ys)), ys, where="post", label=f"{dep}: attempts started / s")
        if dep in compare:
            ys = compare[dep]["started_per_second"]
            ax.step(range(len(ys)), ys, where="post", ls="--", alpha=0.8, label=f"{dep}: {PEER}")
    shade(ax)
    ax.set_xlabel("seconds since start (red: fault windows)")
    ax.set_ylabel("attempts per second")
    ax.set_title("Attempts per second (retries included)")
    ax.legend(fontsize=8)
    save(fig, "attempts.png")

    # 5. queue depth and in flight.
    samples = report["timeline"]["samples"]
    ts = [s["t"] for s in samples]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(ts, [s["scheduled"] for s in samples], label="waiting in Janus")
    ax.plot(ts, [s["in_flight"] for s in samples], label="in flight")
    shade(ax)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("jobs")
    ax.set_title("Queue depth")
    ax.legend(fontsize=8)
    save(fig, "queue.png")

    # 6. Redis CPU and memory.
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(ts, [s["redis_cpu_pct"] or 0 for s in samples], color="tab:blue", label="CPU %")
    ax.set_ylabel("Redis CPU % (one core = 100)")
    ax2 = ax.twinx()
    ax2.plot(ts, [s["redis_memory_mb"] for s in samples], color="tab:orange", label="memory")
    ax2.set_ylabel("used_memory (MB)")
    shade(ax)
    ax.set_xlabel("seconds since start")
    ax.set_title("Redis CPU and memory (INFO every 0.5 s)")
    save(fig, "redis.png")
    return files
