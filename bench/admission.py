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

2. **Single submit latency** (median, p99) of ``Janus.submit`` for a job that is released at
   once (rate 1e6/s, burst 1e9: the validator's ceilings) and, separately, for a job that is
   scheduled (scope rate 1/s, ``max_wait`` 1d), which also writes the delay queue. Janus
   generates each job id (uuid4), as a producer calling ``submit(...)`` would. Ratio =
   submit median / PING median: one submit is one round trip by design, so the ratio is the
   price of the admission decision itself (client-side validation and parsing plus the Lua
   run time in Redis).

   To show where that price goes (section 2b, informational), the same alternating blocks
   also time: ``EVALSHA`` of ``return 1`` (bare, and with a submit's keys + args: the
   cost of the call shape alone), ``EVALSHA`` of submit.lua with pre-built arguments (no
   Janus Python) and ``Janus.submit`` over a stub client that answers ``evalsha`` with a
   canned reply (Janus's and redis-py's Python without the network). ``INFO commandstats``
   deltas around each block give the time spent inside Redis per call, and which commands
   the script runs. PING, both submits and these probes run in alternating blocks (10 rounds
   of each), so load spikes on the machine hit all of them alike.

3. **submit_many throughput** (jobs/s), 100-byte payloads, Janus's default batch of 500, vs a
   raw redis-py pipeline (``transaction=False``) of plain ``XADD`` of the same payloads and
   the same caller-chosen ids, 500 commands per round trip, to a stream in the dependency's
   own hash slot. That pipeline is the cheapest way to append the same data to a Redis
   stream without any admission at all (one round trip per 500 entries, no Lua), so the
   ratio is the throughput kept once every job is rate-checked, recorded and queued. The
   two runs alternate three times; the best run of each is reported (all runs are printed),
   with wall time and time inside Redis (``INFO commandstats``) per job for both.

4. **Coordinator release lateness.** A coordinator runs in a background thread. Jobs from
   several scopes (rate 50/s, burst 1: each job of a scope is due 20 ms after the previous)
   arrive in waves over ~5 s, with idle gaps that let the coordinator go fully idle, and
   with a slow scope that leaves it asleep on a far-away deadline, so both wake paths (the
   ``wake`` list cutting an idle sleep and one cutting a timed sleep) are exercised.
   Lateness = stream entry id (Redis ms at release) - ``decision.not_before_ms``, over every
   job the coordinator released (jobs released at submit are not counted). Both sides are
   Redis clock readings in whole ms (release floored, not_before rounded up), so +/-1 ms is
   quantisation. Lateness is also broken down by a job's position in its scope's wave: the
   first scheduled job of a wave shows the coordinator's wake-up precision alone, later ones
   add whatever the release-time scope bucket re-spaces (with burst 1 it has no slack, so a
   release that is late by d pushes the scope's next job d later too; see the note line).
   Then the queue is left empty for 5 s and the commands the idle coordinator
   sends are counted from ``INFO commandstats`` deltas (EVALSHA + BLPOP, summed over nodes).

Latencies use ``time.perf_counter_ns`` around each call; percentiles are nearest-rank. The
result table marks each figure PASS or MISS against its target; a MISS still exits 0 (this is
a benchmark, not a test), any failure of the run itself exits non-zero.
"""

from __future__ import annotations

import gc
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
from janus import scripts
from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import Decision, ReleaseStep
from janus.keys import Keys
from janus.policy import parse_policy_text
from janus.store import AnyRedis, Arg, JobArgs, Store

PREFIX = "janusbench"
FAST, SCHED, BULK, LATE = "fast", "sched", "bulk", "late"

POLICY = """
dependencies:
  fast:                  # every job released at submit
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
  late:                  # coordinator lateness: each scope's jobs due 20 ms apart
    rate: 1000000
    burst: 1000000000
    max_wait: 1m
    scopes:
      # burst 2, not 1: with burst 1 the per-scope bound (measured at release) leaves no
      # slack, so any delay of one release carries over to the scope's next job and
      # lateness adds up along a backlog; one job of slack absorbs the wake-up jitter.
      default: {rate: 50, burst: 2}
      slow: {rate: 2, burst: 1}
"""

BLOCKS = 10
BATCH = 500
BULK_SCOPES = [f"tenant-{i}" for i in range(8)]
LATE_SCOPES = ["t0", "t1", "t2", "t3"]
LATE_PER_SCOPE = 15
WAVE_S = 0.5
IDLE_WINDOW_S = 5.0

SUBMIT_RATIO_TARGET = 1.3
BULK_RATIO_TARGET = 0.5
LATENESS_P99_TARGET_MS = 10.0


@dataclass(frozen=True)
class Sizes:
    single: int  # pings / submits per kind
    bulk: int  # jobs per submit_many run
    waves: int  # lateness waves (WAVE_S apart)
    min_late: int  # coordinator-released jobs required for a valid lateness figure


FULL = Sizes(single=3000, bulk=20000, waves=10, min_late=500)
QUICK = Sizes(single=600, bulk=4000, waves=3, min_late=100)


# --------------------------------------------------------------------------- small helpers


def us(ns: float) -> str:
    return f"{ns / 1000:.1f} µs"


def timed(call: Callable[[], object], n: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        call()
        out.append(clock() - t0)


# --------------------------------------------------------------------------- Redis plumbing


def ping_fn(client: AnyRedis, key: str) -> Callable[[], object]:
    """PING on the node that owns ``key`` (the only node, outside a cluster)."""
    if isinstance(client, ClusterClient):
        node = client.get_node_from_key(key)
        return lambda: client.ping(target_nodes=node)
    return client.ping


class CannedClient:
    """Stands in for redis-py at ``Script -> client.evalsha``: returns a fixed reply.

    ``Janus.submit`` over a Store built on it runs every line of Janus's and redis-py's
    Python that a real submit runs, except redis-py's ``execute_command`` and the network.
    """

    def __init__(self, real: AnyRedis, reply: object) -> None:
        self._encoder = real.get_encoder()
        self.reply = reply

    def get_encoder(self) -> Any:
        return self._encoder

    def register_script(self, source: str) -> Script:
        return Script(self, source)  # type: ignore[arg-type]

    def evalsha(self, *args: object) -> object:
        return self.reply


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
        calls, usec = self.server[kind].get(command, (0, 0))
        return usec / calls if calls else float("nan")


SUBMIT_KEYS = len(scripts.SPECS["submit"].keys)


def submit_argv(store: Store, dependency: str, job: JobArgs) -> list[Arg]:
    """KEYS + ARGV of submit.lua for one job, exactly as Store.submit builds them."""
    k = store.keys(dependency)
    spec = scripts.SPECS["submit"]
    keys = spec.keys_of({name: getattr(k, name) for name in spec.keys})
    prefixes = {name: getattr(k, name) for name in spec.argv if name.endswith("_prefix")}
    argv = spec.argv_of({**prefixes, "now_us": "", "count": 1}, job.flat())
    return [*keys, *argv]


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
    decisions: dict[str, list[Decision]] = {"released": [], "scheduled": []}

    def fresh_job() -> JobArgs:
        return jn._job_args(Job(scope="t", payload=PAYLOAD), None)

    def submit_fast() -> None:
        decisions["released"].append(jn.submit(FAST, scope="t", payload=PAYLOAD))

    def submit_sched() -> None:
        decisions["scheduled"].append(jn.submit(SCHED, scope="t", payload=PAYLOAD))

    # A no-op script on the dependency's node, bare and with a submit's keys + args.
    noop_key = [Keys(PREFIX, FAST).base + ":noop"]
    same_args = submit_argv(jn.store, FAST, fresh_job())

    def evalsha_noop() -> object:
        return noop(keys=noop_key, client=client)

    def evalsha_noop_args() -> object:
        return client.evalsha(noop.sha, SUBMIT_KEYS, *same_args)

    # submit.lua called straight through redis-py, arguments pre-built (fresh job ids).
    prebuilt = iter(
        [submit_argv(jn.store, FAST, fresh_job()) for _ in range(warm + per_block * BLOCKS)]
    )

    def evalsha_submit() -> object:
        return client.evalsha(submit_sha, SUBMIT_KEYS, *next(prebuilt))

    # The whole Janus.submit with redis-py's execute_command and the network cut out.
    sample = jn.store.submit(FAST, [fresh_job()], None)
    canned = Janus(Store(CannedClient(client, sample), prefix=PREFIX))  # type: ignore[arg-type]

    def submit_canned() -> None:
        canned.submit(FAST, scope="t", payload=PAYLOAD)

    kinds: dict[str, Callable[[], object]] = {
        "ping": ping,
        "released": submit_fast,
        "scheduled": submit_sched,
        "evalsha_noop": evalsha_noop,
        "evalsha_noop_args": evalsha_noop_args,
        "evalsha_submit": evalsha_submit,
        "canned": submit_canned,
    }
    for fn in kinds.values():
        timed(fn, warm, [])
    decisions["released"].clear()
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

    for kind in ("released", "scheduled"):
        got = decisions[kind]
        if kind == "released":
            wrong = [d.status for d in got if d.status != "released"]
        else:  # the scope bucket (burst 1) may let exactly one job through
            wrong = [d.status for d in got if d.status not in ("scheduled", "released")]
            if sum(d.status == "released" for d in got) > 1:
                wrong.append("released more than once")
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
        if len(out) != n or any(d.status != "released" or not d.created for d in out):
            problems.append("submit_many: not every job was released and created")
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


class CountingCoordinator(Coordinator):
    """A Coordinator that also counts re-spaced jobs (ReleaseStep.respaced)."""

    respaced = 0

    def step(self, dependency: str, now_us: int | None = None) -> ReleaseStep:
        result = super().step(dependency, now_us)
        self.respaced += result.respaced
        return result


@dataclass
class LatenessResults:
    lateness_ms: list[int]
    by_position: dict[int, list[int]]
    released_at_submit: int
    rejected: int
    respaced: int
    idle_calls: dict[str, int]
    idle_seconds: float
    steps: int


def measure_lateness(jn: Janus, url: str, admin: Admin, sizes: Sizes) -> LatenessResults:
    coord_store = Store.from_url(url, prefix=PREFIX)
    coord = CountingCoordinator(coord_store, dependencies=[LATE])
    thread = coord.run_in_thread()
    try:
        time.sleep(0.3)  # first step done, watcher blocked on the wake list
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
        deadline = time.monotonic() + 15
        while jn.status(LATE).scheduled:
            if time.monotonic() > deadline:
                raise RuntimeError("coordinator did not drain the delay queue within 15 s")
            time.sleep(0.05)

        # Idle: queue empty, count what the coordinator still sends.
        time.sleep(0.5)
        before = admin.commandstats()
        t0 = time.monotonic()
        time.sleep(IDLE_WINDOW_S)
        after = admin.commandstats()
        idle_seconds = time.monotonic() - t0
    finally:
        coord.stop()
        thread.join(timeout=10)
    idle_calls = {
        name: delta(after, before, name)[0]
        for name in sorted(set(after) | set(before))
        if name != "info" and delta(after, before, name)[0]
    }

    stream_ms = {job_id: ms for ms, _scope, _cost, job_id in coord_store.releases(LATE)}
    coord_store.close()
    lateness: list[int] = []
    by_position: dict[int, list[int]] = {}
    at_submit = rejected = 0
    for d, pos in submitted:
        if d.status == "rejected":
            rejected += 1
        elif d.status == "released":
            at_submit += 1
        else:
            if d.job_id not in stream_ms:
                raise RuntimeError(f"scheduled job {d.job_id} never reached the stream")
            late = stream_ms[d.job_id] - d.not_before_ms
            lateness.append(late)
            by_position.setdefault(pos, []).append(late)
    return LatenessResults(
        lateness,
        by_position,
        at_submit,
        rejected,
        coord.respaced,
        idle_calls,
        idle_seconds,
        coord.steps,
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
        log(f"phase 4: coordinator lateness, {sizes.waves} waves of {WAVE_S}s, then idle")
        late = measure_lateness(jn, url, admin, sizes)
        admin.close()
        jn.close()

    if len(late.lateness_ms) < sizes.min_late:
        problems.append(
            f"only {len(late.lateness_ms)} coordinator-released jobs (need {sizes.min_late})"
        )

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
    for name, label in (("released", "released at once"), ("scheduled", "scheduled")):
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
        ("released", "submit.lua (released)"),
        ("scheduled", "submit.lua (scheduled)"),
    ):
        report.add(f"{label}: time inside Redis per call", f"{lat.server_us_per_call(kind):.1f} µs")
    report.add(
        "PING: time inside Redis per call", f"{lat.server_us_per_call('ping', 'ping'):.1f} µs"
    )
    inner = sorted(
        (
            (usec, calls, name)
            for name, (calls, usec) in lat.server["released"].items()
            if name not in ("evalsha", "info") and calls
        ),
        reverse=True,
    )
    n_released = lat.server["released"].get("evalsha", (1, 0))[0] or 1
    report.notes.append(
        "commands run by one released submit (calls, µs inside Redis): "
        + ", ".join(
            f"{name} {calls / n_released:.0f}x {usec / n_released:.1f}"
            for usec, calls, name in inner
        )
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

    report.section("4. coordinator (background thread)")
    if late.lateness_ms:
        p99 = pct(late.lateness_ms, 99)
        report.add(
            f"release lateness p50 (n={len(late.lateness_ms)})",
            f"{pct(late.lateness_ms, 50)} ms",
        )
        report.add(
            "release lateness p99",
            f"{p99} ms",
            f"<= {LATENESS_P99_TARGET_MS:g} ms",
            p99 <= LATENESS_P99_TARGET_MS,
        )
        report.add("release lateness max", f"{max(late.lateness_ms)} ms")
    idle_total = late.idle_calls.get("evalsha", 0) + late.idle_calls.get("blpop", 0)
    report.add(
        "idle coordinator: EVALSHA+BLPOP per second",
        f"{idle_total / late.idle_seconds:.2f}/s",
        "~0.7/s (docstring)",
    )
    report.notes.append(
        f"lateness: {late.released_at_submit} jobs released at submit (not counted), "
        f"{late.rejected} rejected, {late.respaced} re-spaced by the coordinator, "
        f"{late.steps} release steps"
    )
    positions = sorted(late.by_position)
    report.notes.append(
        "lateness p50/max by position in its scope's wave: "
        + ", ".join(
            f"#{pos}: {pct(late.by_position[pos], 50)}/{max(late.by_position[pos])} ms"
            for pos in positions
        )
    )
    report.notes.append(
        f"idle window {late.idle_seconds:.1f} s, commands seen (all clients, INFO excluded): "
        + (", ".join(f"{k}={v}" for k, v in late.idle_calls.items()) or "none")
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
