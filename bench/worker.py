"""Worker benchmark: end-to-end throughput of submit -> fetch (release) -> report.

Run::

    .venv/bin/python bench/worker.py [--cluster] [--quick] [--json PATH] [--no-fail]

It starts ONE throwaway ``redis-server`` (or, with ``--cluster``, a 3-master cluster) through
:mod:`janus.testing`, never a Redis someone else runs, and a pool of 4 worker PROCESSES
(``multiprocessing`` with the ``spawn`` start method), started once and reused by every run.

**What is measured.** N jobs (100-byte payloads, 8 scopes) go through the whole life of a job
with a no-op handler, for 1, 2 and 4 worker processes (target: Janus / bare >= 0.7 at every
size; goal 0.8):

* the producer (the main process) calls ``Janus.submit_many`` with batches of 500 (one
  submit.lua call per batch) against a dependency whose limits never bind (rate 1e6/s, burst
  1e9, no ``max_in_flight``, ``max_wait`` 1d, lease 60s): every job is ``ready`` at submit
  and waits in its scope's ready line until a worker asks for it;
* each worker process loops ``jobs = w.fetch(count=50, block_ms=100)`` (one fetch.lua call:
  the release, the XADD to the group's stream, the XREADGROUP delivery and the lease start
  of up to 50 jobs, atomically), runs a no-op handler per job, then reports the whole batch
  in ONE call: ``w.report([w.completed(j) for j in jobs])`` (one report.lua call). That is
  what ``Worker.run`` does (fetch into free slots, batched reports), minus its thread pool
  and heartbeat thread: with a no-op handler and 60 s leases no heartbeat is ever sent. The
  workers are started (blocked waiting for work) before the first submit, and consume while
  the producer is still submitting.

**Throughput** = N / (last report - first submit), both read as Redis times from the job
records after the run: ``min(submitted_ms)`` and ``max(finished_ms)`` (HMGET through a
pipeline, only after the timed part). Each worker also notes its own clock after its last
report; the notes show that it agrees with ``finished_ms`` (Redis runs on this host, same
clock). **Latency** from the records: ``finished_ms - started_ms`` (release -> completed, per
job) and ``finished_ms - submitted_ms`` (submit -> completed, dominated by the backlog, since
one producer submits faster than the workers drain); no target. Nearest-rank percentiles,
all runs pooled. Also per run: first submit -> the first job in a worker's hands (the
worker's clock when its first non-empty fetch / XREADGROUP returned): how fast a waiting
worker notices work, which the span includes.

**Baseline** (same run, same Redis, same worker processes, same payloads and job ids): bare
Redis Streams, with the same shape and no handicap. The producer XADDs the same fields (id,
scope, cost, payload) through a redis-py pipeline (``transaction=False``), 500 XADDs per
round trip like one submit_many batch; each worker runs ``XREADGROUP COUNT 50 BLOCK 100``
then ONE ``XACK key group id1 id2 ...`` for the whole batch, like Janus's one report per
fetch. Its start time is the first entry id (Redis time at XADD); its end time is the
latest worker clock reading after an XACK (XACK leaves no timestamp in Redis). This is the
cheapest way to move the same jobs from one producer to competing consumers with
at-least-once delivery and the same round-trip shape (one per 500 submits, one per fetch of
50, one per batch of reports), so the ratio Janus / bare is what admission, fair queueing,
release-time limits, leases, fencing and job records cost end to end. The baseline has no
admission, no job record, no lease and no fence: it is a floor, not a competitor.
Informational variant: ``XACK`` + ``XDEL`` of the batch in one pipeline (report.lua also
deletes each entry, so the stream holds only running attempts).

Clients: Janus's own (``janus.store.connect``: hiredis parser, timeouts, retries) for both
sides, in every process. The three sides run in alternating order (bare, Janus, bare+XDEL)
within each round and for each worker count; 3 rounds, the median of each side is reported
(every run is listed in the notes). Figures per job: worker-process CPU (``process_time``),
producer CPU, Redis CPU (``INFO cpu``; also in the result table for both sides), and time
inside Redis per command (``INFO commandstats``). A last, single-process diagnostic phase
calls each script alone to show where a job's time goes (submit.lua, fetch.lua, report.lua
vs XADD, XREADGROUP, XACK).

The result table marks each ratio PASS or MISS against its target (>= 0.7; the goal, 0.8, is
shown in brackets and never fails the run). Exit status: 0 when every target is met, 1 when
one is missed (``--no-fail``: 0), 2 when the run itself failed; every figure is printed
first either way. The figures are also written as JSON (every table row with its verdict,
the notes, the exit status): to ``--json PATH``, else to
``bench-results/worker-<UTC time>.json`` under the current directory (see
``bench/_common.py``); the path is printed. All worker processes and every redis-server
started here are stopped on the way out.
"""

from __future__ import annotations

import gc
import logging
import math
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from _common import (
    Admin,
    Report,
    Stats,
    add_stats,
    bench_main,
    conclude,
    job_inputs,
    load_text,
    log,
    machine_text,
    parser_name,
    pct,
    print_environment,
    print_grid,
    python_text,
    redis_line,
    redis_under_test,
    stats_delta,
)
from janus import calls, scripts
from janus.client import Janus, Job
from janus.decisions import LeasedJob
from janus.keys import Keys
from janus.policy import parse_policy_text
from janus.store import AnyRedis, connect

PREFIX = "janusbench"
DEP = "work"
GROUP = "bench"
POLICY = f"""
dependencies:
  {DEP}:                  # limits that never bind: every job is ready at submit
    rate: 1000000
    burst: 1000000000
    max_wait: 1d
    lease: 60s
    scopes:
      default: {{rate: 1000000, burst: 1000000000}}
"""

SCOPES = [f"tenant-{i}" for i in range(8)]
BATCH = 500  # submit_many batch / XADDs per pipeline round trip
FETCH = 50  # count of each fetch / XREADGROUP
BLOCK_MS = 100
POOL = 4
WORKER_COUNTS = (1, 2, 4)
JANUS, BARE, BARE_DEL = "janus", "bare", "bare+xdel"
SIDES = (BARE, JANUS, BARE_DEL)  # the order within each round
LABEL = {
    JANUS: "Janus fetch + batched report",
    BARE: "bare XREADGROUP + one XACK per batch",
    BARE_DEL: "bare XREADGROUP + XACK/XDEL per batch",
}

#: Commands the clients send themselves (Janus's scripts' inner commands, XADD and
#: XREADGROUP included, show up in INFO commandstats too, inside FCALL's time: they are
#: not added again). An idle Janus worker waits with BLPOP on the dependency's work list.
TOP_LEVEL = {
    JANUS: ("fcall", "blpop"),
    BARE: ("xadd", "xreadgroup", "xack", "xdel"),
    BARE_DEL: ("xadd", "xreadgroup", "xack", "xdel"),
}

RATIO_TARGET = 0.7
RATIO_GOAL = 0.8


@dataclass(frozen=True)
class Sizes:
    jobs: int  # jobs per run
    rounds: int  # alternating rounds (each: every side for every worker count)
    diag: int  # jobs in the single-process diagnostic phase


FULL = Sizes(jobs=20000, rounds=3, diag=4000)
QUICK = Sizes(jobs=4000, rounds=3, diag=1000)


# --------------------------------------------------------------------------- small helpers


def machine_busy_s() -> float:
    """CPU seconds the whole machine (every CPU, every process) has been busy: /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def now_ms() -> int:
    """This host's wall clock in ms: the clock Redis reads too (same machine)."""
    return time.time_ns() // 1_000_000


def entry_ms(entry_id: bytes | str) -> int:
    raw = entry_id.encode() if isinstance(entry_id, str) else entry_id
    return int(raw.split(b"-", 1)[0])


def noop(job: object) -> None:
    """The handler: does nothing."""


# --------------------------------------------------------------------------- Redis plumbing


def bare_key() -> str:
    """The baseline's stream: same hash tag (same cluster slot) as the dependency's keys."""
    return Keys(PREFIX, DEP).base + ":barebench"


def read_entries(client: AnyRedis, key: str, consumer: str, block: int | None) -> list[Any]:
    """XREADGROUP of new entries: [(id, fields)] (RESP2 or RESP3 reply shape)."""
    reply: Any = client.xreadgroup(GROUP, consumer, {key: ">"}, count=FETCH, block=block)
    if not reply:
        return []
    return reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]


# --------------------------------------------------------------------------- worker processes


@dataclass
class WorkerOut:
    """What one worker process reports after one run."""

    index: int
    processed: int = 0
    last_ms: int = 0  # own clock after its last report / XACK
    first_ms: int = 0  # own clock when its first non-empty fetch / XREADGROUP returned
    cpu_s: float = 0.0  # process CPU time during the run
    reads: int = 0  # fetch / XREADGROUP calls
    empty_reads: int = 0
    lease_lost: int = 0  # Janus: outcomes the report refused
    latencies_ms: list[int] = field(default_factory=list)  # bare: entry id -> after XACK


def _janus_loop(
    jn: Janus, index: int, n: int, done: Any, abort: Any, results: Any, timeout_s: float
) -> WorkerOut:
    out = WorkerOut(index)
    worker = jn.worker(DEP, group=GROUP, consumer=f"bench-{index}")
    results.put(("armed", index, None))
    deadline = time.monotonic() + timeout_s
    cpu0 = time.process_time()
    total = 0
    while total < n and not abort.is_set():
        jobs = worker.fetch(count=FETCH, block_ms=BLOCK_MS)
        out.reads += 1
        if jobs:
            out.first_ms = out.first_ms or now_ms()
            for job in jobs:
                noop(job)
            refused = [r for r in worker.report([worker.completed(j) for j in jobs]) if not r.ok]
            out.lease_lost += len(refused)
            out.last_ms = now_ms()
            out.processed += len(jobs)
            with done.get_lock():
                done.value += len(jobs)
                total = done.value
        else:
            out.empty_reads += 1
            total = done.value
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {index}: run not finished after {timeout_s:.0f} s")
    out.cpu_s = time.process_time() - cpu0
    return out


def _bare_loop(
    client: AnyRedis,
    index: int,
    n: int,
    delete: bool,
    done: Any,
    abort: Any,
    results: Any,
    timeout_s: float,
) -> WorkerOut:
    out = WorkerOut(index)
    key, consumer = bare_key(), f"bench-{index}"
    results.put(("armed", index, None))
    deadline = time.monotonic() + timeout_s
    cpu0 = time.process_time()
    lat = out.latencies_ms
    total = 0
    pipe = client.pipeline(transaction=False)
    while total < n and not abort.is_set():
        entries = read_entries(client, key, consumer, BLOCK_MS)
        out.reads += 1
        if entries:
            out.first_ms = out.first_ms or now_ms()
            ids = [entry_id for entry_id, _fields in entries]
            for _entry_id, fields in entries:
                noop(fields[b"payload"])
            if delete:
                pipe.xack(key, GROUP, *ids)
                pipe.xdel(key, *ids)
                pipe.execute()
            else:
                client.xack(key, GROUP, *ids)
            out.last_ms = now_ms()
            lat.extend(out.last_ms - entry_ms(entry_id) for entry_id in ids)
            out.processed += len(entries)
            with done.get_lock():
                done.value += len(entries)
                total = done.value
        else:
            out.empty_reads += 1
            total = done.value
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {index}: run not finished after {timeout_s:.0f} s")
    out.cpu_s = time.process_time() - cpu0
    return out


def worker_main(index: int, url: str, cmds: Any, results: Any, done: Any, abort: Any) -> None:
    """A worker process: one Janus handle and one plain client, then run what it is told."""
    logging.basicConfig(level=logging.ERROR)
    try:
        jn = Janus.from_url(url, prefix=PREFIX)
        client = connect(url)  # the same client setup Janus uses
        client.ping()
        results.put(("ready", index, (os.getpid(), parser_name(client))))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))
        return
    try:
        while True:
            cmd = cmds.get()
            if cmd is None:
                return
            side, n, timeout_s = cmd
            gc.collect()
            try:
                if side == JANUS:
                    got = _janus_loop(jn, index, n, done, abort, results, timeout_s)
                else:
                    got = _bare_loop(
                        client, index, n, side == BARE_DEL, done, abort, results, timeout_s
                    )
                results.put(("done", index, got))
            except BaseException:
                results.put(("error", index, traceback.format_exc()))
    finally:
        jn.close()
        client.close()


class WorkerPool:
    """POOL spawned worker processes, reused by every run; a run uses the first k of them."""

    def __init__(self, url: str) -> None:
        ctx = mp.get_context("spawn")
        self.results: Any = ctx.Queue()
        self.done: Any = ctx.Value("q", 0)
        self.abort: Any = ctx.Event()
        self.cmds: list[Any] = [ctx.Queue() for _ in range(POOL)]
        self.procs = [
            ctx.Process(
                target=worker_main,
                args=(i, url, self.cmds[i], self.results, self.done, self.abort),
                name=f"bench-worker-{i}",
                daemon=True,
            )
            for i in range(POOL)
        ]
        self.pids: list[int] = []
        self.parsers: set[str] = set()

    def start(self) -> None:
        for p in self.procs:
            p.start()
        for _index, (pid, parser) in self._collect("ready", POOL, 60.0).items():
            self.pids.append(pid)
            self.parsers.add(parser)

    def _collect(self, kind: str, count: int, timeout_s: float) -> dict[int, Any]:
        got: dict[int, Any] = {}
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"worker processes: {len(got)}/{count} '{kind}' replies")
            try:
                what, index, payload = self.results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [p.name for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"worker process(es) died: {dead}") from None
                continue
            if what == "error":
                raise RuntimeError(f"worker {index} failed:\n{payload}")
            if what != kind:
                raise RuntimeError(f"worker {index}: expected '{kind}', got '{what}'")
            got[index] = payload
        return got

    def arm(self, side: str, workers: int, n: int, timeout_s: float) -> None:
        """Reset the shared counter and start ``workers`` loops; returns once all block."""
        self.done.value = 0
        for i in range(workers):
            self.cmds[i].put((side, n, timeout_s))
        self._collect("armed", workers, 30.0)

    def finish(self, workers: int, timeout_s: float) -> list[WorkerOut]:
        got = self._collect("done", workers, timeout_s)
        return [got[i] for i in sorted(got)]

    def close(self) -> None:
        self.abort.set()
        for c in self.cmds:
            with suppress(OSError, ValueError):
                c.put(None)
        for p in self.procs:
            if p.pid is None:
                continue
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
        for q in [*self.cmds, self.results]:
            q.close()
            q.join_thread()


# --------------------------------------------------------------------------- one timed run


@dataclass
class RunResult:
    side: str
    workers: int
    round: int
    rate: float  # jobs/s from Redis times
    span_ms: int
    wall_s: float  # main process: first submit -> every worker reported (informational)
    producer_cpu_s: float  # main process while submitting
    worker_cpu_s: float
    redis_cpu_s: float
    other_cpu_s: float  # every CPU of the machine, minus ours: other processes' load
    server: Stats
    latencies_ms: list[int]  # Janus: release -> completed; bare: XADD -> after XACK
    submit_latencies_ms: list[int] = field(default_factory=list)  # Janus: submit -> completed
    clock_skew_ms: int = 0  # Janus: max worker clock after report - max(finished_ms)
    first_start_ms: int = 0  # first submit / XADD -> first job in a worker's hands
    reads: int = 0
    empty_reads: int = 0


@dataclass
class Bench:
    jn: Janus
    client: AnyRedis
    admin: Admin
    pool: WorkerPool
    n: int
    problems: list[str] = field(default_factory=list)

    def reset(self) -> None:
        """Drop the baseline's stream (its group goes with it); the next run starts clean.
        Janus's group stream is left as it is: every report deletes its entry, so it is
        empty between runs (checked in :meth:`cleanup`)."""
        self.client.delete(bare_key())

    def run(self, side: str, workers: int, n: int, rnd: int) -> RunResult:
        self.reset()
        key = bare_key()
        if side != JANUS:
            self.client.xgroup_create(key, GROUP, id="0", mkstream=True)
        ids, payloads = job_inputs(n)
        jobs = [
            Job(scope=SCOPES[i % len(SCOPES)], payload=payloads[i], job_id=ids[i]) for i in range(n)
        ]
        timeout_s = max(60.0, n / 200)
        self.pool.arm(side, workers, n, timeout_s)
        before, cpu_before = self.admin.commandstats(), self.admin.cpu_s()
        gc.collect()
        first_ms = 0
        machine0 = machine_busy_s()
        t0, c0 = time.perf_counter(), time.process_time()
        if side == JANUS:
            decisions = self.jn.submit_many(DEP, jobs)
        else:
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, n, BATCH):
                for i in range(start, min(start + BATCH, n)):
                    pipe.xadd(
                        key,
                        {"id": ids[i], "scope": jobs[i].scope, "cost": 1, "payload": payloads[i]},
                    )
                written = pipe.execute()
                if start == 0:
                    first_ms = entry_ms(written[0])
        producer_cpu = time.process_time() - c0
        outs = self.pool.finish(workers, timeout_s + 10)
        wall, main_cpu = time.perf_counter() - t0, time.process_time() - c0
        machine = machine_busy_s() - machine0
        after, cpu_after = self.admin.commandstats(), self.admin.cpu_s()
        # ---- untimed from here: checks and read-back
        processed = sum(o.processed for o in outs)
        if processed != n:
            self.problems.append(f"{side} x{workers}: workers processed {processed} of {n}")
        last_worker_ms = max(o.last_ms for o in outs)
        result = RunResult(
            side=side,
            workers=workers,
            round=rnd,
            rate=0.0,
            span_ms=0,
            wall_s=wall,
            producer_cpu_s=producer_cpu,
            worker_cpu_s=sum(o.cpu_s for o in outs),
            redis_cpu_s=cpu_after - cpu_before,
            other_cpu_s=max(
                0.0, machine - main_cpu - sum(o.cpu_s for o in outs) - (cpu_after - cpu_before)
            ),
            server=stats_delta(after, before),
            latencies_ms=[],
            reads=sum(o.reads for o in outs),
            empty_reads=sum(o.empty_reads for o in outs),
        )
        if side == JANUS:
            if any(d.status != "ready" or not d.created for d in decisions):
                self.problems.append(f"janus x{workers}: not every job was ready at submit")
            lost = sum(o.lease_lost for o in outs)
            if lost:
                self.problems.append(f"janus x{workers}: {lost} outcomes refused (lease lost)")
            first_ms, last_ms, lat, sub_lat = self.read_records(ids, workers)
            result.clock_skew_ms = last_worker_ms - last_ms
            result.submit_latencies_ms = sub_lat
            self.cleanup(ids)
        else:
            last_ms = last_worker_ms
            lat = [x for o in outs for x in o.latencies_ms]
        starts = [o.first_ms for o in outs if o.first_ms]
        result.first_start_ms = min(starts) - first_ms if starts else -1
        result.span_ms = max(1, last_ms - first_ms)
        result.rate = n / (result.span_ms / 1000)
        result.latencies_ms = lat
        return result

    def read_records(self, ids: list[str], workers: int) -> tuple[int, int, list[int], list[int]]:
        """From the job records: min submitted_ms, max finished_ms, and per job started ->
        finished and submitted -> finished."""
        k = Keys(PREFIX, DEP)
        first, last = math.inf, 0
        lat: list[int] = []
        sub_lat: list[int] = []
        bad = 0
        for start in range(0, len(ids), 1000):
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids[start : start + 1000]:
                pipe.hmget(k.job(job_id), "status", "submitted_ms", "started_ms", "finished_ms")
            for status, submitted, started, finished in pipe.execute():
                if status != b"completed" or finished is None or started is None:
                    bad += 1
                    continue
                first = min(first, int(submitted))
                last = max(last, int(finished))
                lat.append(int(finished) - int(started))
                sub_lat.append(int(finished) - int(submitted))
        if bad:
            self.problems.append(f"janus x{workers}: {bad} job records not completed")
        if lat and first is not math.inf:
            return int(first), last, lat, sub_lat
        raise RuntimeError("no completed job record found")

    def cleanup(self, ids: list[str]) -> None:
        k = Keys(PREFIX, DEP)
        for start in range(0, len(ids), 1000):
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids[start : start + 1000]:
                pipe.unlink(k.job(job_id))
            pipe.execute()
        left = self.client.zcard(k.inflight)
        if left:
            self.problems.append(f"{left} jobs still in the in-flight set after a run")
        entries = self.client.xlen(k.stream(GROUP))
        if entries:
            self.problems.append(f"{entries} entries left on Janus's group stream after a run")


# --------------------------------------------------------------------------- diagnostics


@dataclass
class Step:
    """One single-process diagnostic step: per-unit wall, client CPU and Redis figures."""

    name: str
    units: int
    wall_s: float
    cpu_s: float
    server: Stats

    def per(self, value: float) -> float:
        return value / self.units if self.units else float("nan")


@contextmanager
def step(admin: Admin, name: str, units: int, into: list[Step]) -> Iterator[None]:
    gc.collect()
    before = admin.commandstats()
    t0, c0 = time.perf_counter(), time.process_time()
    yield
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    into.append(Step(name, units, wall, cpu, stats_delta(admin.commandstats(), before)))


def diagnose(bench: Bench, n: int) -> list[Step]:
    """Each stage alone, in this process, no concurrency: where one job's time goes.
    Figures are per job; fetches and reports go FETCH jobs per call, as in the timed runs."""
    jn, client, admin = bench.jn, bench.client, bench.admin
    steps: list[Step] = []
    bench.reset()
    ids, payloads = job_inputs(n)
    jobs = [
        Job(scope=SCOPES[i % len(SCOPES)], payload=payloads[i], job_id=ids[i]) for i in range(n)
    ]
    with step(admin, "submit_many (submit.lua, 500 per call)", n, steps):
        jn.submit_many(DEP, jobs)
    worker = jn.worker(DEP, group=GROUP, consumer="diag")
    batches: list[list[LeasedJob]] = []
    with step(admin, f"fetch (fetch.lua, {FETCH} per call)", n, steps):
        fetched = 0
        while fetched < n:
            got = worker.fetch(count=FETCH, block_ms=None)
            if not got:
                break
            batches.append(got)
            fetched += len(got)
    if fetched != n:
        bench.problems.append(f"diagnostic: fetched {fetched} of {n} jobs")
    half = len(batches) // 2
    units = sum(map(len, batches[:half]))
    with step(admin, f"report (report.lua, {FETCH} per call)", units, steps):
        for batch in batches[:half]:
            worker.report([worker.completed(j) for j in batch])
    # The other half: FCALL of the report function with calls built beforehand
    # (janus.calls), so the difference in client CPU is Janus's Python around the call
    # (validation, building the outcomes and arguments, parsing the reply). Sent on Janus's
    # own client (the library is loaded there; its cluster client routes FCALL by key).
    report_fn = scripts.function_name("report")
    keys = jn.store.keys(DEP)
    prebuilt = [calls.report(keys, [worker.completed(j) for j in b], None) for b in batches[half:]]
    units = sum(map(len, batches[half:]))
    janus_client = jn.store.client
    label = f"FCALL {report_fn} (report.lua), {FETCH} per call, args pre-built"
    with step(admin, label, units, steps):
        for c in prebuilt:
            reply = janus_client.fcall(report_fn, len(c.keys), *c.keys, *c.args)
            if not all(r.ok for r in c.parse(reply)):
                bench.problems.append("diagnostic: a raw report.lua call refused an outcome")
                break
    bench.cleanup(ids)

    key = bare_key()
    client.xgroup_create(key, GROUP, id="0", mkstream=True)
    with step(admin, "XADD pipeline (500 per round trip)", n, steps):
        pipe = client.pipeline(transaction=False)
        for start in range(0, n, BATCH):
            for i in range(start, min(start + BATCH, n)):
                pipe.xadd(
                    key,
                    {"id": ids[i], "scope": jobs[i].scope, "cost": 1, "payload": payloads[i]},
                )
            pipe.execute()
    reads: list[list[Any]] = []
    with step(admin, f"XREADGROUP COUNT {FETCH}", n, steps):
        got_n = 0
        while got_n < n:
            got = read_entries(client, key, "diag", None)
            if not got:
                break
            reads.append(got)
            got_n += len(got)
    half = len(reads) // 2
    with step(admin, f"XACK of {FETCH} ids", sum(map(len, reads[:half])), steps):
        for entries in reads[:half]:
            client.xack(key, GROUP, *(e[0] for e in entries))
    with step(admin, f"XACK + XDEL of {FETCH} ids, pipelined", sum(map(len, reads[half:])), steps):
        pipe = client.pipeline(transaction=False)
        for entries in reads[half:]:
            ids_ = [e[0] for e in entries]
            pipe.xack(key, GROUP, *ids_)
            pipe.xdel(key, *ids_)
            pipe.execute()
    bench.reset()
    return steps


# --------------------------------------------------------------------------- main


def server_us(server: Stats, *names: str) -> int:
    return sum(server.get(name, (0, 0))[1] for name in names)


def run(
    cluster: bool,
    sizes: Sizes,
    quick: bool,
    json_path: str | None = None,
    no_fail: bool = False,
) -> int:
    logging.basicConfig(level=logging.ERROR)  # the doctor warns that the test server
    # has no persistence; that is deliberate here.
    started = time.monotonic()
    report = Report()
    results: list[RunResult] = []
    with redis_under_test(cluster) as (url, pids):
        admin = Admin(list(pids))
        jn = Janus.from_url(url, prefix=PREFIX, batch_size=BATCH)
        client = connect(url)  # the baseline's client: same setup as Janus's own
        jn.apply_policies(parse_policy_text(POLICY, "<bench policy>"))
        pool = WorkerPool(url)
        bench = Bench(jn, client, admin, pool, sizes.jobs)
        try:
            log("starting redis-server and 4 worker processes (spawn)")
            pool.start()
            parsers = {parser_name(jn.store.client), parser_name(client)} | pool.parsers
            hiredis_on = parsers == {"_HiredisParser"}
            environment = [
                redis_line(admin, url, cluster),
                f"hiredis active: {'yes' if hiredis_on else 'NO'} (reply parser(s) "
                f"{', '.join(sorted(parsers))}, producer and all worker processes); "
                f"{python_text()}",
                f"machine: {machine_text()}, load average {load_text()} at start"
                + (" [--quick: smaller N]" if quick else ""),
                f"method: workers loop jobs = fetch(count={FETCH}, block_ms={BLOCK_MS}), a no-op "
                "handler per job, then ONE report([completed(j) ...]) per batch (Worker.run's "
                f"calls, minus its threads); bare: XREADGROUP COUNT {FETCH} BLOCK {BLOCK_MS}, "
                "then ONE XACK of the batch; Janus jobs/s from job records (min submitted_ms "
                "-> max finished_ms), bare from the first XADD id -> last XACK (worker clock); "
                f"{sizes.rounds} alternating rounds, median reported",
                f"processes: producer pid {os.getpid()}, workers "
                f"{', '.join(map(str, pool.pids))}, redis {', '.join(map(str, pids.values()))}",
            ]
            for line in environment:
                log(line)

            log("warm-up: one small run of each side, 4 workers (not counted)")
            for side in SIDES:
                bench.run(side, POOL, min(2000, sizes.jobs), -1)
            for rnd in range(sizes.rounds):
                for workers in WORKER_COUNTS:
                    for side in SIDES:
                        res = bench.run(side, workers, sizes.jobs, rnd)
                        results.append(res)
                        log(
                            f"round {rnd + 1}/{sizes.rounds}, {workers} worker(s), "
                            f"{side:<9}: {res.rate:8,.0f} jobs/s  "
                            f"(span {res.span_ms} ms, wall {res.wall_s:.2f} s)"
                        )
            log(f"diagnostic: each stage alone in one process, {sizes.diag} jobs")
            steps = diagnose(bench, sizes.diag)
        finally:
            pool.close()
            jn.close()
            client.close()
            admin.close()
    alive = [p.pid for p in pool.procs if p.is_alive()]
    if alive:
        bench.problems.append(f"worker processes still alive: {alive}")
    figures = report_results(report, results, sizes)
    report.notes.append(f"total run time {time.monotonic() - started:.1f} s")

    print_environment(environment)
    print_breakdown(results, steps)
    print()
    return conclude(
        "worker",
        report,
        bench.problems,
        json_path=json_path,
        no_fail=no_fail,
        quick=quick,
        environment=environment,
        figures={
            "jobs_per_run": sizes.jobs,
            "rounds": sizes.rounds,
            "ratio_target": RATIO_TARGET,
            "ratio_goal": RATIO_GOAL,
            "by_workers": figures,
            "diagnostic": [step_figures(s) for s in steps],
        },
        cluster=cluster,
    )


def median_of(results: list[RunResult], side: str, workers: int) -> tuple[float, list[RunResult]]:
    runs = [r for r in results if r.side == side and r.workers == workers]
    return statistics.median(r.rate for r in runs), runs


def jobs_of(runs: list[RunResult]) -> float:
    return sum(r.rate * r.span_ms / 1000 for r in runs)


def redis_cpu_us(runs: list[RunResult]) -> float:
    """Redis CPU (INFO cpu, user + sys) per job, over all the runs given, in µs."""
    return sum(r.redis_cpu_s for r in runs) / jobs_of(runs) * 1e6


def report_results(
    report: Report, results: list[RunResult], sizes: Sizes
) -> dict[str, dict[str, Any]]:
    """Fill the result table; returns the same figures per worker count (for the JSON)."""
    other = sum(r.other_cpu_s for r in results) / sum(r.wall_s for r in results)
    report.notes.append(
        f"other processes on this machine used {other * 100:.0f}% of one core on average "
        f"during the timed runs (of {os.cpu_count()} cores); per-run figures above"
    )
    out: dict[str, dict[str, Any]] = {}
    ratios: list[float] = []
    for workers in WORKER_COUNTS:
        janus, janus_runs = median_of(results, JANUS, workers)
        bare, bare_runs = median_of(results, BARE, workers)
        bare_del, del_runs = median_of(results, BARE_DEL, workers)
        plural = "es" if workers > 1 else ""
        report.section(
            f"{workers} worker process{plural}, {sizes.jobs} jobs/run, median of {sizes.rounds}"
        )
        report.add(f"{LABEL[BARE]} (baseline)", f"{bare:,.0f} jobs/s")
        report.add(LABEL[JANUS], f"{janus:,.0f} jobs/s")
        ratio = janus / bare
        ratios.append(ratio)
        report.add(
            "Janus / bare",
            f"{ratio:.2f}",
            f">= {RATIO_TARGET} (goal {RATIO_GOAL})",
            ok=ratio >= RATIO_TARGET,
        )
        cpu = {
            side: redis_cpu_us(runs)
            for side, runs in ((JANUS, janus_runs), (BARE, bare_runs), (BARE_DEL, del_runs))
        }
        report.add("Redis CPU per job, Janus (all runs)", f"{cpu[JANUS]:.1f} µs")
        report.add("Redis CPU per job, bare (all runs)", f"{cpu[BARE]:.1f} µs")
        report.add("Redis CPU per job, Janus / bare", f"{cpu[JANUS] / cpu[BARE]:.2f}")
        lat = [x for r in janus_runs for x in r.latencies_ms]
        sub = [x for r in janus_runs for x in r.submit_latencies_ms]
        blat = [x for r in bare_runs for x in r.latencies_ms]
        report.add(
            "Janus release -> completed p50 / p99 (all runs)",
            f"{pct(lat, 50):.0f} / {pct(lat, 99):.0f} ms",
        )
        report.add(
            "Janus submit -> completed p50 / p99 (backlog)",
            f"{pct(sub, 50):.0f} / {pct(sub, 99):.0f} ms",
        )
        report.add(
            "bare XADD -> XACK p50 / p99 (worker clock)",
            f"{pct(blat, 50):.0f} / {pct(blat, 99):.0f} ms",
        )
        report.add(
            "first submit -> first job in a worker's hands, Janus / bare (median)",
            f"{statistics.median(r.first_start_ms for r in janus_runs):.0f} / "
            f"{statistics.median(r.first_start_ms for r in bare_runs):.0f} ms",
        )
        report.add(f"{LABEL[BARE_DEL]} (informational)", f"{bare_del:,.0f} jobs/s")
        report.add("Janus / bare with XDEL", f"{janus / bare_del:.2f}")
        report.add("Redis CPU per job, bare with XDEL", f"{cpu[BARE_DEL]:.1f} µs")
        for side, runs in ((JANUS, janus_runs), (BARE, bare_runs), (BARE_DEL, del_runs)):
            report.notes.append(
                f"{workers}w {side} runs (jobs/s): " + ", ".join(f"{r.rate:,.0f}" for r in runs)
            )
        skew = [r.clock_skew_ms for r in janus_runs]
        report.notes.append(
            f"{workers}w Janus: worker clock after last report - max(finished_ms): "
            + ", ".join(f"{s:+d}" for s in skew)
            + " ms (Redis and workers read the same clock)"
        )
        out[str(workers)] = {
            "jobs_per_s": {JANUS: janus, BARE: bare, BARE_DEL: bare_del},
            "runs_jobs_per_s": {
                side: [r.rate for r in runs]
                for side, runs in ((JANUS, janus_runs), (BARE, bare_runs), (BARE_DEL, del_runs))
            },
            "ratio": ratio,
            "ratio_pass": ratio >= RATIO_TARGET,
            "ratio_xdel": janus / bare_del,
            "redis_cpu_us_per_job": cpu,
            "janus_release_to_completed_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99)},
            "janus_submit_to_completed_ms": {"p50": pct(sub, 50), "p99": pct(sub, 99)},
            "bare_xadd_to_xack_ms": {"p50": pct(blat, 50), "p99": pct(blat, 99)},
            "first_submit_to_first_start_ms": {
                JANUS: [r.first_start_ms for r in janus_runs],
                BARE: [r.first_start_ms for r in bare_runs],
            },
        }
    worst = min(ratios)
    report.section("summary")
    report.add(
        "Janus / bare, worst of 1, 2, 4 workers",
        f"{worst:.2f}",
        f">= {RATIO_TARGET}",
        ok=worst >= RATIO_TARGET,
    )
    report.add(
        "Janus / bare, worst of 1, 2, 4 workers (goal)",
        f"{worst:.2f}",
        f">= {RATIO_GOAL} (goal)",
        ok=worst >= RATIO_GOAL,
        binding=False,
    )
    return out


def step_figures(s: Step) -> dict[str, Any]:
    lua = "lua" in s.name
    top = TOP_LEVEL[JANUS if lua else BARE]
    inside = s.per(server_us(s.server, *top))
    inner = {n: v for n, v in s.server.items() if n not in (*top, "info")} if lua else {}
    return {
        "stage": s.name,
        "units": s.units,
        "wall_us_per_job": s.per(s.wall_s) * 1e6,
        "client_cpu_us_per_job": s.per(s.cpu_s) * 1e6,
        "in_redis_us_per_job": inside,
        # Inside a script: what its commands took, and the rest of FCALL's time (the Lua
        # itself and the cost of each redis.call around the command).
        "script_calls_per_job": s.per(sum(c for c, _u in inner.values())) if lua else None,
        "script_commands_us_per_job": s.per(sum(u for _c, u in inner.values())) if lua else None,
        "commands": {name: {"calls": c, "usec": u} for name, (c, u) in s.server.items()},
    }


def print_breakdown(results: list[RunResult], steps: list[Step]) -> None:
    """Per job, summed over the runs of each side: CPU of each party and time inside Redis."""
    rows: list[list[str]] = []
    for workers in WORKER_COUNTS:
        for side in SIDES:
            runs = [r for r in results if r.side == side and r.workers == workers]
            jobs = jobs_of(runs)
            span_s = sum(r.span_ms for r in runs) / 1000
            wall_s = sum(r.wall_s for r in runs)
            server: Stats = {}
            for r in runs:
                add_stats(server, r.server)
            inside = server_us(server, *TOP_LEVEL[side])
            busy_reads = sum(r.reads - r.empty_reads for r in runs)
            rows.append(
                [
                    f"{workers}w {side}",
                    f"{sum(r.worker_cpu_s for r in runs) / jobs * 1e6:.1f}",
                    f"{sum(r.producer_cpu_s for r in runs) / jobs * 1e6:.1f}",
                    f"{redis_cpu_us(runs):.1f}",
                    f"{inside / jobs:.1f}",
                    f"{sum(r.redis_cpu_s for r in runs) / span_s * 100:.0f}%",
                    f"{(sum(r.worker_cpu_s + r.producer_cpu_s for r in runs)) / span_s * 100:.0f}%",
                    f"{sum(r.other_cpu_s for r in runs) / wall_s * 100:.0f}%",
                    f"{jobs / busy_reads:.1f}" if busy_reads else "-",
                ]
            )
    print_grid(
        "Where the time goes in the timed runs (per job, all rounds; µs unless %):",
        [
            "run",
            "worker CPU",
            "producer CPU",
            "Redis CPU",
            "in Redis cmds",
            "Redis busy",
            "clients busy",
            "other procs",
            "jobs/fetch",
        ],
        rows,
    )
    print(
        "  'in Redis cmds': INFO commandstats usec of FCALL + BLPOP (Janus: submit, fetch "
        "and report scripts; idle workers' waits) or of XADD + XREADGROUP + XACK (+ XDEL); "
        "'Redis busy' / 'clients busy': CPU seconds per second of the span (100% = one core "
        f"of {os.cpu_count()}); 'other procs': CPU used by processes not in this benchmark "
        "(/proc/stat minus ours), per second of the run: load that competes for the cores."
    )
    print()
    rows = []
    details: list[str] = []
    for s in steps:
        fig = step_figures(s)
        inner = ", ".join(
            f"{name} {n_calls / s.units:.2g}x {usec / s.units:.2f}"
            for name, (n_calls, usec) in sorted(s.server.items(), key=lambda kv: -kv[1][1])
        )
        cmds, calls_n = fig["script_commands_us_per_job"], fig["script_calls_per_job"]
        rows.append(
            [
                s.name,
                f"{fig['wall_us_per_job']:.1f}",
                f"{fig['client_cpu_us_per_job']:.1f}",
                f"{fig['in_redis_us_per_job']:.1f}",
                f"{s.per((s.wall_s - s.cpu_s) * 1e6) - fig['in_redis_us_per_job']:.1f}",
                "-" if cmds is None else f"{calls_n:.1f}",
                "-" if cmds is None else f"{cmds:.1f}",
                "-" if cmds is None else f"{fig['in_redis_us_per_job'] - cmds:.1f}",
            ]
        )
        details.append(f"  {s.name}: {inner}")
    print_grid(
        "Each stage alone (one process, no concurrency; µs per job):",
        [
            "stage",
            "wall",
            "client CPU",
            "in Redis",
            "wait - Redis",
            "redis.calls",
            "in them",
            "Lua + call cost",
        ],
        rows,
    )
    print(
        "  'wall' = client CPU + waiting; 'wait - Redis' = waiting not spent running the "
        "command in Redis (socket, scheduling, Redis event loop). For a script: 'redis.calls' "
        "per job, the time 'in them' (their own commandstats usec) and the rest of the "
        "script's time ('Lua + call cost': the Lua code and each redis.call's own overhead). "
        "The commands Redis ran per stage (calls and µs per job):"
    )
    for line in details:
        print(line)


def main(argv: list[str] | None = None) -> int:
    return bench_main(
        "worker",
        __doc__,
        argv,
        lambda args: run(
            args.cluster, QUICK if args.quick else FULL, args.quick, args.json, args.no_fail
        ),
        quick_help="~5x smaller N: a smoke run",
        cluster=True,
    )


if __name__ == "__main__":
    sys.exit(main())
