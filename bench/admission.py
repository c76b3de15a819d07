"""Admission benchmark: what one Janus decision costs compared with what Redis itself costs.

Run::

    .venv/bin/python bench/admission.py [--cluster] [--quick] [--json PATH] [--no-fail]

It starts ONE throwaway ``redis-server`` (or, with ``--cluster``, a 3-master cluster) through
:mod:`janus.testing`, never a Redis someone else runs, and measures every figure and every
baseline against that same server, in the same run. Janus's Lua is one Redis Functions
library (:func:`janus.scripts.library`); every probe below calls a function with FCALL in the
store's own call shape (``client.fcall(name, len(keys), *keys, *args)``). The baselines that
are not Janus live in a library of the benchmark's own, ``janus_bench`` (:data:`BENCH_LIBRARY`),
loaded beside Janus's on every primary:

* ``janus_bench_noop``: ``return 1``, the price of an FCALL with no work;
* ``janus_bench_gcra``: a minimal GCRA token bucket, the cheapest honest rate-limit decision
  Redis can make: ``TIME``, ``GET`` the key's theoretical arrival time (TAT), refuse when
  ``TAT - now > (burst - 1) * interval``, else ``SET`` it to ``max(TAT, now) + interval``
  with ``PX 60000``. Its limits never bind (burst 1e9, interval 1 µs), like Janus's below.

The phases:

1. **PING round trip** (median, p99). Every Redis client call pays at least this: Python's
   redis-py command path, the socket write, the server's event loop, the socket read and the
   reply parser. The client is Janus's own (``jn.store.client``, made by
   :func:`janus.store.connect`): same object, same pool, same hiredis parser, timeouts and
   retry policy as every submit (every probe below uses it too). In cluster mode the PING
   goes to the node that owns the dependency's slot, through the same ``RedisCluster``
   routing code. This is the floor: no remote call can beat one round trip on the same
   client. The bench also samples which CPU the client and the server last ran on
   (``/proc/PID/stat``): on a small VM a round trip between two vCPUs can cost 2-3x one on a
   shared vCPU, which moves every ratio against PING, so the table says which case the run
   got.

2. **Single submit latency** (median, p99) of ``Janus.submit`` for a job that is ``ready`` at
   once (rate 1e6/s, burst 1e9: the validator's ceilings; it joins its scope's ready line)
   and, separately, for a job that is ``scheduled`` (scope rate 1/s, ``max_wait`` 1d), which
   also writes the delay queue. Janus generates each job id (uuid4), as a producer calling
   ``submit(...)`` would. Ratio = submit median / PING median (target <= 1.5): one submit is
   one round trip by design, so the ratio is the price of the admission decision itself
   (client-side validation and parsing plus the function's run time in Redis). Nothing is
   released at submit.

   2b (informational) shows where that price goes: FCALL of ``janus_bench_noop`` (bare, and
   with a submit's keys + args: the cost of the call shape alone), FCALL of Janus's submit
   function with pre-built arguments (:func:`janus.calls.submit`, no Janus Python at call
   time), the minimal GCRA's round trip, and ``Janus.submit`` over a stub client that answers
   ``fcall`` with a canned reply (Janus's and redis-py's Python without the network).

   2c is the **time inside Redis** (``INFO commandstats``: the ``cmdstat_fcall`` usec delta
   around a block that calls ONE function only, divided by its calls or jobs; the median of
   the blocks is reported): the minimal GCRA per call, a single submit per call (target <=
   3x the GCRA; the bar, shown in brackets, <= 4x) and a ``submit_many`` batch of 500 jobs
   (100-byte payloads, 8 scopes) per job (target <= 1.5x the GCRA). All of phases 1, 2, 2b
   and 2c run in the same alternating blocks (10 rounds, every kind once per round, the order
   rotated each round), so load spikes on the machine hit all of them alike. Then, in rounds
   that alternate with GCRA blocks again, the jobs of those batches are released and
   reported: **fetch** (the release and the lease start happen in that one call: protocol 1
   has no separate start function), **heartbeat** and **report** (completed), 50 jobs per
   call, time inside Redis per job (informational).

3. **submit_many throughput** (jobs/s), 100-byte payloads, Janus's default batch of 500, vs a
   raw redis-py pipeline (``transaction=False``) of plain ``XADD`` of the same payloads and
   the same caller-chosen ids, 500 commands per round trip, to a stream in the dependency's
   own hash slot. That pipeline is the cheapest way to append the same data to Redis
   without any admission at all (one round trip per 500 entries, no Lua), so the ratio is
   the throughput kept once every job is rate-checked, recorded and queued (target >= 0.6,
   goal 0.8). The two runs alternate three times; the best run of each (its minimum time)
   is reported (all runs are printed), with wall time and time inside Redis (``INFO
   commandstats``) per job for both.

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
   the commands sent while idle are counted from ``INFO commandstats`` deltas (FCALL +
   BLPOP, summed over nodes): first with the two workers still waiting (everything), then
   with the coordinator alone.

5. **Coordinator cost while retries wait on the retry budget.** 300 jobs fail their first
   attempt; their retries (retry budget: ratio 0, 10 tokens/s) are parked for want of a
   token, and come back one per token. A worker thread waits in ``fetch`` and completes
   each retry it gets. Over a window while ~250 or more retries stay parked, the
   coordinator's function calls (``step``, counted by a :class:`CountingStore` under it)
   and its watcher's BLPOPs per second are compared with the releases per second (retries
   started, by ``started_ms``). Target: function calls/s <= releases/s + 2 (a parked retry
   costs nothing while it waits and one step per token, not a loop).

6. **One dependency at saturation.** ``redis-benchmark`` (Debian's ``redis-tools``) drives
   the server that holds the dependency with ``-c 16 -P 8`` (16 connections, 8 calls in
   flight on each), Python out of the way: the minimal GCRA function vs Janus's submit
   function, both on one key / one dependency whose limits never bind, decisions/s (target:
   Janus >= 0.3x the GCRA). Janus's call is exactly what :func:`janus.calls.submit` builds
   for one job (its 8 keys and its args; the table notes print the built call), with a fresh
   job id per call from redis-benchmark's ``__rand_int__`` placeholder (``-r 100000000``; two
   placeholders make a 25-character id, so ids do not repeat) and a 100-byte printable
   payload (a command line cannot carry the NUL bytes of the other phases' payload).
   redis-benchmark draws every placeholder on its own, so a call's ``job_id`` argument is a
   different random id of the same length than its ``job_enc`` (the record's key):
   submit.lua only stores ``job_id`` in the record, so the work is the same. Before every run
   the dependency's state (records, ready line, scope and dependency state, the GCRA key) is
   deleted, the policy kept, so every run starts alike. A calibration run of each side sizes
   N to about ``sat_s`` seconds; then the sides alternate (the starting side alternates
   too) and the median of the rounds is reported. Every call is checked: no failed calls
   (``INFO commandstats``), and one new job record per Janus call.

Latencies use ``time.perf_counter_ns`` around each call; percentiles are nearest-rank. The
result table marks each target PASS or MISS (goals and bars in brackets: shown, never
failing). Exit status: 0 when every target is met, 1 when one is missed (``--no-fail``: 0),
2 when the run itself failed (every figure is printed first). The figures are also written
as JSON (every table row with its verdict, the notes, the exit status): to ``--json PATH``,
else to ``bench-results/admission-<UTC time>.json`` under the current directory (see
``bench/_common.py``); the path is printed.
"""

from __future__ import annotations

import gc
import logging
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster as ClusterClient

from _common import (
    PAYLOAD,
    Admin,
    Report,
    Stats,
    add_delta,
    bench_main,
    conclude,
    delta,
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
from janus import calls, scripts
from janus.calls import Call, JobArgs
from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import Decision, LeasedJob
from janus.errors import LeaseLost
from janus.keys import Keys
from janus.policy import parse_policy_text
from janus.store import AnyRedis, Store
from janus.worker import Worker

PREFIX = "janusbench"
FAST, SCHED, BULK, LATE, PARK, SAT = "fast", "sched", "bulk", "late", "park", "sat"

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
  bulk:                  # submit_many throughput, and the release / report costs
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
  sat:                   # one dependency at saturation (redis-benchmark): never binds
    rate: 1000000
    burst: 1000000000
    max_wait: 1d
    scopes:
      default: {rate: 1000000, burst: 1000000000}
"""

#: The benchmark's own functions (baselines), in a library of their own: never Janus's.
BENCH_LIBRARY = """#!lua name=janus_bench
-- Baselines of bench/admission.py, loaded beside Janus's library; not part of Janus.

-- The price of an FCALL that does nothing.
local function noop(keys, args)
  return 1
end

-- A minimal GCRA token bucket. KEYS[1]: string, the theoretical arrival time (TAT, us).
-- ARGV[1]: burst (calls); ARGV[2]: interval (us per call). Returns {1} admitted | {0}.
local function gcra(keys, args)
  local burst, interval = tonumber(args[1]), tonumber(args[2])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = tonumber(redis.call('GET', keys[1])) or now
  if tat < now then
    tat = now
  end
  if tat - now > (burst - 1) * interval then
    return {0}
  end
  redis.call('SET', keys[1], tat + interval, 'PX', 60000)
  return {1}
end

redis.register_function('janus_bench_noop', noop)
redis.register_function('janus_bench_gcra', gcra)
"""
NOOP_FN, GCRA_FN = "janus_bench_noop", "janus_bench_gcra"
#: The GCRA's limits: 1e6 calls/s and a burst of 1e9, so it never refuses here.
GCRA_BURST, GCRA_INTERVAL_US = 1_000_000_000, 1

BLOCKS = 10
BATCH = 500
BULK_SCOPES = [f"tenant-{i}" for i in range(8)]
LATE_SCOPES = ["t0", "t1", "t2", "t3"]
LATE_PER_SCOPE = 15
LATE_WORKERS = 2
WAVE_S = 0.5
FETCH = 50
COST_CALLS = 10  # fetch / heartbeat / report calls of FETCH jobs per block in phase 2c
WORKER_BLOCK_MS = 1000
PARKED_JOBS = 300
PARK_RATE = 10.0  # the park dependency's budget.min_per_second
SAT_CLIENTS, SAT_PIPELINE, SAT_KEYSPACE = 16, 8, 100_000_000
#: Phase 6's job id: redis-benchmark puts 12 random digits in place of each placeholder.
SAT_JOB_ID = "b" + "__rand_int__" * 2
SAT_PAYLOAD = bytes(ord("a") + i % 26 for i in range(100))  # printable: fits on argv

SUBMIT_RATIO_TARGET = 1.5  # single submit median / PING median
SUBMIT_GCRA_TARGET = 3.0  # Redis-side µs, single submit / minimal GCRA
SUBMIT_GCRA_BAR = 4.0
BATCH_GCRA_TARGET = 1.5  # Redis-side µs, per job of a batch of 500 / minimal GCRA
BULK_RATIO_TARGET = 0.6  # submit_many / raw XADD pipeline
BULK_RATIO_GOAL = 0.8
SAT_RATIO_TARGET = 0.3  # decisions/s at saturation, Janus / minimal GCRA
LATENESS_P99_TARGET_MS = 10.0
PARK_SLACK_CALLS = 2.0  # step calls/s allowed beyond one per release

R = TypeVar("R")


@dataclass(frozen=True)
class Sizes:
    single: int  # calls per kind in phases 1 + 2 (BLOCKS blocks)
    bulk: int  # jobs per submit_many run
    waves: int  # lateness waves (WAVE_S apart)
    min_late: int  # scheduled jobs required for a valid lateness figure
    idle_s: float  # each idle window
    park_s: float  # the parked-retries window
    sat_s: float  # each saturation run, about
    sat_rounds: int  # saturation rounds (each: both sides)


FULL = Sizes(
    single=3000,
    bulk=20000,
    waves=10,
    min_late=500,
    idle_s=5.0,
    park_s=8.0,
    sat_s=2.0,
    sat_rounds=5,
)
QUICK = Sizes(
    single=600,
    bulk=4000,
    waves=3,
    min_late=100,
    idle_s=3.0,
    park_s=4.0,
    sat_s=1.0,
    sat_rounds=3,
)


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


def ratio_text(value: float) -> str:
    return f"{value:.2f}x"


# --------------------------------------------------------------------------- Redis plumbing


def ping_fn(client: AnyRedis, key: str) -> Callable[[], object]:
    """PING on the node that owns ``key`` (the only node, outside a cluster)."""
    if isinstance(client, ClusterClient):
        node = client.get_node_from_key(key)
        return lambda: client.ping(target_nodes=node)
    return client.ping


def fcall(client: AnyRedis, name: str, call: Call[Any]) -> object:
    """FCALL of function ``name`` with ``call``'s keys and args (as janus.calls built them),
    in the store's call shape; the reply unparsed."""
    return client.fcall(name, len(call.keys), *call.keys, *call.args)


def primaries(client: AnyRedis) -> list[redis.Redis]:
    """A plain client of every primary (the client itself, outside a cluster)."""
    if isinstance(client, ClusterClient):
        return [
            node.redis_connection or client.get_redis_connection(node)
            for node in client.get_primaries()  # type: ignore[no-untyped-call]
        ]
    return [client]


def load_bench_library(client: AnyRedis) -> None:
    """Load (or replace) the benchmark's own library on every primary."""
    for node in primaries(client):
        node.function_load(BENCH_LIBRARY, replace=True)


class CannedClient:
    """Stands in for redis-py at ``Store -> client.fcall``: answers Janus's ``info`` function
    as the loaded library would, and every other call with a fixed reply.

    ``Janus.submit`` over a Store built on it runs every line of Janus's Python that a real
    submit runs, and redis-py's ``fcall`` wrapper is cut out with the network.
    """

    def __init__(self, reply: object) -> None:
        self.reply = reply
        self.connection_pool = SimpleNamespace(connection_kwargs={})
        _source, digest = scripts.library()
        self._info = [scripts.PROTOCOL, scripts.REVISION, digest.encode()]
        self._info_fn = scripts.function_name("info")

    def fcall(self, name: str, numkeys: int, *args: object) -> object:
        return self._info if name == self._info_fn else self.reply


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
    samples: dict[str, list[int]]  # ns per call (the batch kind: per batch of BATCH jobs)
    server: dict[str, Stats]  # kind -> commandstats delta over all its blocks
    inside: dict[str, list[float]]  # kind -> µs inside Redis per call (batch: per job), per block
    same_cpu: int = 0  # blocks after which client and server had last run on one CPU
    cpu_samples: int = 0

    def median(self, kind: str) -> float:
        return statistics.median(self.samples[kind])

    def inside_us(self, kind: str) -> float:
        """Time inside Redis per call (per job for the batch), median of the blocks."""
        blocks = self.inside.get(kind) or [float("nan")]
        return statistics.median(blocks)


#: Kinds whose blocks call one function each (checked: the FCALL count of every block).
FCALL_KINDS = ("ready", "scheduled", "batch", "gcra", "noop", "noop_args", "fcall_submit")


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


def gcra_key(dependency: str) -> str:
    """The minimal GCRA's key: in ``dependency``'s hash slot, like Janus's keys."""
    return Keys(PREFIX, dependency).base + ":gcra"


def measure_latency(
    jn: Janus, client: AnyRedis, admin: Admin, sizes: Sizes, server_pid: int | None
) -> tuple[LatencyResults, list[str]]:
    problems: list[str] = []
    per_block = max(1, sizes.single // BLOCKS)
    warm = max(100, per_block)
    ping = ping_fn(client, Keys(PREFIX, FAST).policy)
    submit_fn = scripts.function_name("submit")
    fast_keys = jn.store.keys(FAST)
    decisions: dict[str, list[Decision]] = {"ready": [], "scheduled": [], "batch": []}
    admitted: list[int] = []

    def fresh_job() -> JobArgs:
        return jn._job_args(Job(scope="t", payload=PAYLOAD), None)

    def submit_fast() -> None:
        decisions["ready"].append(jn.submit(FAST, scope="t", payload=PAYLOAD))

    def submit_sched() -> None:
        decisions["scheduled"].append(jn.submit(SCHED, scope="t", payload=PAYLOAD))

    # submit_many of one batch: the jobs (ids, payloads, 8 scopes) built beforehand.
    def batch_jobs() -> list[Job]:
        ids, payloads = job_inputs(BATCH)
        return [
            Job(scope=BULK_SCOPES[i % len(BULK_SCOPES)], payload=payloads[i], job_id=ids[i])
            for i in range(BATCH)
        ]

    batches = iter([batch_jobs() for _ in range(BLOCKS + 1)])

    def submit_batch() -> None:
        decisions["batch"].extend(jn.submit_many(BULK, next(batches)))

    # The minimal GCRA, on a key in the fast dependency's slot.
    gcra_args = (GCRA_FN, 1, gcra_key(FAST), GCRA_BURST, GCRA_INTERVAL_US)

    def gcra() -> None:
        reply: Any = client.fcall(*gcra_args)
        admitted.append(int(reply[0]))

    # The no-op function on the dependency's node, bare and with a submit's keys + args.
    noop_key = Keys(PREFIX, FAST).base + ":noop"
    same_call = calls.submit(fast_keys, [fresh_job()], None)

    def fcall_noop() -> object:
        return client.fcall(NOOP_FN, 1, noop_key)

    def fcall_noop_args() -> object:
        return fcall(client, NOOP_FN, same_call)

    # Janus's submit function called straight through redis-py, calls pre-built (fresh ids).
    prebuilt = iter(
        [calls.submit(fast_keys, [fresh_job()], None) for _ in range(warm + per_block * BLOCKS)]
    )

    def fcall_submit() -> object:
        return fcall(client, submit_fn, next(prebuilt))

    # The whole Janus.submit with redis-py and the network cut out. (A first submit through
    # Janus loads the library; the raw calls need it loaded.)
    jn.submit(FAST, scope="t", payload=PAYLOAD)
    sample = fcall(client, submit_fn, calls.submit(fast_keys, [fresh_job()], None))
    canned = Janus(Store(CannedClient(sample), prefix=PREFIX))  # type: ignore[arg-type]

    def submit_canned() -> None:
        canned.submit(FAST, scope="t", payload=PAYLOAD)

    kinds: dict[str, Callable[[], object]] = {
        "ping": ping,
        "ready": submit_fast,
        "scheduled": submit_sched,
        "batch": submit_batch,
        "gcra": gcra,
        "noop": fcall_noop,
        "noop_args": fcall_noop_args,
        "fcall_submit": fcall_submit,
        "canned": submit_canned,
    }
    units = {kind: BATCH if kind == "batch" else per_block for kind in kinds}
    for name, fn in kinds.items():
        timed(fn, 1 if name == "batch" else warm, [])
    for got in decisions.values():
        got.clear()
    admitted.clear()

    res = LatencyResults({k: [] for k in kinds}, {k: {} for k in kinds}, {k: [] for k in kinds})
    order = list(kinds)
    gc.collect()
    for rnd in range(BLOCKS):
        for name in order[rnd % len(order) :] + order[: rnd % len(order)]:
            fn = kinds[name]
            before = admin.commandstats()
            timed(fn, 1 if name == "batch" else per_block, res.samples[name])
            after = admin.commandstats()
            add_delta(res.server[name], after, before)
            command = "ping" if name == "ping" else "fcall"
            n_calls, usec = delta(after, before, command)
            expected = 1 if name == "batch" else per_block
            if name in FCALL_KINDS or name == "ping":
                if n_calls != expected:
                    problems.append(f"{name} block: {n_calls} {command} calls, expected {expected}")
                res.inside[name].append(usec / units[name])
            if server_pid is not None:
                mine, theirs = last_cpu("self"), last_cpu(server_pid)
                if mine is not None and theirs is not None:
                    res.cpu_samples += 1
                    res.same_cpu += mine == theirs

    for kind in ("ready", "scheduled", "batch"):
        got = decisions[kind]
        want = "scheduled" if kind == "scheduled" else "ready"
        # (scheduled: the scope bucket, burst 1, lets exactly one job be ready: the warm-up's)
        wrong = [d.status for d in got if d.status != want or not d.created]
        n = BATCH * BLOCKS if kind == "batch" else per_block * BLOCKS
        if wrong or len({d.job_id for d in got}) != len(got) or len(got) != n:
            problems.append(f"{kind} submits: unexpected decisions {sorted(set(wrong))[:3]}")
    if len(admitted) != per_block * BLOCKS or not all(admitted):
        problems.append("the minimal GCRA refused a call: its limits must never bind")
    return res, problems


@dataclass
class CostResults:
    """Phase 2c's release and report: µs inside Redis per job, per block."""

    inside: dict[str, list[float]] = field(default_factory=dict)
    jobs: int = 0


def measure_costs(
    jn: Janus, client: AnyRedis, admin: Admin, per_block: int
) -> tuple[CostResults, list[str]]:
    """Release (fetch: release and lease start in one call), heartbeat and report the jobs
    phase 2's batches left ready in BULK, COST_CALLS calls of FETCH jobs per block, each
    block one function only, alternating with blocks of the minimal GCRA."""
    res = CostResults({k: [] for k in ("gcra", "fetch", "heartbeat", "report")})
    worker = jn.worker(BULK, group="bench", consumer="cost")
    gcra_args = (GCRA_FN, 1, gcra_key(BULK), GCRA_BURST, GCRA_INTERVAL_US)
    problems: list[str] = []

    def gcra(_got: list[list[LeasedJob]]) -> int:
        for _ in range(per_block):
            client.fcall(*gcra_args)
        return per_block

    def fetch(got: list[list[LeasedJob]]) -> int:
        for _ in range(COST_CALLS):
            batch = worker.fetch(count=FETCH, block_ms=None)
            if batch:
                got.append(batch)
        return sum(map(len, got))

    def heartbeat(got: list[list[LeasedJob]]) -> int:
        for i, batch in enumerate(got):
            renewed = worker.heartbeat_many(batch)
            lost = [r for r in renewed if isinstance(r, LeaseLost)]
            if lost:
                problems.append(f"phase 2c: {len(lost)} heartbeats refused")
            got[i] = [r for r in renewed if not isinstance(r, LeaseLost)]
        return sum(map(len, got))

    def report(got: list[list[LeasedJob]]) -> int:
        for batch in got:
            if not all(r.ok for r in worker.report([worker.completed(j) for j in batch])):
                problems.append("phase 2c: a report refused an outcome")
        return sum(map(len, got))

    gc.collect()
    for _ in range(BLOCKS):
        got: list[list[LeasedJob]] = []
        steps = (("gcra", gcra), ("fetch", fetch), ("heartbeat", heartbeat), ("report", report))
        for kind, run in steps:
            before = admin.commandstats()
            jobs = run(got)
            _calls, usec = delta(admin.commandstats(), before, "fcall")
            if jobs:
                res.inside[kind].append(usec / jobs)
            if kind == "fetch":
                res.jobs += jobs
                if not got:
                    break
        if not got:
            problems.append(f"phase 2c: nothing left to fetch after {res.jobs} jobs")
            break
    return res, sorted(set(problems))


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


# --------------------------------------------------------------------------- phase 6


@dataclass
class SatRun:
    side: str  # "gcra" | "janus"
    calls: int
    rate: float  # decisions/s, as redis-benchmark measured them
    inside_us: float  # FCALL time inside Redis per call
    redis_cpu_us: float  # Redis CPU (user + sys) per call


@dataclass
class SatResults:
    runs: list[SatRun] = field(default_factory=list)
    command: list[str] = field(default_factory=list)  # Janus's redis-benchmark command
    built: str = ""  # the call janus.calls.submit built, as sent

    def of(self, side: str) -> list[SatRun]:
        return [r for r in self.runs if r.side == side]

    def median(self, side: str, attr: str = "rate") -> float:
        return float(statistics.median(getattr(r, attr) for r in self.of(side)))


def shown(arg: object) -> str:
    """An argument as it goes on redis-benchmark's command line."""
    if isinstance(arg, bytes):
        return arg.decode("ascii")
    return str(arg)


def state_keys(conn: redis.Redis, dependency: str) -> list[bytes]:
    """Every key of ``dependency`` but its policy: records, ready lines, state, the GCRA's."""
    k = Keys(PREFIX, dependency)
    keep = {k.policy.encode(), k.scopes.encode()}
    return [key for key in conn.scan_iter(match=f"{k.base}:*", count=1000) if key not in keep]


def reset_dependency(conn: redis.Redis, dependency: str) -> None:
    """Delete :func:`state_keys`. DEL (not UNLINK), so no lazy freeing runs on into the next
    measurement."""
    doomed = state_keys(conn, dependency)
    for start in range(0, len(doomed), 1000):
        conn.delete(*doomed[start : start + 1000])


def run_benchmark(binary: str, port: int, n: int, command: list[str]) -> float:
    """One redis-benchmark run of ``command``; its requests per second."""
    argv = [
        binary,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-c",
        str(SAT_CLIENTS),
        "-P",
        str(SAT_PIPELINE),
        "-n",
        str(n),
        "-r",
        str(SAT_KEYSPACE),
        "--csv",
        *command,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"redis-benchmark exited {done.returncode}: {done.stderr[-500:]}")
    for line in reversed(done.stdout.strip().splitlines()):
        cells = [c.strip('"') for c in line.split('","')]
        if len(cells) >= 2 and cells[0] != "test":
            return float(cells[1])
    raise RuntimeError(f"redis-benchmark printed no result: {done.stdout[-500:]!r}")


def measure_saturation(
    jn: Janus, admin: Admin, port: int, sizes: Sizes
) -> tuple[SatResults, list[str]]:
    problems: list[str] = []
    res = SatResults()
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return res, ["redis-benchmark not found (Debian: apt-get install redis-tools)"]
    conn = redis.Redis(host="127.0.0.1", port=port)
    # Exactly what janus.calls.submit builds for one job; the id goes in as placeholders.
    built = calls.submit(jn.store.keys(SAT), [JobArgs(SAT_JOB_ID, "t", 1, SAT_PAYLOAD)], None)
    name = scripts.function_name("submit")
    res.built = " ".join(
        ["FCALL", name, str(len(built.keys)), *built.keys, *(shown(a) or '""' for a in built.args)]
    )
    janus = ["FCALL", name, str(len(built.keys)), *built.keys, *map(shown, built.args)]
    gcra = ["FCALL", GCRA_FN, "1", gcra_key(SAT), str(GCRA_BURST), str(GCRA_INTERVAL_US)]
    res.command = janus
    commands = {"gcra": gcra, "janus": janus}

    def one(side: str, n: int) -> SatRun:
        reset_dependency(conn, SAT)
        errors0, before, cpu0 = admin.errors(), admin.commandstats(), admin.cpu_s()
        rate = run_benchmark(binary, port, n, commands[side])
        cpu1, after, errors1 = admin.cpu_s(), admin.commandstats(), admin.errors()
        n_calls, usec = delta(after, before, "fcall")
        failed = errors1.get("fcall", 0) - errors0.get("fcall", 0)
        if n_calls != n or failed:
            problems.append(f"saturation, {side}: {n_calls} FCALLs of {n}, {failed} failed")
        if side == "janus":
            match = jn.store.keys(SAT).job_prefix + "*"
            records = sum(1 for _ in conn.scan_iter(match=match, count=1000))
            if records != n:
                problems.append(f"saturation, janus: {records} job records for {n} calls")
        elif state_keys(conn, SAT) != [gcra_key(SAT).encode()]:
            problems.append("saturation, gcra: expected its one key, and nothing else")
        return SatRun(side, n, rate, usec / max(n_calls, 1), (cpu1 - cpu0) / n * 1e6)

    # Calibration (also the warm-up): N for about sat_s seconds per run, a whole number of
    # pipelines on every connection (redis-benchmark sends whole pipelines: -n is rounded up
    # to a multiple of -P, and the calls are counted exactly).
    step = SAT_CLIENTS * SAT_PIPELINE
    calibrate = step * (160 if sizes.sat_s >= 2 else 80)
    n = {
        side: max(calibrate, int(one(side, calibrate).rate * sizes.sat_s) // step * step)
        for side in commands
    }
    for rnd in range(sizes.sat_rounds):
        for side in ("gcra", "janus") if rnd % 2 == 0 else ("janus", "gcra"):
            got = one(side, n[side])
            res.runs.append(got)
            log(
                f"  round {rnd + 1}/{sizes.sat_rounds}, {side:<5}: {got.rate:10,.0f} decisions/s "
                f"({got.calls} calls, {got.inside_us:.1f} µs inside Redis per call)"
            )
    reset_dependency(conn, SAT)
    conn.close()
    return res, sorted(set(problems))


# --------------------------------------------------------------------------- main


def run(cluster: bool, sizes: Sizes, quick: bool, json_path: str | None, no_fail: bool) -> int:
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
        load_bench_library(client)

        parser = parser_name(client)
        environment = [
            redis_line(admin, url, cluster),
            f"hiredis active: {'yes' if parser == '_HiredisParser' else 'NO'} (reply parser "
            f"{parser}); {python_text()}",
            f"machine: {machine_text()}" + (" [--quick: smaller N]" if quick else ""),
        ]
        for line in environment:
            log(line)

        log(
            f"phase 1+2: PING, submits and probes, {BLOCKS} rounds of alternating blocks of "
            f"{sizes.single // BLOCKS}"
        )
        node_port = dependency_port(client, FAST)
        lat, p = measure_latency(jn, client, admin, sizes, pids.get(node_port))
        problems += p
        log(f"phase 2c: fetch, heartbeat and report of {FETCH} jobs per call vs the GCRA")
        cost, p = measure_costs(jn, client, admin, max(1, sizes.single // BLOCKS))
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
        log(
            f"phase 6: one dependency at saturation, redis-benchmark -c {SAT_CLIENTS} "
            f"-P {SAT_PIPELINE}, {sizes.sat_rounds} rounds"
        )
        sat, p = measure_saturation(jn, admin, dependency_port(client, SAT), sizes)
        problems += p
        admin.close()
        jn.close()

    if len(late.lateness_ms) < sizes.min_late:
        problems.append(f"only {len(late.lateness_ms)} scheduled jobs (need {sizes.min_late})")

    figures: dict[str, Any] = {}

    # ---- 1
    ping_med = lat.median("ping")
    report.section("1. PING round trip (Janus's client via janus.store.connect)")
    report.add("PING median", us(ping_med))
    report.add("PING p99", us(pct(lat.samples["ping"], 99)))
    report.add(
        "client and Redis last ran on the same CPU",
        f"{lat.same_cpu}/{lat.cpu_samples} blocks",
    )
    figures["ping_us"] = {"median": ping_med / 1000, "p99": pct(lat.samples["ping"], 99) / 1000}

    # ---- 2
    report.section("2. single submit, 100 B payload, job id generated by Janus")
    for name, label in (("ready", "ready at once"), ("scheduled", "scheduled")):
        med = lat.median(name)
        ratio = med / ping_med
        report.add(f"submit ({label}) median", us(med))
        report.add(f"submit ({label}) p99", us(pct(lat.samples[name], 99)))
        report.add(
            f"submit ({label}) median / PING median",
            ratio_text(ratio),
            f"<= {SUBMIT_RATIO_TARGET}x",
            ratio <= SUBMIT_RATIO_TARGET,
        )
        figures[f"submit_{name}_us"] = {
            "median": med / 1000,
            "p99": pct(lat.samples[name], 99) / 1000,
            "vs_ping": ratio,
            "vs_ping_pass": ratio <= SUBMIT_RATIO_TARGET,
        }

    # ---- 2b
    report.section("2b. where a submit's time goes (informational, medians)")
    report.add(f"FCALL {NOOP_FN} ('return 1'), 1 key", us(lat.median("noop")))
    report.add(f"FCALL {NOOP_FN}, a submit's keys + args", us(lat.median("noop_args")))
    report.add(
        f"FCALL {scripts.function_name('submit')}, args pre-built (no Janus Python)",
        us(lat.median("fcall_submit")),
    )
    report.add(f"FCALL {GCRA_FN} (the minimal GCRA)", us(lat.median("gcra")))
    report.add("Janus.submit Python alone (redis-py stubbed at fcall)", us(lat.median("canned")))
    report.add(f"submit_many of {BATCH}: wall time per job", us(lat.median("batch") / BATCH))
    for kind, label in (
        ("noop", f"{NOOP_FN}"),
        ("noop_args", f"{NOOP_FN} with a submit's keys + args"),
        ("fcall_submit", f"{scripts.function_name('submit')}, args pre-built"),
        ("ping", "PING"),
    ):
        report.add(f"{label}: time inside Redis per call", f"{lat.inside_us(kind):.2f} µs")
    inner = sorted(
        (
            (usec, n, name)
            for name, (n, usec) in lat.server["ready"].items()
            if name not in ("fcall", "info") and n
        ),
        reverse=True,
    )
    n_ready = lat.server["ready"].get("fcall", (1, 0))[0] or 1
    report.notes.append(
        "commands run by one ready submit (calls, µs inside Redis): "
        + ", ".join(f"{name} {n / n_ready:.0f}x {usec / n_ready:.1f}" for usec, n, name in inner)
    )
    figures["probes_us"] = {
        kind: lat.median(kind) / 1000
        for kind in ("noop", "noop_args", "fcall_submit", "gcra", "canned")
    }

    # ---- 2c
    gcra_us = lat.inside_us("gcra")
    single_us, sched_us = lat.inside_us("ready"), lat.inside_us("scheduled")
    batch_us = lat.inside_us("batch")
    report.section(
        "2c. time inside Redis (cmdstat_fcall deltas, one function per block; median of "
        f"{BLOCKS} blocks)"
    )
    report.add(f"minimal GCRA ({GCRA_FN}): per call", f"{gcra_us:.2f} µs")
    report.add("submit (ready), single: per call", f"{single_us:.2f} µs")
    single_x = single_us / gcra_us
    report.add(
        "submit (ready), single / minimal GCRA",
        ratio_text(single_x),
        f"<= {SUBMIT_GCRA_TARGET:g}x",
        single_x <= SUBMIT_GCRA_TARGET,
    )
    report.add(
        "submit (ready), single / minimal GCRA (bar)",
        ratio_text(single_x),
        f"<= {SUBMIT_GCRA_BAR:g}x (bar)",
        single_x <= SUBMIT_GCRA_BAR,
        binding=False,
    )
    raw_us = lat.inside_us("fcall_submit")
    report.add(
        "submit sent as a raw FCALL, args pre-built: per call",
        f"{raw_us:.2f} µs ({ratio_text(raw_us / gcra_us)} GCRA)",
    )
    report.add("submit (scheduled), single: per call", f"{sched_us:.2f} µs")
    report.add("submit (scheduled), single / minimal GCRA", ratio_text(sched_us / gcra_us))
    report.add(f"submit_many, batch of {BATCH} (8 scopes): per job", f"{batch_us:.2f} µs")
    batch_x = batch_us / gcra_us
    report.add(
        "submit_many per job / minimal GCRA",
        ratio_text(batch_x),
        f"<= {BATCH_GCRA_TARGET:g}x",
        batch_x <= BATCH_GCRA_TARGET,
    )
    cost_gcra = statistics.median(cost.inside["gcra"]) if cost.inside["gcra"] else float("nan")
    report.add(
        "minimal GCRA, blocks alternating with the ones below: per call", f"{cost_gcra:.2f} µs"
    )
    cost_figures: dict[str, float] = {"gcra_per_call": cost_gcra}
    for kind, label in (
        ("fetch", "fetch (release + lease start, one call)"),
        ("heartbeat", "heartbeat"),
        ("report", "report (completed)"),
    ):
        value = statistics.median(cost.inside[kind]) if cost.inside[kind] else float("nan")
        cost_figures[kind] = value
        report.add(
            f"{label}, {FETCH} per call: per job",
            f"{value:.2f} µs ({ratio_text(value / cost_gcra)} GCRA)",
        )
    report.notes.append(
        f"phase 2c released, extended and reported {cost.jobs} jobs; protocol 1 starts the "
        "lease inside fetch, so 'start' has no function of its own"
    )
    figures["inside_redis_us"] = {
        "gcra_per_call": gcra_us,
        "submit_ready_per_call": single_us,
        "submit_scheduled_per_call": sched_us,
        "submit_raw_fcall_per_call": raw_us,
        "submit_many_per_job": batch_us,
        "single_vs_gcra": single_x,
        "single_vs_gcra_pass": single_x <= SUBMIT_GCRA_TARGET,
        "single_vs_gcra_bar_pass": single_x <= SUBMIT_GCRA_BAR,
        "batch_vs_gcra": batch_x,
        "batch_vs_gcra_pass": batch_x <= BATCH_GCRA_TARGET,
        "blocks": {k: v for k, v in lat.inside.items() if v},
        "release_and_report_per_job": cost_figures,
    }

    # ---- 3
    best_janus, best_raw = max(bulk.janus_rates), max(bulk.raw_rates)
    bulk_ratio = best_janus / best_raw
    report.section(f"3. submit_many, {sizes.bulk} jobs, 100 B payloads, batch {BATCH} (best of 3)")
    report.add("submit_many", f"{best_janus:,.0f} jobs/s")
    report.add("raw XADD pipeline", f"{best_raw:,.0f} jobs/s")
    report.add(
        "submit_many / raw",
        ratio_text(bulk_ratio),
        f">= {BULK_RATIO_TARGET}x",
        bulk_ratio >= BULK_RATIO_TARGET,
    )
    report.add(
        "submit_many / raw (goal)",
        ratio_text(bulk_ratio),
        f">= {BULK_RATIO_GOAL}x (goal)",
        bulk_ratio >= BULK_RATIO_GOAL,
        binding=False,
    )
    median_ratio = statistics.median(bulk.janus_rates) / statistics.median(bulk.raw_rates)
    report.add("submit_many / raw, medians of the 3 runs (informational)", ratio_text(median_ratio))
    jobs = bulk.jobs_per_side
    janus_server_us = bulk.janus_server.get("fcall", (0, 0))[1]
    raw_server_us = bulk.raw_server.get("xadd", (0, 0))[1]
    report.add("submit_many: wall time per job", f"{bulk.janus_wall_ns / jobs / 1000:.2f} µs")
    report.add("submit_many: time inside Redis per job", f"{janus_server_us / jobs:.2f} µs")
    report.add("raw XADD: wall time per entry", f"{bulk.raw_wall_ns / jobs / 1000:.2f} µs")
    report.add("raw XADD: time inside Redis per entry", f"{raw_server_us / jobs:.2f} µs")
    report.notes.append(
        "submit_many runs (jobs/s): " + ", ".join(f"{r:,.0f}" for r in bulk.janus_rates)
    )
    report.notes.append("raw XADD runs (jobs/s): " + ", ".join(f"{r:,.0f}" for r in bulk.raw_rates))
    figures["submit_many"] = {
        "jobs_per_s": best_janus,
        "raw_xadd_jobs_per_s": best_raw,
        "ratio": bulk_ratio,
        "ratio_pass": bulk_ratio >= BULK_RATIO_TARGET,
        "ratio_goal_met": bulk_ratio >= BULK_RATIO_GOAL,
        "ratio_of_medians": median_ratio,
        "runs": {"janus": bulk.janus_rates, "raw": bulk.raw_rates},
        "inside_redis_us_per_job": {"janus": janus_server_us / jobs, "raw": raw_server_us / jobs},
    }

    # ---- 4
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
        figures["lateness_ms"] = {
            "n": len(late.lateness_ms),
            "p50": pct(late.lateness_ms, 50),
            "p99": p99,
            "max": max(late.lateness_ms),
            "p99_pass": p99 <= LATENESS_P99_TARGET_MS,
        }
    busy = late.idle_with_workers
    report.add(
        f"idle, coordinator + {LATE_WORKERS} waiting workers: FCALL+BLPOP per second",
        f"{busy.per_s('fcall', 'blpop'):.2f}/s",
    )
    alone = late.idle_alone
    report.add(
        "idle coordinator alone: FCALL+BLPOP per second",
        f"{alone.per_s('fcall', 'blpop'):.2f}/s",
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
    figures["idle_commands_per_s"] = {
        "with_workers": busy.per_s("fcall", "blpop"),
        "coordinator_alone": alone.per_s("fcall", "blpop"),
    }

    # ---- 5
    report.section(f"5. coordinator while {PARKED_JOBS} retries wait on the retry budget")
    rel_s = park.releases / park.seconds
    steps_s = park.steps / park.seconds
    report.add(
        f"retries released per second ({park.seconds:.1f} s window)",
        f"{rel_s:.2f}/s",
        f"(budget: {PARK_RATE:g} tokens/s)",
    )
    report.add(
        "coordinator function calls (step) per second",
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
    figures["parked"] = {
        "releases_per_s": rel_s,
        "steps_per_s": steps_s,
        "pass": steps_s <= rel_s + PARK_SLACK_CALLS,
    }

    # ---- 6
    report.section(
        f"6. one dependency at saturation: redis-benchmark -c {SAT_CLIENTS} -P {SAT_PIPELINE} "
        f"(median of {sizes.sat_rounds})"
    )
    if sat.of("gcra") and sat.of("janus"):
        gcra_rate, janus_rate = sat.median("gcra"), sat.median("janus")
        sat_x = janus_rate / gcra_rate
        report.add(f"minimal GCRA ({GCRA_FN})", f"{gcra_rate:,.0f} decisions/s")
        report.add(
            f"Janus submit ({scripts.function_name('submit')}, 1 job per call)",
            f"{janus_rate:,.0f} decisions/s",
        )
        report.add(
            "Janus / minimal GCRA",
            ratio_text(sat_x),
            f">= {SAT_RATIO_TARGET}x",
            sat_x >= SAT_RATIO_TARGET,
        )
        for side, label in (("gcra", "minimal GCRA"), ("janus", "Janus submit")):
            report.add(
                f"{label}: inside Redis / Redis CPU per call",
                f"{sat.median(side, 'inside_us'):.2f} / {sat.median(side, 'redis_cpu_us'):.2f} µs",
            )
            report.notes.append(
                f"saturation {side} runs (decisions/s): "
                + ", ".join(f"{r.rate:,.0f}" for r in sat.of(side))
                + f" ({sat.of(side)[0].calls} calls each)"
            )
        report.notes.append(f"saturation: the call janus.calls.submit built: {sat.built}")
        figures["saturation"] = {
            "gcra_decisions_per_s": gcra_rate,
            "janus_decisions_per_s": janus_rate,
            "ratio": sat_x,
            "ratio_pass": sat_x >= SAT_RATIO_TARGET,
            "runs": [r.__dict__ for r in sat.runs],
            "janus_command": sat.command,
        }
    report.notes.append(f"total run time {time.monotonic() - started:.1f} s")

    print_environment(environment)
    return conclude(
        "admission",
        report,
        problems,
        json_path=json_path,
        no_fail=no_fail,
        quick=quick,
        environment=environment,
        figures=figures,
        cluster=cluster,
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main(
        "admission",
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
