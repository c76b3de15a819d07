"""Reliability under real faults: kill -9 of worker processes, a frozen (SIGSTOPped) worker,
a Redis restart with AOF, SCRIPT FLUSH. Real redis-server, real processes, real time.

These are the acceptance tests of "workers and leases": whatever happens to workers or to
Redis, every submitted job ends completed (or dead-lettered after max_attempts), no job is
completed twice, and nothing is left in flight or on the stream.

Worker processes run ``tests/reliability_worker.py`` (see its docstring): they report what
they saw to keys under ``PREFIX:t:*``, so a SIGKILLed worker's reports survive it. Every
test bounds its waits with deadlines and kills every process it started in ``finally``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import JobInfo, LeasedJob, parse_job
from janus.embedded import RedisServer
from janus.keys import Keys
from janus.worker import Worker, WorkerStats

from tests.helpers import make_janus

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "reliability_worker.py"
DEP = "dep"
GROUP = "g"

BODY = f"""
{DEP}:
  rate: 2000
  burst: 200
  max_in_flight: 64
  max_wait: 600s
  lease: 1s
  retention: 1h
  retry: {{max_attempts: 20, backoff: {{base: 50ms, factor: 2, max: 500ms}}}}
"""


# -- helpers ---------------------------------------------------------------------------


class Procs:
    """Worker subprocesses of one test: spawned with their output in a log file; every one
    of them is SIGKILLed (if still running) and reaped by :meth:`kill_all`."""

    def __init__(self, url: str, prefix: str, logdir: Path) -> None:
        self.url, self.prefix, self.logdir = url, prefix, logdir
        self.all: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}
        self.logs: dict[int, Path] = {}
        self._n = 0

    def spawn(self, mode: str) -> subprocess.Popen[bytes]:
        self._n += 1
        log_path = self.logdir / f"{mode}{self._n}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), mode, self.url, self.prefix, DEP, str(self._n)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.all.append(proc)
        self.names[proc.pid] = f"{'w' if mode == 'loop' else 'p'}{self._n}-{proc.pid}"
        self.logs[proc.pid] = log_path
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        path = self.logs[proc.pid]
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def check_alive(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """A worker that exited on its own crashed: fail with its output."""
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(
                    f"worker {self.names[proc.pid]} exited by itself with {proc.returncode}:\n"
                    f"{self.log_of(proc)}"
                )

    def stop_gracefully(
        self, client: redis.Redis, procs: list[subprocess.Popen[bytes]], timeout: float = 5.0
    ) -> list[int | None]:
        """Ask the loop workers to exit (stop key) and wait; returns their exit codes."""
        client.set(f"{self.prefix}:t:stop", "1")
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        return [proc.poll() for proc in procs]

    def kill_all(self) -> None:
        for proc in self.all:
            if proc.poll() is None:
                proc.kill()  # SIGKILL also ends a SIGSTOPped process
        for proc in self.all:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


@contextlib.contextmanager
def coordinator(store_owner: Janus) -> Iterator[tuple[Coordinator, list[BaseException]]]:
    """A coordinator thread; an exception that ends its run() is collected, not lost."""
    coord = Coordinator(store_owner.store, dependencies=[DEP], idle_s=1.0, watch_s=0.5)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            coord.run(check=False)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-coordinator", daemon=True)
    thread.start()
    try:
        yield coord, errors
    finally:
        coord.stop()
        thread.join(10)
        assert not thread.is_alive(), "the coordinator did not stop"
        # Its wake-up watcher ends after its current BLPOP (watch_s): wait for it, so it
        # never talks to a server that a later fixture teardown has already stopped.
        for watcher in list(coord._watchers.values()):
            watcher.join(5)


def wait_until(
    what: str,
    check: Callable[[], object],
    timeout: float,
    step: float = 0.05,
    explain: Callable[[], str] | None = None,
) -> float:
    """Poll ``check`` until true; fail after ``timeout`` s (with ``explain()`` in the
    message). Returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            why = f": {explain()}" if explain else ""
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}{why}")
        time.sleep(step)
    return time.monotonic() - start


def outstanding(jn: Janus) -> int:
    """Jobs not yet finished: waiting for (re)release (``status().scheduled``, whatever
    queues hold them), leased (the in-flight index, expired leases included) or on the
    stream. Zero means every job is completed or dead."""
    k = Keys(jn.store.prefix, DEP)
    client = jn.store.client
    return (
        jn.status(DEP).scheduled
        + int(client.zcard(k.delayed))
        + int(client.zcard(k.inflight))
        + int(client.xlen(k.stream))
    )


def state(jn: Janus) -> str:
    k = Keys(jn.store.prefix, DEP)
    client = jn.store.client
    status = jn.status(DEP)
    return (
        f"scheduled={status.scheduled} next_due_us={status.next_due_us} (Redis time "
        f"{jn.store.time_us()}) leases={client.zcard(k.inflight)} (live {status.in_flight}) "
        f"stream={client.xlen(k.stream)}"
    )


def ready(client: redis.Redis, prefix: str) -> int:
    """How many loop workers have started (each INCRs this once)."""
    return int(client.get(f"{prefix}:t:ready") or 0)


def records(jn: Janus, ids: list[str]) -> dict[str, JobInfo | None]:
    client = jn.store.client
    k = Keys(jn.store.prefix, DEP)
    out: dict[str, JobInfo | None] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        if isinstance(client, redis.RedisCluster):
            raws = [client.hgetall(k.job(i)) for i in chunk]
        else:
            pipe = client.pipeline(transaction=False)
            for i in chunk:
                pipe.hgetall(k.job(i))
            raws = pipe.execute()
        for job_id, raw in zip(chunk, raws, strict=True):
            out[job_id] = parse_job(DEP, raw) if raw else None
    return out


def completions(info: JobInfo) -> list[dict[str, object]]:
    return [h for h in info.history if h.get("outcome") == "completed"]


def reports(client: redis.Redis, key: str) -> list[tuple[str, ...]]:
    return [tuple(item.decode().split()) for item in client.lrange(key, 0, -1)]


def check_finished(
    jn: Janus, ids: list[str], results: list[tuple[str, ...]]
) -> tuple[dict[str, JobInfo], Counter[str]]:
    """The guarantees every test ends with. Returns the records and their status counts."""
    found = records(jn, ids)
    missing = [i for i, info in found.items() if info is None]
    assert not missing, f"{len(missing)} job record(s) vanished, e.g. {missing[:5]}"
    infos = {i: info for i, info in found.items() if info is not None}
    statuses = Counter(info.status for info in infos.values())
    unfinished = {
        i: info.status for i, info in infos.items() if info.status not in ("completed", "dead")
    }
    assert not unfinished, f"{len(unfinished)} job(s) not finished: {list(unfinished.items())[:5]}"
    twice = {i: completions(info) for i, info in infos.items() if len(completions(info)) > 1}
    assert not twice, f"job(s) completed more than once: {list(twice.items())[:3]}"
    for i, info in infos.items():
        if info.status == "completed":
            (done,) = completions(info)
            assert done["attempt"] == info.attempt, (i, info.history)
        else:
            assert not completions(info), (i, info.history)
    per_job = Counter(r[0] for r in results)
    doubles = sorted(i for i, n in per_job.items() if n > 1)
    assert not doubles, f"workers saw {len(doubles)} job(s) completed twice: " + str(
        [r for r in results if r[0] in doubles[:3]]
    )
    not_completed = [r for r in results if infos[r[0]].status != "completed"]
    assert not not_completed, f"accepted completions on unfinished records: {not_completed[:5]}"
    for job_id, attempt, consumer in results:
        (done,) = completions(infos[job_id])
        assert (done["attempt"], done["consumer"]) == (int(attempt), consumer), infos[job_id]
    client = jn.store.client
    k = Keys(jn.store.prefix, DEP)
    status = jn.status(DEP)
    assert status.in_flight == 0, status
    assert status.scheduled == 0, status
    assert client.zcard(k.inflight) == 0
    assert client.xlen(k.stream) == 0, "the stream still holds entries"
    assert client.xpending(k.stream, GROUP)["pending"] == 0, "unacknowledged entries remain"
    dead_letters = jn.store.dead_letters(DEP, count=100_000)
    assert len(dead_letters) == statuses["dead"]
    return infos, statuses


def lease_expiries(infos: dict[str, JobInfo]) -> list[tuple[str, dict[str, object]]]:
    return [
        (job_id, h)
        for job_id, info in infos.items()
        for h in info.history
        if h.get("error") == "lease_expired"
    ]


# -- 1. kill -9 ------------------------------------------------------------------------

KILL_JOBS = 10000
KILL_PHASE_S = 7.0
WORKERS = 4


@pytest.mark.slow
def test_kill_9_workers_loses_nothing_and_completes_nothing_twice(
    standalone_url: str, prefix: str, tmp_path: Path
) -> None:
    """4 worker processes, one SIGKILLed (and replaced) every 0.3-0.6 s for 7 s: every job
    ends completed (or dead), none is completed twice, the killed workers' leases are
    reclaimed, and nothing is left in flight or on the stream."""
    jn = make_janus(standalone_url, prefix, BODY)
    client = jn.store.client
    assert isinstance(client, redis.Redis)
    jn.store.ensure_group(DEP, GROUP)
    procs = Procs(standalone_url, prefix, tmp_path)
    rng = random.Random()
    killed: list[str] = []
    started = time.monotonic()
    try:
        live = [procs.spawn("loop") for _ in range(WORKERS)]
        wait_until("the workers to start", lambda: ready(client, prefix) >= WORKERS, 15)
        ids = [f"job-{i}" for i in range(KILL_JOBS)]
        with coordinator(jn) as (coord, coord_errors):
            jobs = [Job(scope=f"s{n % 4}", job_id=i) for n, i in enumerate(ids)]
            decisions = jn.submit_many(DEP, jobs)
            assert all(d.accepted for d in decisions)
            kill_until = time.monotonic() + KILL_PHASE_S
            while time.monotonic() < kill_until and outstanding(jn):
                time.sleep(rng.uniform(0.3, 0.6))
                procs.check_alive(live)
                victim = live.pop(rng.randrange(len(live)))
                victim.kill()
                victim.wait(5)
                killed.append(procs.names[victim.pid])
                live.append(procs.spawn("loop"))
            kill_phase = time.monotonic() - started
            left_after_kills = outstanding(jn)
            drain = wait_until(
                "the survivors to drain the work",
                lambda: procs.check_alive(live) or outstanding(jn) == 0,
                timeout=60,
                step=0.1,
            )
            codes = procs.stop_gracefully(client, live)
            assert not coord_errors, coord_errors
        assert codes == [0] * len(live), [procs.log_of(p) for p in live]
    finally:
        procs.kill_all()

    results = reports(client, f"{prefix}:t:results")
    lost = reports(client, f"{prefix}:t:lost")
    infos, statuses = check_finished(jn, ids, results)
    # A worker SIGKILLed between its accepted complete and its RPUSH leaves a completed job
    # nobody reported: the record's completing consumer must then be a killed worker, and
    # each killed worker (one job at a time) can leave at most one such job.
    reported = {r[0] for r in results}
    unreported = [
        i for i, info in infos.items() if info.status == "completed" and i not in reported
    ]
    by_consumer = Counter(str(completions(infos[i])[0]["consumer"]) for i in unreported)
    assert set(by_consumer) <= set(killed), by_consumer
    assert all(n == 1 for n in by_consumer.values()), by_consumer
    assert statuses["completed"] == len(reported) + len(unreported)
    expiries = lease_expiries(infos)
    on_killed = [h for _, h in expiries if h.get("consumer") in set(killed)]
    attempts = Counter(info.attempt for info in infos.values())
    print(
        f"\n[kill -9] submitted={len(ids)} completed={statuses['completed']} "
        f"dead={statuses['dead']} kills={len(killed)} reclaimed_attempts={len(expiries)} "
        f"(coordinator counted {coord.reclaimed}; on killed consumers {len(on_killed)}) "
        f"lease_lost={len(lost)} {Counter(r[3] for r in lost)} "
        f"completed_unreported={len(unreported)} attempts={dict(sorted(attempts.items()))} "
        f"kill_phase={kill_phase:.1f}s left_after_kills={left_after_kills} drain={drain:.1f}s"
    )
    assert len(killed) >= 8, "too few kills: the work finished before the kill phase"
    assert on_killed, "no kill caused a reclaim: the test did not test anything"
    assert coord.reclaimed == len(expiries)


# -- 2. a frozen worker ----------------------------------------------------------------


def test_paused_worker_cannot_complete_a_reclaimed_job(
    standalone_url: str, prefix: str, tmp_path: Path
) -> None:
    """A worker frozen by SIGSTOP (heartbeats stop) loses its lease: the coordinator reclaims
    it, attempt 2 runs elsewhere, and the thawed worker's complete is refused (superseded
    while attempt 2 runs, finished after it completed). Exactly one completion."""
    jn = make_janus(standalone_url, prefix, BODY)
    client = jn.store.client
    assert isinstance(client, redis.Redis)
    jn.store.ensure_group(DEP, GROUP)
    procs = Procs(standalone_url, prefix, tmp_path)
    t = f"{prefix}:t"
    try:
        with coordinator(jn) as (coord, coord_errors):
            paused = procs.spawn("pause")
            assert jn.submit(DEP, job_id="frozen").status == "released"
            wait_until(
                "the worker to fetch the job",
                lambda: procs.check_alive([paused]) or client.exists(f"{t}:fetched"),
                timeout=15,
                step=0.01,
            )
            os.kill(paused.pid, signal.SIGSTOP)
            fetched_id, fetched_attempt, paused_consumer = (
                client.get(f"{t}:fetched").decode().split()
            )
            assert (fetched_id, fetched_attempt) == ("frozen", "1")
            frozen_at = time.monotonic()
            # With heartbeats every 1/3 s the lease would never expire: only the freeze
            # (no heartbeats) lets the coordinator reclaim it.
            reclaimed_after = wait_until(
                "the coordinator to reclaim the frozen worker's lease",
                lambda: (jn.job(DEP, "frozen") or pytest.fail("record gone")).attempt == 2,
                timeout=5,
                step=0.02,
            )
            w2 = jn.worker(DEP, group=GROUP, consumer="second")
            jobs: list[LeasedJob] = []
            deadline = time.monotonic() + 5
            while not jobs and time.monotonic() < deadline:
                jobs = w2.fetch(count=1, block_ms=200)
            (again,) = jobs
            assert (again.id, again.attempt) == ("frozen", 2)
            # Thaw the zombie while attempt 2 runs: its complete must be refused ...
            os.kill(paused.pid, signal.SIGCONT)
            frozen_for = time.monotonic() - frozen_at
            client.set(f"{t}:go1", "1")
            wait_until("outcome 1", lambda: client.exists(f"{t}:outcome1"), timeout=10)
            outcome1 = client.get(f"{t}:outcome1").decode()
            w2.complete(again)
            # ... and still refused after attempt 2 completed.
            client.set(f"{t}:go2", "1")
            wait_until("outcome 2", lambda: client.exists(f"{t}:outcome2"), timeout=10)
            outcome2 = client.get(f"{t}:outcome2").decode()
            wait_until("the heartbeat's refusal", lambda: client.exists(f"{t}:heartbeat"), 5)
            heartbeat = client.get(f"{t}:heartbeat").decode()
            paused.wait(10)
            assert not coord_errors, coord_errors
        assert paused.returncode == 0, procs.log_of(paused)
    finally:
        procs.kill_all()
    info = jn.job(DEP, "frozen")
    assert info is not None
    history = [(h["attempt"], h["outcome"], h.get("error"), h["consumer"]) for h in info.history]
    print(
        f"\n[SIGSTOP] frozen {frozen_for:.2f}s, reclaimed {reclaimed_after:.2f}s after the "
        f"freeze; zombie complete: {outcome1!r} then {outcome2!r}; zombie "
        f"heartbeat: {heartbeat!r}; history={history}; coordinator reclaimed={coord.reclaimed}"
    )
    assert outcome1 == "lease_lost:superseded"
    assert outcome2 == "lease_lost:finished"
    assert heartbeat in ("lease_lost:superseded", "lease_lost:finished")
    assert info.status == "completed" and info.attempt == 2
    assert history == [
        (1, "failed", "lease_expired", paused_consumer),
        (2, "completed", None, "second"),
    ]
    assert coord.reclaimed == 1
    assert jn.status(DEP).in_flight == 0 and client.xlen(Keys(prefix, DEP).stream) == 0


# -- 3. Redis restart with AOF ---------------------------------------------------------

RESTART_JOBS = 500


@pytest.mark.slow
def test_redis_restart_with_aof_mid_run_finishes_with_the_same_guarantees(
    prefix: str, tmp_path: Path
) -> None:
    """Redis (AOF, fsync always) is stopped mid-run and restarted 1.5 s later: the worker
    processes and the coordinator reconnect by themselves; every job ends completed (or
    dead), none twice, nothing left in flight."""
    with RedisServer.start(appendonly=True, extra_args=("--appendfsync", "always")) as server:
        # At most 16 leases live when Redis stops: all are reclaimed after the restart, and
        # their retries stay within the default retry budget (10% of first attempts).
        jn = make_janus(server.url, prefix, BODY.replace("max_in_flight: 64", "max_in_flight: 16"))
        client = jn.store.client
        assert isinstance(client, redis.Redis)
        jn.store.ensure_group(DEP, GROUP)
        procs = Procs(server.url, prefix, tmp_path)
        ids = [f"job-{i}" for i in range(RESTART_JOBS)]
        try:
            workers = [procs.spawn("loop") for _ in range(2)]
            wait_until("the workers to start", lambda: ready(client, prefix) >= 2, 15)
            with coordinator(jn) as (coord, coord_errors):
                assert all(d.accepted for d in jn.submit_many(DEP, [Job(job_id=i) for i in ids]))
                wait_until("some progress", lambda: client.llen(f"{prefix}:t:results") >= 150, 10)
                before = client.llen(f"{prefix}:t:results")
                in_flight_at_stop = client.zcard(Keys(prefix, DEP).inflight)
                server.stop()
                # Down longer than a lease: every lease live at the stop has expired when
                # Redis is back, so only the coordinator's reclaim can get that work going.
                time.sleep(1.5)
                server.restart()
                steps_at_restart = coord.steps
                procs.check_alive(workers)
                drain = wait_until(
                    "the work to finish after the restart",
                    lambda: procs.check_alive(workers) or outstanding(jn) == 0,
                    timeout=30,
                    step=0.1,
                    explain=lambda: (
                        f"{state(jn)}; coordinator steps at restart "
                        f"{steps_at_restart}, now {coord.steps}, errors {coord_errors}"
                    ),
                )
                codes = procs.stop_gracefully(client, workers)
                assert not coord_errors, coord_errors
            assert codes == [0, 0], [procs.log_of(p) for p in workers]
        finally:
            procs.kill_all()
        raw_results = reports(client, f"{prefix}:t:results")
        # A re-sent RPUSH (redis-py retries a command whose reply the restart swallowed) may
        # repeat one identical report; a second completion would differ in attempt/consumer.
        results = list(dict.fromkeys(raw_results))
        lost = reports(client, f"{prefix}:t:lost")
        infos, statuses = check_finished(jn, ids, results)
        reported = {r[0] for r in results}
        unreported = [
            i for i, info in infos.items() if info.status == "completed" and i not in reported
        ]
        # A complete that Redis applied but whose reply the stop swallowed: re-sent by
        # redis-py and refused ("finished"), or never answered before the lease ended
        # ("unreported"). Either way the worker that completed it did not learn it did.
        unsure = {(r[0], r[2]) for r in lost if r[3] in ("finished", "unreported")}
        for i in unreported:
            done = completions(infos[i])[0]
            assert (i, done["consumer"]) in unsure, (i, infos[i].history, lost)
        expiries = lease_expiries(infos)
        print(
            f"\n[AOF restart] submitted={len(ids)} completed={statuses['completed']} "
            f"dead={statuses['dead']} reported_before_stop={before} "
            f"in_flight_at_stop={in_flight_at_stop} "
            f"repeated_reports={len(raw_results) - len(results)} "
            f"reclaimed_attempts={len(expiries)} (coordinator counted {coord.reclaimed}) "
            f"lease_lost={len(lost)} "
            f"{Counter(r[3] for r in lost)} completed_unreported={len(unreported)} "
            f"drain_after_restart={drain:.1f}s"
        )
        assert before < len(ids), "the work finished before the restart"
        assert in_flight_at_stop > 0, "no lease was live when Redis stopped"


# -- 4. SCRIPT FLUSH -------------------------------------------------------------------

FLUSH_JOBS = 400


def test_script_flush_mid_run_is_invisible(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCRIPT FLUSH on every primary, five times while workers (Worker.run threads) and a
    coordinator are busy: every job completes, no lease is lost, nothing is logged or
    raised (redis-py reloads a flushed script on NOSCRIPT), and the workers leave no thread
    behind."""
    body = BODY.replace("rate: 2000", "rate: 300").replace("burst: 200", "burst: 20")
    jn = make_janus(redis_url, prefix, body)
    client = jn.store.client
    thread_errors: list[str] = []

    def excepthook(args: threading.ExceptHookArgs) -> None:
        trace = "".join(traceback.format_exception(args.exc_value))  # type: ignore[arg-type]
        thread_errors.append(f"in thread {getattr(args.thread, 'name', '?')}:\n{trace}")

    monkeypatch.setattr(threading, "excepthook", excepthook)
    caplog.set_level(logging.WARNING, logger="janus")
    # The jobs each Worker.run holds (the dict its heartbeat thread walks), to check that
    # run() leaves none behind and to end a heartbeat thread that outlives run().
    held: list[tuple[dict[object, LeasedJob], threading.Lock]] = []
    heartbeats = Worker._heartbeats

    def spy(self: Worker, active: dict[object, LeasedJob], lock: threading.Lock, lease_ms: int):
        held.append((active, lock))
        return heartbeats(self, active, lock, lease_ms)  # type: ignore[arg-type]

    monkeypatch.setattr(Worker, "_heartbeats", spy)
    rng = random.Random(7)

    def handler(job: LeasedJob) -> None:
        # Mostly quick; one in 25 outlives a heartbeat interval (lease/3), so heartbeat.lua
        # runs across the flushes too.
        time.sleep(0.5 if rng.random() < 0.04 else rng.uniform(0.001, 0.003))

    consumers = [f"{prefix}-t{n}" for n in range(3)]
    workers = [
        Janus.from_url(redis_url, prefix=prefix).worker(DEP, group=GROUP, consumer=consumer)
        for consumer in consumers
    ]
    stats: list[WorkerStats] = []
    run_errors: list[BaseException] = []

    def run(w: Worker) -> None:
        try:
            stats.append(w.run(handler, concurrency=4, block_ms=200, install_signals=False))
        except BaseException as exc:
            run_errors.append(exc)

    def beating() -> list[threading.Thread]:
        names = {f"janus-heartbeat-{consumer}" for consumer in consumers}
        return [t for t in threading.enumerate() if t.name in names]

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    flushes = 0
    ids = [f"job-{i}" for i in range(FLUSH_JOBS)]
    left_behind: list[str] = []
    try:
        for thread in threads:
            thread.start()
        with coordinator(jn) as (coord, coord_errors):
            assert all(d.accepted for d in jn.submit_many(DEP, [Job(job_id=i) for i in ids]))
            while outstanding(jn) and flushes < 5:
                time.sleep(0.2)
                assert client.script_flush() is True
                flushes += 1
            took = wait_until("the work to finish", lambda: outstanding(jn) == 0, 30)
            assert not coord_errors, coord_errors
    finally:
        for w in workers:
            w.stop()
        for thread in threads:
            thread.join(10)
        # run() has returned: its heartbeat thread must end within one interval (lease/3).
        with contextlib.suppress(BaseException):
            wait_until("the heartbeat threads to end", lambda: not beating(), 2.0)
        for active, lock in held:
            with lock:
                left_behind += [f"{job.id}(attempt {job.attempt})" for job in active.values()]
                active.clear()  # lets a heartbeat thread that outlived run() end
        for beat in beating():
            beat.join(5)
    assert not any(thread.is_alive() for thread in threads)
    assert not run_errors, run_errors
    assert not thread_errors, "\n".join(thread_errors)
    infos, statuses = check_finished(jn, ids, [])
    total = WorkerStats()
    for s in stats:
        for field in ("fetched", "completed", "failed", "lease_lost", "skipped"):
            setattr(total, field, getattr(total, field) + getattr(s, field))
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("janus")]
    # The heartbeat thread may extend a lease a moment after the job's own thread completed
    # it: refused ("already finished") and logged once; harmless. (Many for one job: a leak.)
    late_beats = Counter(
        m
        for m in warnings
        if m.startswith("cannot extend the lease of") and m.endswith("the job already finished")
    )
    print(
        f"\n[SCRIPT FLUSH {'cluster' if isinstance(client, redis.RedisCluster) else 'standalone'}]"
        f" submitted={len(ids)} completed={statuses['completed']} dead={statuses['dead']} "
        f"flushes={flushes} worker_stats={total} reclaimed={coord.reclaimed} "
        f"warnings={len(warnings)} (late heartbeats {late_beats.total()}, most for one job "
        f"{max(late_beats.values(), default=0)}) jobs_left_in_run={left_behind} drain={took:.1f}s"
    )
    assert flushes >= 3, "the work finished before the flushes"
    assert statuses["completed"] == len(ids)
    assert total.completed == len(ids) and total.lease_lost == 0 and total.failed == 0
    assert not [m for m in warnings if "NOSCRIPT" in m.upper()], warnings
    assert not [m for m in warnings if m not in late_beats], warnings
    assert not lease_expiries(infos)
    assert not left_behind, (
        f"Worker.run returned but still holds finished job(s) {left_behind}: its heartbeat "
        f"thread outlived run() and kept extending them ({late_beats.most_common(2)})"
    )
