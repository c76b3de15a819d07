"""Admission benchmark: what one Janus decision costs compared with what Redis itself costs.

Run::

    .venv/bin/python bench/admission.py [--cluster] [--quick]

It starts ONE throwaway ``redis-server`` (or, with ``--cluster``, a 3-master cluster) through
:mod:`janus.embedded`, never a Redis someone else runs, and measures against that same server:

1. **PING round trip** (median, p99). Every Redis client call pays at least this: Python's
   redis-py command path, the socket write, the server's event loop, the socket read and the
   reply parser. The client is Janus's own (``jn.store.client``, made by
   :func:`janus.store.connect`): same object, same pool, same hiredis parser, timeouts and
   retry policy as every submit (every probe below uses it too). In cluster mode the PING
   goes to the node that owns the dependency's slot, through the same ``RedisCluster``
   routing code.
   This is the floor: no remote call can beat one round trip on the same client. The bench
   also samples which CPU the client and the server last ran on (``/proc/PID/stat``): on a
   small VM a round trip between two vCPUs can cost 2-3x one on a shared vCPU, which moves
   every ratio against PING, so the table says which case the run got.

2. **Single submit latency** (median, p99) of ``Janus.submit`` for a job that is ``ready`` at
   once (rate 1e6/s, burst 1e9: the validator's ceilings; it joins its scope's ready line)
   and, separately, for a job that is ``scheduled`` (scope rate 1/s, ``max_wait`` 1d), which
   also writes the delay queue. Janus generates each job id (uuid4), as a producer calling
   ``submit(...)`` would. Ratio = submit median / PING median: one submit is one round trip
   by design, so the ratio is the price of the admission decision itself (client-side
   validation and parsing plus the Lua run time in Redis). Nothing is released at submit.

   To show where that price goes (section 2b, informational), the same alternating blocks
   also time: ``EVALSHA`` of ``return 1`` (bare, and with a submit's keys + args: the
   cost of the call shape alone), ``EVALSHA`` of submit.lua with pre-built arguments
   (:func:`janus.calls.submit`, no Janus Python at call time) and ``Janus.submit`` over a
   stub client that answers ``evalsha`` with a canned reply (Janus's and redis-py's Python
   without the network). ``INFO commandstats`` deltas around each block give the time spent
   inside Redis per call, and which commands the script runs. PING, both submits and these
   probes run in alternating blocks (10 rounds of each), so load spikes on the machine hit
   all of them alike.

3. **submit_many throughput** (jobs/s), 100-byte payloads, Janus's default batch of 500, vs a
   raw redis-py pipeline (``transaction=False``) of plain ``XADD`` of the same payloads and
   the same caller-chosen ids, 500 commands per round trip, to a stream in the dependency's
   own hash slot. That pipeline is the cheapest way to append the same data to Redis
   without any admission at all (one round trip per 500 entries, no Lua), so the ratio is
   the throughput kept once every job is rate-checked, recorded and queued. The two runs
   alternate three times; the best run of each is reported (all runs are printed), with
   wall time and time inside Redis (``INFO commandstats``) per job for both.

4. **Due work reaches a waiting worker.** Releases happen when a worker fetches, so what
   matters is how late a job that is due at T is *started*: a coordinator runs in a
   background thread (the timer: it moves due work and wakes one idle worker) and two worker
   threads loop ``fetch(count=50, block_ms=1000)`` (blocked waiting for work between jobs),
   reporting each batch at once. Jobs from several scopes (rate 50/s, burst 2: each scope's
   jobs due about 20 ms apart) arrive in waves over ~5 s, with idle gaps that let the
   coordinator and the workers go fully idle, and with a slow scope that leaves the
   coordinator asleep on a far-away deadline, so both wake paths (the ``wake`` list cutting
   an idle sleep and one cutting a timed sleep) are exercised. Lateness = ``started_ms`` of
   the attempt (``LeasedJob.started_ms``: the stream entry id, Redis ms at release) -
   ``decision.not_before_ms``, over every job whose decision was ``scheduled`` (``ready``
   jobs are started at once and not counted). Both sides are Redis clock readings in whole
   ms (release floored, not_before rounded up), so +/-1 ms is quantisation. Lateness is also
   broken down by a job's position in its scope's wave: later positions add whatever the
   release-time scope bucket re-spaces. Target p99 <= 10 ms. Then the queue stays empty and
   the commands sent while idle are counted from ``INFO commandstats`` deltas (EVALSHA +
   BLPOP, summed over nodes): first with the two workers still waiting (everything), then
   with the coordinator alone.

5. **Coordinator cost while retries wait on the retry budget.** 300 jobs fail their first
   attempt; their retries (retry budget: ratio 0, 10 tokens/s) are parked for want of a
   token, and come back one per token. A worker thread waits in ``fetch`` and completes
   each retry it gets. Over a window while ~250 or more retries stay parked, the
   coordinator's script calls (``step.lua``, counted by a :class:`CountingStore` under it)
   and its watcher's BLPOPs per second are compared with the releases per second (retries
   started, by ``started_ms``). Target: script calls/s <= releases/s + 2 (a parked retry
   costs nothing while it waits and one step per token, not a loop).

Latencies use ``time.perf_counter_ns`` around each call; percentiles are nearest-rank. The
result table marks each figure PASS or MISS against its target; a MISS still exits 0 (this is
a benchmark, not a test), any failure of the run itself exits non-zero.
"""

from __future__ import annotations

import gc
import logging
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

from redis.cluster import RedisCluster as ClusterClient
from redis.commands.core import Script

from _common import (
    PAYLOAD,
    Admin,
    Report,
    Stats,
    add_delta,
    bench_main,
    delta,
    finish,
    job_inputs,
    log,
    machine_text,
    parser_name,
    pct,
    print_environment,
    python_text,
    redis_line,
    redis_under_test,
)
from janus import calls
from janus.calls import Call, JobArgs
from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import Decision, LeasedJob
from janus.keys import Keys
from janus.policy import parse_policy_text
from janus.store import AnyRedis, Store
from janus.worker import Worker

PREFIX = "janusbench"
FAST, SCHED, BULK, LATE, PARK = "fast", "sched", "bulk", "late", "park"

POLICY = """
dependencies:
  fast:                  # every job ready at submit
    rate: 1000000
    burst: 1000000000
    max_wait: 1d
    scopes:
      default: {rate: 1000000, burst: 1000000000}
  sched:                 # every job after the first scheduled (delay queue written)
    rate: 1000000
    burst: 1000000000
    max_wait: 1d
    scopes:
      default: {rate: 1, burst: 1}
  bulk:                  # submit_many throughput
    rate: 1000000
    burst: 1000000000
    max_wait: 1d
    scopes:
      default: {rate: 1000000, burst: 1000000000}
  late:                  # due work reaching a waiting worker: each scope's jobs 20 ms apart
    rate: 1000000
    burst: 1000000000
    max_wait: 1m
    scopes:
      # burst 2, not 1: with burst 1 the per-scope bound (checked again at release) leaves
      # no slack, so any delay of one release carries over to the scope's next job and
      # lateness adds up along a backlog; one job of slack absorbs the wake-up jitter.
      default: {rate: 50, burst: 2}
      slow: {rate: 2, burst: 1}
  park:                  # retries parked on the retry budget: one token per 100 ms
    rate: 1000000
    burst: 1000000000
    max_wait: 1h
    lease: 1m
    retry:
      max_attempts: 3
      backoff: {base: 1ms, max: 1ms, jitter: none}
      retry_on: [http_5xx]
      budget: {ratio: 0, min_per_second: 10, window: 10s}
"""

BLOCKS = 10
BATCH = 500
BULK_SCOPES = [f"tenant-{i}" for i in range(8)]
LATE_SCOPES = ["t0", "t1", "t2", "t3"]
LATE_PER_SCOPE = 15
LATE_WORKERS = 2
WAVE_S = 0.5
FETCH = 50
WORKER_BLOCK_MS = 1000
PARKED_JOBS = 300
PARK_RATE = 10.0  # the park dependency's budget.min_per_second

SUBMIT_RATIO_TARGET = 1.3
BULK_RATIO_TARGET = 0.5
LATENESS_P99_TARGET_MS = 10.0
PARK_SLACK_CALLS = 2.0  # step calls/s allowed beyond one per release

R = TypeVar("R")


@dataclass(frozen=True)
class Sizes:
    single: int  # pings / submits per kind
    bulk: int  # jobs per submit_many run
    waves: int  # lateness waves (WAVE_S apart)
    min_late: int  # scheduled jobs required for a valid lateness figure
    idle_s: float  # each idle window
    park_s: float  # the parked-retries window


FULL = Sizes(single=3000, bulk=20000, waves=10, min_late=500, idle_s=5.0, park_s=8.0)
QUICK = Sizes(single=600, bulk=4000, waves=3, min_late=100, idle_s=3.0, park_s=4.0)


# --------------------------------------------------------------------------- small helpers


def us(ns: float) -> str:
    return f"{ns / 1000:.1f} µs"


def timed(call: Callable[[], object], n: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        call()
        out.append(clock() - t0)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; RuntimeError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


# --------------------------------------------------------------------------- Redis plumbing


def ping_fn(client: AnyRedis, key: str) -> Callable[[], object]:
    """PING on the node that owns ``key`` (the only node, outside a cluster)."""
    if isinstance(client, ClusterClient):
        node = client.get_node_from_key(key)
        return lambda: client.ping(target_nodes=node)
    return client.ping


def evalsha(client: AnyRedis, sha: str, call: Call[Any]) -> object:
    """EVALSHA of ``call`` (keys and args as janus.calls built them), reply unparsed."""
    return client.evalsha(sha, len(call.keys), *call.keys, *call.args)


class CannedClient:
    """Stands in for redis-py at ``Script -> client.evalsha``: returns a fixed reply.

    ``Janus.submit`` over a Store built on it runs every line of Janus's and redis-py's
    Python that a real submit runs, except redis-py's ``execute_command`` and the network.
    """

    def __init__(self, real: AnyRedis, reply: object) -> None:
        self._encoder = real.get_encoder()
        self.reply = reply
        self.connection_pool = SimpleNamespace(connection_kwargs={})

    def get_encoder(self) -> Any:
        return self._encoder

    def register_script(self, source: str) -> Script:
        return Script(self, source)  # type: ignore[arg-type]

    def evalsha(self, *args: object) -> object:
        return self.reply


class CountingStore(Store):
    """A Store that counts the script calls and coordinator waits sent through it."""

    def __init__(self, client: AnyRedis, **options: Any) -> None:
        super().__init__(client, **options)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def run(self, call: Call[R]) -> R:
        with self._lock:
            self.counts[call.script] += 1
        return super().run(call)

    def wait_wake(self, dependency: str, timeout_s: float) -> bool:
        with self._lock:
            self.counts["wait_wake"] += 1
        return super().wait_wake(dependency, timeout_s)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


class WorkerThreads:
    """Worker threads that wait in ``fetch(count=FETCH, block_ms=...)``, run a handler that
    decides the outcome, and report each batch in one call; every attempt they are handed
    is kept (job id, attempt) -> LeasedJob."""

    def __init__(
        self,
        store: Store,
        dependency: str,
        count: int,
        fail: Callable[[LeasedJob], bool] = lambda job: False,
    ) -> None:
        self.workers = [
            Worker(store, dependency, group="bench", consumer=f"{dependency}-{i}")
            for i in range(count)
        ]
        self.fail = fail
        self.seen: dict[tuple[str, int], LeasedJob] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(w,), daemon=True, name=w.consumer)
            for w in self.workers
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _loop(self, w: Worker) -> None:
        try:
            while not self.stop.is_set():
                jobs = w.fetch(count=FETCH, block_ms=WORKER_BLOCK_MS)
                if not jobs:
                    continue
                with self.lock:
                    for j in jobs:
                        self.seen[(j.id, j.attempt)] = j
                outcomes = [
                    w.failed(j, "http_503") if self.fail(j) else w.completed(j) for j in jobs
                ]
                refused = [r for r in w.report(outcomes) if not r.ok]
                if refused:
                    with self.lock:
                        self.errors.append(f"{w.consumer}: {len(refused)} outcomes refused")
        except Exception as exc:  # recorded: the run reports it and fails
            with self.lock:
                self.errors.append(f"{w.consumer}: {type(exc).__name__}: {exc}")

    def started(self) -> list[LeasedJob]:
        with self.lock:
            return list(self.seen.values())

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=WORKER_BLOCK_MS / 1000 + 5)
            if t.is_alive():
                self.errors.append(f"worker thread {t.name} did not stop")


# --------------------------------------------------------------------------- phase 1 + 2


@dataclass
class LatencyResults:
    samples: dict[str, list[int]]
    server: dict[str, Stats]  # kind -> commandstats delta over all its blocks
    same_cpu: int = 0  # blocks after which client and server had last run on one CPU
    cpu_samples: int = 0

    def median(self, kind: str) -> float:
        return statistics.median(self.samples[kind])

    def server_us_per_call(self, kind: str, command: str = "evalsha") -> float:
        calls_n, usec = self.server[kind].get(command, (0, 0))
        return usec / calls_n if calls_n else float("nan")


def last_cpu(pid: int | str) -> int | None:
    """The CPU a process (its main thread) last ran on: field 39 of /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None


def dependency_port(client: AnyRedis, dependency: str) -> int:
    """Port of the server that holds ``dependency``'s keys."""
    if isinstance(client, ClusterClient):
        return int(client.get_node_from_key(Keys(PREFIX, dependency).policy).port)
    return int(client.connection_pool.connection_kwargs["port"])


def measure_latency(
    jn: Janus, client: AnyRedis, admin: Admin, sizes: Sizes, server_pid: int | None
) -> tuple[LatencyResults, list[str]]:
    problems: list[str] = []
    per_block = max(1, sizes.single // BLOCKS)
    warm = max(100, per_block)
    ping = ping_fn(client, Keys(PREFIX, FAST).policy)
    noop = client.register_script("return 1")
    submit_sha = jn.store._scripts["submit"].sha
    fast_keys = jn.store.keys(FAST)
    decisions: dict[str, list[Decision]] = {"ready": [], "scheduled": []}

    def fresh_job() -> JobArgs:
        return jn._job_args(Job(scope="t", payload=PAYLOAD), None)

    def submit_fast() -> None:
        decisions["ready"].append(jn.submit(FAST, scope="t", payload=PAYLOAD))

    def submit_sched() -> None:
        decisions["scheduled"].append(jn.submit(SCHED, scope="t", payload=PAYLOAD))

    # A no-op script on the dependency's node, bare and with a submit's keys + args.
    noop_key = [Keys(PREFIX, FAST).base + ":noop"]
    same_call = calls.submit(fast_keys, [fresh_job()], None)

    def evalsha_noop() -> object:
        return noop(keys=noop_key, client=client)

    def evalsha_noop_args() -> object:
        return evalsha(client, noop.sha, same_call)

    # submit.lua called straight through redis-py, calls pre-built (fresh job ids).
    prebuilt = iter(
        [calls.submit(fast_keys, [fresh_job()], None) for _ in range(warm + per_block * BLOCKS)]
    )

    def evalsha_submit() -> object:
        return evalsha(client, submit_sha, next(prebuilt))

    # The whole Janus.submit with redis-py's execute_command and the network cut out. (A
    # first submit through Janus loads submit.lua; the raw calls need it loaded.)
    jn.submit(FAST, scope="t", payload=PAYLOAD)
    sample = evalsha(client, submit_sha, calls.submit(fast_keys, [fresh_job()], None))
    canned = Janus(Store(CannedClient(client, sample), prefix=PREFIX))  # type: ignore[arg-type]

    def submit_canned() -> None:
        canned.submit(FAST, scope="t", payload=PAYLOAD)

    kinds: dict[str, Callable[[], object]] = {
        "ping": ping,
        "ready": submit_fast,
        "scheduled": submit_sched,
        "evalsha_noop": evalsha_noop,
        "evalsha_noop_args": evalsha_noop_args,
        "evalsha_submit": evalsha_submit,
        "canned": submit_canned,
    }
    for fn in kinds.values():
        timed(fn, warm, [])
    decisions["ready"].clear()
    decisions["scheduled"].clear()

    res = LatencyResults({k: [] for k in kinds}, {k: {} for k in kinds})
    gc.collect()
    for _ in range(BLOCKS):
        for name, fn in kinds.items():
            before = admin.commandstats()
            timed(fn, per_block, res.samples[name])
            add_delta(res.server[name], admin.commandstats(), before)
            if server_pid is not None:
                mine, theirs = last_cpu("self"), last_cpu(server_pid)
                if mine is not None and theirs is not None:
                    res.cpu_samples += 1
                    res.same_cpu += mine == theirs

    for kind in ("ready", "scheduled"):
        got = decisions[kind]
        if kind == "ready":
            wrong = [d.status for d in got if d.status != "ready"]
        else:  # the scope bucket (burst 1) lets exactly one job be ready: the warm-up's first
            wrong = [d.status for d in got if d.status != "scheduled"]
        if wrong or len({d.job_id for d in got}) != len(got) or len(got) != per_block * BLOCKS:
            problems.append(f"{kind} submits: unexpected decisions {sorted(set(wrong))[:3]}")
    return res, problems


# --------------------------------------------------------------------------- phase 3


@dataclass
class BulkResults:
    janus_rates: list[float] = field(default_factory=list)
    raw_rates: list[float] = field(default_factory=list)
    janus_wall_ns: int = 0
    raw_wall_ns: int = 0
    janus_server: Stats = field(default_factory=dict)
    raw_server: Stats = field(default_factory=dict)
    jobs_per_side: int = 0


def measure_bulk(
    jn: Janus, client: AnyRedis, admin: Admin, sizes: Sizes
) -> tuple[BulkResults, list[str]]:
    raw_key = Keys(PREFIX, BULK).base + ":rawbench"
    problems: list[str] = []
    res = BulkResults()

    def run_janus(n: int) -> int:
        ids, payloads = job_inputs(n)
        jobs = [
            Job(scope=BULK_SCOPES[i % len(BULK_SCOPES)], payload=payloads[i], job_id=ids[i])
            for i in range(n)
        ]
        gc.collect()
        t0 = time.perf_counter_ns()
        out = jn.submit_many(BULK, jobs)
        elapsed = time.perf_counter_ns() - t0
        if len(out) != n or any(d.status != "ready" or not d.created for d in out):
            problems.append("submit_many: not every job was ready and created")
        return elapsed

    def run_raw(n: int) -> int:
        ids, payloads = job_inputs(n)
        gc.collect()
        t0 = time.perf_counter_ns()
        pipe = client.pipeline(transaction=False)
        written = 0
        for start in range(0, n, BATCH):
            for i in range(start, min(start + BATCH, n)):
                pipe.xadd(
                    raw_key,
                    {
                        "id": ids[i],
                        "scope": BULK_SCOPES[i % len(BULK_SCOPES)],
                        "cost": 1,
                        "payload": payloads[i],
                    },
                )
            written += len(pipe.execute())
        elapsed = time.perf_counter_ns() - t0
        if written != n:
            problems.append(f"raw pipeline: wrote {written} of {n} entries")
        return elapsed

    run_janus(1000)  # warm-up
    run_raw(1000)
    n = sizes.bulk
    for _ in range(3):
        before = admin.commandstats()
        elapsed = run_janus(n)
        add_delta(res.janus_server, admin.commandstats(), before)
        res.janus_rates.append(n / (elapsed / 1e9))
        res.janus_wall_ns += elapsed
        before = admin.commandstats()
        elapsed = run_raw(n)
        add_delta(res.raw_server, admin.commandstats(), before)
        res.raw_rates.append(n / (elapsed / 1e9))
        res.raw_wall_ns += elapsed
    res.jobs_per_side = 3 * n
    return res, problems


# --------------------------------------------------------------------------- phase 4


@dataclass
class IdleWindow:
    seconds: float
    commands: dict[str, int]  # every client, INFO excluded
    steps: int  # the coordinator's step.lua calls in the window
    waits: int  # the coordinator watcher's BLPOPs in the window

    def per_s(self, *names: str) -> float:
        return sum(self.commands.get(n, 0) for n in names) / self.seconds


@dataclass
class LatenessResults:
    lateness_ms: list[int]
    by_position: dict[int, list[int]]
    ready_at_submit: int
    rejected: int
    idle_with_workers: IdleWindow
    idle_alone: IdleWindow
    steps: int
    errors: list[str]


def idle_window(admin: Admin, store: CountingStore, seconds: float) -> IdleWindow:
    before, counts0 = admin.commandstats(), store.snapshot()
    t0 = time.monotonic()
    time.sleep(seconds)
    after, counts1 = admin.commandstats(), store.snapshot()
    commands = {
        name: delta(after, before, name)[0]
        for name in sorted(set(after) | set(before))
        if name != "info" and delta(after, before, name)[0]
    }
    return IdleWindow(
        time.monotonic() - t0,
        commands,
        counts1["step"] - counts0["step"],
        counts1["wait_wake"] - counts0["wait_wake"],
    )


def measure_lateness(jn: Janus, url: str, admin: Admin, sizes: Sizes) -> LatenessResults:
    coord_store = CountingStore.from_url(url, prefix=PREFIX)
    coord = Coordinator(coord_store, dependencies=[LATE])
    thread = coord.run_in_thread()
    worker_store = Store.from_url(url, prefix=PREFIX)
    workers = WorkerThreads(worker_store, LATE, LATE_WORKERS)
    workers.start()
    try:
        time.sleep(0.3)  # first step done, watcher and workers blocked on their lists
        submitted: list[tuple[Decision, int]] = []  # (decision, position in its scope's wave)
        begin = time.monotonic() + 0.05
        for wave in range(sizes.waves):
            delay = begin + wave * WAVE_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if wave % 2 == 1:
                # One job now, one due in 500 ms: the coordinator sleeps on a far deadline,
                # so the waves' earlier jobs must cut that sleep short via the wake list.
                for pos, d in enumerate(jn.submit_many(LATE, [Job(scope="slow")] * 2)):
                    submitted.append((d, pos))
                time.sleep(0.03)
            for scope in LATE_SCOPES:
                jobs = [Job(scope=scope, payload=PAYLOAD) for _ in range(LATE_PER_SCOPE)]
                for pos, d in enumerate(jn.submit_many(LATE, jobs)):
                    submitted.append((d, pos))
                time.sleep(0.004)
        accepted = {d.job_id for d, _pos in submitted if d.accepted}
        wait_for(
            lambda: accepted <= {j.id for j in workers.started()},
            15.0,
            "the workers to start every accepted job",
        )

        # Idle: nothing waits. First everything (coordinator + waiting workers), then the
        # coordinator alone.
        time.sleep(0.5)
        with_workers = idle_window(admin, coord_store, sizes.idle_s)
        workers.close()
        time.sleep(0.5)
        alone = idle_window(admin, coord_store, sizes.idle_s)
    finally:
        workers.close()
        coord.stop()
        thread.join(timeout=10)
        coord_store.close()
        worker_store.close()

    started_ms = {j.id: j.started_ms for j in workers.started() if j.attempt == 1}
    lateness: list[int] = []
    by_position: dict[int, list[int]] = {}
    ready = rejected = 0
    for d, pos in submitted:
        if d.status == "rejected":
            rejected += 1
        elif d.status == "ready":
            ready += 1
        else:
            late = started_ms[d.job_id] - d.not_before_ms
            lateness.append(late)
            by_position.setdefault(pos, []).append(late)
    return LatenessResults(
        lateness,
        by_position,
        ready,
        rejected,
        with_workers,
        alone,
        coord.steps,
        workers.errors,
    )


# --------------------------------------------------------------------------- phase 5


@dataclass
class ParkResults:
    seconds: float  # Redis time of the window
    releases: int  # retries started in the window
    steps: int  # coordinator step.lua calls in the window
    waits: int  # coordinator watcher BLPOPs in the window
    parked_before: int
    parked_after: int
    all_commands: dict[str, int]  # every client, the window
    errors: list[str]


def measure_parked(jn: Janus, url: str, admin: Admin, sizes: Sizes) -> ParkResults:
    coord_store = CountingStore.from_url(url, prefix=PREFIX)
    coord = Coordinator(coord_store, dependencies=[PARK])
    thread = coord.run_in_thread()
    worker_store = Store.from_url(url, prefix=PREFIX)
    # Every first attempt fails (http_503, retried); every retry completes.
    workers = WorkerThreads(worker_store, PARK, 1, fail=lambda job: job.attempt == 1)
    workers.start()
    try:
        jn.submit_many(PARK, [Job(scope=f"p{i % 4}") for i in range(PARKED_JOBS)])
        wait_for(
            lambda: sum(j.attempt == 1 for j in workers.started()) >= PARKED_JOBS,
            15.0,
            "every first attempt to be started",
        )
        wait_for(
            lambda: jn.status(PARK).parked >= PARKED_JOBS * 0.8,
            15.0,
            "the retries to be parked on the budget",
        )
        time.sleep(0.5)  # steady state: one token, one release
        parked_before = jn.status(PARK).parked
        t0_us = jn.store.time_us()
        before, counts0 = admin.commandstats(), coord_store.snapshot()
        time.sleep(sizes.park_s)
        after, counts1 = admin.commandstats(), coord_store.snapshot()
        t1_us = jn.store.time_us()
        parked_after = jn.status(PARK).parked
    finally:
        workers.close()
        coord.stop()
        thread.join(timeout=10)
        coord_store.close()
        worker_store.close()
    releases = sum(
        1
        for j in workers.started()
        if j.attempt > 1 and t0_us // 1000 <= j.started_ms < t1_us // 1000
    )
    commands = {
        name: delta(after, before, name)[0]
        for name in sorted(set(after) | set(before))
        if name != "info" and delta(after, before, name)[0]
    }
    return ParkResults(
        (t1_us - t0_us) / 1e6,
        releases,
        counts1["step"] - counts0["step"],
        counts1["wait_wake"] - counts0["wait_wake"],
        parked_before,
        parked_after,
        commands,
        workers.errors,
    )


# --------------------------------------------------------------------------- main


def run(cluster: bool, sizes: Sizes, quick: bool) -> int:
    logging.basicConfig(level=logging.ERROR)  # the doctor warns that the test server
    # has no persistence; that is deliberate here.
    started = time.monotonic()
    report = Report()
    problems: list[str] = []
    with redis_under_test(cluster) as (url, pids):
        admin = Admin(list(pids))
        jn = Janus.from_url(url, prefix=PREFIX, batch_size=BATCH)
        client = jn.store.client  # what janus.store.connect(url) gave Janus: PING uses it too
        jn.apply_policies(parse_policy_text(POLICY, "<bench policy>"))

        parser = parser_name(client)
        environment = [
            redis_line(admin, url, cluster),
            f"hiredis active: {'yes' if parser == '_HiredisParser' else 'NO'} (reply parser "
            f"{parser}); {python_text()}",
            f"machine: {machine_text()}" + (" [--quick: smaller N]" if quick else ""),
        ]
        for line in environment:
            log(line)

        log(f"phase 1+2: PING vs submit, {BLOCKS} alternating blocks of {sizes.single // BLOCKS}")
        node_port = dependency_port(client, FAST)
        lat, p = measure_latency(jn, client, admin, sizes, pids.get(node_port))
        problems += p
        log(f"phase 3: submit_many vs raw XADD pipeline, {sizes.bulk} jobs x 3 each")
        bulk, p = measure_bulk(jn, client, admin, sizes)
        problems += p
        log(
            f"phase 4: due work -> waiting worker, {sizes.waves} waves of {WAVE_S}s, "
            f"{LATE_WORKERS} workers, then idle"
        )
        late = measure_lateness(jn, url, admin, sizes)
        problems += late.errors
        log(f"phase 5: coordinator while {PARKED_JOBS} retries wait on the retry budget")
        park = measure_parked(jn, url, admin, sizes)
        problems += park.errors
        admin.close()
        jn.close()

    if len(late.lateness_ms) < sizes.min_late:
        problems.append(f"only {len(late.lateness_ms)} scheduled jobs (need {sizes.min_late})")

    # ---- the table
    ping_med = lat.median("ping")
    report.section("1. PING round trip (Janus's client via janus.store.connect)")
    report.add("PING median", us(ping_med))
    report.add("PING p99", us(pct(lat.samples["ping"], 99)))
    report.add(
        "client and Redis last ran on the same CPU",
        f"{lat.same_cpu}/{lat.cpu_samples} blocks",
    )
    report.section("2. single submit, 100 B payload, job id generated by Janus")
    for name, label in (("ready", "ready at once"), ("scheduled", "scheduled")):
        med = lat.median(name)
        ratio = med / ping_med
        report.add(f"submit ({label}) median", us(med))
        report.add(f"submit ({label}) p99", us(pct(lat.samples[name], 99)))
        report.add(
            f"submit ({label}) median / PING median",
            f"{ratio:.2f}",
            f"<= {SUBMIT_RATIO_TARGET}",
            ratio <= SUBMIT_RATIO_TARGET,
        )
    report.section("2b. where a submit's time goes (informational, medians)")
    report.add("EVALSHA 'return 1', 1 key", us(lat.median("evalsha_noop")))
    report.add("EVALSHA 'return 1', a submit's keys + args", us(lat.median("evalsha_noop_args")))
    report.add(
        "EVALSHA submit.lua, args pre-built (no Janus Python)", us(lat.median("evalsha_submit"))
    )
    report.add("Janus.submit Python alone (redis-py stubbed at evalsha)", us(lat.median("canned")))
    for kind, label in (
        ("evalsha_noop", "'return 1'"),
        ("ready", "submit.lua (ready)"),
        ("scheduled", "submit.lua (scheduled)"),
    ):
        report.add(f"{label}: time inside Redis per call", f"{lat.server_us_per_call(kind):.1f} µs")
    report.add(
        "PING: time inside Redis per call", f"{lat.server_us_per_call('ping', 'ping'):.1f} µs"
    )
    inner = sorted(
        (
            (usec, n, name)
            for name, (n, usec) in lat.server["ready"].items()
            if name not in ("evalsha", "info") and n
        ),
        reverse=True,
    )
    n_ready = lat.server["ready"].get("evalsha", (1, 0))[0] or 1
    report.notes.append(
        "commands run by one ready submit (calls, µs inside Redis): "
        + ", ".join(f"{name} {n / n_ready:.0f}x {usec / n_ready:.1f}" for usec, n, name in inner)
    )

    best_janus, best_raw = max(bulk.janus_rates), max(bulk.raw_rates)
    bulk_ratio = best_janus / best_raw
    report.section(f"3. submit_many, {sizes.bulk} jobs, 100 B payloads, batch {BATCH} (best of 3)")
    report.add("submit_many", f"{best_janus:,.0f} jobs/s")
    report.add("raw XADD pipeline", f"{best_raw:,.0f} jobs/s")
    report.add(
        "submit_many / raw",
        f"{bulk_ratio:.2f}",
        f">= {BULK_RATIO_TARGET}",
        bulk_ratio >= BULK_RATIO_TARGET,
    )
    jobs = bulk.jobs_per_side
    janus_server_us = bulk.janus_server.get("evalsha", (0, 0))[1]
    raw_server_us = bulk.raw_server.get("xadd", (0, 0))[1]
    report.add("submit_many: wall time per job", f"{bulk.janus_wall_ns / jobs / 1000:.2f} µs")
    report.add("submit_many: time inside Redis per job", f"{janus_server_us / jobs:.2f} µs")
    report.add("raw XADD: wall time per entry", f"{bulk.raw_wall_ns / jobs / 1000:.2f} µs")
    report.add("raw XADD: time inside Redis per entry", f"{raw_server_us / jobs:.2f} µs")
    report.notes.append(
        "submit_many runs (jobs/s): " + ", ".join(f"{r:,.0f}" for r in bulk.janus_rates)
    )
    report.notes.append("raw XADD runs (jobs/s): " + ", ".join(f"{r:,.0f}" for r in bulk.raw_rates))

    report.section(
        f"4. due work -> a worker waiting in fetch (coordinator thread, {LATE_WORKERS} workers)"
    )
    if late.lateness_ms:
        p99 = pct(late.lateness_ms, 99)
        report.add(
            f"start lateness p50 (started_ms - not_before_ms, n={len(late.lateness_ms)})",
            f"{pct(late.lateness_ms, 50)} ms",
        )
        report.add(
            "start lateness p99",
            f"{p99} ms",
            f"<= {LATENESS_P99_TARGET_MS:g} ms",
            p99 <= LATENESS_P99_TARGET_MS,
        )
        report.add("start lateness max", f"{max(late.lateness_ms)} ms")
    busy = late.idle_with_workers
    report.add(
        f"idle, coordinator + {LATE_WORKERS} waiting workers: EVALSHA+BLPOP per second",
        f"{busy.per_s('evalsha', 'blpop'):.2f}/s",
    )
    alone = late.idle_alone
    report.add(
        "idle coordinator alone: EVALSHA+BLPOP per second",
        f"{alone.per_s('evalsha', 'blpop'):.2f}/s",
        "~0.7/s (docstring)",
    )
    report.notes.append(
        f"lateness: {late.ready_at_submit} jobs ready at submit (not counted), "
        f"{late.rejected} rejected, {late.steps} coordinator steps"
    )
    positions = sorted(late.by_position)
    report.notes.append(
        "lateness p50/max by position in its scope's wave: "
        + ", ".join(
            f"#{pos}: {pct(late.by_position[pos], 50)}/{max(late.by_position[pos])} ms"
            for pos in positions
        )
    )
    for label, w in (("with waiting workers", busy), ("coordinator alone", alone)):
        report.notes.append(
            f"idle window {label}, {w.seconds:.1f} s: coordinator {w.steps} steps + "
            f"{w.waits} watcher BLPOPs; commands seen (all clients, INFO excluded): "
            + (", ".join(f"{k}={v}" for k, v in w.commands.items()) or "none")
        )

    report.section(f"5. coordinator while {PARKED_JOBS} retries wait on the retry budget")
    rel_s = park.releases / park.seconds
    steps_s = park.steps / park.seconds
    report.add(
        f"retries released per second ({park.seconds:.1f} s window)",
        f"{rel_s:.2f}/s",
        f"(budget: {PARK_RATE:g} tokens/s)",
    )
    report.add(
        "coordinator script calls (step.lua) per second",
        f"{steps_s:.2f}/s",
        f"<= releases/s + {PARK_SLACK_CALLS:g} = {rel_s + PARK_SLACK_CALLS:.2f}/s",
        steps_s <= rel_s + PARK_SLACK_CALLS,
    )
    report.add("coordinator watcher BLPOPs per second", f"{park.waits / park.seconds:.2f}/s")
    report.notes.append(
        f"parked retries: {park.parked_before} at the window's start, {park.parked_after} at "
        f"its end; {park.releases} retries started in it; commands seen (all clients, the "
        "worker's fetches and reports included): "
        + (", ".join(f"{k}={v}" for k, v in park.all_commands.items()) or "none")
    )
    report.notes.append(f"total run time {time.monotonic() - started:.1f} s")

    print_environment(environment)
    return finish(report, problems)


def main(argv: list[str] | None = None) -> int:
    return bench_main(
        __doc__,
        argv,
        lambda args: run(args.cluster, QUICK if args.quick else FULL, args.quick),
        quick_help="~5x smaller N: a smoke run",
        cluster=True,
    )


if __name__ == "__main__":
    sys.exit(main())
