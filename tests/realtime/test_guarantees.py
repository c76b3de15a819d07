"""The guarantees users test, in real time, with real processes.

Producer processes, worker processes (explicit ``Worker.fetch`` loops and ``Worker.run``)
and coordinator processes share one dependency; coordinators are killed and restarted and
workers go away mid-run. A job is released only when a worker fetches it, so the rate bound
is on *started* cost: every started attempt is recorded by the worker that got it (its
``started_ms`` is the Redis time of the release), and afterwards ``started cost <= rate * W +
burst`` must hold for every window W, per dependency and per scope; no job may start twice
and every accepted job must have started and completed.

Each test is bounded (well under a minute) and prints the figures it checks (``pytest -s``).
No assertion depends on how fast the machine is: phases are shaped with real time, but what
is checked holds whatever happens within them.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import LeasedJob
from janus.measure import Release, check_rate

from tests.helpers import make_janus, wait_until

RATE, BURST = 40.0, 8
SCOPE_RATE, SCOPE_BURST = 15.0, 3
SCOPES = ["a", "b", "c", "d"]
BODY = f"""
pay:
  rate: {RATE}
  burst: {BURST}
  max_wait: 3s
  lease: 30s
  scopes:
    default: {{rate: {SCOPE_RATE}, burst: {SCOPE_BURST}}}
"""
WINDOWS_MS = (1, 10, 50, 100, 500, 1000, 2500)
#: Producers stop when told, or after this long whatever happens.
MAX_PRODUCE_S = 30.0
#: One started attempt as a worker saw it: (job id, attempt, started_ms, scope, cost).
Start = tuple[str, int, int, str, int]


def _record(job: LeasedJob) -> Start:
    return (job.id, job.attempt, job.started_ms, job.scope, job.cost)


# -- the processes (spawned: module-level functions) ------------------------------------


def _producer(url: str, prefix: str, n: int, ready: Any, go: Any, done: Any, out: mp.Queue) -> None:
    """Submits batches of 4 jobs (costs 1 and 2, scopes in turn) from ``go`` until ``done``
    (or at most MAX_PRODUCE_S)."""
    jn = Janus.from_url(url, prefix=prefix)
    counts: Counter[str] = Counter()
    accepted: list[str] = []
    ready.set()
    go.wait(60)
    deadline = time.monotonic() + MAX_PRODUCE_S
    i = 0
    while not done.is_set() and time.monotonic() < deadline:
        scope = SCOPES[(n + i) % len(SCOPES)]
        jobs = [Job(scope=scope, job_id=f"p{n}-{i + k}", cost=1 + (i + k) % 2) for k in range(4)]
        i += 4
        for d in jn.submit_many("pay", jobs):
            counts[d.status] += 1
            if d.accepted:
                accepted.append(d.job_id)
        time.sleep(0.01)  # pacing of this producer, not a wait for anything
    out.put(("producer", dict(counts), accepted))
    jn.close()


def _hold_while_paused(stop: Any, pause: Any, paused: Any) -> None:
    """Acknowledge a pause and hold until it ends (or the run stops)."""
    paused.set()
    while pause.is_set() and not stop.is_set():
        stop.wait(0.01)
    paused.clear()


def _fetch_worker(
    url: str, prefix: str, n: int, ready: Any, stop: Any, pause: Any, paused: Any, out: mp.Queue
) -> None:
    """An explicit fetch loop: fetch into 4 slots, record, report the batch in one call."""
    jn = Janus.from_url(url, prefix=prefix)
    w = jn.worker("pay", group="g", consumer=f"fetch-{n}")
    seen: list[Start] = []
    refused = 0
    ready.set()
    while not stop.is_set():
        if pause.is_set():
            _hold_while_paused(stop, pause, paused)
            continue
        jobs = w.fetch(count=4, block_ms=100)
        seen += [_record(j) for j in jobs]
        if jobs:
            refused += sum(not r.ok for r in w.report([w.completed(j) for j in jobs]))
    out.put(("worker", f"fetch-{n}", seen, refused))
    jn.close()


def _run_worker(
    url: str, prefix: str, n: int, ready: Any, stop: Any, pause: Any, paused: Any, out: mp.Queue
) -> None:
    """Worker.run with a recording handler; stopped for a pause and run again after it."""
    jn = Janus.from_url(url, prefix=prefix)
    w = jn.worker("pay", group="g", consumer=f"run-{n}")
    seen: list[Start] = []
    lock = threading.Lock()

    def handler(job: LeasedJob) -> None:
        with lock:
            seen.append(_record(job))

    ready.set()
    while not stop.is_set():
        if pause.is_set():
            _hold_while_paused(stop, pause, paused)
            continue
        done = threading.Event()

        def watch(done: threading.Event = done) -> None:
            while not done.is_set():
                if stop.is_set() or pause.is_set():
                    w.stop()
                done.wait(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        w.run(handler, concurrency=4, install_signals=False, grace_s=10.0)
        done.set()
        watcher.join()
    with lock:
        out.put(("worker", f"run-{n}", list(seen), w.stats.lease_lost))
    jn.close()


def _coordinator(url: str, prefix: str) -> None:
    jn = Janus.from_url(url, prefix=prefix)
    Coordinator(jn.store, dependencies=["pay"]).run(check=False)


# -- helpers of the main process --------------------------------------------------------


def _timer_until(jn: Janus) -> int:
    """When the last coordinator step vouched to step again (only step.lua writes it)."""
    raw = jn.store.client.hget(jn.store.keys("pay").state, "timer_until")
    return int(raw or 0)


def _start_coordinator(ctx: Any, url: str, prefix: str, jn: Janus) -> Any:
    """Start a coordinator process and wait until it has stepped the dependency."""
    before = _timer_until(jn)
    proc = ctx.Process(target=_coordinator, args=(url, prefix), daemon=True)
    proc.start()
    wait_until(lambda: _timer_until(jn) > before, 30, "the coordinator's first step")
    return proc


def _phase(seconds: float, what: str, t0: float) -> None:
    print(f"  t={time.monotonic() - t0:5.2f}s {what} ({seconds:g} s)")
    time.sleep(seconds)  # the scenario's shape, not a wait for a condition


def _check_bounds(starts: list[Start], rate: float, burst: int, label: str) -> None:
    releases = [Release(ms, scope, cost) for _, _, ms, scope, cost in starts]
    for rep in check_rate(releases, rate, burst, WINDOWS_MS):
        print(f"  {label} W={rep.window_ms}ms worst={rep.worst_cost} allowed={rep.allowed:.2f}")
        assert rep.ok, (label, rep)


@pytest.mark.slow
def test_started_cost_bound_holds_across_producers_workers_and_restarted_coordinators(
    redis_url: str, prefix: str
) -> None:
    """4 producer processes, 3 worker processes (2 fetch loops, 1 Worker.run), coordinator
    processes killed and restarted: two coordinators, then one, then none (the workers' fetches
    do the due work), then the workers go away too while work piles up overdue,
    then a restarted coordinator alone (it releases nothing: no attempt starts while no
    worker asks), then the workers return (no catch-up burst). Started cost per window
    <= rate * W + burst per dependency and per scope; no job started twice; every accepted
    job started once and completed; none lost."""
    jn = make_janus(redis_url, prefix, BODY)
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    stop, pause, go, produced = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    coordinators = []
    procs = []
    try:
        coordinators = [_start_coordinator(ctx, redis_url, prefix, jn) for _ in range(2)]
        worker_ready = [ctx.Event() for _ in range(3)]
        worker_paused = [ctx.Event() for _ in range(3)]
        targets: list[Callable[..., None]] = [_fetch_worker, _fetch_worker, _run_worker]
        workers = [
            ctx.Process(
                target=target,
                args=(redis_url, prefix, n, worker_ready[n], stop, pause, worker_paused[n], out),
                daemon=True,
            )
            for n, target in enumerate(targets)
        ]
        producer_ready = [ctx.Event() for _ in range(4)]
        producers = [
            ctx.Process(
                target=_producer,
                args=(redis_url, prefix, n, producer_ready[n], go, produced, out),
                daemon=True,
            )
            for n in range(4)
        ]
        procs = workers + producers
        for p in procs:
            p.start()
        for e in worker_ready + producer_ready:
            wait_until(e.is_set, 60, "every process to start")
        t0 = time.monotonic()
        print()
        go.set()
        _phase(1.0, "producers, 3 workers, 2 coordinators", t0)
        coordinators[1].kill()
        _phase(1.0, "one coordinator killed", t0)
        coordinators[0].kill()
        _phase(1.0, "no coordinator: the workers' fetches do the due work", t0)
        pause.set()
        for e in worker_paused:
            wait_until(e.is_set, 30, "every worker to stop fetching")
        paused_ms = jn.store.time_us() // 1000
        _phase(0.5, "no worker, no coordinator: work piles up", t0)
        coordinators.append(_start_coordinator(ctx, redis_url, prefix, jn))
        _phase(0.5, "a restarted coordinator alone", t0)
        resumed_ms = jn.store.time_us() // 1000
        pause.clear()
        _phase(1.0, "the workers are back", t0)
        produced.set()
        results = [out.get(timeout=60) for _ in producers]
        print(f"  t={time.monotonic() - t0:5.2f}s producers done; draining")
        wait_until(lambda: jn.status("pay").scheduled == 0, 30, "the workers to drain the queue")
        stop.set()
        results += [out.get(timeout=60) for _ in workers]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0, p
    finally:
        stop.set()
        for p in procs + coordinators:
            if p.is_alive():
                p.kill()
                p.join(10)

    counts: Counter[str] = Counter()
    accepted: list[str] = []
    starts: list[Start] = []
    refused = 0
    for kind, *rest in results:
        if kind == "producer":
            counts.update(rest[0])
            accepted += rest[1]
        else:
            name, seen, lost = rest
            print(f"  worker {name}: started {len(seen)}, reports refused {lost}")
            starts += seen
            refused += lost
    ids = [job_id for job_id, *_ in starts]
    print(f"  submitted {sum(counts.values())}: {dict(counts)}; started {len(starts)}")
    assert counts["scheduled"] > 50, "the run never exercised the delay queue"
    assert len(ids) == len(set(ids)), "a job was started twice"
    assert {attempt for _, attempt, *_ in starts} == {1}
    assert set(ids) == set(accepted) and len(accepted) == len(set(accepted)), "a job was lost"
    assert refused == 0
    during_pause = [s for s in starts if paused_ms < s[2] < resumed_ms]
    print(f"  started while no worker asked ({resumed_ms - paused_ms} ms): {len(during_pause)}")
    assert during_pause == [], "something was released with no worker asking"
    assert any(s[2] >= resumed_ms for s in starts), "the workers never came back"
    st = jn.status("pay")
    assert (st.scheduled, st.in_flight, st.stream_length, st.dead_letters) == (0, 0, 0, 0)
    unfinished = [j for j in accepted if jn.job("pay", j).status != "completed"]  # type: ignore[union-attr]
    assert unfinished == [], unfinished[:5]
    _check_bounds(starts, RATE, BURST, "dependency")
    for scope in sorted({s[3] for s in starts}):
        mine = [s for s in starts if s[3] == scope]
        _check_bounds(mine, SCOPE_RATE, SCOPE_BURST, f"scope {scope}")


def test_idle_coordinator_wakes_a_worker_for_new_earlier_work(
    standalone_url: str, prefix: str
) -> None:
    """A coordinator sleeping with nothing to do (idle step every 30 s) moves newly
    scheduled work when it comes due and wakes an idle worker: the submit's wake signal cut
    its sleep short. The worker here only waits for the idle-worker signal (it never times
    the dependency itself), so the job it then fetches was made ready by the coordinator."""
    body = """
pay:
  rate: 100
  burst: 1
  max_wait: 5s
  scopes:
    default: {rate: 0.5, burst: 1}
"""
    jn = make_janus(standalone_url, prefix, body)
    coord = Coordinator(jn.store, dependencies=["pay"], idle_s=30.0, refresh_s=30.0)
    thread = coord.run_in_thread(check=False)
    try:
        wait_until(lambda: coord.steps >= 1, 30, "the coordinator's first step")
        ds = jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(2)])
        assert [d.status for d in ds] == ["ready", "scheduled"]  # j1: 2 s later
        w = jn.worker("pay", group="g", consumer="w1")
        assert [j.id for j in w.fetch(count=10, block_ms=None)] == ["j0"]
        jn.store.client.delete(jn.store.keys("pay").work)  # forget signals sent so far
        moved_before = coord.moved
        wait_until(lambda: jn.store.wait_work("pay", 1.0), 20, "the coordinator's signal")
        (job,) = w.fetch(count=10, block_ms=None)
        print(f"\n  j1 due at {ds[1].not_before_ms}, started at {job.started_ms}")
        assert job.id == "j1" and job.started_ms >= ds[1].not_before_ms
        # The step pushes the signal inside Redis and counts the move when its reply comes
        # back: on a busy machine the worker can be first, so wait for the count.
        wait_until(lambda: coord.moved - moved_before >= 1, 20, "the coordinator's move")
        assert coord.moved - moved_before == 1, "the coordinator did not move the due job"
        print(f"  coordinator steps: {coord.steps}")
        assert coord.steps < 10, "the coordinator was polling"
    finally:
        coord.stop()
        thread.join(5)


def test_racing_coordinators_move_each_job_once_and_release_nothing(
    redis_url: str, prefix: str
) -> None:
    """Three coordinators racing on one delay queue move each due job exactly once and
    release nothing (no attempt starts, no stream entry, every record at attempt 0); then
    three workers racing on the ready lines, with the coordinators still running, start
    each job exactly once, within the rate bound, and complete all 600."""
    body = """
pay:
  rate: 500
  burst: 5
  max_wait: 10s
"""
    jn = make_janus(redis_url, prefix, body)
    ds = jn.submit_many("pay", [Job(scope=f"s{i % 7}", job_id=f"j{i}") for i in range(600)])
    scheduled = sum(d.status == "scheduled" for d in ds)
    assert scheduled > 500 and all(d.accepted for d in ds)
    clients = [Janus.from_url(redis_url, prefix=prefix) for _ in range(6)]
    coords = [Coordinator(c.store, dependencies=["pay"]) for c in clients[:3]]
    threads = [c.run_in_thread(check=False) for c in coords]
    stop = threading.Event()
    seen: list[list[Start]] = [[] for _ in range(3)]
    refused = [0, 0, 0]

    def work(n: int) -> None:
        w = clients[3 + n].worker("pay", group="g", consumer=f"w{n}")
        while not stop.is_set():
            jobs = w.fetch(count=20, block_ms=200)
            seen[n] += [_record(j) for j in jobs]
            if jobs:
                refused[n] += sum(not r.ok for r in w.report([w.completed(j) for j in jobs]))

    keys = jn.store.keys("pay")
    workers: list[threading.Thread] = []
    try:
        wait_until(lambda: jn.store.client.zcard(keys.delayed) == 0, 30, "the due jobs to be moved")
        # A coordinator adds a step's count after the step returns: wait for the counts to
        # catch up (a slow machine), then they must match exactly (more: a double move). The
        # total is checked again once the coordinators have stopped, below.
        wait_until(lambda: sum(c.moved for c in coords) >= scheduled, 30, "the move counts")
        moved = sum(c.moved for c in coords)
        st = jn.status("pay")
        print(f"\n  scheduled at submit {scheduled}, moved by coordinators {moved}")
        assert moved == scheduled, "a job was moved twice (or not at all)"
        assert (st.scheduled, st.in_flight, st.stream_length) == (600, 0, 0)
        assert jn.job("pay", "j599").attempt == 0  # type: ignore[union-attr]
        workers = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(3)]
        for t in workers:
            t.start()
        wait_until(lambda: sum(map(len, seen)) >= 600, 30, "the workers to start every job")
    finally:
        stop.set()
        for c in coords:
            c.stop()
        for t in threads:
            t.join(5)
    for t in workers:
        t.join(5)
    starts = [s for mine in seen for s in mine]
    ids = [s[0] for s in starts]
    print(f"  started per worker: {[len(s) for s in seen]}")
    assert len(ids) == 600 and set(ids) == {f"j{i}" for i in range(600)}
    assert {s[1] for s in starts} == {1} and sum(refused) == 0
    _check_bounds(starts, 500.0, 5, "dependency")
    assert sum(c.moved for c in coords) == scheduled, "a job was moved twice"
    st = jn.status("pay")
    assert (st.scheduled, st.in_flight, st.stream_length) == (0, 0, 0)
    for c in clients:
        c.close()
