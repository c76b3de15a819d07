"""``janus bench run SCENARIO.yaml``: one load run, start to report.

1. **Redis**: ``--redis URL`` (any Redis or Redis Cluster; a fresh key prefix per run, so
   nothing of an earlier run or another deployment is read or changed), or a throwaway
   ``redis-server`` that the run starts and stops (:mod:`janus.testing`).
2. **Set-up**: the scenario's policy is applied; ``coordinators`` ``janus coordinator``
   processes start (the real command), then the worker and producer processes
   (:mod:`janus.loadtest.agents`), all told one start time ``t0``.
3. **The run**: producers send open-loop for ``duration``; the fault schedule is played
   (upstream outage and throttling inside the workers' handlers; ``kill_workers``: SIGKILL,
   replacements after ``restart_after``; ``pause_coordinator``: SIGSTOP, then SIGCONT); a
   sampler reads the fleet-wide counters, queue depth and Redis INFO (CPU, memory) every
   0.5 s for the live view and the plots.
4. **Drain**: producers done, faults over, the work may finish for up to ``drain`` (the run
   stops earlier once nothing waits and nothing runs). Then workers get SIGTERM (they finish
   what runs), the coordinators too.
5. **Truth**: every accepted job's record is read back from Redis (its status and how
   many attempts were reported completed), and the dead letters: a job with no record is
   lost, one completed twice ran twice. With the workers' own records of each attempt's
   release time this makes :class:`RawRun`, which :mod:`janus.loadtest.report` turns into
   figures, thresholds, ``report.json``, ``report.md`` and plots.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from janus import calls
from janus.client import Janus
from janus.loadtest.agents import (
    START_FILE,
    RunInfo,
    producer_main,
    read_worker_logs,
    worker_main,
)
from janus.loadtest.scenario import Fault, Scenario
from janus.policy import PolicySet, compile_policy
from janus.urls import redact

#: How often the sampler reads counters, status and INFO.
SAMPLE_S = 0.5
#: Job records read back per pipeline.
FATE_CHUNK = 1000
#: How long the processes may take to start and connect.
READY_TIMEOUT_S = 90.0


@dataclass
class DependencyLimits:
    rate: float
    """The enforced rate (cost/s: the compiled interval, rounded as Janus enforces it)."""
    burst: int
    weights: dict[str, float]
    """Weight of each scope the scenario sends to."""
    max_in_flight: int | None


@dataclass
class RawRun:
    """Everything a run saw; :func:`janus.loadtest.report.build` makes the figures."""

    scenario: Scenario
    limits: dict[str, DependencyLimits]
    redis: dict[str, Any]
    t0_ms: int
    ended_s: float
    """Seconds from t0 to the end of the drain."""
    producers: list[dict[str, Any]]
    starts: list[tuple[str, int, int, int, str, str]]
    completions: list[tuple[str, int, int]]
    fates: dict[str, dict[str, tuple[str | None, int, int]]]
    dead: dict[str, dict[str, str]]
    samples: list[dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)


def limits_of(scenario: Scenario, policies: PolicySet) -> dict[str, DependencyLimits]:
    out = {}
    for dep in sorted({a.dependency for a in scenario.producers.arrivals}):
        policy = policies.dependencies[dep]
        compiled = compile_policy(dep, policy)
        interval = int(compiled.fields["interval_us"])
        weights = {}
        for a in scenario.producers.arrivals:
            if a.dependency == dep:
                limits = policy.scope_overrides.get(a.scope, policy.default_scope)
                weights[a.scope] = float(limits.weight)
        out[dep] = DependencyLimits(
            rate=float(Fraction(1_000_000, interval)),
            burst=int(policy.burst),
            weights=weights,
            max_in_flight=policy.max_in_flight,
        )
    return out


@contextmanager
def _redis(url: str | None, cluster: bool) -> Iterator[tuple[str, bool]]:
    """(url, embedded): the given Redis, or a throwaway one started and stopped here."""
    if url is not None:
        yield url, False
        return
    from janus.testing import RedisCluster, RedisServer

    if cluster:
        with RedisCluster.start() as c:
            yield c.url, True
    else:
        with RedisServer.start() as s:
            yield s.url, True


class _Fleet:
    """The run's processes: coordinators (the janus CLI), workers, producers."""

    def __init__(
        self,
        info: RunInfo,
        scenario: Scenario,
        log: Callable[[str], None],
        producer: Callable[[RunInfo, int], None] = producer_main,
        worker: Callable[[RunInfo, int], None] = worker_main,
    ) -> None:
        self.info = info
        self.scenario = scenario
        self.log = log
        self.producer, self.worker = producer, worker
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: list[BaseProcess] = []
        self.producers: list[BaseProcess] = []
        self.coordinators: list[subprocess.Popen[bytes]] = []
        self._next_worker = 0
        self._logs: list[Any] = []

    def start_coordinators(self) -> None:
        for i in range(self.scenario.coordinators):
            out = open(Path(self.info.work_dir, f"coordinator-{i}.log"), "wb")  # noqa: SIM115
            self._logs.append(out)
            cmd = [sys.executable, "-m", "janus", "coordinator", "--redis", self.info.url]
            cmd += ["--prefix", self.info.prefix]
            self.coordinators.append(subprocess.Popen(cmd, stdout=out, stderr=out))

    def start_worker(self) -> None:
        p = self.ctx.Process(target=self.worker, args=(self.info, self._next_worker), daemon=True)
        self._next_worker += 1
        p.start()
        self.workers.append(p)

    def start_producers(self) -> None:
        for i in range(self.scenario.producers.processes):
            p = self.ctx.Process(target=self.producer, args=(self.info, i), daemon=True)
            p.start()
            self.producers.append(p)

    def kill_workers(self, count: int) -> int:
        alive = [p for p in self.workers if p.is_alive()]
        for p in alive[:count]:
            p.kill()
            p.join(5)
        return len(alive[:count])

    def signal_coordinators(self, sig: int) -> None:
        for c in self.coordinators:
            if c.poll() is None:
                c.send_signal(sig)

    def stop(self) -> None:
        for p in self.producers:
            if p.is_alive():
                p.terminate()
        for p in self.workers:
            if p.is_alive():
                p.terminate()  # SIGTERM: running jobs finish, then the worker exits
        deadline = time.monotonic() + 30
        for p in self.workers + self.producers:
            p.join(max(deadline - time.monotonic(), 0.1))
            if p.is_alive():
                p.kill()
                p.join(5)
        self.signal_coordinators(signal.SIGCONT)
        self.signal_coordinators(signal.SIGTERM)
        for c in self.coordinators:
            try:
                c.wait(15)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait(5)
        for f in self._logs:
            f.close()


class _Sampler(threading.Thread):
    """Reads counters, status and Redis INFO every SAMPLE_S into ``samples``."""

    def __init__(self, jn: Janus, deps: list[str]) -> None:
        super().__init__(name="janus-bench-sampler", daemon=True)
        self.jn, self.deps, self.t0 = jn, deps, 0.0
        self.samples: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        self.errors = 0

    def begin(self, t0: float) -> None:
        """Start sampling; times are seconds from ``t0``."""
        self.t0 = t0
        self.start()

    def run(self) -> None:
        while not self.stopped.is_set():
            at = time.time()
            try:
                sample: dict[str, Any] = {"t": round(at - self.t0, 3), "deps": {}}
                for dep in self.deps:
                    st = self.jn.status(dep)
                    sample["deps"][dep] = {
                        "counters": self.jn.counters(dep),
                        "scheduled": st.scheduled,
                        "in_flight": st.in_flight,
                        "circuit": st.circuit,
                    }
                stats = self.jn.store.server_stats()
                sample["redis"] = {
                    "cpu_s": sum(s["cpu_s"] for s in stats.values()),
                    "used_memory": sum(s["used_memory"] for s in stats.values()),
                }
                self.samples.append(sample)
            except Exception:  # a sample missed (Redis busy): the next one counts
                self.errors += 1
            self.stopped.wait(max(SAMPLE_S - (time.time() - at), 0.05))


def _play_faults(
    fleet: _Fleet, faults: list[Fault], t0: float, stop: threading.Event, log: Callable[[str], None]
) -> threading.Thread:
    """The process faults (kills, coordinator pauses) at their times; the upstream ones
    are played by the workers' handlers themselves."""
    actions: list[tuple[float, str, Callable[[], None]]] = []
    for f in faults:
        if f.kind == "kill_workers":
            count = f.count

            def kill(count: int = count, f: Fault = f) -> None:
                n = fleet.kill_workers(count)
                log(f"fault: SIGKILL {n} worker process(es)")

            actions.append((f.at, "kill", kill))
            if f.restart_after is not None:

                def restart(count: int = count) -> None:
                    for _ in range(count):
                        fleet.start_worker()
                    log(f"fault: {count} replacement worker(s) started")

                actions.append((f.at + f.restart_after, "restart", restart))
        elif f.kind == "pause_coordinator":
            actions.append((f.at, "stop", lambda: fleet.signal_coordinators(signal.SIGSTOP)))
            actions.append((f.until, "cont", lambda: fleet.signal_coordinators(signal.SIGCONT)))
    actions.sort(key=lambda a: a[0])

    def run() -> None:
        for at, _, action in actions:
            if stop.wait(max(t0 + at - time.time(), 0)):
                return
            action()

    thread = threading.Thread(target=run, name="janus-bench-faults", daemon=True)
    thread.start()
    return thread


def run_scenario(
    scenario: Scenario,
    policies: PolicySet,
    *,
    url: str | None = None,
    cluster: bool = False,
    compare: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[RawRun, RawRun | None]:
    """Run ``scenario`` through Janus (see the module docstring), then, with ``compare``,
    the same arrivals through the peer (:mod:`janus.loadtest.peers`) on the same Redis."""
    with _redis(url, cluster) as (redis_url, embedded):
        raw = _run_janus(scenario, policies, redis_url, embedded, cluster, progress, log)
        peer = None
        if compare:
            log("compare: the same arrivals through limits (moving window) + naive retries")
            peer = _run_peer(scenario, policies, redis_url, raw, progress, log)
    return raw, peer


def _drive(
    fleet: _Fleet,
    scenario: Scenario,
    drained: Callable[[], bool],
    samples: Callable[[], list[dict[str, Any]]],
    progress: Callable[[dict[str, Any]], None] | None,
    log: Callable[[str], None],
    on_start: Callable[[float], None] = lambda _: None,
) -> tuple[float, float]:
    """Start the fleet, wait until every process is ready, fix the start time ``t0``, play
    the faults, wait for the load and the drain; returns (t0, when the run ended in seconds
    from t0). The fleet is stopped on the way out, whatever happens."""
    stop_faults = threading.Event()
    try:
        for _ in range(scenario.workers.processes):
            fleet.start_worker()
        fleet.start_producers()
        expected = scenario.workers.processes + scenario.producers.processes
        work = Path(fleet.info.work_dir)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(list(work.glob("ready-*"))) < expected:
            dead = [p for p in fleet.workers + fleet.producers if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the run's processes did not start ({len(list(work.glob('ready-*')))} of "
                    f"{expected} ready; see the worker and producer output above)"
                )
            time.sleep(0.05)
        t0 = time.time() + 0.3
        tmp = work / "start.tmp"
        tmp.write_text(repr(t0))
        tmp.replace(work / START_FILE)  # (atomic: a process reads all of it or nothing)
        on_start(t0)
        while time.time() < t0:
            time.sleep(0.02)
        faults = _play_faults(fleet, scenario.faults, t0, stop_faults, log)
        last_shown = 0.0
        end_of_load = t0 + scenario.duration
        deadline = end_of_load + scenario.drain
        faults_over = t0 + max((f.until for f in scenario.faults), default=0.0)
        while True:
            now = time.time()
            got = samples()
            if progress and now - last_shown >= 1.0 and got:
                progress({"elapsed": now - t0, "duration": scenario.duration, "samples": got})
                last_shown = now
            if now >= deadline:
                break
            producing = any(p.is_alive() for p in fleet.producers)
            if not producing and now >= max(end_of_load, faults_over) and drained():
                break
            time.sleep(0.2)
        ended = time.time() - t0
        stop_faults.set()
        faults.join(5)
        return t0, ended
    finally:
        stop_faults.set()
        fleet.stop()


def _run_janus(
    scenario: Scenario,
    policies: PolicySet,
    redis_url: str,
    embedded: bool,
    cluster: bool,
    progress: Callable[[dict[str, Any]], None] | None,
    log: Callable[[str], None],
) -> RawRun:
    deps = sorted({a.dependency for a in scenario.producers.arrivals})
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="janus-bench-") as work:
        jn = Janus.from_url(redis_url, prefix=prefix)
        try:
            jn.apply_policies(PolicySet({d: policies.dependencies[d] for d in deps}, {}))
            versions = jn.store.server_versions()
            info = RunInfo(redis_url, prefix, work, scenario.model_dump(by_alias=True))
            fleet = _Fleet(info, scenario, log)
            fleet.start_coordinators()
            sampler = _Sampler(jn, deps)
            try:
                t0, ended = _drive(
                    fleet,
                    scenario,
                    lambda: _drained(jn, deps),
                    lambda: sampler.samples,
                    progress,
                    log,
                    sampler.begin,
                )
            finally:
                sampler.stopped.set()
            if sampler.is_alive():
                sampler.join(5)
            producers = _producer_docs(work)
            starts, completions = read_worker_logs(work)
            accepted: dict[str, list[str]] = {d: [] for d in deps}
            for doc in producers:
                for job_id, dep, *_ in doc["accepted"]:
                    accepted[dep].append(job_id)
            fates = {dep: _fates(jn, dep, ids) for dep, ids in accepted.items()}
            dead = {dep: {d.job_id: d.reason for d in jn.dead_letters(dep)} for dep in deps}
            events = [
                {"dependency": e.dependency, "kind": e.kind, "t": (e.at_ms / 1000) - t0, **e.fields}
                for dep in deps
                for e in jn.events(dep, last=10_000)
            ]
            counters = {dep: jn.counters(dep) for dep in deps}
            is_cluster = jn.store.is_cluster
        finally:
            jn.close()
    return RawRun(
        scenario=scenario,
        limits=limits_of(scenario, policies),
        redis={
            "url": "embedded throwaway redis-server" if embedded else redact(redis_url),
            "cluster": is_cluster,
            "versions": versions,
            "prefix": prefix,
            "sampler_misses": sampler.errors,
        },
        t0_ms=int(t0 * 1000),
        ended_s=ended,
        producers=producers,
        starts=starts,
        completions=completions,
        fates=fates,
        dead=dead,
        samples=sampler.samples,
        events=events,
        counters=counters,
    )


def _run_peer(
    scenario: Scenario,
    policies: PolicySet,
    redis_url: str,
    janus_run: RawRun,
    progress: Callable[[dict[str, Any]], None] | None,
    log: Callable[[str], None],
) -> RawRun:
    """The same scenario through limits + naive retries (:mod:`janus.loadtest.peers`)."""
    from janus.loadtest import peers

    deps = sorted({a.dependency for a in scenario.producers.arrivals})
    limits = janus_run.limits
    prefix = f"peer-{uuid.uuid4().hex[:10]}"
    cluster = bool(janus_run.redis["cluster"])
    doc = scenario.model_dump(by_alias=True)
    doc["_cluster"] = cluster
    doc["_rates"] = {d: limits[d].rate for d in deps}
    doc["_retry"] = {}
    for d in deps:
        r = policies.dependencies[d].retry
        doc["_retry"][d] = {
            "max_attempts": r.max_attempts,
            "base_s": r.backoff_base_ms / 1000,
            "factor": r.backoff_factor,
            "max_s": r.backoff_max_ms / 1000,
        }
    # (the coordinator faults do not apply: there is none)
    peer_scenario = scenario.model_copy(
        update={"faults": [f for f in scenario.faults if f.kind != "pause_coordinator"]}
    )
    with tempfile.TemporaryDirectory(prefix="janus-bench-peer-") as work:
        info = RunInfo(redis_url, prefix, work, doc)
        fleet = _Fleet(info, peer_scenario, log, peers.producer_main, peers.worker_main)
        quiet = _Quiet(work)
        t0, ended = _drive(
            fleet,
            peer_scenario,
            lambda: quiet.still(1.5) and peers.drained(redis_url, prefix, deps, cluster),
            lambda: [],
            progress,
            log,
        )
        producers = _producer_docs(work)
        starts, completions = read_worker_logs(work)
    done = Counter(job for job, _, _ in completions)
    tried = Counter(job for job, *_ in starts)
    fates: dict[str, dict[str, tuple[str | None, int, int]]] = {d: {} for d in deps}
    dead: dict[str, dict[str, str]] = {d: {} for d in deps}
    for p in producers:
        for job_id, dep, *_ in p["accepted"]:
            max_attempts = doc["_retry"][dep]["max_attempts"]
            if done[job_id]:
                fates[dep][job_id] = ("completed", tried[job_id], done[job_id])
            elif tried[job_id] >= max_attempts:
                fates[dep][job_id] = ("dead", tried[job_id], 0)
                dead[dep][job_id] = "attempts_exhausted"
            else:  # popped by a killed worker, or never run: gone
                fates[dep][job_id] = (None, tried[job_id], 0)
    return RawRun(
        scenario=peer_scenario,
        limits=limits,
        redis={**janus_run.redis, "prefix": prefix},
        t0_ms=int(t0 * 1000),
        ended_s=ended,
        producers=producers,
        starts=starts,
        completions=completions,
        fates=fates,
        dead=dead,
        samples=[],
    )


class _Quiet:
    """True once no worker record was written for a while (naive workers hold retries in
    memory: an empty list does not mean they are done)."""

    def __init__(self, work: str) -> None:
        self.work = work

    def still(self, seconds: float) -> bool:
        stamps = [p.stat().st_mtime for p in Path(self.work).glob("worker-*.log")]
        return not stamps or time.time() - max(stamps) >= seconds


def _producer_docs(work: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(work).glob("producer-*.json"))]


def _drained(jn: Janus, deps: list[str]) -> bool:
    try:
        return all(s.scheduled == 0 and s.in_flight == 0 for s in map(jn.status, deps))
    except Exception:
        return False


def _fates(jn: Janus, dep: str, ids: list[str]) -> dict[str, tuple[str | None, int, int]]:
    keys = jn.store.keys(dep)
    out: dict[str, tuple[str | None, int, int]] = {}
    for i in range(0, len(ids), FATE_CHUNK):
        chunk = ids[i : i + FATE_CHUNK]
        fates: list[tuple[str | None, int, int]] = jn.store.commands(calls.job_fates(keys, chunk))
        out.update(zip(chunk, fates, strict=True))
    return out
