"""Retry-storm benchmark: a dependency outage in real time, Janus vs naive per-worker retries.

Run::

    .venv/bin/python bench/retry_storm.py [--quick] [--json PATH] [--no-fail]

It starts ONE throwaway ``redis-server`` through :mod:`janus.testing` (never a Redis someone
else runs) and plays the outage of ``tests/integration/test_outage.py`` in REAL time, twice in
the same run against that server: first the naive baseline, then Janus.

**The dependency** is an in-process object shared by the worker threads of one side (each side
gets a fresh one). It is healthy for the lead-in (3 s; ``--quick`` 2 s), then answers every call
with HTTP 503 for the outage (10 s; ``--quick`` 5 s), then is healthy again. Each call sleeps
5 ms (service time) and is logged with its time and the caller's attempt number: those calls
are the attempts counted below. "During the outage" means the call started inside the outage
window, i.e. exactly the calls that got a 503.

**Producers**: 2 threads, 25 jobs/s each, interleaved (50 jobs/s, evenly spaced), for lead-in +
outage + 3 s (``--quick`` 2 s), 4 tenants in turn. **Workers**: 4 threads per side; each
fetched job makes ONE call to the dependency.

**Janus side**: ``Janus.submit`` (the job waits in Janus) -> workers looping
``Worker.fetch(count=10, block_ms=100)`` (the fetch is the release: each attempt a worker gets
is started under every limit, and is the one call it makes), then ``complete(job)`` on
success or ``fail(job, "http_503")`` on a 503; a coordinator (``Coordinator(...)
.run_in_thread()``) is the timer that moves due retries and wakes idle workers. Workers never
retry; Janus decides, under the policy of :func:`policy_text` (the test's policy with this
bench's numbers): rate 200/s (burst 50), max_attempts 3, backoff base 200 ms x 2^n with full
jitter, retry budget ratio 0.1 + 1/s (window 10 s), and a circuit breaker (failure_ratio 0.5
over 5 s, min 20 requests, open 1 s doubling to at most 2 s, 3 half-open probes). A retry
that finds no budget token is parked: it waits (free, never dead-lettered for waiting) and
comes back when a token exists. Attempts are the started attempts: every attempt a worker is
handed makes exactly one call (checked). A monitor thread reads the circuit state, the
budget balance (state hash fields ``b_milli``/``b_at``, refilled to Redis TIME exactly as
``include/budget.lua`` does), ``status().scheduled`` and ``status().parked`` every 10 ms.
The run ends when nothing is waiting, in flight or on the stream, or, since parked retries
drain at the budget's pace (after the producers stop, ``min_per_second`` = 1 per second),
once everything still waiting is a parked retry (bounded wait); each job's outcome is read
back with ``Janus.job`` and the dead letters' reasons with ``Janus.dead_letters``.

**Naive baseline**: what Celery's ``autoretry_for`` + ``retry_backoff`` + ``retry_jitter``
(its default, True) does: on a 503 the worker re-publishes the job with a countdown, up to 3
attempts in total (``max_retries=2``); no shared budget, no circuit. Countdown = uniform(0,
200 ms x 2^retries): Celery's full-jitter formula on the SAME curve as Janus's policy (Celery's
own default factor is 1 s in whole seconds: the same 3 attempts, spread wider), so the only
differences between the sides are the budget, the circuit and who decides. Transport: plain
Redis on the same server: a list (LPUSH by producers, BRPOP by workers) for ready jobs and a
sorted set scored by ETA for countdowns, moved back to the list by one mover thread every 5 ms
(the role Celery's worker timer plays, and Janus's coordinator does on the other side). That is
cheaper per message than Janus's scripts, adds no limit of its own, and the attempt counts do
not depend on transport speed as long as workers keep up (checked below: every job whose
retries all fall inside the outage makes its 3 attempts), so it cannot favour Janus.

**Amplification**, measured from the dependency's log, several ways (all printed):

* outage window: attempts during the outage / first attempts during the outage (the test's
  definition). Janus goal (shown in brackets, never failing the run): <= 1 + ratio + floor,
  floor = min_per_second x outage seconds / first attempts. The retry budget is a bucket
  holding up to ``window`` (10 s) of deposits, so retries in the outage may also spend what
  the lead-in deposited; the bound that always holds, and the target, (as in the test) adds
  carried / first attempts, carried = ratio x first attempts in the
  window before the outage + min_per_second x min(window, budget age). The budget's actual
  balance at the start of the outage is read from Redis and printed too;
* per submitted job (outage, whole run), and whole run per first attempt (Janus bound: 1 +
  ratio + min_per_second x release span / first attempts: the budget starts empty);
* naive target: >= 3, on the jobs whose first attempt came at least 0.6 s (the longest backoff
  sum) before the outage ended, so that all of their retries fall inside it. The plain window
  ratio is printed too; it is a little under 3 because the first 0.6 s of the outage has no
  retries yet (the expected deficit is printed next to it).

A per-second timeline (attempts of both sides, Janus's circuit state, budget balance, queue)
and Janus diagnostics (budget balance at outage start, retries beyond the in-outage deposits,
circuit opens and probes) follow. The result table marks each figure PASS or MISS against its
target. Exit status: 0 when every target is met, 1 when one is missed (``--no-fail``: 0), 2
when the run itself failed; every figure is printed first. The figures are also written as
JSON (every table row with its verdict, the notes, the exit status): to ``--json PATH``, else
to ``bench-results/retry_storm-<UTC time>.json`` under the current directory (see
``bench/_common.py``); the path is printed. Every thread is stopped and the redis-server is
shut down on the way out.
"""

from __future__ import annotations

import logging
import math
import random
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    Admin,
    Report,
    bench_main,
    conclude,
    load_text,
    log,
    machine_text,
    pct,
    print_environment,
    print_grid,
    python_text,
    redis_line,
    redis_under_test,
)
from janus.calls import CIRCUIT_PACKED, CIRCUIT_STATES, STATE_PACKED, unpack_fields
from janus.client import Janus
from janus.coordinator import Coordinator
from janus.decisions import LeasedJob
from janus.errors import LeaseLost
from janus.keys import Keys
from janus.policy import interval_us, parse_policy_text
from janus.store import Store, connect

PREFIX = "janusbench"
DEP = "flaky"
GROUP = "storm"
NAIVE_QUEUE = f"{PREFIX}:naive:queue"
NAIVE_DELAYED = f"{PREFIX}:naive:delayed"

SUBMIT_RATE = 50.0  # jobs/s, all producers together
PRODUCERS = 2
WORKERS = 4
SCOPES = [f"tenant-{i}" for i in range(4)]
SERVICE_S = 0.005  # each dependency call takes this long, healthy or not
FETCH = 10
MOVER_POLL_S = 0.005
MONITOR_S = 0.01

MAX_ATTEMPTS = 3
BACKOFF_BASE_S = 0.2
BACKOFF_FACTOR = 2.0
RATIO = 0.1
MPS = 1.0
WINDOW_S = 10.0
DEP_RATE = 200
OPEN_S, OPEN_MAX_S = 1.0, 2.0
#: Longest sum of backoffs a job can get (0.2 + 0.4 s): after this, a naive job is done.
RAMP_S = sum(BACKOFF_BASE_S * BACKOFF_FACTOR**n for n in range(MAX_ATTEMPTS - 1))


def policy_text() -> str:
    """The Janus policy of the run (the test's shape with this bench's numbers)."""
    return f"""
dependencies:
  {DEP}:
    rate: {DEP_RATE}
    burst: 50
    max_wait: 2m
    lease: 10s
    retry:
      max_attempts: {MAX_ATTEMPTS}
      backoff: {{base: {int(BACKOFF_BASE_S * 1000)}ms, factor: {BACKOFF_FACTOR}, max: 5s,
                 jitter: full}}
      retry_on: [http_5xx]
      budget: {{ratio: {RATIO}, min_per_second: {MPS}, window: {int(WINDOW_S)}s}}
    circuit: {{failure_ratio: 0.5, min_requests: 20, window: 5s, open_for: {int(OPEN_S)}s,
              open_for_max: {int(OPEN_MAX_S)}s, half_open_probes: 3}}
"""


NAIVE_TARGET = 3.0


@dataclass(frozen=True)
class Phases:
    lead_s: float
    outage_s: float
    tail_s: float  # producers keep submitting this long after the outage
    drain_s: float  # bounded wait, once producers stop, until only parked retries wait

    @property
    def submit_s(self) -> float:
        return self.lead_s + self.outage_s + self.tail_s

    @property
    def outage_end(self) -> float:
        return self.lead_s + self.outage_s

    def in_outage(self, t: float) -> bool:
        return self.lead_s <= t < self.outage_end


FULL = Phases(lead_s=3.0, outage_s=10.0, tail_s=3.0, drain_s=40.0)
QUICK = Phases(lead_s=2.0, outage_s=5.0, tail_s=2.0, drain_s=30.0)


# --------------------------------------------------------------------------- small helpers


def source_state() -> str:
    """The Janus code under test: git commit, and whether src/ or lua/ differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "lua"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    changes = f" + uncommitted changes in {len(dirty)} file(s) under src/ lua/" if dirty else ""
    return f"commit {head or '?'}{changes}"


def ratio_text(num: float, den: float) -> str:
    return f"{num / den:.3f}" if den else "n/a"


class Threads:
    """Named threads whose exceptions are recorded (and abort the run) instead of lost."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self.stop = threading.Event()
        self.items: list[threading.Thread] = []

    def start(self, name: str, target: Callable[[], None]) -> None:
        def body() -> None:
            try:
                target()
            except BaseException:
                self.problems.append(f"thread {name} failed:\n{traceback.format_exc()}")
                self.stop.set()

        thread = threading.Thread(target=body, name=name, daemon=True)
        self.items.append(thread)
        thread.start()

    def join(self, timeout_s: float = 10.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self.items:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        alive = [t.name for t in self.items if t.is_alive()]
        if alive:
            self.problems.append(f"threads still alive after stop: {alive}")


# --------------------------------------------------------------------------- the dependency


@dataclass(frozen=True)
class Call:
    t: float  # seconds since the side's t0 (monotonic)
    attempt: int  # the caller's attempt number (1 = first)
    job_id: str
    ok: bool
    release_ms: int | None  # Janus: release time (stream entry id), Redis clock


class Dependency:
    """Healthy, then 503 for every call during the outage, then healthy; logs every call."""

    def __init__(self, t0: float, phases: Phases) -> None:
        self.t0 = t0
        self.phases = phases
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def call(self, attempt: int, job_id: str, release_ms: int | None = None) -> bool:
        t = time.monotonic() - self.t0
        ok = not self.phases.in_outage(t)
        with self._lock:
            self.calls.append(Call(t, attempt, job_id, ok, release_ms))
        time.sleep(SERVICE_S)
        return ok


@dataclass
class Submitted:
    job_id: str
    t: float  # seconds since t0, just before the submit
    wall_ms: int
    status: str  # janus: ready | scheduled | rejected:<reason>; naive: queued


def produce(
    t0: float,
    phases: Phases,
    index: int,
    side: str,
    send: Callable[[str, int], str],
    out: list[Submitted],
    stop: threading.Event,
) -> None:
    """One producer: SUBMIT_RATE / PRODUCERS jobs per second on a fixed schedule (never
    skipping a job when late), offset so that the producers interleave evenly."""
    per_s = SUBMIT_RATE / PRODUCERS
    i = 0
    while not stop.is_set():
        at = i / per_s + index / SUBMIT_RATE
        if at >= phases.submit_s:
            return
        delay = t0 + at - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        job_id = f"{side}-p{index}-{i}"
        t = time.monotonic() - t0
        wall_ms = time.time_ns() // 1_000_000
        status = send(job_id, i * PRODUCERS + index)
        out.append(Submitted(job_id, t, wall_ms, status))
        i += 1


# --------------------------------------------------------------------------- naive baseline


@dataclass
class SideResult:
    name: str
    t0_wall: float
    calls: list[Call]
    submitted: list[Submitted]
    # job id -> completed | dead:<reason> | failed | unfinished | waiting (Janus: a retry
    # still parked for a budget token when the run ended)
    outcome: dict[str, str]
    latency_s: dict[str, float]  # completed job id -> submit -> completion, seconds
    run_s: float  # t0 -> last job finished
    samples: list[Sample] = field(default_factory=list)  # Janus monitor
    lease_lost: int = 0


def run_naive(url: str, phases: Phases, problems: list[str]) -> SideResult:
    client = connect(url)
    client.delete(NAIVE_QUEUE, NAIVE_DELAYED)
    rng = random.Random(20240611)
    t0 = time.monotonic() + 0.2
    t0_wall = time.time() + (t0 - time.monotonic())
    dep = Dependency(t0, phases)
    threads = Threads(problems)
    submitted: list[Submitted] = []
    outcome: dict[str, str] = {}
    finished_wall: dict[str, float] = {}
    lock = threading.Lock()

    def send(job_id: str, n: int) -> str:
        client.lpush(NAIVE_QUEUE, f"{job_id}|1")
        return "queued"

    def worker() -> None:
        while not threads.stop.is_set():
            item: Any = client.brpop([NAIVE_QUEUE], timeout=0.1)
            if item is None:
                continue
            job_id, _, attempt_text = item[1].decode().rpartition("|")
            attempt = int(attempt_text)
            if dep.call(attempt, job_id):
                with lock:
                    outcome[job_id] = "completed"
                    finished_wall[job_id] = time.time()
            elif attempt < MAX_ATTEMPTS:
                # Celery's retry(): re-publish with countdown = full jitter on the curve.
                countdown = rng.uniform(0, BACKOFF_BASE_S * BACKOFF_FACTOR ** (attempt - 1))
                client.zadd(NAIVE_DELAYED, {f"{job_id}|{attempt + 1}": time.time() + countdown})
            else:
                with lock:
                    outcome[job_id] = "failed"
                    finished_wall[job_id] = time.time()

    def mover() -> None:
        while not threads.stop.is_set():
            due = client.zrangebyscore(NAIVE_DELAYED, "-inf", time.time(), start=0, num=500)
            if due:
                pipe = client.pipeline(transaction=True)
                pipe.zrem(NAIVE_DELAYED, *due)
                pipe.lpush(NAIVE_QUEUE, *due)
                pipe.execute()
            threads.stop.wait(MOVER_POLL_S)

    try:
        for i in range(WORKERS):
            threads.start(f"naive-worker-{i}", worker)
        threads.start("naive-mover", mover)
        producers = Threads(problems)
        for i in range(PRODUCERS):
            producers.start(
                f"naive-producer-{i}",
                lambda i=i: produce(t0, phases, i, "naive", send, submitted, threads.stop),
            )
        for thread in producers.items:
            thread.join()
        deadline = time.monotonic() + phases.drain_s
        while len(outcome) < len(submitted) and not threads.stop.is_set():
            if time.monotonic() > deadline:
                problems.append(
                    f"naive: {len(submitted) - len(outcome)} jobs unfinished "
                    f"{phases.drain_s:.0f} s after the producers stopped"
                )
                break
            time.sleep(0.05)
    finally:
        threads.join()
        client.close()
    subs = {s.job_id: s for s in submitted}
    latency = {
        job_id: finished_wall[job_id] - subs[job_id].wall_ms / 1000
        for job_id, o in outcome.items()
        if o == "completed"
    }
    for s in submitted:
        outcome.setdefault(s.job_id, "unfinished")
    last = max(finished_wall.values(), default=t0_wall)
    return SideResult(
        "naive", t0_wall, list(dep.calls), submitted, outcome, latency, last - t0_wall
    )


# --------------------------------------------------------------------------- Janus side


@dataclass(frozen=True)
class Sample:
    """One look at the dependency's state hash (Janus)."""

    t: float  # seconds since t0 (monotonic), when read
    now_us: int  # Redis TIME
    circuit: str
    until_us: int
    opens: int
    budget: float  # tokens, refilled to now_us as budget_refill would
    queued: int  # jobs waiting in Janus (status().scheduled: parked retries included)
    parked: int  # of which retries parked for a budget token


def budget_tokens(b_milli: int | None, b_at: int | None, now_us: int) -> float:
    """The retry budget's balance at now_us, refilled lazily exactly as budget.lua does."""
    if b_milli is None or b_at is None:
        return 0.0
    mps_milli = round(MPS * 1000)
    cap = (mps_milli + round(RATIO * 1000) * 1e6 / interval_us(DEP_RATE)) * WINDOW_S
    gained = math.floor(mps_milli * (now_us - b_at) / 1e6)
    return min(cap, b_milli + max(gained, 0)) / 1000


def open_duration_us(opens: int) -> int:
    return int(min(OPEN_S * 2 ** (opens - 1), OPEN_MAX_S) * 1e6)


def run_janus(url: str, phases: Phases, problems: list[str]) -> SideResult:
    jn = Janus.from_url(url, prefix=PREFIX)
    jn.apply_policies(parse_policy_text(policy_text(), "<retry_storm>"))
    jw = Janus.from_url(url, prefix=PREFIX)  # the workers' handle (thread-safe, shared)
    coord_store = Store.from_url(url, prefix=PREFIX)
    coord = Coordinator(coord_store, dependencies=[DEP])
    monitor_client = connect(url)
    keys = Keys(PREFIX, DEP)
    workers = [jw.worker(DEP, group=GROUP, consumer=f"storm-{i}") for i in range(WORKERS)]
    t0 = time.monotonic() + 0.3
    t0_wall = time.time() + (t0 - time.monotonic())
    dep = Dependency(t0, phases)
    threads = Threads(problems)
    submitted: list[Submitted] = []
    samples: list[Sample] = []
    started: list[LeasedJob] = []  # every attempt a worker was handed
    lease_lost = 0
    lock = threading.Lock()

    def send(job_id: str, n: int) -> str:
        d = jn.submit(DEP, scope=SCOPES[n % len(SCOPES)], job_id=job_id)
        return d.status if d.accepted else f"rejected:{d.reason}"

    def worker(index: int) -> None:
        nonlocal lease_lost
        w = workers[index]
        while not threads.stop.is_set():
            jobs = w.fetch(count=FETCH, block_ms=100)
            with lock:
                started.extend(jobs)
            for job in jobs:
                ok = dep.call(job.attempt, job.id, job.started_ms)
                try:
                    if ok:
                        w.complete(job)
                    else:
                        w.fail(job, "http_503")
                except LeaseLost:
                    with lock:
                        lease_lost += 1

    def monitor() -> None:
        while not threads.stop.is_set():
            # The budget's balance and the circuit's open count are not in status(): read
            # the state hash fields the scripts keep them in (include/core.lua).
            pipe = monitor_client.pipeline(transaction=False)
            pipe.hmget(keys.state, "st", "c")
            pipe.time()
            (packed_st, packed_c), (sec, usec) = pipe.execute()
            now_us = int(sec) * 1_000_000 + int(usec)
            stf = unpack_fields(packed_st, STATE_PACKED)
            cf = unpack_fields(packed_c, CIRCUIT_PACKED)
            state = CIRCUIT_STATES.get(int(cf["c_state"]), "closed") if packed_c else None
            until, opens = int(cf["c_until"]), int(cf["c_opens"])
            b_milli = int(stf["b_milli"]) if packed_st and stf["b_milli"] >= 0 else None
            b_at = int(stf["b_at"]) if b_milli is not None else None
            st = jn.status(DEP)  # waiting: delay queue, ready lines, parked retries

            samples.append(
                Sample(
                    t=time.monotonic() - t0,
                    now_us=now_us,
                    circuit=state or "closed",
                    until_us=until,
                    opens=opens,
                    budget=budget_tokens(b_milli, b_at, now_us),
                    queued=st.scheduled,
                    parked=st.parked,
                )
            )
            threads.stop.wait(MONITOR_S)

    def finished() -> bool:
        """Nothing left but retries parked for a budget token (they come back one per token,
        after the producers stop one per second: waiting for them would only measure the
        budget's refill rate)."""
        st = jn.status(DEP)
        return st.scheduled == st.parked and st.in_flight == 0 and st.stream_length == 0

    coord_thread = coord.run_in_thread()
    try:
        for i in range(WORKERS):
            threads.start(f"janus-worker-{i}", lambda i=i: worker(i))
        threads.start("janus-monitor", monitor)
        producers = Threads(problems)
        for i in range(PRODUCERS):
            producers.start(
                f"janus-producer-{i}",
                lambda i=i: produce(t0, phases, i, "janus", send, submitted, threads.stop),
            )
        for thread in producers.items:
            thread.join()
        deadline = time.monotonic() + phases.drain_s
        while not threads.stop.is_set() and not finished():
            if time.monotonic() > deadline:
                problems.append(
                    f"janus: work still queued or in flight {phases.drain_s:.0f} s after the "
                    "producers stopped"
                )
                break
            time.sleep(0.05)
    finally:
        threads.join()
        coord.stop()
        coord_thread.join(timeout=10)
        if coord_thread.is_alive():
            problems.append("the coordinator thread did not stop")

    # ---- read back every job's outcome from its record (and dead letters' reasons)
    outcome: dict[str, str] = {}
    latency: dict[str, float] = {}
    last_ms = 0
    try:
        reasons = {d.job_id: d.reason for d in jn.dead_letters(DEP)}
        for s in submitted:
            info = jn.job(DEP, s.job_id)
            if s.status.startswith("rejected"):
                outcome[s.job_id] = s.status
            elif info is None:
                outcome[s.job_id] = "unfinished"
                problems.append(f"janus: no record for job {s.job_id}")
            elif info.status == "completed" and info.finished_ms and info.submitted_ms:
                outcome[s.job_id] = "completed"
                latency[s.job_id] = (info.finished_ms - info.submitted_ms) / 1000
                last_ms = max(last_ms, info.finished_ms)
            elif info.status == "dead":
                outcome[s.job_id] = f"dead:{reasons.get(s.job_id, '?')}"
                last_ms = max(last_ms, info.finished_ms or 0)
            elif info.status == "failed":
                outcome[s.job_id] = "waiting"  # its retry waits (parked for a budget token)
            else:
                outcome[s.job_id] = "unfinished"
        parked_left = jn.status(DEP).parked
    finally:
        monitor_client.close()
        coord_store.close()
        jw.close()
        jn.close()
    # Attempts = started attempts: every attempt a worker was handed made one call.
    if len(started) != len(dep.calls):
        problems.append(f"janus: {len(started)} attempts started but {len(dep.calls)} calls made")
    waiting = sum(1 for o in outcome.values() if o == "waiting")
    if waiting != parked_left:
        problems.append(f"janus: {waiting} jobs wait for a retry, {parked_left} parked")
    return SideResult(
        "janus",
        t0_wall,
        list(dep.calls),
        submitted,
        outcome,
        latency,
        last_ms / 1000 - t0_wall if last_ms else 0.0,
        samples,
        lease_lost,
    )


# --------------------------------------------------------------------------- analysis


@dataclass
class Figures:
    """Counts of one side, from the dependency's log."""

    submitted: int
    submitted_out: int
    first: int
    retry: int
    first_out: int
    retry_out: int
    peak_out: int  # most attempts in one whole second of the outage
    completed: int
    dead: dict[str, int]
    unfinished: int
    waiting: int  # Janus: retries still parked for a budget token at the end

    @property
    def attempts(self) -> int:
        return self.first + self.retry

    @property
    def attempts_out(self) -> int:
        return self.first_out + self.retry_out


def figures(res: SideResult, phases: Phases) -> Figures:
    calls = res.calls
    out = [c for c in calls if phases.in_outage(c.t)]
    per_second: dict[int, int] = {}
    for c in out:
        per_second[int(c.t)] = per_second.get(int(c.t), 0) + 1
    whole = [s for s in range(math.ceil(phases.lead_s), int(phases.outage_end))]
    dead: dict[str, int] = {}
    for o in res.outcome.values():
        if o.startswith("dead:") or o == "failed":
            dead[o] = dead.get(o, 0) + 1
    return Figures(
        submitted=len(res.submitted),
        submitted_out=sum(1 for s in res.submitted if phases.in_outage(s.t)),
        first=sum(1 for c in calls if c.attempt == 1),
        retry=sum(1 for c in calls if c.attempt > 1),
        first_out=sum(1 for c in out if c.attempt == 1),
        retry_out=sum(1 for c in out if c.attempt > 1),
        peak_out=max((per_second.get(s, 0) for s in whole), default=0),
        completed=sum(1 for o in res.outcome.values() if o == "completed"),
        dead=dead,
        unfinished=sum(1 for o in res.outcome.values() if o == "unfinished"),
        waiting=sum(1 for o in res.outcome.values() if o == "waiting"),
    )


def timeline(naive: SideResult, janus: SideResult, phases: Phases) -> None:
    """Attempts per second of both sides, with Janus's circuit, budget and queue."""
    end = max(
        [phases.submit_s]
        + [c.t for c in naive.calls]
        + [c.t for c in janus.calls]
        + [s.t for s in janus.samples if s.queued]
    )
    rows: list[list[str]] = []
    for sec in range(math.ceil(end)):

        def count(res: SideResult, first: bool, sec: int = sec) -> int:
            return sum(1 for c in res.calls if int(c.t) == sec and (c.attempt == 1) == first)

        in_sec = [s for s in janus.samples if int(s.t) == sec]
        states: list[str] = []
        for s in in_sec:
            short = {"closed": "C", "open": "O", "half_open": "H"}.get(s.circuit, "?")
            if not states or states[-1] != short:
                states.append(short)
        phase = "outage" if phases.in_outage(sec + 0.5) else ""
        if sec >= phases.submit_s:
            phase = "drain"
        rows.append(
            [
                f"{sec:>3}-{sec + 1:<3}",
                phase,
                str(count(naive, True)),
                str(count(naive, False)),
                str(count(janus, True)),
                str(count(janus, False)),
                ">".join(states) or "-",
                f"{in_sec[-1].budget:.1f}" if in_sec else "-",
                str(in_sec[-1].queued) if in_sec else "-",
                str(in_sec[-1].parked) if in_sec else "-",
            ]
        )
    print_grid(
        "Attempts the dependency saw per second (t = seconds since the side's start; outage = "
        f"{phases.lead_s:g}-{phases.outage_end:g} s). Janus circuit: C closed, O open, H "
        f"half-open (sampled every {MONITOR_S * 1000:.0f} ms); budget: retry tokens, queued: jobs "
        "waiting in Janus (status().scheduled), parked: of which retries waiting for a budget "
        "token (status().parked), all at the end of the second.",
        [
            "t (s)",
            "phase",
            "naive 1st",
            "naive retry",
            "janus 1st",
            "janus retry",
            "circuit",
            "budget",
            "queued",
            "parked",
        ],
        rows,
    )


@dataclass
class JanusDiag:
    carried_measured: float  # budget balance at the start of the outage (Redis)
    carried_bound: float  # ratio x first attempts in the window before + mps x budget age
    first_before_window: int
    first_open_t: float | None
    close_t: float | None
    opens: int
    fails_before_open: int
    probes_out: int  # outage calls released after the circuit first opened
    probe_first: int
    retries_before_open: int
    release_span_s: float
    budget_age_s: float
    budget_at_end: float


def janus_diag(res: SideResult, phases: Phases) -> JanusDiag:
    calls, samples = res.calls, res.samples
    before = [s for s in samples if s.t < phases.lead_s]
    carried_measured = before[-1].budget if before else float("nan")
    releases = sorted(c.release_ms for c in calls if c.release_ms is not None)

    def released_t(c: Call) -> float:
        return (c.release_ms or 0) / 1000 - res.t0_wall

    first_release_t = releases[0] / 1000 - res.t0_wall if releases else 0.0
    window_start = phases.lead_s - WINDOW_S
    first_before = sum(
        1 for c in calls if c.attempt == 1 and window_start <= released_t(c) < phases.lead_s
    )
    age = min(WINDOW_S, max(0.0, phases.lead_s - first_release_t))
    opens: dict[int, int] = {}
    for s in samples:
        if s.circuit == "open" and s.opens:
            opens.setdefault(s.opens, s.until_us)
    first_open_t = None
    if 1 in opens:
        first_open_t = (opens[1] - open_duration_us(1)) / 1e6 - res.t0_wall
    close_t = None
    if first_open_t is not None:
        after = [s for s in samples if s.t > first_open_t and s.circuit == "closed"]
        if after:
            close_t = after[0].t
    out = [c for c in calls if phases.in_outage(c.t)]
    probes: list[Call] = []
    before_open: list[Call] = out
    if first_open_t is not None:
        cut_ms = (first_open_t + res.t0_wall) * 1000
        probes = [c for c in out if c.release_ms is not None and c.release_ms >= cut_ms]
        before_open = [c for c in out if c.release_ms is None or c.release_ms < cut_ms]
    return JanusDiag(
        carried_measured=carried_measured,
        carried_bound=RATIO * first_before + MPS * age,
        first_before_window=first_before,
        first_open_t=first_open_t,
        close_t=close_t,
        opens=max(opens, default=0),
        fails_before_open=len(before_open),
        probes_out=len(probes),
        probe_first=sum(1 for c in probes if c.attempt == 1),
        retries_before_open=sum(1 for c in before_open if c.attempt > 1),
        release_span_s=(releases[-1] - releases[0]) / 1000 if releases else 0.0,
        budget_age_s=age,
        budget_at_end=next((s.budget for s in samples if s.t >= phases.outage_end), float("nan")),
    )


def cohort(res: SideResult, phases: Phases) -> tuple[int, int, int]:
    """Jobs whose first attempt came at least RAMP_S (+50 ms of slack for the transport)
    before the outage ended, so that every retry a naive worker gives them is due inside
    it: (jobs, all their attempts, their attempts during the outage)."""
    first_t: dict[str, float] = {}
    for c in res.calls:
        if c.attempt == 1:
            first_t[c.job_id] = c.t
    last = phases.outage_end - RAMP_S - 0.05
    jobs = {j for j, t in first_t.items() if phases.lead_s <= t < last}
    mine = [c for c in res.calls if c.job_id in jobs]
    return len(jobs), len(mine), sum(1 for c in mine if phases.in_outage(c.t))


def latency_text(res: SideResult, phases: Phases, outage_only: bool) -> str:
    subs = {x.job_id: x for x in res.submitted}
    lat = [v for j, v in res.latency_s.items() if not outage_only or phases.in_outage(subs[j].t)]
    if not lat:
        return "none completed"
    return f"{pct(lat, 50):.2f} / {pct(lat, 99):.2f} / {max(lat):.2f} s (n={len(lat)})"


def dead_text(f: Figures) -> str:
    total = sum(f.dead.values())
    if not total:
        return "0"
    parts = ", ".join(f"{k} {v}" for k, v in sorted(f.dead.items()))
    return f"{total} ({parts})"


def report_results(
    naive: SideResult, janus: SideResult, phases: Phases, problems: list[str]
) -> tuple[Report, dict[str, Any]]:
    """Print the side-by-side grid, fill the result table; returns the table and the grid
    (for the JSON)."""
    nf, jf = figures(naive, phases), figures(janus, phases)
    out_s = phases.outage_s
    rows: list[list[str]] = []

    def both(label: str, fn: Callable[[Figures, SideResult], str]) -> None:
        rows.append([label, fn(nf, naive), fn(jf, janus)])

    both(
        "jobs submitted (total / during the outage)",
        lambda f, r: f"{f.submitted} / {f.submitted_out}",
    )
    both(
        "rejected at submit",
        lambda f, r: str(sum(1 for x in r.submitted if x.status.startswith("rejected"))),
    )
    both(
        "attempts seen, whole run (first + retries)",
        lambda f, r: f"{f.attempts} ({f.first} + {f.retry})",
    )
    both(
        "attempts seen during the outage (first + retries)",
        lambda f, r: f"{f.attempts_out} ({f.first_out} + {f.retry_out})",
    )
    both(
        "attempts/s during the outage (mean / peak 1 s)",
        lambda f, r: f"{f.attempts_out / out_s:.1f} / {f.peak_out}",
    )
    both(
        "amplification, outage: attempts / first attempts",
        lambda f, r: ratio_text(f.attempts_out, f.first_out),
    )
    both(
        "amplification, outage: attempts / jobs submitted in it",
        lambda f, r: ratio_text(f.attempts_out, f.submitted_out),
    )
    both(
        "amplification, whole run: attempts / first attempts",
        lambda f, r: ratio_text(f.attempts, f.first),
    )
    both(
        "amplification, whole run: attempts / submitted job",
        lambda f, r: ratio_text(f.attempts, f.submitted),
    )
    both("completed", lambda f, r: str(f.completed))
    both("dead / failed for good", lambda f, r: dead_text(f))
    both("unfinished at the end", lambda f, r: str(f.unfinished))
    both("waiting at the end (retries parked for a budget token)", lambda f, r: str(f.waiting))
    both("submit -> completed p50/p99/max, all jobs", lambda f, r: latency_text(r, phases, False))
    both(
        "submit -> completed p50/p99/max, submitted in outage",
        lambda f, r: latency_text(r, phases, True),
    )
    both("start -> last job finished", lambda f, r: f"{r.run_s:.1f} s")
    header = ["figure", "naive (Celery-style autoretry)", "Janus"]
    print_grid(
        "Side by side (attempts = calls the dependency received, from its own log):",
        header,
        rows,
    )

    report = Report()
    d = janus_diag(janus, phases)
    f_out = jf.first_out
    amp = jf.attempts_out / f_out if f_out else math.inf
    floor = MPS * out_s / f_out if f_out else math.inf
    bound = 1 + RATIO + floor
    carried_term = d.carried_bound / f_out if f_out else math.inf
    report.section(
        f"Janus: retry budget ratio {RATIO:g} + {MPS:g}/s (window {WINDOW_S:g} s), circuit breaker"
    )
    report.add("first attempts during the outage (F)", str(f_out))
    report.add(f"floor = {MPS:g}/s x {out_s:g} s / F", f"{floor:.3f}")
    report.add(
        "outage amplification: attempts / first attempts",
        f"{amp:.3f}",
        f"<= 1 + {RATIO:g} + floor = {bound:.3f}",
        amp <= bound,
        binding=False,  # a goal: the budget may spend what the lead-in deposited (next rows)
    )
    report.add(
        "carried budget bound / F (test_outage.py's term)",
        f"{carried_term:.3f}",
    )
    report.add(
        "outage amplification, bound with the carried budget",
        f"{amp:.3f}",
        f"<= {bound:.3f} + {carried_term:.3f} = {bound + carried_term:.3f}",
        amp <= bound + carried_term,
    )
    whole_floor = MPS * d.release_span_s / jf.first if jf.first else math.inf
    whole = jf.attempts / jf.first if jf.first else math.inf
    report.add(
        "whole run amplification (budget starts empty)",
        f"{whole:.3f}",
        f"<= 1 + {RATIO:g} + {MPS:g}/s x {d.release_span_s:.1f} s / {jf.first} = "
        f"{1 + RATIO + whole_floor:.3f}",
        whole <= 1 + RATIO + whole_floor,
    )

    n_jobs, n_attempts, _ = cohort(naive, phases)
    per_job = n_attempts / n_jobs if n_jobs else 0.0
    report.section(f"naive baseline: {MAX_ATTEMPTS} attempts, full jitter, no budget, no circuit")
    report.add(
        f"attempts per job, first attempt >= {RAMP_S:.1f} s before outage end (n={n_jobs})",
        f"{per_job:.3f}",
        f">= {NAIVE_TARGET:g}",
        per_job >= NAIVE_TARGET,
    )
    # With full jitter the n-th retry comes on average sum(base * factor^k / 2) after the
    # first attempt; the outage's first seconds miss those retries (nothing failed before).
    missing = SUBMIT_RATE * sum(
        BACKOFF_BASE_S * BACKOFF_FACTOR**k / 2 * (MAX_ATTEMPTS - 1 - k)
        for k in range(MAX_ATTEMPTS - 1)
    )
    expected = MAX_ATTEMPTS - missing / nf.first_out if nf.first_out else 0.0
    report.add(
        "outage window: attempts / first attempts (informational)",
        ratio_text(nf.attempts_out, nf.first_out),
        f"~{expected:.3f} expected (ramp-up)",
    )
    steady = [c for c in naive.calls if phases.lead_s + RAMP_S <= c.t < phases.outage_end]
    steady_first = sum(1 for c in steady if c.attempt == 1)
    report.add(
        f"same, steady part of the outage (from +{RAMP_S:.1f} s)",
        ratio_text(len(steady), steady_first),
        f"~{MAX_ATTEMPTS} expected",
    )
    jn_jobs, jn_attempts, jn_in_out = cohort(janus, phases)
    report.notes.append(
        f"same cohort on the Janus side (first attempt >= {RAMP_S:.1f} s before the outage "
        f"ended): {jn_jobs} jobs, {jn_attempts / jn_jobs if jn_jobs else 0:.3f} attempts per "
        f"job over the whole run, {jn_in_out / jn_jobs if jn_jobs else 0:.3f} of them during "
        "the outage"
    )

    # ---- why Janus lands where it does
    deposits = RATIO * f_out + MPS * out_s
    report.notes.append(
        f"Janus budget: {d.carried_measured:.1f} tokens in the bucket when the outage began "
        f"(read from Redis; a priori bound {d.carried_bound:.1f} = {RATIO:g} x "
        f"{d.first_before_window} first attempts released before it + {MPS:g}/s x "
        f"{d.budget_age_s:.1f} s since the budget's first deposit); {jf.retry_out} retries "
        f"during the outage - {deposits:.1f} deposited during it ({RATIO:g} x {f_out} first "
        f"attempts + {MPS:g}/s x {out_s:g} s) = {jf.retry_out - deposits:+.1f} retries paid "
        f"from the balance carried in; {d.budget_at_end:.1f} tokens left when the outage "
        f"ended. Without a carried balance the outage amplification is at most {bound:.3f}; "
        f"with this one, at most {1 + (deposits + d.carried_measured) / f_out:.3f}"
        if f_out
        else "Janus budget: no first attempt during the outage"
    )
    if d.first_open_t is not None:
        close = (
            f"closed at t={d.close_t:.2f} s ({d.close_t - phases.outage_end:+.2f} s after the "
            "outage ended)"
            if d.close_t is not None
            else "never closed"
        )
        report.notes.append(
            f"Janus circuit: first opened at t={d.first_open_t:.2f} s "
            f"({d.first_open_t - phases.lead_s:.2f} s into the outage) after "
            f"{d.fails_before_open} failed attempts ({d.retries_before_open} of them retries); "
            f"opened {d.opens} time(s) in a row; it let {d.probes_out} probe(s) through during "
            f"the outage ({d.probe_first} first attempts, {d.probes_out - d.probe_first} "
            f"retries); {close}"
        )
    else:
        report.notes.append("Janus circuit: never opened")
    queued = max((s.queued for s in janus.samples), default=0)
    report.notes.append(
        f"Janus held up to {queued} jobs waiting (circuit open, budget waits): instead of "
        "failing during the outage they ran after it, hence the longer submit -> completed"
    )
    last_first = max((c.t for c in janus.calls if c.attempt == 1), default=0.0)
    idle = 0.0
    for prev, smp in zip(janus.samples, janus.samples[1:], strict=False):
        if prev.t > last_first and prev.queued and prev.budget >= 1 and prev.circuit == "closed":
            idle += smp.t - prev.t
    parked = max((s.parked for s in janus.samples), default=0)
    report.notes.append(
        f"Janus after the last first attempt (t={last_first:.1f} s) only retries waited; for "
        f"{idle:.1f} s of that time work waited while the circuit was closed and the budget "
        "held >= 1 token (time a token sat unused). Up to "
        f"{parked} retries were parked at once for want of a token; {jf.waiting} were still "
        f"parked when the run ended (they come back one per token, {MPS:g}/s once the "
        "producers stop: waiting is free and never dead-letters a job); "
        f"{jf.dead.get('dead:attempts_exhausted', 0)} used their {MAX_ATTEMPTS} attempts"
    )
    report.notes.append(
        "test_outage.py's carried term uses min_per_second x window (10 s) for the time part; "
        "here the budget is only as old as the lead-in, so its age is used (tighter)"
    )
    if janus.lease_lost:
        problems.append(f"janus: {janus.lease_lost} reports refused (LeaseLost)")
    if nf.first_out < 10 or jf.first_out < 10:
        problems.append("the outage saw too few first attempts to mean anything")
    return report, {"header": header, "rows": rows}


# --------------------------------------------------------------------------- main


def run(phases: Phases, quick: bool, json_path: str | None = None, no_fail: bool = False) -> int:
    logging.basicConfig(level=logging.ERROR)  # the doctor warns that the test server
    # has no persistence; that is deliberate here.
    started = time.monotonic()
    problems: list[str] = []
    with redis_under_test() as (url, pids):
        admin = Admin(list(pids))
        environment = [
            redis_line(admin, url),
            f"{python_text()}; machine: {machine_text(usable=False)}, "
            f"load average {load_text()} at start"
            + (" [--quick: shorter phases]" if quick else ""),
            f"scenario: lead-in {phases.lead_s:g} s healthy, outage {phases.outage_s:g} s (every "
            f"call -> 503), then healthy; {PRODUCERS} producers x {SUBMIT_RATE / PRODUCERS:g} "
            f"jobs/s for {phases.submit_s:g} s; {WORKERS} worker threads per side; "
            f"{SERVICE_S * 1000:g} ms per call; in-process dependency object per side",
            f"janus under test: {source_state()}",
        ]
        admin.close()
        for line in environment:
            log(line)
        log("naive baseline: Celery-style autoretry over a Redis list + ETA zset")
        naive = run_naive(url, phases, problems)
        log(f"naive done: {len(naive.calls)} attempts, run {naive.run_s:.1f} s")
        log("Janus: submit -> workers fetch (the release) and report; Janus decides retries")
        janus = run_janus(url, phases, problems)
        log(f"Janus done: {len(janus.calls)} attempts, run {janus.run_s:.1f} s")

    print_environment(environment)
    timeline(naive, janus, phases)
    print()
    report, side_by_side = report_results(naive, janus, phases, problems)
    report.notes.append(f"total run time {time.monotonic() - started:.1f} s")
    print()
    return conclude(
        "retry_storm",
        report,
        problems,
        json_path=json_path,
        no_fail=no_fail,
        quick=quick,
        environment=environment,
        figures={"side_by_side": side_by_side},
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main(
        "retry_storm",
        __doc__,
        argv,
        lambda args: run(QUICK if args.quick else FULL, args.quick, args.json, args.no_fail),
        quick_help="shorter phases: a smoke run",
    )


if __name__ == "__main__":
    sys.exit(main())
