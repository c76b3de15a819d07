"""Reliability under real faults: kill -9 of worker processes, a frozen (SIGSTOPped) worker,
a Redis restart with AOF, FUNCTION FLUSH. Real redis-server, real processes, real time.

These are the acceptance tests of "workers and leases": whatever happens to workers or to
Redis, every submitted job ends completed (or dead-lettered after max_attempts), no job is
completed twice, no attempt ends twice, and nothing is left behind: no lease, nothing
waiting, every group stream empty with nothing pending.

A job is released only when a worker fetches it (the fetch starts its lease), so a worker
killed while it holds fetched jobs leaves leases that expire; the next fetch (or the
coordinator) reclaims them as failed attempts and the jobs run again. Worker processes run
``tests/reliability_worker.py`` (see its docstring): they report what they saw to keys under
``PREFIX:t:*``, so a SIGKILLed worker's reports survive it.

Every test is bounded (at most ``BUDGET_S``), waits only through ``tests.helpers.wait_until``
with generous timeouts, paces its faults by progress (not by the clock), prints the figures
it checks, and kills every process it started in ``finally``.
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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from janus import worker as worker_module
from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import JobInfo, LeasedJob, parse_job
from janus.keys import Keys
from janus.testing import RedisServer
from janus.worker import Worker, WorkerStats

from tests.helpers import flush_library, make_janus, wait_until
from tests.reliability_worker import GROUP, LETTERS, SLOTS

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "reliability_worker.py"
DEP = "dep"
#: Every test ends (passed or failed) within this many seconds.
BUDGET_S = 60.0

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


class Budget:
    """The test's time budget: each wait gets what is left of it (minus a margin for the
    checks and the clean-up that follow)."""

    def __init__(self, total_s: float = BUDGET_S, reserve_s: float = 8.0) -> None:
        self.deadline = time.monotonic() + total_s - reserve_s

    def left(self, most: float | None = None) -> float:
        left = max(self.deadline - time.monotonic(), 0.1)
        return left if most is None else min(left, most)


def waited(
    predicate: Callable[[], object],
    timeout_s: float,
    what: str,
    explain: Callable[[], str] | None = None,
) -> float:
    """``tests.helpers.wait_until``, returning the seconds it took; on a timeout the
    message also says ``explain()`` (the state the wait was stuck in)."""
    start = time.monotonic()
    try:
        wait_until(predicate, timeout_s, what)
    except AssertionError as exc:
        if explain is None:
            raise
        raise AssertionError(f"{exc}: {explain()}") from None
    return time.monotonic() - start


class Procs:
    """Worker subprocesses of one test: spawned with their output in a log file; every one
    of them is SIGKILLed (if still running) and reaped by :meth:`kill_all`."""

    def __init__(self, url: str, prefix: str, logdir: Path) -> None:
        self.url, self.prefix, self.logdir = url, prefix, logdir
        self.all: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}
        self.modes: dict[int, str] = {}
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
        # The consumer name the worker gives itself (see reliability_worker.py).
        self.names[proc.pid] = f"{LETTERS[mode]}{self._n}-{proc.pid}"
        self.modes[proc.pid] = mode
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


def outstanding(jn: Janus) -> int:
    """Jobs not finished yet, wherever they are: waiting (delay queue, ready lines:
    ``status().scheduled``), parked for a retry token, leased (the in-flight index, expired
    leases included) or on a group stream. Zero means every job is completed or dead."""
    k = Keys(jn.store.prefix, DEP)
    client = jn.store.client
    status = jn.status(DEP)
    return (
        status.scheduled
        + status.parked
        + status.stream_length
        + int(client.zcard(k.delayed))
        + int(client.zcard(k.inflight))
    )


def state(jn: Janus) -> str:
    k = Keys(jn.store.prefix, DEP)
    client = jn.store.client
    status = jn.status(DEP)
    return (
        f"scheduled={status.scheduled} parked={status.parked} delayed={client.zcard(k.delayed)} "
        f"next_due_us={status.next_due_us} (Redis time {jn.store.time_us()}) "
        f"leases={client.zcard(k.inflight)} (live {status.in_flight}) "
        f"streams={jn.store.stream_counts(DEP)}"
    )


def counter(client: redis.Redis, prefix: str, name: str) -> int:
    """A count the loop workers INCR (``ready``: started; ``group_created``: fetches that
    created the consumer group)."""
    return int(client.get(f"{prefix}:t:{name}") or 0)


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
    """The guarantees every test ends with. Returns the records and their status counts.

    ``results``: the completions workers were told were accepted (job, attempt, consumer).
    """
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
        # Every attempt ended exactly once, in order (a returned attempt is given back
        # uncounted: the next fetch reuses its number).
        ended = [h["attempt"] for h in info.history if h.get("outcome") != "returned"]
        assert ended == list(range(1, info.attempt + 1)), (i, info.history)
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
    assert (status.in_flight, status.scheduled, status.parked) == (0, 0, 0), status
    assert client.zcard(k.inflight) == 0, "leases left in the in-flight index"
    assert client.zcard(k.delayed) == 0, "jobs left in the delay queue"
    streams = jn.store.stream_counts(DEP)
    assert streams == {GROUP: (0, 0)}, f"group streams not empty / entries pending: {streams}"
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


def unique(results: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Reports without exact repeats: redis-py re-sends an RPUSH whose reply was lost (a
    timeout, a restart), which repeats the same lines; a second completion of a job would
    differ in attempt or consumer and still be seen."""
    return list(dict.fromkeys(results))


# -- 1. kill -9 ------------------------------------------------------------------------

KILL_JOBS = 8000
#: One worker is SIGKILLed (and replaced by one of its mode) each time this many more
#: completions were reported, until KILL_UNTIL of the jobs are: the kills land mid-run
#: however fast or slow the machine is.
KILL_EVERY = 400
KILL_UNTIL = 0.75
MODES = ["batch", "each", "batch", "each"]
#: Kills (by number) that wait for a batch worker to stop at a point first: right after a
#: fetch (it holds a fetched batch), right after a batch report was applied (before the
#: worker could record it: the report was in flight from its side).
TARGETED = {2: "fetch", 5: "report"}


@pytest.mark.slow
def test_kill_9_workers_loses_nothing_and_completes_nothing_twice(
    standalone_url: str, prefix: str, tmp_path: Path
) -> None:
    """4 worker processes (2 reporting in batches, 2 one job at a time, each holding up to 8
    fetched jobs), one SIGKILLed and replaced every 400 completions until 3/4 of 8000 jobs
    are done; one of the kills lands on a batch worker holding a fetched batch, one right
    after a batch report of its was applied: every job ends completed (or dead), none is
    completed twice, no attempt ends twice, the killed workers' leases are reclaimed, a
    killed worker's last batch report is applied whole or not at all, and nothing is left
    in flight, waiting, on a group stream or pending."""
    budget = Budget()
    jn = make_janus(standalone_url, prefix, BODY)
    client = jn.store.client
    assert isinstance(client, redis.Redis)
    procs = Procs(standalone_url, prefix, tmp_path)
    rng = random.Random()
    killed: list[str] = []
    t = f"{prefix}:t"
    results_key = f"{t}:results"
    # The targeted kills: point -> (consumer, the (job, attempt)s it held when killed).
    held: dict[str, tuple[str, list[tuple[str, int]]]] = {}
    started = time.monotonic()
    try:
        live = [procs.spawn(mode) for mode in MODES]
        waited(lambda: counter(client, prefix, "ready") >= len(live), budget.left(20), "start-up")
        ids = [f"job-{i}" for i in range(KILL_JOBS)]
        with coordinator(jn) as (coord, coord_errors):
            jobs = [Job(scope=f"s{n % 4}", job_id=i) for n, i in enumerate(ids)]
            decisions = jn.submit_many(DEP, jobs)
            assert all(d.accepted for d in decisions)
            # Nothing is released at submit: every job waits for a worker to fetch it.
            assert {d.attempt for d in decisions} == {0}
            goals = range(KILL_EVERY, int(KILL_JOBS * KILL_UNTIL), KILL_EVERY)
            for n, goal in enumerate(goals):
                waited(
                    lambda goal=goal: procs.check_alive(live) or client.llen(results_key) >= goal,
                    budget.left(),
                    f"{goal} completions",
                    lambda: state(jn),
                )
                point = TARGETED.get(n)
                if point is None:  # anywhere: working, fetching, reporting, waiting
                    victim = live.pop(rng.randrange(len(live)))
                else:  # a batch worker stopped at `point`, for certain
                    victim = rng.choice([p for p in live if procs.modes[p.pid] == "batch"])
                    live.remove(victim)
                    name = procs.names[victim.pid]
                    client.set(f"{prefix}:t:hold", f"{point} {name}")
                    waited(
                        lambda v=victim, name=name: (
                            procs.check_alive([v]) or client.exists(f"{t}:held:{name}")
                        ),
                        budget.left(),
                        f"{name} to stop after a {point}",
                    )
                    what, *jobs_held = client.get(f"{t}:held:{name}").decode().split()
                    assert what == point
                    held[point] = (
                        name,
                        [(j, int(a)) for j, a in (x.split(":") for x in jobs_held)],
                    )
                    client.delete(f"{prefix}:t:hold")
                victim.kill()
                victim.wait(5)
                killed.append(procs.names[victim.pid])
                live.append(procs.spawn(procs.modes[victim.pid]))
            kill_phase = time.monotonic() - started
            left_after_kills = outstanding(jn)
            drain = waited(
                lambda: procs.check_alive(live) or outstanding(jn) == 0,
                budget.left(),
                "the survivors to drain the work",
                lambda: state(jn),
            )
            codes = procs.stop_gracefully(client, live)
            assert not coord_errors, coord_errors
        assert codes == [0] * len(live), [procs.log_of(p) for p in live]
    finally:
        procs.kill_all()

    raw_results = reports(client, results_key)
    results = unique(raw_results)
    lost = reports(client, f"{prefix}:t:lost")
    infos, statuses = check_finished(jn, ids, results)
    # A worker SIGKILLed between its accepted report and its RPUSH leaves completed jobs
    # nobody reported: their completing consumer must be a killed worker, and they must be
    # that worker's last report call alone (one call: one Redis time), at most one job for
    # a worker that reports one at a time, at most its slots for a batch reporter.
    reported = {r[0] for r in results}
    unreported = [
        i for i, info in infos.items() if info.status == "completed" and i not in reported
    ]
    by_consumer: dict[str, dict[str, dict[str, object]]] = defaultdict(dict)
    for i in unreported:
        (done,) = completions(infos[i])
        by_consumer[str(done["consumer"])][i] = done
    assert set(by_consumer) <= set(killed), sorted(by_consumer)
    for consumer, jobs_left in by_consumer.items():
        assert len({d["at_ms"] for d in jobs_left.values()}) == 1, (consumer, jobs_left)
        assert len(jobs_left) <= (SLOTS if consumer.startswith(LETTERS["batch"]) else 1)
    assert statuses["completed"] == len(reported) + len(unreported)
    # Killed holding a fetched batch: each of those attempts expired on that worker and was
    # reclaimed; the job ran again.
    fetch_victim, fetch_held = held["fetch"]
    for job_id, attempt in fetch_held:
        info = infos[job_id]
        ended = [
            (h["outcome"], h.get("error"), h["consumer"])
            for h in info.history
            if h["outcome"] != "returned"
        ]
        assert ended[attempt - 1] == ("failed", "lease_expired", fetch_victim), info.history
        assert info.attempt > attempt, info.history
    # Killed right after its batch report was applied: that batch is completed, by that
    # worker, in those attempts, and is exactly what the worker left unreported.
    report_victim, report_held = held["report"]
    assert sorted(by_consumer[report_victim]) == sorted(j for j, _ in report_held)
    for job_id, attempt in report_held:
        (done,) = completions(infos[job_id])
        assert (done["attempt"], done["consumer"]) == (attempt, report_victim), infos[job_id]
    expiries = lease_expiries(infos)
    reclaimed_per_killed = Counter(
        str(h["consumer"]) for _, h in expiries if h.get("consumer") in set(killed)
    )
    most_from_one = max(reclaimed_per_killed.values(), default=0)
    attempts = Counter(info.attempt for info in infos.values())
    print(
        f"\n[kill -9] submitted={len(ids)} completed={statuses['completed']} "
        f"dead={statuses['dead']} kills={len(killed)} reclaimed_attempts={len(expiries)} "
        f"(coordinator reclaimed {coord.reclaimed}, fetches the rest; on killed consumers "
        f"{reclaimed_per_killed.total()}, most from one {most_from_one}) "
        f"lease_lost={len(lost)} {Counter(r[3] for r in lost)} "
        f"targeted: killed holding a fetched batch of {len(fetch_held)}, killed after an "
        f"applied batch report of {len(report_held)}; "
        f"completed_unreported={len(unreported)} in {len(by_consumer)} killed report(s) "
        f"{ {c: len(d) for c, d in by_consumer.items()} } "
        f"repeated_reports={len(raw_results) - len(results)} "
        f"group_created={counter(client, prefix, 'group_created')} "
        f"attempts={dict(sorted(attempts.items()))} "
        f"kill_phase={kill_phase:.1f}s left_after_kills={left_after_kills} drain={drain:.1f}s"
    )
    assert len(killed) == len(range(KILL_EVERY, int(KILL_JOBS * KILL_UNTIL), KILL_EVERY))
    assert left_after_kills > 0, "the work finished during the kill phase"
    # Killed workers held fetched jobs: their leases expired and were reclaimed, several
    # from one worker (it was killed holding a fetched batch).
    assert reclaimed_per_killed, "no kill caused a reclaim: the test did not test anything"
    assert most_from_one >= 2, reclaimed_per_killed
    # Each reclaim is one expired attempt, ended once (by the coordinator or a fetch).
    assert coord.reclaimed <= len(expiries)
    # The first fetch that delivered created the group; nothing had to create it again.
    assert counter(client, prefix, "group_created") == 1


# -- 2. a frozen worker ----------------------------------------------------------------


def test_paused_worker_cannot_complete_a_reclaimed_job(
    standalone_url: str, prefix: str, tmp_path: Path
) -> None:
    """A worker frozen by SIGSTOP (heartbeats stop) loses its lease: the coordinator reclaims
    it (a failed attempt, lease_expired; its stream entry ends), attempt 2 is fetched by
    another worker, and the thawed worker's complete is refused (superseded while attempt 2
    runs, finished after it completed). Exactly one completion."""
    budget = Budget()
    jn = make_janus(standalone_url, prefix, BODY)
    client = jn.store.client
    assert isinstance(client, redis.Redis)
    procs = Procs(standalone_url, prefix, tmp_path)
    t = f"{prefix}:t"
    stream = Keys(prefix, DEP).stream(GROUP)
    try:
        with coordinator(jn) as (coord, coord_errors):
            paused = procs.spawn("pause")
            assert jn.submit(DEP, job_id="frozen").status == "ready"
            waited(
                lambda: procs.check_alive([paused]) or client.exists(f"{t}:fetched"),
                budget.left(20),
                "the worker to fetch the job",
            )
            os.kill(paused.pid, signal.SIGSTOP)
            fetched_id, fetched_attempt, paused_consumer = (
                client.get(f"{t}:fetched").decode().split()
            )
            assert (fetched_id, fetched_attempt) == ("frozen", "1")
            frozen_at = time.monotonic()

            def reclaimed() -> bool:
                info = jn.job(DEP, "frozen") or pytest.fail("record gone")
                return any(h.get("error") == "lease_expired" for h in info.history)

            # With heartbeats every 1/3 s the lease would never expire: only the freeze
            # (no heartbeats) lets the coordinator reclaim it. Nobody else fetches meanwhile,
            # so the coordinator is the one that does.
            reclaimed_after = waited(
                reclaimed, budget.left(15), "the coordinator to reclaim the frozen lease"
            )
            after_reclaim = jn.job(DEP, "frozen")
            assert after_reclaim is not None
            streams_after_reclaim = jn.store.stream_counts(DEP)
            w2 = jn.worker(DEP, group=GROUP, consumer="second")
            jobs: list[LeasedJob] = []
            waited(
                lambda: jobs.extend(w2.fetch(count=1, block_ms=200)) or jobs,
                budget.left(10),
                "the second worker to fetch attempt 2",
            )
            (again,) = jobs
            assert (again.id, again.attempt) == ("frozen", 2)
            streams_during_2 = jn.store.stream_counts(DEP)
            pending = client.xpending_range(stream, GROUP, "-", "+", 10)
            pending_during_2 = [(p["message_id"].decode(), p["consumer"].decode()) for p in pending]
            # Thaw the zombie while attempt 2 runs: its complete must be refused ...
            os.kill(paused.pid, signal.SIGCONT)
            frozen_for = time.monotonic() - frozen_at
            client.set(f"{t}:go1", "1")
            waited(lambda: client.exists(f"{t}:outcome1"), budget.left(10), "outcome 1")
            outcome1 = client.get(f"{t}:outcome1").decode()
            w2.complete(again)
            # ... and still refused after attempt 2 completed.
            client.set(f"{t}:go2", "1")
            waited(lambda: client.exists(f"{t}:outcome2"), budget.left(10), "outcome 2")
            outcome2 = client.get(f"{t}:outcome2").decode()
            waited(
                lambda: client.exists(f"{t}:heartbeat"), budget.left(5), "the heartbeat's refusal"
            )
            heartbeat = client.get(f"{t}:heartbeat").decode()
            paused.wait(budget.left(10))
            assert not coord_errors, coord_errors
        assert paused.returncode == 0, procs.log_of(paused)
    finally:
        procs.kill_all()
    info = jn.job(DEP, "frozen")
    assert info is not None
    history = [(h["attempt"], h["outcome"], h.get("error"), h["consumer"]) for h in info.history]
    print(
        f"\n[SIGSTOP] frozen {frozen_for:.2f}s, reclaimed {reclaimed_after:.2f}s after the "
        f"freeze (record then {after_reclaim.status!r}, attempt {after_reclaim.attempt}, "
        f"streams {streams_after_reclaim}); attempt 2 pending {pending_during_2}; zombie "
        f"complete: {outcome1!r} then {outcome2!r}; zombie heartbeat: {heartbeat!r}; "
        f"history={history}; coordinator reclaimed={coord.reclaimed}; "
        f"streams at the end {jn.store.stream_counts(DEP)}"
    )
    # Reclaimed: a failed attempt waiting for its retry; the zombie's entry has ended.
    assert (after_reclaim.status, after_reclaim.attempt) == ("failed", 1)
    assert after_reclaim.last_error == "lease_expired"
    assert streams_after_reclaim == {GROUP: (0, 0)}
    assert streams_during_2 == {GROUP: (1, 1)}
    assert pending_during_2 == [(again.token, "second")]
    assert outcome1 == "lease_lost:superseded"
    assert outcome2 == "lease_lost:finished"
    assert heartbeat in ("lease_lost:superseded", "lease_lost:finished")
    assert info.status == "completed" and info.attempt == 2
    assert history == [
        (1, "failed", "lease_expired", paused_consumer),
        (2, "completed", None, "second"),
    ]
    assert coord.reclaimed == 1
    st = jn.status(DEP)
    assert (st.in_flight, st.scheduled, st.stream_length) == (0, 0, 0)
    assert jn.store.stream_counts(DEP) == {GROUP: (0, 0)}


# -- 3. Redis restart with AOF ---------------------------------------------------------

RESTART_JOBS = 1500


@pytest.mark.slow
def test_redis_restart_with_aof_mid_run_finishes_with_the_same_guarantees(
    prefix: str, tmp_path: Path
) -> None:
    """Redis (AOF, fsync always) is stopped mid-run, while leases are live, and restarted
    1.5 s later (longer than a lease): the worker processes (one reporting in batches, one
    job at a time) and the coordinator ride it out; the group and stream come back from the
    AOF; every job ends completed (or dead), none twice, nothing left in flight or pending;
    and every completion was answered to the worker that made it (re-sent reports carry
    their report ids, so an outcome applied before the stop is answered ``ok`` again)."""
    budget = Budget()
    with RedisServer.start(appendonly=True, extra_args=("--appendfsync", "always")) as server:
        # At most 16 leases live when Redis stops: all are reclaimed after the restart, and
        # their retries stay within the default retry budget (10% of first attempts).
        jn = make_janus(server.url, prefix, BODY.replace("max_in_flight: 64", "max_in_flight: 16"))
        client = jn.store.client
        assert isinstance(client, redis.Redis)
        procs = Procs(server.url, prefix, tmp_path)
        ids = [f"job-{i}" for i in range(RESTART_JOBS)]
        results_key = f"{prefix}:t:results"
        k = Keys(prefix, DEP)
        try:
            workers = [procs.spawn("batch"), procs.spawn("each")]
            waited(lambda: counter(client, prefix, "ready") >= 2, budget.left(20), "start-up")
            with coordinator(jn) as (coord, coord_errors):
                assert all(d.accepted for d in jn.submit_many(DEP, [Job(job_id=i) for i in ids]))
                waited(
                    lambda: (
                        procs.check_alive(workers)
                        or (client.llen(results_key) >= 150 and client.zcard(k.inflight) > 0)
                    ),
                    budget.left(20),
                    "some progress, with leases live",
                )
                before = client.llen(results_key)
                in_flight_at_stop = client.zcard(k.inflight)
                server.stop()
                # Down longer than a lease (the fault itself, not a wait): every lease live
                # at the stop has expired when Redis is back.
                time.sleep(1.5)
                server.restart()
                steps_at_restart = coord.steps
                procs.check_alive(workers)
                drain = waited(
                    lambda: procs.check_alive(workers) or outstanding(jn) == 0,
                    budget.left(),
                    "the work to finish after the restart",
                    lambda: (
                        f"{state(jn)}; coordinator steps at restart "
                        f"{steps_at_restart}, now {coord.steps}, errors {coord_errors}"
                    ),
                )
                codes = procs.stop_gracefully(client, workers)
                assert not coord_errors, coord_errors
            assert codes == [0, 0], [procs.log_of(p) for p in workers]
        finally:
            procs.kill_all()
        raw_results = reports(client, results_key)
        results = unique(raw_results)
        lost = reports(client, f"{prefix}:t:lost")
        infos, statuses = check_finished(jn, ids, results)
        reported = {r[0] for r in results}
        unreported = [
            i for i, info in infos.items() if info.status == "completed" and i not in reported
        ]
        expiries = lease_expiries(infos)
        group_created = counter(client, prefix, "group_created")
        print(
            f"\n[AOF restart] submitted={len(ids)} completed={statuses['completed']} "
            f"dead={statuses['dead']} reported_before_stop={before} "
            f"in_flight_at_stop={in_flight_at_stop} "
            f"repeated_reports={len(raw_results) - len(results)} "
            f"reclaimed_attempts={len(expiries)} (coordinator reclaimed {coord.reclaimed}) "
            f"lease_lost={len(lost)} {Counter(r[3] for r in lost)} "
            f"completed_unreported={len(unreported)} group_created={group_created} "
            f"drain_after_restart={drain:.1f}s"
        )
        assert before < len(ids), "the work finished before the restart"
        assert in_flight_at_stop > 0, "no lease was live when Redis stopped"
        # The leases live at the stop had expired by the restart: reclaimed, retried.
        assert expiries, "no lease expired across the outage"
        assert not unreported, f"completions no worker was told about: {unreported[:5]}"
        assert statuses["completed"] == len(reported)
        # The stream and its group were persisted: the restart did not need to create them.
        assert group_created == 1


# -- 4. FUNCTION FLUSH -----------------------------------------------------------------

FLUSH_JOBS = 400
FLUSHES = 5
FLUSH_BODY = (
    BODY.replace("rate: 2000", "rate: 300")
    .replace("burst: 200", "burst: 20")
    # A longer lease: heartbeats (every lease/3) keep up on a busy machine too.
    .replace("lease: 1s", "lease: 2s")
)
#: One in 25 jobs outlives a heartbeat interval (lease/3), so heartbeat.lua runs across the
#: flushes too.
LONG_JOB_S = 0.9


def test_function_flush_mid_run_is_invisible(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FUNCTION FLUSH on every primary, five times while workers (Worker.run threads:
    fetch.lua, report.lua, heartbeat.lua) and a coordinator (step.lua) are busy: every job
    completes in its first attempt, no lease is lost, nothing is logged or raised (the library
    is loaded again by the call that finds it missing), and run() leaves no job and no thread
    behind."""
    budget = Budget()
    jn = make_janus(redis_url, prefix, FLUSH_BODY)
    client = jn.store.client
    thread_errors: list[str] = []

    def excepthook(args: threading.ExceptHookArgs) -> None:
        trace = "".join(traceback.format_exception(args.exc_value))  # type: ignore[arg-type]
        thread_errors.append(f"in thread {getattr(args.thread, 'name', '?')}:\n{trace}")

    monkeypatch.setattr(threading, "excepthook", excepthook)
    caplog.set_level(logging.WARNING, logger="janus")
    # Each Worker.run's loop (held leases, outbox), to check run() leaves nothing behind.
    loops: list[worker_module._RunLoop] = []
    init = worker_module._RunLoop.__init__

    def spy(self: worker_module._RunLoop, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        loops.append(self)

    monkeypatch.setattr(worker_module._RunLoop, "__init__", spy)
    rng = random.Random(7)

    def handler(job: LeasedJob) -> None:
        time.sleep(LONG_JOB_S if rng.random() < 0.04 else rng.uniform(0.001, 0.003))

    consumers = [f"{prefix}-t{n}" for n in range(3)]
    workers = [
        Janus.from_url(redis_url, prefix=prefix).worker(DEP, group=GROUP, consumer=consumer)
        for consumer in consumers
    ]
    stats: list[WorkerStats] = []
    run_errors: list[BaseException] = []

    def run(w: Worker) -> None:
        try:
            stats.append(w.run(handler, concurrency=4, install_signals=False))
        except BaseException as exc:
            run_errors.append(exc)

    def run_threads_alive() -> list[str]:
        """Threads Worker.run starts: its reporter, heartbeat and handler pool."""
        return [
            t.name
            for t in threading.enumerate()
            if t.name in ("janus-report", "janus-beat") or t.name.startswith(f"janus-{DEP}_")
        ]

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    ids = [f"job-{i}" for i in range(FLUSH_JOBS)]
    left_at_flush: list[int] = []

    def completed() -> int:
        return sum(w.stats.completed for w in workers)

    try:
        for thread in threads:
            thread.start()
        with coordinator(jn) as (coord, coord_errors):
            assert all(d.accepted for d in jn.submit_many(DEP, [Job(job_id=i) for i in ids]))
            # Flush at 1/8, 2/8, ... 5/8 of the work: mid-run whatever the machine's speed
            # (the rate, 300/s, keeps the last 3/8 going for at least 0.3 s after).
            for n in range(1, FLUSHES + 1):
                goal = n * FLUSH_JOBS // 8
                waited(
                    lambda goal=goal: completed() >= goal,
                    budget.left(),
                    f"{goal} completions",
                    lambda: state(jn),
                )
                left_at_flush.append(FLUSH_JOBS - completed())
                flush_library(client)
            took = waited(
                lambda: outstanding(jn) == 0, budget.left(), "the work to finish", lambda: state(jn)
            )
            assert not coord_errors, coord_errors
    finally:
        for w in workers:
            w.stop()
        for thread in threads:
            thread.join(10)
        with contextlib.suppress(AssertionError):
            # run() has returned: the threads it started end within a heartbeat interval.
            wait_until(lambda: not run_threads_alive(), 5.0, "Worker.run's threads to end")
    assert not any(thread.is_alive() for thread in threads)
    assert not run_errors, run_errors
    assert not thread_errors, "\n".join(thread_errors)
    infos, statuses = check_finished(jn, ids, [])
    total = WorkerStats()
    for s in stats:
        for field in ("fetched", "completed", "failed", "returned", "lease_lost"):
            setattr(total, field, getattr(total, field) + getattr(s, field))
    left_behind = [
        f"{job.id}(attempt {job.attempt})" for loop in loops for job in loop.held.values()
    ] + [f"{o.job.id}:{o.kind}" for loop in loops for o in loop.outbox]
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("janus")]
    # The heartbeat thread may extend a lease a moment after the reporter completed it:
    # refused ("already finished") and logged once; harmless. (Many for one job: a leak.)
    late_beats = Counter(
        m
        for m in warnings
        if m.startswith("cannot extend the lease of") and m.endswith("the job already finished")
    )
    print(
        f"\n[SCRIPT FLUSH {'cluster' if isinstance(client, redis.RedisCluster) else 'standalone'}]"
        f" submitted={len(ids)} completed={statuses['completed']} dead={statuses['dead']} "
        f"flushes={len(left_at_flush)} (jobs left at each {left_at_flush}) worker_stats={total} "
        f"coordinator_reclaimed={coord.reclaimed} reclaimed_attempts={len(lease_expiries(infos))} "
        f"warnings={len(warnings)} (late heartbeats {late_beats.total()}, most for one job "
        f"{max(late_beats.values(), default=0)}) left_in_run={left_behind} "
        f"threads_left={run_threads_alive()} drain={took:.1f}s"
    )
    assert len(left_at_flush) == FLUSHES and min(left_at_flush) > 0, left_at_flush
    assert statuses["completed"] == len(ids)
    assert {info.attempt for info in infos.values()} == {1}
    assert (total.fetched, total.completed) == (len(ids), len(ids))
    assert (total.failed, total.returned, total.lease_lost) == (0, 0, 0)
    assert not [m for m in warnings if "NOSCRIPT" in m.upper()], warnings
    assert not [m for m in warnings if m not in late_beats], warnings
    assert not lease_expiries(infos)
    assert len(loops) == len(workers)
    assert not left_behind, f"Worker.run returned but still holds {left_behind}"
    assert not run_threads_alive(), f"threads left after run(): {run_threads_alive()}"
