"""Work waits in Janus, not in the stream: the acceptance runs of the hand-off, with real
Redis, real worker processes (``janus worker``) and real time.

Each test prints the figures it checks (``pytest -s`` shows them), bounds every wait, and
kills every process it started. Worker processes run handlers from
``tests/realtime/handlers.py``, which record each attempt they start (job id, attempt, release
time, scope, cost, pid) under ``PREFIX:t:started``, so the started-cost bound is checked on
what workers actually ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.errors import JanusError, RedisOutOfMemory
from janus.measure import Release, by_scope, check_rate
from janus.testing import RedisServer
from janus.worker import Worker

from tests.helpers import make_janus, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEP = "api"
GROUP = "g"
WINDOWS_MS = (1, 10, 100, 1000, 5000)


class Fleet:
    """Worker processes of one test (``janus worker``), logs kept for the report."""

    def __init__(self, url: str, prefix: str, tmp: Path) -> None:
        self.url, self.prefix, self.tmp = url, prefix, tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, handler: str, *, concurrency: int = 2, sleep_ms: int = 0) -> int:
        n = len(self.procs)
        log_path = self.tmp / f"worker{n}.log"
        env = {
            **os.environ,
            "JANUS_TEST_REDIS": self.url,
            "JANUS_TEST_PREFIX": self.prefix,
            "JANUS_TEST_SLEEP_MS": str(sleep_ms),
        }
        cmd = [sys.executable, "-m", "janus", "worker", DEP, "--handler",
               f"tests.realtime.handlers:{handler}", "--group", GROUP, "--consumer",
               f"w{n}", "--concurrency", str(concurrency), "--redis", self.url,
               "--prefix", self.prefix]  # fmt: skip
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs.append(log_path)
        return n

    def kill(self, n: int) -> None:
        self.procs[n].send_signal(signal.SIGKILL)
        self.procs[n].wait(10)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


@contextmanager
def fleet(url: str, prefix: str, tmp: Path) -> Iterator[Fleet]:
    f = Fleet(url, prefix, tmp)
    try:
        yield f
    finally:
        f.stop_all()


@contextmanager
def coordinator(jn: Janus) -> Iterator[Coordinator]:
    coord = Coordinator(jn.store, idle_s=1.0, watch_s=0.5)
    thread = coord.run_in_thread(check=False)
    try:
        yield coord
    finally:
        coord.stop()
        thread.join(10)


def started_attempts(jn: Janus, prefix: str) -> list[tuple[str, int, int, str, int, int]]:
    """(job id, attempt, started_ms, scope, cost, pid) of every attempt a worker started."""
    raw = jn.store.client.lrange(f"{prefix}:t:started", 0, -1)
    out = []
    for line in raw:
        job_id, attempt, ms, scope, cost, pid = line.decode().split(" ")
        out.append((job_id, int(attempt), int(ms), scope, int(cost), int(pid)))
    return out


def check_started_rate(
    attempts: list[tuple[str, int, int, str, int, int]],
    rate: float,
    burst: int,
    scope_rate: float,
    scope_burst: int,
) -> None:
    releases = [Release(ms, scope, cost) for _, _, ms, scope, cost, _ in attempts]
    for rep in check_rate(releases, rate, burst, WINDOWS_MS):
        print(f"  started cost, W={rep.window_ms} ms: {rep.worst_cost} <= {rep.allowed:.2f}")
        assert rep.ok, rep
    for scope, mine in sorted(by_scope(releases).items()):
        for rep in check_rate(mine, scope_rate, scope_burst, WINDOWS_MS):
            assert rep.ok, (scope, rep)


def completed_once(jn: Janus, ids: list[str]) -> Counter[str]:
    """How many jobs ended how; fails if any completed twice or vanished."""
    out: Counter[str] = Counter()
    for job_id in ids:
        info = jn.job(DEP, job_id)
        assert info is not None, f"job {job_id} vanished"
        completions = [h for h in info.history if h.get("outcome") == "completed"]
        assert len(completions) <= 1, f"job {job_id} completed twice"
        out[info.status] += 1
    return out


def test_no_worker_for_ten_leases_costs_nothing_then_two_workers_drain_at_the_rate(
    standalone_url: str, prefix: str, tmp_path: Path
) -> None:
    """With a coordinator running and no worker for 10 x lease, no attempt is used, nothing
    is dead-lettered, the circuit stays closed; then two workers start and every job completes
    once, with started cost per window within rate * W + burst (no catch-up burst)."""
    body = f"""
{DEP}:
  rate: 40
  burst: 5
  lease: 500ms
  max_wait: 1h
  retry: {{max_attempts: 3}}
  circuit: {{failure_ratio: 0.5, min_requests: 3, window: 2s, open_for: 1s}}
  scopes:
    default: {{rate: 40, burst: 5}}
"""
    jn = make_janus(standalone_url, prefix, body)
    ids = [f"j{i}" for i in range(120)]
    jn.submit_many(DEP, [Job(scope=f"s{n % 3}", job_id=i) for n, i in enumerate(ids)])
    with coordinator(jn) as coord:
        t0 = time.monotonic()
        time.sleep(5.0)  # 10 leases with nobody to run the work (the point of the test)
        st = jn.status(DEP)
        attempts = {jn.job(DEP, i).attempt for i in ids}  # type: ignore[union-attr]
        print(f"\nafter {time.monotonic() - t0:.1f} s without workers: steps={coord.steps}, "
              f"in_flight={st.in_flight}, dead={st.dead_letters}, attempts={attempts}, "
              f"circuit={st.circuit}")  # fmt: skip
        assert (st.in_flight, st.dead_letters, st.circuit, attempts) == (0, 0, "closed", {0})
        assert st.scheduled == len(ids) and st.stream_length == 0
        with fleet(standalone_url, prefix, tmp_path) as f:
            f.start("record", concurrency=4)
            f.start("record", concurrency=4)
            wait_until(lambda: jn.status(DEP).scheduled == 0 and jn.status(DEP).in_flight == 0,
                       60, "the backlog to drain")  # fmt: skip
            assert f.alive(), f.log_text()
    ran = started_attempts(jn, prefix)
    ends = completed_once(jn, ids)
    print(f"completed: {ends}, attempts started: {len(ran)}")
    assert ends == Counter({"completed": len(ids)}) and len(ran) == len(ids)
    check_started_rate(ran, 40, 5, 40, 5)
    assert jn.status(DEP).circuit == "closed"
    assert jn.store.stream_counts(DEP) == {GROUP: (0, 0)}


def test_workers_slower_than_the_rate_take_only_what_they_can_start(
    standalone_url: str, prefix: str, tmp_path: Path
) -> None:
    """Rate 100/s, 2 worker processes x concurrency 2, 50 ms handler, 20 s: the workers are
    slower than the rate, so work waits in Janus: every job completes exactly once, no lease is
    lost, the started-cost bound holds, and two equal scopes get equal shares of what started
    (Jain's index >= 0.99)."""
    body = f"""
{DEP}:
  rate: 100
  burst: 10
  lease: 2s
  max_wait: 1h
  scopes:
    default: {{rate: 100, burst: 10}}
"""
    jn = make_janus(standalone_url, prefix, body)
    ids = [f"j{i}" for i in range(2000)]
    jn.submit_many(DEP, [Job(scope=("a", "b")[n % 2], job_id=i) for n, i in enumerate(ids)])
    with coordinator(jn), fleet(standalone_url, prefix, tmp_path) as f:
        f.start("record", concurrency=2, sleep_ms=50)
        f.start("record", concurrency=2, sleep_ms=50)
        time.sleep(20.0)  # the run's length (the property is about what happens meanwhile)
        f.stop_all()  # graceful: running jobs finish and report
        log = f.log_text()
    ran = started_attempts(jn, prefix)
    per_scope = Counter(scope for _, _, _, scope, _, _ in ran)
    xs = [per_scope["a"], per_scope["b"]]
    jain = sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))
    ends = completed_once(jn, ids)
    print(f"\nstarted {len(ran)} in 20 s ({len(ran) / 20:.1f}/s; workers' ceiling 80/s), "
          f"per scope {dict(per_scope)}, Jain {jain:.4f}, ends {dict(ends)}")  # fmt: skip
    assert len(ran) > 0 and len({(i, a) for i, a, *_ in ran}) == len(ran)
    assert ends["completed"] == len(ran)  # everything started was completed, once
    assert ends["scheduled"] == len(ids) - len(ran)  # the rest still waits, unattempted
    summaries = [line for line in log.splitlines() if line.startswith("stopped:")]
    assert len(summaries) == 2 and all(", 0 lost leases" in x for x in summaries), log[-2000:]
    assert jain >= 0.99
    check_started_rate(ran, 100, 10, 100, 10)
    assert jn.status(DEP).in_flight == 0
    assert jn.store.stream_counts(DEP) == {GROUP: (0, 0)}


def test_redis_at_maxmemory_refuses_whole_calls_and_nothing_is_dead_lettered(
    prefix: str, tmp_path: Path
) -> None:
    """maxmemory + noeviction, a queue of 16 KB payloads: submits fail with RedisOutOfMemory
    (a JanusError), workers and the coordinator stay alive and change nothing (every script
    is refused before it writes), used_memory stays within maxmemory + 10%, nothing is
    dead-lettered; once memory is freed the queue drains, every job completed once."""
    maxmemory = 48 * 1024 * 1024
    args = ("--maxmemory", str(maxmemory), "--maxmemory-policy", "noeviction")
    with RedisServer.start(extra_args=args) as server:
        url = server.url
        body = f"""
{DEP}:
  rate: 200
  burst: 50
  lease: 5s
  retention: 10m
  max_wait: 1h
  max_payload: 64KiB
"""
        jn = make_janus(url, prefix, body)
        client = jn.store.client
        # Fill most of the memory with data that is not Janus's, then queue jobs until full.
        filler = 0
        while client.info("memory")["used_memory"] < maxmemory * 0.55:
            client.set(f"filler:{filler}", b"f" * 65536)
            filler += 1
        payload = b"p" * 16384
        ids: list[str] = []
        refused = None
        for i in range(100_000):
            try:
                jn.submit(DEP, scope=f"s{i % 4}", job_id=f"j{i}", payload=payload)
            except RedisOutOfMemory as exc:
                refused = exc
                break
            ids.append(f"j{i}")
        assert refused is not None and "out of memory" in str(refused)
        assert isinstance(refused, JanusError)
        peak = client.info("memory")["used_memory"]
        with coordinator(jn), fleet(url, prefix, tmp_path) as f:
            f.start("record", concurrency=4)
            f.start("record", concurrency=4)
            t_end = time.monotonic() + 6.0
            while time.monotonic() < t_end:  # sampling memory while everything is refused
                peak = max(peak, client.info("memory")["used_memory"])
                time.sleep(0.05)
            st = jn.status(DEP)
            print(f"\nqueued {len(ids)} jobs of 16 KB before OOM; during OOM: peak used_memory "
                  f"{peak / maxmemory:.3f} x maxmemory, dead={st.dead_letters}, "
                  f"in_flight={st.in_flight}, workers alive={f.alive()}")  # fmt: skip
            assert peak <= maxmemory * 1.10
            assert st.dead_letters == 0 and f.alive()
            client.delete(*[f"filler:{n}" for n in range(filler)])  # memory is freed
            wait_until(lambda: jn.status(DEP).scheduled == 0 and jn.status(DEP).in_flight == 0,
                       60, "the queue to drain after memory was freed")  # fmt: skip
            assert f.alive()
            log = f.log_text()
        ends = completed_once(jn, ids)
        print(f"after freeing memory: {dict(ends)}")
        assert ends["completed"] + ends.get("dead", 0) == len(ids)
        assert jn.status(DEP).dead_letters == 0
        assert "Traceback" not in log, log[-3000:]
        assert "out of memory" in log  # the workers did meet the refusals, as JanusErrors


def test_a_stall_longer_than_the_socket_timeout_loses_nothing(prefix: str, tmp_path: Path) -> None:
    """DEBUG SLEEP longer than the workers' socket timeout while they fetch and report:
    redis-py re-sends the calls, the fetch id and report ids make the re-sends answer the
    same, and no job is lost, dead-lettered or completed twice."""
    with RedisServer.start(extra_args=("--enable-debug-command", "yes")) as server:
        body = f"""
{DEP}:
  rate: 500
  burst: 50
  lease: 10s
  max_wait: 1h
"""
        jn = make_janus(server.url, prefix, body)
        ids = [f"j{i}" for i in range(600)]
        jn.submit_many(DEP, [Job(scope=f"s{n % 4}", job_id=i) for n, i in enumerate(ids)])
        stats = []
        threads = []
        workers = []
        for n in range(3):
            wjn = Janus.from_url(server.url, prefix=prefix, socket_timeout=0.5)
            w = wjn.worker(DEP, group=GROUP, consumer=f"t{n}")
            workers.append(w)

            def loop(w: Worker = w) -> None:
                stats.append(
                    w.run(lambda job: time.sleep(0.005), concurrency=8, install_signals=False)
                )

            t = threading.Thread(target=loop)
            t.start()
            threads.append(t)
        admin = jn.store.client
        try:
            for _ in range(4):
                time.sleep(0.3)
                admin.execute_command("DEBUG", "SLEEP", "1.2")  # 2.4 x the socket timeout
            wait_until(lambda: jn.status(DEP).scheduled == 0 and jn.status(DEP).in_flight == 0,
                       60, "the queue to drain")  # fmt: skip
        finally:
            for w in workers:
                w.stop()
            for t in threads:
                t.join(30)
        ends = completed_once(jn, ids)
        lost = sum(s.lease_lost for s in stats)
        print(f"\n4 stalls of 1.2 s (socket timeout 0.5 s): {dict(ends)}, lost leases {lost}, "
              f"dead letters {jn.status(DEP).dead_letters}")  # fmt: skip
        assert ends == Counter({"completed": len(ids)})
        assert jn.status(DEP).dead_letters == 0
        assert jn.store.stream_counts(DEP) == {GROUP: (0, 0)}


def test_a_dead_worker_is_reclaimed_after_a_long_coordinator_outage(
    standalone_url: str, prefix: str, tmp_path: Path
) -> None:
    """Coordinator stopped for 3 x (lease + retention) while a worker is killed mid-job: the
    job's record is still there, and the next fetch (anything that steps the dependency)
    reclaims and retries it; no stream entry leaks (XLEN and XPENDING back to 0)."""
    body = f"""
{DEP}:
  rate: 100
  burst: 10
  lease: 200ms
  retention: 1s
  max_wait: 1h
  retry: {{max_attempts: 3, backoff: {{base: 10ms}}}}
"""
    jn = make_janus(standalone_url, prefix, body)
    jn.submit(DEP, scope="a", job_id="victim")
    with fleet(standalone_url, prefix, tmp_path) as f:
        n = f.start("hang", concurrency=1)
        wait_until(lambda: len(started_attempts(jn, prefix)) == 1, 30, "the job to start")
        f.kill(n)
        time.sleep(3 * (0.2 + 1.0))  # nobody steps the dependency for 3 x (lease + retention)
        info = jn.job(DEP, "victim")
        assert info is not None and info.status == "running"
        assert jn.store.stream_counts(DEP) == {GROUP: (1, 1)}
        f.start("record", concurrency=1)
        wait_until(lambda: jn.job(DEP, "victim").status == "completed", 30, "the retry")  # type: ignore[union-attr]
        info = jn.job(DEP, "victim")  # (read at once: a finished record lives 1 s here)
        assert info is not None
    outcomes = [(h["attempt"], h["outcome"], h.get("error")) for h in info.history]
    print(f"\nhistory after a {3 * 1.2:.1f} s outage of every stepper: {outcomes}")
    assert outcomes == [(1, "failed", "lease_expired"), (2, "completed", None)]
    assert jn.store.stream_counts(DEP) == {GROUP: (0, 0)}


@pytest.mark.parametrize("parked", [300])
def test_retries_waiting_on_the_budget_cost_one_step_per_release(
    standalone_url: str, prefix: str, tmp_path: Path, parked: int
) -> None:
    """300 retries waiting on the retry budget (min_per_second 5, no first attempts to pay
    for more): the coordinator's script calls per second stay <= releases per second + 2,
    and no parked retry is dead-lettered for waiting."""
    body = f"""
{DEP}:
  rate: 1000
  burst: 1000
  lease: 5s
  max_wait: 1h
  retry:
    max_attempts: 3
    backoff: {{base: 1ms, max: 1ms, jitter: none}}
    budget: {{ratio: 0.01, min_per_second: 5, window: 1s}}
"""
    jn = make_janus(standalone_url, prefix, body)
    ids = [f"j{i}" for i in range(parked)]
    jn.submit_many(DEP, [Job(scope=f"s{n % 5}", job_id=i) for n, i in enumerate(ids)])
    with coordinator(jn) as coord, fleet(standalone_url, prefix, tmp_path) as f:
        f.start("fail_first", concurrency=8)
        wait_until(lambda: jn.status(DEP).parked >= parked - 20, 30, "the retries to park")
        steps0, ran0, t0 = coord.steps, len(started_attempts(jn, prefix)), time.monotonic()
        time.sleep(8.0)  # the measured window
        steps1, ran1, t1 = coord.steps, len(started_attempts(jn, prefix)), time.monotonic()
        st = jn.status(DEP)
    calls_per_s = (steps1 - steps0) / (t1 - t0)
    releases_per_s = (ran1 - ran0) / (t1 - t0)
    print(f"\nparked {st.parked}, coordinator {calls_per_s:.2f} calls/s, releases "
          f"{releases_per_s:.2f}/s, dead letters {st.dead_letters}")  # fmt: skip
    assert releases_per_s > 0
    assert calls_per_s <= releases_per_s + 2
    assert st.dead_letters == 0
