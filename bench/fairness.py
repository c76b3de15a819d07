"""Fairness benchmark: tenant isolation between scopes, and what the fair queue costs.

Run::

    .venv/bin/python bench/fairness.py [--quick] [--json PATH] [--no-fail]

It starts ONE throwaway ``redis-server`` through :mod:`janus.testing` (never a Redis someone
else runs) and measures against it, mostly with EXPLICIT time: a clock object given with
``janus.testing.with_clock(jn, clock)`` (its policies are applied in test mode, so the
scripts take that time and never read Redis TIME), as ``tests/integration/test_fairness.py``
does. Simulated seconds cost milliseconds and every number is exact, not a sample of the machine's
scheduling. Fairness is measured where the dependency feels it, at start time: a job is
released only when a worker fetches it, so shares and waits come from the attempts the
workers were handed (``LeasedJob.started_ms`` and the order of the fetches).

1. **Heavy / light.** Dependency rate 100/s, burst 1, max_cost 1; the scopes' own limits do
   not bind (rate 1e6/s, burst 1e9). A heavy scope queues 50,000 jobs (``--quick`` 10,000),
   a worker fetches every 10 ms of simulated time for 1 s (and completes what it got), then
   a light scope submits 10 jobs, one every 100 ms, each right after a fetch (the worst
   phase for the fetch granularity). Wait = ``started_ms`` of its attempt - its submit time.
   Targets, from start-time fair queueing (``lua/include/fairq.lua``): the light scope's
   first job starts within one round, scopes x max_cost / rate = 2 x 1 / 100 s = 20 ms, and
   its p99 wait is < 2 / rate x scopes = 40 ms. The heavy scope must keep the rest of the
   capacity. Then the same in REAL time for comparison (informational): rate 500/s, heavy
   5,000 jobs (``--quick`` 2,000), a coordinator thread (``Coordinator.run_in_thread``) and
   one worker running ``Worker.run`` (no-op handler, 8 slots), Redis TIME on both sides of
   the wait; one round is then 4 ms.

2. **Weighted shares.** Dependency rate 1000/s, burst 10 (a 10 ms fetch tick starts 10
   jobs), 10 s of simulated time (10,000 starts). Three backlogged scopes with weights 1:2:4:
   started shares vs 1/7, 2/7, 4/7 (target: each within 5% of its share). Four equal-weight
   backlogged scopes: Jain's fairness index (target >= 0.99). Every job waits for a worker
   (nothing is released at submit), so every start counts. Also the SFQ lag: the largest
   |S_i / w_i - S_j / w_j| over every prefix of the start order (S = started cost) against
   the bound max_cost / w_i + max_cost / w_j.

3. **Release cost vs active scopes**: 10, 1,000 and 100,000 active scopes (``--quick``
   10,000), each with a few ready jobs (2 each at 100,000; enough for the whole measurement
   at 10 and 1,000), in three dependencies of the same Redis, built with ``submit_many`` at a
   fixed explicit time. Dependency rate 1e6/s, burst 200: every job waits in its scope's
   ready line, every scope is in the fair queue, and each fetch (``fetch.lua`` through
   :func:`janus.calls.fetch`, ``count`` 200, the explicit time 1 ms further each call)
   releases exactly 200 jobs: fair-queue picks, stream entries, delivery and leases. Blocks
   of fetches of the three dependencies alternate (rotating order), so load on the machine
   hits all alike. Reported per released job: wall time (one round trip per 200 jobs
   included) and time inside Redis (``INFO commandstats`` FCALL usec / jobs), plus each
   command the script runs (calls and usec per job, from the same deltas), which says what
   dominates. Target: cost grows no faster than log(scopes): cost(100k) / cost(10) <=
   log(100000) / log(10) = 5 (``--quick``: log(10000) / log(10) = 4), taken as the median
   over rounds of the ratio within a round (the blocks of one round run back to back, so a
   burst of load from other processes on the machine cancels out). ``used_memory`` delta of
   each build / its scopes is reported as information, with ``MEMORY USAGE`` of the
   per-scope keys (sampled, before any release) for the largest build.

Percentiles are nearest-rank. The result table marks each figure PASS or MISS against its
target. Exit status: 0 when every target is met, 1 when one is missed (``--no-fail``: 0), 2
when the run itself failed (a fetch that does not release what it must, a job never started);
every figure is printed first. The figures are also written as JSON (every table row with its
verdict, the notes, the exit status): to ``--json PATH``, else to
``bench-results/fairness-<UTC time>.json`` under the current directory (see
``bench/_common.py``); the path is printed.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from _common import (
    Admin,
    Report,
    Stats,
    add_delta,
    bench_main,
    conclude,
    log,
    machine_text,
    pct,
    print_environment,
    python_text,
    redis_line,
    redis_under_test,
)
from janus import calls
from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import FetchResult, LeasedJob
from janus.keys import Keys
from janus.policy import parse_policy_text
from janus.store import Store
from janus.testing import with_clock
from janus.worker import Worker

PREFIX = "janusfair"
HL, HLRT, WTD, EQ = "heavylight", "heavylight_rt", "weighted", "equal"
GROUP = "fair"
T0_US = 1_800_000_000_000_000  # a fixed, realistic Redis time (2027) in microseconds

HL_RATE, HLRT_RATE = 100, 500
WTD_RATE, WTD_BURST = 1000, 10
WEIGHTS = {"w1": 1, "w2": 2, "w4": 4}
EQUAL = ["e0", "e1", "e2", "e3"]
SCALE_BURST = 200  # jobs per fetch in phase 3
TICK_MS = 10

SHARE_TOLERANCE = 0.05
JAIN_TARGET = 0.99

UNLIMITED_SCOPES = "    scopes:\n      default: {rate: 1000000, burst: 1000000000}\n"


def dep_text(name: str, rate: int, burst: int, extra: str = "") -> str:
    return (
        f"  {name}:\n    rate: {rate}\n    burst: {burst}\n    max_cost: 1\n"
        f"    max_wait: 1d\n    lease: 1h\n{UNLIMITED_SCOPES}{extra}"
    )


def explicit_policy_text(scale: list[int]) -> str:
    """The dependencies driven with explicit time (applied in test mode)."""
    weights = "".join(f"      {s}: {{weight: {w}}}\n" for s, w in WEIGHTS.items())
    out = "dependencies:\n"
    out += dep_text(HL, HL_RATE, 1)
    out += dep_text(WTD, WTD_RATE, WTD_BURST, weights) + dep_text(EQ, WTD_RATE, WTD_BURST)
    for n in scale:
        out += dep_text(scale_dep(n), 1_000_000, SCALE_BURST)
    return out


def realtime_policy_text() -> str:
    return "dependencies:\n" + dep_text(HLRT, HLRT_RATE, 1)


def scale_dep(n: int) -> str:
    return f"scale{n}"


@dataclass(frozen=True)
class Sizes:
    heavy: int  # heavy backlog, explicit time
    heavy_rt: int  # heavy backlog, real time
    scopes: list[int]  # phase 3 active scope counts (first and last are compared)
    rounds: int  # phase 3 alternating rounds
    steps: int  # fetches per dependency per round


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


def start_order(job: LeasedJob) -> tuple[int, int]:
    """Sort key: the stream entry id (``<ms>-<seq>``) the attempt was handed over with."""
    t, _, seq = job.token.partition("-")
    return int(t), int(seq)


def serve(worker: Worker, clock: Clock, total_ms: int) -> list[LeasedJob]:
    """The worker asks for work every TICK_MS of explicit time for ``total_ms``, takes all
    that may start and completes it at once; returns the attempts it started, in order."""
    out: list[LeasedJob] = []
    for _ in range(total_ms // TICK_MS):
        clock.advance_ms(TICK_MS)
        while True:
            jobs = worker.fetch(count=500, block_ms=None)
            if not jobs:
                break
            worker.report([worker.completed(j) for j in jobs])
            out += jobs
    return out


# --------------------------------------------------------------------------- phase 1


@dataclass
class HeavyLight:
    waits_ms: list[int]
    heavy_started: int  # heavy starts while the light scope was submitting
    window_ms: int
    submit_s: float


def heavy_light_explicit(jn: Janus, clock: Clock, heavy: int) -> HeavyLight:
    t0 = time.monotonic()
    jn.submit_many(HL, (Job(scope="heavy") for _ in range(heavy)))
    submit_s = time.monotonic() - t0
    worker = jn.worker(HL, group=GROUP, consumer="w1")
    serve(worker, clock, 1_000)  # the heavy backlog is being served
    submitted: dict[str, int] = {}
    start_ms = clock.now_ms
    window: list[LeasedJob] = []
    for i in range(10):
        d = jn.submit(HL, scope="light", job_id=f"light-{i}")
        if d.status != "scheduled":
            raise RuntimeError(f"light job {i} was {d.status}, expected to wait behind heavy")
        submitted[d.job_id] = clock.now_ms
        window += serve(worker, clock, 100)
    started = {j.id: j.started_ms for j in window if j.scope == "light"}
    waits = []
    for job_id, at in submitted.items():
        if job_id not in started:
            raise RuntimeError(f"light job {job_id} was never started")
        waits.append(started[job_id] - at)
    heavy_in_window = sum(1 for j in window if j.scope == "heavy")
    return HeavyLight(waits, heavy_in_window, clock.now_ms - start_ms, submit_s)


@dataclass
class HeavyLightRT:
    waits_ms: list[int]
    dep_rate: float  # starts/s of the dependency while the light scope submitted
    steps: int
    steps_per_s: float
    fetches: int
    fetches_per_s: float
    jobs_per_fetch: float


class CountingWorker(Worker):
    """A Worker that counts its fetch calls and keeps every attempt it is handed."""

    def __init__(self, store: Store, dependency: str, *, group: str, consumer: str) -> None:
        super().__init__(store, dependency, group=group, consumer=consumer)
        self.fetches = 0
        self.seen: list[LeasedJob] = []
        self._seen_lock = threading.Lock()

    def fetch_result(self, count: int) -> FetchResult:
        result = super().fetch_result(count)
        with self._seen_lock:
            self.fetches += 1
            self.seen.extend(result.jobs)
        return result

    def started(self) -> list[LeasedJob]:
        with self._seen_lock:
            return list(self.seen)


def heavy_light_realtime(url: str, store: Store, heavy: int) -> HeavyLightRT:
    jn = Janus(store)
    jn.submit_many(HLRT, (Job(scope="heavy") for _ in range(heavy)))
    coord_store = Store.from_url(url, prefix=PREFIX)
    coord = Coordinator(coord_store, dependencies=[HLRT])
    worker_store = Store.from_url(url, prefix=PREFIX)
    worker = CountingWorker(worker_store, HLRT, group=GROUP, consumer="rt-w1")
    # Worker.run: fetches into free slots (waiting for the work signal when there is
    # none), runs the no-op handler in its pool, reports in batches.
    wthread = threading.Thread(
        target=worker.run,
        args=(lambda job: None,),
        kwargs={"concurrency": 8, "install_signals": False, "grace_s": 5.0},
        daemon=True,
    )
    t_start = time.monotonic()
    thread = coord.run_in_thread(check=False)
    wthread.start()
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
        while not {j.id for j in worker.started()} >= set(ids):
            if time.monotonic() > deadline or not wthread.is_alive():
                raise RuntimeError("real-time light jobs not started within 5 s")
            time.sleep(0.01)
    finally:
        worker.stop()
        wthread.join(timeout=10)
        coord.stop()
        thread.join(timeout=10)
        t_run = time.monotonic() - t_start
        coord_store.close()
        worker_store.close()
    seen = worker.started()
    started = {j.id: j.started_ms for j in seen}
    waits, first_sub, last_start = [], None, 0
    for job_id in ids:
        info = jn.job(HLRT, job_id)
        assert info is not None and info.submitted_ms is not None
        waits.append(started[job_id] - info.submitted_ms)
        first_sub = info.submitted_ms if first_sub is None else first_sub
        last_start = max(last_start, started[job_id])
    assert first_sub is not None
    n = sum(1 for j in seen if first_sub <= j.started_ms <= last_start)
    rate = n / max((last_start - first_sub) / 1000, 1e-3)
    return HeavyLightRT(
        waits,
        rate,
        coord.steps,
        coord.steps / t_run,
        worker.fetches,
        worker.fetches / t_run,
        len(seen) / max(worker.fetches, 1),
    )


# --------------------------------------------------------------------------- phase 2


@dataclass
class Shares:
    counts: dict[str, int]
    worst: tuple[str, str, float, float]  # pair, its largest lag, its SFQ bound


def backlogged(jn: Janus, clock: Clock, dep: str, weights: dict[str, int], seconds: int) -> Shares:
    # Enough backlog for every scope to stay backlogged the whole run, plus a margin.
    total = WTD_RATE * seconds
    wsum = sum(weights.values())
    for scope, w in weights.items():
        need = math.ceil(total * w / wsum * 1.2) + WTD_BURST + 10
        jn.submit_many(dep, [Job(scope=scope) for _ in range(need)])
    jobs = serve(jn.worker(dep, group=GROUP, consumer="w1"), clock, seconds * 1000)
    counts = dict.fromkeys(weights, 0)
    served = dict.fromkeys(weights, 0.0)  # started cost / weight
    pairs = list(itertools.combinations(weights, 2))
    lag = dict.fromkeys(pairs, 0.0)
    for job in sorted(jobs, key=start_order):
        counts[job.scope] += job.cost
        served[job.scope] += job.cost / weights[job.scope]
        for a, b in pairs:
            lag[(a, b)] = max(lag[(a, b)], abs(served[a] - served[b]))
    # SFQ: over any interval in which both stay backlogged, |S_a/w_a - S_b/w_b| <=
    # max_cost/w_a + max_cost/w_b (max_cost 1 here). Report the pair nearest its bound.
    a, b = max(pairs, key=lambda p: lag[p] / (1 / weights[p[0]] + 1 / weights[p[1]]))
    return Shares(counts, (a, b, lag[(a, b)], 1 / weights[a] + 1 / weights[b]))


# --------------------------------------------------------------------------- phase 3


@dataclass
class Scale:
    scopes: int
    per_scope: int
    build_s: float
    mem_delta: int
    wall_ns: list[int] = field(default_factory=list)  # per round: wall ns per released job
    redis_us: list[float] = field(default_factory=list)  # per round: usec in Redis per job
    stats: Stats = field(default_factory=dict)  # commandstats over all measured fetches
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
    for _ in range(per_scope):  # scope-interleaved, as many producers would submit
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

    def block(s: Scale, fetches: int, record: bool) -> None:
        nonlocal now
        keys = store.keys(scale_dep(s.scopes))
        walls: list[int] = []
        gc.collect()
        gc.disable()
        before = admin.commandstats()
        try:
            for _ in range(fetches):
                now += 1000  # 1 ms: the dependency bucket is full (burst 200) again
                call = calls.fetch(
                    keys,
                    group=GROUP,
                    consumer="scale",
                    count=SCALE_BURST,
                    fetch_id=uuid.uuid4().hex,
                    max_steps=4 * SCALE_BURST,
                    now_us=now,
                )
                t0 = time.perf_counter_ns()
                result = store.run(call)
                walls.append(time.perf_counter_ns() - t0)
                if len(result.jobs) != SCALE_BURST:
                    problems.append(
                        f"{keys.dependency}: a fetch released {len(result.jobs)}, not {SCALE_BURST}"
                    )
        finally:
            gc.enable()
        after = admin.commandstats()
        if not record:
            return
        delta: Stats = {}
        add_delta(delta, after, before)
        jobs = fetches * SCALE_BURST
        n_calls, usec = delta.get("fcall", (0, 0))
        if n_calls != fetches:
            problems.append(f"{keys.dependency}: {n_calls} FCALL seen for {fetches} fetches")
        s.wall_ns.append(sum(walls) // jobs)
        s.redis_us.append(usec / jobs)
        add_delta(s.stats, delta, {})
        s.jobs += jobs
        s.calls += fetches

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


def run(sizes: Sizes, quick: bool, json_path: str | None = None, no_fail: bool = False) -> int:
    logging.basicConfig(level=logging.ERROR)  # the doctor warns about no persistence
    started = time.monotonic()
    report = Report()
    problems: list[str] = []
    with redis_under_test() as (url, pids):
        admin = Admin(list(pids))
        store = Store.from_url(url, prefix=PREFIX)
        jn = Janus(store)
        # A client with a clock applies its policies in test mode: the scripts then take
        # that clock's time for these dependencies (phases 1, 2 and 3).
        hl_clock, wtd_clock, eq_clock, scale_clock = Clock(), Clock(), Clock(), Clock()
        explicit = parse_policy_text(explicit_policy_text(sizes.scopes), "<bench policy>")
        with_clock(Janus(store), hl_clock).apply_policies(explicit)
        jn.apply_policies(parse_policy_text(realtime_policy_text(), "<bench policy, real time>"))
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
        hl = heavy_light_explicit(with_clock(Janus(store), hl_clock), hl_clock, sizes.heavy)
        log(
            f"phase 1b: heavy ({sizes.heavy_rt:,} jobs) / light, real time, coordinator and "
            "worker threads"
        )
        rt = heavy_light_realtime(url, store, sizes.heavy_rt)

        log("phase 2: weighted 1:2:4 and 4 equal scopes, 10 s explicit time each")
        wtd_jn = with_clock(Janus(store), wtd_clock)
        wtd = backlogged(wtd_jn, wtd_clock, WTD, WEIGHTS, 10)
        eq = backlogged(
            with_clock(Janus(store), eq_clock), eq_clock, EQ, dict.fromkeys(EQUAL, 1), 10
        )

        measured = sizes.rounds * sizes.steps * SCALE_BURST + 4 * SCALE_BURST
        builds: list[Scale] = []
        for n in sizes.scopes:
            per_scope = max(2, math.ceil((measured + SCALE_BURST) / n) + 1)
            log(f"phase 3: building {n:,} active scopes x {per_scope} jobs")
            builds.append(build_scale(with_clock(Janus(store), scale_clock), admin, n, per_scope))
        log(
            f"phase 3: {sizes.rounds} alternating rounds of {sizes.steps} fetches "
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
        f"rate {rate}/s burst 1, a worker fetches every {TICK_MS} ms (explicit time)"
    )
    report.add(
        "light: first job's wait to start",
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
        f"heavy: started in the light window ({hl.window_ms} ms)",
        f"{hl.heavy_started}",
        f"= {hl.window_ms * rate // 1000} - 10 light",
        hl.heavy_started == hl.window_ms * rate // 1000 - 10,
    )
    report.notes.append(
        f"heavy/light explicit: light waits {waits} ms; heavy backlog submitted in "
        f"{hl.submit_s:.1f} s"
    )
    rt_round = scopes / HLRT_RATE * 1000
    report.section(
        f"1b. same in real time (comparison): heavy {sizes.heavy_rt:,}, rate {HLRT_RATE}/s, "
        "coordinator + worker threads"
    )
    report.add(
        "light: first job's wait to start", ms(rt.waits_ms[0]), f"(one round {rt_round:g} ms)"
    )
    report.add("light: wait p50", ms(pct(rt.waits_ms, 50)))
    report.add(
        "light: wait p99", ms(pct(rt.waits_ms, 99)), f"(2/rate x scopes {2 * rt_round:g} ms)"
    )
    report.add(
        "dependency throughput while light submitted", f"{rt.dep_rate:.0f}/s", f"({HLRT_RATE}/s)"
    )
    report.add("worker fetches per second", f"{rt.fetches_per_s:.0f}/s")
    report.add("jobs per fetch", f"{rt.jobs_per_fetch:.2f}")
    report.add("coordinator steps per second", f"{rt.steps_per_s:.0f}/s")
    report.notes.append(
        f"heavy/light real time: light waits {rt.waits_ms} ms (Redis ms: +/-1 ms is "
        f"quantisation), {rt.fetches} worker fetches, {rt.steps} coordinator steps. With "
        "burst 1 a fetch that comes late cannot catch up (the bucket holds one job), so "
        "throughput = 1 / the period at which the worker asks again when the bucket refills"
    )

    # ---- 2. weighted
    report.section(f"2. backlogged scopes, 10 s at {WTD_RATE}/s burst {WTD_BURST} (explicit time)")
    total = sum(wtd.counts.values())
    for scope, w in WEIGHTS.items():
        share, want = wtd.counts[scope] / total, w / sum(WEIGHTS.values())
        dev = share / want - 1
        report.add(
            f"weight {w}: share of {total:,} started",
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
        f"4 equal scopes: Jain's index ({sum(eq.counts.values()):,} started)",
        f"{index:.5f}",
        f">= {JAIN_TARGET}",
        index >= JAIN_TARGET,
    )
    report.add(
        "4 equal scopes: max - min started", str(max(eq.counts.values()) - min(eq.counts.values()))
    )
    report.notes.append(f"weighted counts {wtd.counts}; equal counts {eq.counts}")

    # ---- 3. scale
    first, last = builds[0], builds[-1]
    report.section(
        f"3. release (fetch) cost vs active scopes ({SCALE_BURST} jobs per fetch, "
        f"{sizes.rounds} alternating rounds x {sizes.steps} fetches; median of rounds)"
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
            f"{s.scopes:>7,} scopes: Redis held per fetch of {SCALE_BURST} jobs (median)",
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
        "distinct scopes served per 200-job fetch = min(scopes, 200): "
        + ", ".join(f"{s.scopes:,} -> {min(s.scopes, SCALE_BURST)}" for s in builds)
        + "; each costs one scope-state read and write per fetch (scope_get HMGET, "
        "scope_flush HSET + PERSIST), so below 200 scopes that cost is shared by several jobs"
    )
    for s in builds:
        jobs = s.jobs or 1
        fcall = s.stats.get("fcall", (0, 0))[1] / jobs
        inner = sorted(
            (
                (usec / jobs, n_calls / jobs, name)
                for name, (n_calls, usec) in s.stats.items()
                if name not in ("fcall", "info") and n_calls > 0
            ),
            reverse=True,
        )
        lua = fcall - sum(u for u, _c, _n in inner)
        report.notes.append(
            f"{s.scopes:,} scopes, per released job (calls x, µs inside Redis): "
            + ", ".join(f"{n} {c:.2f}x {u:.2f}" for u, c, n in inner)
            + f"; Lua + redis.call overhead (FCALL minus the above) {lua:.2f} µs of {fcall:.2f}"
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
    return conclude(
        "fairness",
        report,
        sorted(set(problems)),
        json_path=json_path,
        no_fail=no_fail,
        quick=quick,
        environment=environment,
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main(
        "fairness",
        __doc__,
        argv,
        lambda args: run(QUICK if args.quick else FULL, args.quick, args.json, args.no_fail),
        quick_help="smaller N: a smoke run",
    )


if __name__ == "__main__":
    sys.exit(main())
