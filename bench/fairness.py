"""Fairness benchmark: tenant isolation between scopes, and what the fair queue costs.

Run::

    .venv/bin/python bench/fairness.py [--quick]

It starts ONE throwaway ``redis-server`` through :mod:`janus.embedded` (never a Redis someone
else runs) and measures against it, mostly with EXPLICIT time: a clock object passed to
``Janus(..., clock=...)`` and to ``Coordinator.step(dependency, now_us)`` (the scripts then
never read Redis TIME), as ``tests/integration/test_fairness.py`` does. Simulated seconds
cost milliseconds and every number is exact, not a sample of the machine's scheduling.

1. **Heavy / light.** Dependency rate 100/s, burst 1, max_cost 1; the scopes' own limits do
   not bind (rate 1e6/s, burst 1e9). A heavy scope queues 50,000 jobs (``--quick`` 10,000),
   the coordinator serves it for 1 s (one step every 10 ms of simulated time), then a light
   scope submits 10 jobs, one every 100 ms, each right after a step (the worst phase for
   step granularity). Wait = ``released_ms - submitted_ms`` of the job record. Targets, from
   start-time fair queueing (``lua/include/limits.lua``): the light scope's first job is
   released within one round, scopes x max_cost / rate = 2 x 1 / 100 s = 20 ms, and its p99
   wait is < 2 / rate x scopes = 40 ms. The heavy scope must keep the rest of the capacity.
   Then the same in REAL time for comparison (informational): rate 500/s, heavy 5,000 jobs
   (``--quick`` 2,000), a coordinator thread (``Coordinator.run_in_thread``), Redis TIME on
   both sides of the wait; one round is then 4 ms.

2. **Weighted shares.** Dependency rate 1000/s, burst 10 (a 10 ms step releases 10 jobs),
   10 s of simulated time (10,000 releases). Three backlogged scopes with weights 1:2:4:
   released shares vs 1/7, 2/7, 4/7 (target: each within 5% of its share). Four equal-weight
   backlogged scopes: Jain's fairness index (target >= 0.99). Jobs released by ``submit``
   itself (the burst, before the other scopes had submitted) are not counted. Also the SFQ
   lag: the largest |S_i / w_i - S_j / w_j| over every prefix of the release order (S =
   released cost) against the bound max_cost / w_i + max_cost / w_j.

3. **Release step cost vs active scopes**: 10, 1,000 and 100,000 active scopes (``--quick``
   10,000), each with a few ready jobs (2 each at 100,000; enough for the whole measurement
   at 10 and 1,000), in three dependencies of the same Redis, built with ``submit_many`` at a
   fixed explicit time. Dependency rate 1e6/s, burst 200: so 200 jobs of each dependency are
   released at submit, the rest wait in their scope's ready line, every scope is in the fair
   queue, and each release step (``Store.release(dep, now_us, max_steps=200)``, the explicit
   time 1 ms further each call) releases exactly 200 jobs. Blocks of steps of the three
   dependencies alternate (rotating order), so load on the machine hits all alike. Reported
   per released job: wall time (one round trip per 200 jobs included) and time inside Redis
   (``INFO commandstats`` EVALSHA usec / jobs), plus each command the script runs (calls and
   usec per job, from the same deltas), which says what dominates. Target: cost grows no
   faster than log(scopes): cost(100k) / cost(10) <= log(100000) / log(10) = 5 (``--quick``:
   log(10000) / log(10) = 4), taken as the median over rounds of the ratio within a round
   (the blocks of one round run back to back, so a burst of load from other processes on the
   machine cancels out). ``used_memory`` delta of each build / its scopes is reported as
   information, with ``MEMORY USAGE`` of the per-scope keys (sampled, before any release) for
   the largest build.

Percentiles are nearest-rank. The result table marks each figure PASS or MISS against its
target; a MISS still exits 0 (this is a benchmark, not a test); any failure of the run itself
(a step that does not release what it must, a job never released) exits non-zero.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from _common import (
    Admin,
    Report,
    Stats,
    add_delta,
    bench_main,
    finish,
    log,
    machine_text,
    pct,
    print_environment,
    python_text,
    redis_line,
    redis_under_test,
)
from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import parse_release
from janus.keys import Keys
from janus.policy import parse_policy_text
from janus.store import Store

PREFIX = "janusfair"
HL, HLRT, WTD, EQ = "heavylight", "heavylight_rt", "weighted", "equal"
T0_US = 1_800_000_000_000_000  # a fixed, realistic Redis time (2027) in microseconds

HL_RATE, HLRT_RATE = 100, 500
WTD_RATE, WTD_BURST = 1000, 10
WEIGHTS = {"w1": 1, "w2": 2, "w4": 4}
EQUAL = ["e0", "e1", "e2", "e3"]
SCALE_BURST = 200  # jobs per release step in phase 3 (= max_steps)
TICK_MS = 10

SHARE_TOLERANCE = 0.05
JAIN_TARGET = 0.99

UNLIMITED_SCOPES = "    scopes:\n      default: {rate: 1000000, burst: 1000000000}\n"


def policy_text(scale: list[int]) -> str:
    def dep(name: str, rate: int, burst: int, extra: str = "") -> str:
        return (
            f"  {name}:\n    rate: {rate}\n    burst: {burst}\n    max_cost: 1\n"
            f"    max_wait: 1d\n    lease: 1h\n{UNLIMITED_SCOPES}{extra}"
        )

    weights = "".join(f"      {s}: {{weight: {w}}}\n" for s, w in WEIGHTS.items())
    out = "dependencies:\n"
    out += dep(HL, HL_RATE, 1) + dep(HLRT, HLRT_RATE, 1)
    out += dep(WTD, WTD_RATE, WTD_BURST, weights) + dep(EQ, WTD_RATE, WTD_BURST)
    for n in scale:
        out += dep(scale_dep(n), 1_000_000, SCALE_BURST)
    return out


def scale_dep(n: int) -> str:
    return f"scale{n}"


@dataclass(frozen=True)
class Sizes:
    heavy: int  # heavy backlog, explicit time
    heavy_rt: int  # heavy backlog, real time
    scopes: list[int]  # phase 3 active scope counts (first and last are compared)
    rounds: int  # phase 3 alternating rounds
    steps: int  # release steps per dependency per round


FULL = Sizes(heavy=50_000, heavy_rt=5_000, scopes=[10, 1_000, 100_000], rounds=30, steps=10)
QUICK = Sizes(heavy=10_000, heavy_rt=2_000, scopes=[10, 1_000, 10_000], rounds=8, steps=5)


# --------------------------------------------------------------------------- small helpers


class Clock:
    """Explicit time in microseconds, passed to the scripts; never slept on."""

    def __init__(self, now_us: int = T0_US) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us

    def advance_ms(self, ms: float) -> int:
        self.now_us += int(ms * 1000)
        return self.now_us

    @property
    def now_ms(self) -> int:
        return self.now_us // 1000


def jain(xs: list[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def ms(v: float) -> str:
    return f"{v:g} ms"


def released_at_submit(decisions: list[Any]) -> set[str]:
    return {d.job_id for d in decisions if d.status == "released"}


def run_steps(coord: Coordinator, dep: str, clock: Clock, total_ms: int) -> int:
    """One coordinator step every TICK_MS of explicit time; returns jobs released."""
    released = 0
    for _ in range(total_ms // TICK_MS):
        released += coord.step(dep, clock.advance_ms(TICK_MS)).released
    return released


# --------------------------------------------------------------------------- phase 1


@dataclass
class HeavyLight:
    waits_ms: list[int]
    heavy_released: int  # heavy releases while the light scope was submitting
    window_ms: int
    submit_s: float


def heavy_light_explicit(store: Store, heavy: int) -> HeavyLight:
    clock = Clock()
    jn = Janus(store, clock=clock)
    t0 = time.monotonic()
    jn.submit_many(HL, (Job(scope="heavy") for _ in range(heavy)))
    submit_s = time.monotonic() - t0
    coord = Coordinator(store)
    run_steps(coord, HL, clock, 1_000)  # the heavy backlog is being served
    submitted: dict[str, int] = {}
    start_ms = clock.now_ms
    for i in range(10):
        d = jn.submit(HL, scope="light", job_id=f"light-{i}")
        if d.status != "scheduled":
            raise RuntimeError(f"light job {i} was {d.status}, expected to wait behind heavy")
        submitted[d.job_id] = clock.now_ms
        run_steps(coord, HL, clock, 100)
    waits = []
    for job_id, at in submitted.items():
        info = jn.job(HL, job_id)
        if info is None or info.released_ms is None:
            raise RuntimeError(f"light job {job_id} was never released")
        waits.append(info.released_ms - at)
    heavy_in_window = sum(
        1 for at, scope, _c, _id in store.releases(HL) if scope == "heavy" and at > start_ms
    )
    return HeavyLight(waits, heavy_in_window, clock.now_ms - start_ms, submit_s)


@dataclass
class HeavyLightRT:
    waits_ms: list[int]
    dep_rate: float  # releases/s of the dependency while the light scope submitted
    steps: int
    steps_per_s: float


def heavy_light_realtime(url: str, store: Store, heavy: int) -> HeavyLightRT:
    jn = Janus(store)
    jn.submit_many(HLRT, (Job(scope="heavy") for _ in range(heavy)))
    coord_store = Store.from_url(url, prefix=PREFIX)
    coord = Coordinator(coord_store, dependencies=[HLRT])
    t_start = time.monotonic()
    thread = coord.run_in_thread(check=False)
    ids = [f"rt-light-{i}" for i in range(10)]
    try:
        time.sleep(0.5)  # the heavy backlog is being served
        begin = time.monotonic()
        for i, job_id in enumerate(ids):
            delay = begin + i * 0.1 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            d = jn.submit(HLRT, scope="light", job_id=job_id)
            if d.status == "rejected":
                raise RuntimeError(f"real-time light job {job_id} rejected: {d.reason}")
        deadline = time.monotonic() + 5
        while True:
            info = jn.job(HLRT, ids[-1])
            if info is not None and info.released_ms is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("real-time light job not released within 5 s")
            time.sleep(0.01)
    finally:
        coord.stop()
        thread.join(timeout=10)
        t_run = time.monotonic() - t_start
        coord_store.close()
    waits, first_sub, last_rel = [], None, 0
    for job_id in ids:
        info = jn.job(HLRT, job_id)
        assert info is not None and info.released_ms is not None
        assert info.submitted_ms is not None
        waits.append(info.released_ms - info.submitted_ms)
        first_sub = info.submitted_ms if first_sub is None else first_sub
        last_rel = max(last_rel, info.released_ms)
    assert first_sub is not None
    n = sum(1 for at, _s, _c, _id in store.releases(HLRT) if first_sub <= at <= last_rel)
    rate = n / max((last_rel - first_sub) / 1000, 1e-3)
    return HeavyLightRT(waits, rate, coord.steps, coord.steps / t_run)


# --------------------------------------------------------------------------- phase 2


@dataclass
class Shares:
    counts: dict[str, int]
    at_submit: int
    worst: tuple[str, str, float, float]  # pair, its largest lag, its SFQ bound


def backlogged(store: Store, dep: str, weights: dict[str, int], seconds: int) -> Shares:
    clock = Clock()
    jn = Janus(store, clock=clock)
    # Enough backlog for every scope to stay backlogged the whole run, plus a margin.
    total = WTD_RATE * seconds
    wsum = sum(weights.values())
    early: set[str] = set()
    for scope, w in weights.items():
        need = math.ceil(total * w / wsum * 1.2) + WTD_BURST + 10
        early |= released_at_submit(jn.submit_many(dep, [Job(scope=scope) for _ in range(need)]))
    run_steps(Coordinator(store), dep, clock, seconds * 1000)
    counts = dict.fromkeys(weights, 0)
    served = dict.fromkeys(weights, 0.0)  # released cost / weight
    pairs = list(itertools.combinations(weights, 2))
    lag = dict.fromkeys(pairs, 0.0)
    for _at, scope, cost, job_id in store.releases(dep):
        if job_id in early:
            continue
        counts[scope] += cost
        served[scope] += cost / weights[scope]
        for a, b in pairs:
            lag[(a, b)] = max(lag[(a, b)], abs(served[a] - served[b]))
    # SFQ: over any interval in which both stay backlogged, |S_a/w_a - S_b/w_b| <=
    # max_cost/w_a + max_cost/w_b (max_cost 1 here). Report the pair nearest its bound.
    a, b = max(pairs, key=lambda p: lag[p] / (1 / weights[p[0]] + 1 / weights[p[1]]))
    return Shares(counts, len(early), (a, b, lag[(a, b)], 1 / weights[a] + 1 / weights[b]))


# --------------------------------------------------------------------------- phase 3


@dataclass
class Scale:
    scopes: int
    per_scope: int
    build_s: float
    mem_delta: int
    wall_ns: list[int] = field(default_factory=list)  # per round: wall ns per released job
    redis_us: list[float] = field(default_factory=list)  # per round: usec in Redis per job
    stats: Stats = field(default_factory=dict)  # commandstats over all measured steps
    jobs: int = 0
    calls: int = 0
    active_before: int = 0
    active_after: int = 0


def build_scale(jn: Janus, admin: Admin, scopes: int, per_scope: int) -> Scale:
    dep = scale_dep(scopes)
    names = [f"s{i:06d}" for i in range(scopes)]
    gc.collect()
    mem0 = admin.used_memory()
    t0 = time.monotonic()
    chunk: list[Job] = []
    for _ in range(per_scope):  # scope-interleaved, so submit's burst takes one job of many
        for name in names:
            chunk.append(Job(scope=name))
            if len(chunk) >= 20_000:
                jn.submit_many(dep, chunk)
                chunk = []
    if chunk:
        jn.submit_many(dep, chunk)
    build_s = time.monotonic() - t0
    return Scale(scopes, per_scope, build_s, admin.used_memory() - mem0)


def measure_scale(
    store: Store, admin: Admin, builds: list[Scale], sizes: Sizes
) -> tuple[list[Scale], list[str]]:
    problems: list[str] = []
    now = T0_US
    client = store.client

    def block(s: Scale, steps: int, record: bool) -> None:
        nonlocal now
        dep = scale_dep(s.scopes)
        walls: list[int] = []
        gc.collect()
        gc.disable()
        before = admin.commandstats()
        try:
            for _ in range(steps):
                now += 1000  # 1 ms: the dependency bucket is full (burst 200) again
                t0 = time.perf_counter_ns()
                reply = store.release(dep, now, SCALE_BURST)
                walls.append(time.perf_counter_ns() - t0)
                step = parse_release(reply)
                if step.released != SCALE_BURST:
                    problems.append(f"{dep}: a step released {step.released}, not {SCALE_BURST}")
        finally:
            gc.enable()
        after = admin.commandstats()
        if not record:
            return
        delta: Stats = {}
        add_delta(delta, after, before)
        jobs = steps * SCALE_BURST
        calls, usec = delta.get("evalsha", (0, 0))
        if calls != steps:
            problems.append(f"{dep}: {calls} EVALSHA seen for {steps} steps")
        s.wall_ns.append(sum(walls) // jobs)
        s.redis_us.append(usec / jobs)
        add_delta(s.stats, delta, {})
        s.jobs += jobs
        s.calls += steps

    time.sleep(1)  # a pause between building and timing (Redis's cron runs meanwhile)
    for s in builds:
        s.active_before = int(client.zcard(Keys(PREFIX, scale_dep(s.scopes)).active))
        block(s, 2, record=False)  # warm-up
    for r in range(sizes.rounds):
        order = builds[r % len(builds) :] + builds[: r % len(builds)]
        for s in order:
            block(s, sizes.steps, record=True)
    for s in builds:
        s.active_after = int(client.zcard(Keys(PREFIX, scale_dep(s.scopes)).active))
    return builds, problems


def memory_breakdown(jn: Janus, admin: Admin, s: Scale) -> dict[str, float]:
    """Bytes per scope of each per-scope structure (MEMORY USAGE, samples of 200 scopes)."""
    keys = Keys(PREFIX, scale_dep(s.scopes))
    client = jn.store.client
    active = int(client.zcard(keys.active))
    step = max(1, s.scopes // 200)
    names = [f"s{i:06d}" for i in range(0, s.scopes, step)][:200]
    scope_hash = [admin.memory_usage(keys.scope(n)) for n in names]
    ready = [admin.memory_usage(keys.ready(n)) for n in names]
    job_keys = []
    for n in names:
        head = client.lindex(keys.ready(n), 0)
        if head is not None:
            job_keys.append(keys.job_prefix + head.decode())
    jobs = [admin.memory_usage(k) for k in job_keys]
    return {
        "active zset entry": admin.memory_usage(keys.active) / max(active, 1),
        "scope state hash": statistics.mean(scope_hash),
        "ready line (list)": statistics.mean(ready),
        "one waiting job record": statistics.mean(jobs) if jobs else float("nan"),
    }


# --------------------------------------------------------------------------- main


def run(sizes: Sizes, quick: bool) -> int:
    logging.basicConfig(level=logging.ERROR)  # the doctor warns about no persistence
    started = time.monotonic()
    report = Report()
    problems: list[str] = []
    with redis_under_test() as (url, pids):
        admin = Admin(list(pids))
        store = Store.from_url(url, prefix=PREFIX)
        jn = Janus(store)
        jn.apply_policies(parse_policy_text(policy_text(sizes.scopes), "<bench policy>"))
        environment = [
            redis_line(admin, url),
            f"{python_text()}; machine: {machine_text()}"
            + (" [--quick: smaller N]" if quick else ""),
            "load average at start (1/5/15 min): "
            + " ".join(f"{v:.2f}" for v in os.getloadavg())
            + " (other processes share these CPUs; phase 3 alternates to even that out)",
        ]
        for line in environment:
            log(line)

        log(f"phase 1: heavy ({sizes.heavy:,} jobs) / light (10 jobs), explicit time")
        hl = heavy_light_explicit(store, sizes.heavy)
        log(f"phase 1b: heavy ({sizes.heavy_rt:,} jobs) / light, real time, coordinator thread")
        rt = heavy_light_realtime(url, store, sizes.heavy_rt)

        log("phase 2: weighted 1:2:4 and 4 equal scopes, 10 s explicit time each")
        wtd = backlogged(store, WTD, WEIGHTS, 10)
        eq = backlogged(store, EQ, dict.fromkeys(EQUAL, 1), 10)

        measured = sizes.rounds * sizes.steps * SCALE_BURST + 4 * SCALE_BURST
        builds: list[Scale] = []
        for n in sizes.scopes:
            per_scope = max(2, math.ceil((measured + SCALE_BURST) / n) + 1)
            log(f"phase 3: building {n:,} active scopes x {per_scope} jobs")
            builds.append(build_scale(jn, admin, n, per_scope))
        log(
            f"phase 3: {sizes.rounds} alternating rounds of {sizes.steps} release steps "
            f"x {SCALE_BURST} jobs per dependency"
        )
        mem = memory_breakdown(jn, admin, builds[-1])  # before any of it is released
        builds, p = measure_scale(store, admin, builds, sizes)
        problems += p
        load_end = os.getloadavg()
        admin.close()
        jn.close()

    # ---- 1. heavy / light
    scopes, rate = 2, HL_RATE
    round_ms = scopes * 1 / rate * 1000
    p99_bound = 2 / rate * scopes * 1000
    waits = hl.waits_ms
    report.section(
        f"1. heavy/light: heavy {sizes.heavy:,} queued, light 10 jobs / 100 ms; "
        f"rate {rate}/s burst 1, step every {TICK_MS} ms (explicit time)"
    )
    report.add(
        "light: first job's release delay",
        ms(waits[0]),
        f"<= {ms(round_ms)} (one round: 2 x 1 / {rate}/s)",
        waits[0] <= round_ms,
    )
    report.add("light: wait p50", ms(pct(waits, 50)))
    report.add(
        "light: wait p99",
        ms(pct(waits, 99)),
        f"< {ms(p99_bound)} (2 / rate x scopes)",
        pct(waits, 99) < p99_bound,
    )
    report.add("light: wait max", ms(max(waits)))
    report.add(
        f"heavy: released in the light window ({hl.window_ms} ms)",
        f"{hl.heavy_released}",
        f"= {hl.window_ms * rate // 1000} - 10 light",
        hl.heavy_released == hl.window_ms * rate // 1000 - 10,
    )
    report.notes.append(
        f"heavy/light explicit: light waits {waits} ms; heavy backlog submitted in "
        f"{hl.submit_s:.1f} s"
    )
    rt_round = scopes / HLRT_RATE * 1000
    report.section(
        f"1b. same in real time (comparison): heavy {sizes.heavy_rt:,}, rate {HLRT_RATE}/s, "
        "coordinator thread"
    )
    report.add(
        "light: first job's release delay", ms(rt.waits_ms[0]), f"(one round {rt_round:g} ms)"
    )
    report.add("light: wait p50", ms(pct(rt.waits_ms, 50)))
    report.add(
        "light: wait p99", ms(pct(rt.waits_ms, 99)), f"(2/rate x scopes {2 * rt_round:g} ms)"
    )
    report.add(
        "dependency throughput while light submitted", f"{rt.dep_rate:.0f}/s", f"({HLRT_RATE}/s)"
    )
    report.add(
        "coordinator steps per second (reclaim + release each)",
        f"{rt.steps_per_s:.0f}/s",
        f"(1 job per step at burst 1: {1000 / rt.steps_per_s:.2f} ms per step)",
    )
    report.notes.append(
        f"heavy/light real time: light waits {rt.waits_ms} ms (Redis ms: +/-1 ms is "
        f"quantisation), {rt.steps} coordinator steps. With burst 1 a step that runs late "
        "cannot catch up (the bucket holds one job), so throughput = 1 / step period"
    )

    # ---- 2. weighted
    report.section(f"2. backlogged scopes, 10 s at {WTD_RATE}/s burst {WTD_BURST} (explicit time)")
    total = sum(wtd.counts.values())
    for scope, w in WEIGHTS.items():
        share, want = wtd.counts[scope] / total, w / sum(WEIGHTS.values())
        dev = share / want - 1
        report.add(
            f"weight {w}: share of {total:,} released",
            f"{share:.4f} ({dev:+.2%})",
            f"{w}/7 = {want:.4f} +/- 5%",
            abs(dev) <= SHARE_TOLERANCE,
        )
    for label, sh in (("weights 1:2:4", wtd), ("4 equal", eq)):
        a, b, lag, bound = sh.worst
        report.add(
            f"{label}: SFQ lag, max |S_i/w_i - S_j/w_j| ({a} vs {b})",
            f"{lag:.2f}",
            f"<= 1/w_i + 1/w_j = {bound:.2f}",
            lag <= bound + 1e-9,
        )
    index = jain([float(v) for v in eq.counts.values()])
    report.add(
        f"4 equal scopes: Jain's index ({sum(eq.counts.values()):,} released)",
        f"{index:.5f}",
        f">= {JAIN_TARGET}",
        index >= JAIN_TARGET,
    )
    report.add(
        "4 equal scopes: max - min released", str(max(eq.counts.values()) - min(eq.counts.values()))
    )
    report.notes.append(
        f"weighted counts {wtd.counts} ({wtd.at_submit} released at submit, not counted); "
        f"equal counts {eq.counts} ({eq.at_submit} at submit)"
    )

    # ---- 3. scale
    first, last = builds[0], builds[-1]
    report.section(
        f"3. release step cost vs active scopes ({SCALE_BURST} jobs per step, "
        f"{sizes.rounds} alternating rounds x {sizes.steps} steps; median of rounds)"
    )
    for s in builds:
        wall = statistics.median(s.wall_ns) / 1000
        inside = statistics.median(s.redis_us)
        report.add(
            f"{s.scopes:>7,} scopes: wall time per released job",
            f"{wall:.2f} µs (min {min(s.wall_ns) / 1000:.2f})",
        )
        report.add(
            f"{s.scopes:>7,} scopes: time inside Redis per released job",
            f"{inside:.2f} µs (min {min(s.redis_us):.2f})",
        )
    log_ratio = math.log(last.scopes) / math.log(first.scopes)

    def round_ratio(a: list[float], b: list[float]) -> float:
        """Median over rounds of a/b: each round measures both back to back."""
        return statistics.median(x / y for x, y in zip(a, b, strict=True))

    walls = {id(s): [float(v) for v in s.wall_ns] for s in builds}
    for label, get in (
        ("wall", lambda s: walls[id(s)]),
        ("inside Redis", lambda s: s.redis_us),
    ):
        ratio = round_ratio(get(last), get(first))
        report.add(
            f"cost({last.scopes:,}) / cost({first.scopes}), {label} (median of per-round ratios)",
            f"{ratio:.2f}",
            f"<= log({last.scopes})/log({first.scopes}) = {log_ratio:g}",
            ratio <= log_ratio,
        )
    report.add(
        f"cost({last.scopes:,}) / cost({first.scopes}), inside Redis, ratio of best rounds",
        f"{min(last.redis_us) / min(first.redis_us):.2f}",
    )
    for s in builds[1:]:
        prev = builds[builds.index(s) - 1]
        report.add(
            f"cost({s.scopes:,}) / cost({prev.scopes:,}), inside Redis (per-round ratios)",
            f"{round_ratio(s.redis_us, prev.redis_us):.2f}",
        )
    for s in builds:
        report.add(
            f"{s.scopes:>7,} scopes: Redis held per step of {SCALE_BURST} jobs (median)",
            f"{statistics.median(s.redis_us) * SCALE_BURST / 1000:.2f} ms",
        )
    for s in builds:
        zr = s.stats.get("zrange", (0, 0))
        za = s.stats.get("zadd", (0, 0))
        report.add(
            f"{s.scopes:>7,} scopes: ZRANGE / ZADD µs per call",
            f"{zr[1] / max(zr[0], 1):.2f} / {za[1] / max(za[0], 1):.2f}",
        )
    report.add(
        f"memory per active scope ({last.scopes:,} x {last.per_scope} jobs, used_memory)",
        f"{last.mem_delta / last.scopes:,.0f} B",
    )
    for name, b in mem.items():
        report.add(f"  of which {name} (MEMORY USAGE)", f"{b:,.0f} B")
    report.notes.append(
        "distinct scopes served per 200-job step = min(scopes, 200): "
        + ", ".join(f"{s.scopes:,} -> {min(s.scopes, SCALE_BURST)}" for s in builds)
        + "; each costs one scope-state read and write per step (scope_get HMGET, "
        "scope_flush HSET + PERSIST), so below 200 scopes that cost is shared by several jobs"
    )
    for s in builds:
        jobs = s.jobs or 1
        evalsha = s.stats.get("evalsha", (0, 0))[1] / jobs
        inner = sorted(
            (
                (usec / jobs, calls / jobs, name)
                for name, (calls, usec) in s.stats.items()
                if name not in ("evalsha", "info") and calls > 0
            ),
            reverse=True,
        )
        lua = evalsha - sum(u for u, _c, _n in inner)
        report.notes.append(
            f"{s.scopes:,} scopes, per released job (calls x, µs inside Redis): "
            + ", ".join(f"{n} {c:.2f}x {u:.2f}" for u, c, n in inner)
            + f"; Lua + redis.call overhead (EVALSHA minus the above) {lua:.2f} µs of {evalsha:.2f}"
        )
    for s in builds:
        report.notes.append(
            f"{s.scopes:,} scopes: built {s.scopes * s.per_scope:,} jobs in {s.build_s:.1f} s "
            f"(used_memory +{s.mem_delta / 2**20:.1f} MiB); active {s.active_before:,} before, "
            f"{s.active_after:,} after the measurement; per-round in-Redis µs/job "
            + ", ".join(f"{v:.2f}" for v in s.redis_us)
        )
    report.notes.append("load average after phase 3: " + " ".join(f"{v:.2f}" for v in load_end))
    report.notes.append(f"total run time {time.monotonic() - started:.1f} s")

    print_environment(environment)
    return finish(report, sorted(set(problems)))


def main(argv: list[str] | None = None) -> int:
    return bench_main(
        __doc__,
        argv,
        lambda args: run(QUICK if args.quick else FULL, args.quick),
        quick_help="smaller N: a smoke run",
    )


if __name__ == "__main__":
    sys.exit(main())
