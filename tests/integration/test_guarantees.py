"""The guarantees users test, in real time, with real processes.

Many producer processes and several coordinators share one dependency; coordinators are
stopped and restarted mid-run. Afterwards the released history (stream ids carry Redis time)
must satisfy ``released cost <= rate * W + burst`` for every window W, per dependency and per
scope, no job may be released twice, and every accepted job is either released or still
queued.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter

import pytest

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.measure import Release, by_scope, check_rate

from tests.helpers import make_janus

RATE, BURST = 40.0, 8
SCOPE_RATE, SCOPE_BURST = 15.0, 3
SCOPES = ["a", "b", "c", "d"]
BODY = f"""
pay:
  rate: {RATE}
  burst: {BURST}
  max_wait: 3s
  scopes:
    default: {{rate: {SCOPE_RATE}, burst: {SCOPE_BURST}}}
"""
WINDOWS_MS = (1, 10, 50, 100, 500, 1000, 2500)


def _producer(url: str, prefix: str, worker: int, seconds: float, out: mp.Queue) -> None:
    jn = Janus.from_url(url, prefix=prefix)
    counts: Counter[str] = Counter()
    accepted: list[str] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        scope = SCOPES[(worker + n) % len(SCOPES)]
        jobs = [
            Job(scope=scope, job_id=f"w{worker}-{n + i}", cost=1 + (n + i) % 2) for i in range(4)
        ]
        n += 4
        for d in jn.submit_many("pay", jobs):
            counts[d.status] += 1
            if d.accepted:
                accepted.append(d.job_id)
        time.sleep(0.01)
    out.put((dict(counts), accepted))
    jn.close()


@pytest.mark.slow
def test_limits_hold_across_producers_and_restarted_coordinators(
    redis_url: str, prefix: str
) -> None:
    """4 producer processes, 2 coordinators (one stopped and restarted mid-run): the rate
    bound holds for every window, per dependency and per scope; nothing is released twice
    or lost."""
    jn = make_janus(redis_url, prefix, BODY)
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    seconds = 4.0
    procs = [
        ctx.Process(target=_producer, args=(redis_url, prefix, w, seconds, out)) for w in range(4)
    ]
    for p in procs:
        p.start()
    first = Coordinator(jn.store, dependencies=["pay"])
    second = Coordinator(Janus.from_url(redis_url, prefix=prefix).store, dependencies=["pay"])
    t1, t2 = first.run_in_thread(), second.run_in_thread()
    time.sleep(1.0)
    second.stop()  # one coordinator goes away ...
    t2.join(5)
    first.stop()  # ... and then the other: work piles up, overdue
    t1.join(5)
    time.sleep(1.0)
    restarted = Coordinator(jn.store, dependencies=["pay"])  # restart: no catch-up burst
    t3 = restarted.run_in_thread()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    deadline = time.monotonic() + 8
    while jn.status("pay").scheduled and time.monotonic() < deadline:
        time.sleep(0.1)
    restarted.stop()
    t3.join(5)

    counts: Counter[str] = Counter()
    accepted: list[str] = []
    for c, a in results:
        counts.update(c)
        accepted += a
    rows = jn.store.releases("pay")
    releases = [Release(ms, scope, cost) for ms, scope, cost, _ in rows]
    print(f"\nsubmitted {sum(counts.values())}: {dict(counts)}; released {len(rows)}")
    assert counts["scheduled"] > 50, "the run never exercised the delay queue"
    ids = [job_id for *_, job_id in rows]
    assert len(ids) == len(set(ids)), "a job was released twice"
    assert set(ids) <= set(accepted)
    assert len(ids) + jn.status("pay").scheduled == len(set(accepted)), "an accepted job vanished"
    for rep in check_rate(releases, RATE, BURST, WINDOWS_MS):
        print(f"  dependency W={rep.window_ms}ms worst={rep.worst_cost} allowed={rep.allowed:.2f}")
        assert rep.ok, rep
    for scope, mine in by_scope(releases).items():
        for rep in check_rate(mine, SCOPE_RATE, SCOPE_BURST, WINDOWS_MS):
            assert rep.ok, (scope, rep)


def test_idle_coordinator_wakes_for_new_earlier_work(standalone_url: str, prefix: str) -> None:
    """A coordinator sleeping with nothing to do (idle step every 30 s) releases newly
    scheduled work when it comes due: the submit's wake signal cut its sleep short."""
    body = """
pay:
  rate: 100
  burst: 1
  max_wait: 5s
  scopes:
    default: {rate: 5, burst: 1}
"""
    jn = make_janus(standalone_url, prefix, body)
    coord = Coordinator(jn.store, dependencies=["pay"], idle_s=30.0, refresh_s=30.0)
    thread = coord.run_in_thread()
    try:
        time.sleep(0.3)  # the coordinator has run its first step and is idle
        ds = [jn.submit("pay", scope="a", job_id=f"j{i}") for i in range(2)]
        assert [d.status for d in ds] == ["released", "scheduled"]
        deadline = time.monotonic() + 3.0  # far below the 30 s idle step
        while jn.status("pay").scheduled and time.monotonic() < deadline:
            time.sleep(0.02)
        assert jn.status("pay").scheduled == 0
        assert coord.steps < 10, "the coordinator was polling"
    finally:
        coord.stop()
        thread.join(5)


def test_several_coordinators_never_release_a_job_twice(redis_url: str, prefix: str) -> None:
    """Three coordinators racing on one queue release each job exactly once."""
    body = """
pay:
  rate: 500
  burst: 5
  max_wait: 10s
"""
    jn = make_janus(redis_url, prefix, body)
    ds = jn.submit_many("pay", [Job(scope=f"s{i % 7}", job_id=f"j{i}") for i in range(600)])
    at_submit = sum(d.status == "released" for d in ds)
    coords = [
        Coordinator(Janus.from_url(redis_url, prefix=prefix).store, dependencies=["pay"])
        for _ in range(3)
    ]
    threads = [c.run_in_thread() for c in coords]
    deadline = time.monotonic() + 10
    while jn.status("pay").scheduled and time.monotonic() < deadline:
        time.sleep(0.05)
    for c in coords:
        c.stop()
    for t in threads:
        t.join(5)
    ids = [job_id for *_, job_id in jn.store.releases("pay")]
    assert len(ids) == 600 and len(set(ids)) == 600
    assert sum(c.released for c in coords) == 600 - at_submit
