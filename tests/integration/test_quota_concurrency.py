"""16 producer processes spend one scope's quota at once while a worker releases and settles
it (real Redis, real processes, a coordinator stepping alongside).

The quota is reserved when a worker fetches a job (the release) and settled by its report,
so the bar is: at every moment, reserved + settled cost <= the limit. Time is Redis-style
microseconds passed explicitly (:class:`ShiftedClock`: the real clock moved to 10 minutes
into an hour), so the run never straddles a fixed window's reset."""

from __future__ import annotations

import multiprocessing as mp
import queue
import random
import threading
import time
from dataclasses import dataclass

import pytest

from janus.client import Job
from janus.coordinator import Coordinator
from janus.keys import Keys
from janus.testing import connect

from tests.helpers import T0_US, make_janus, wait_until

LIMIT = 600
BODY = f"""
api:
  rate: 2000
  burst: 200
  max_wait: 10s
  lease: 1h
  max_cost: 5
  scopes:
    default: {{quota: {{limit: {LIMIT}, period: 1h, window: WINDOW, on_exhausted: reject}}}}
"""


@dataclass(frozen=True)
class ShiftedClock:
    """Real time (us) moved by ``offset_us``: every process of the run shares one timeline."""

    offset_us: int

    def __call__(self) -> int:
        return time.time_ns() // 1000 + self.offset_us


def _producer(url: str, prefix: str, n: int, clock: ShiftedClock, out: mp.Queue) -> None:
    jn = connect(url, prefix=prefix, clock=clock)
    rng = random.Random(n)
    counts = {"ready": 0, "scheduled": 0, "rejected": 0}
    accepted: list[str] = []
    for i in range(20):
        jobs = [
            Job(scope="shared", job_id=f"p{n}-{i}-{k}", cost=rng.randint(1, 5)) for k in range(5)
        ]
        for d in jn.submit_many("api", jobs):
            counts[d.status] += 1
            if d.accepted:
                accepted.append(d.job_id)
    out.put((counts, accepted))
    jn.close()


@pytest.mark.slow
@pytest.mark.parametrize("window", ["fixed", "rolling"])
def test_sixteen_producers_never_overspend_one_quota(
    standalone_url: str, prefix: str, window: str
) -> None:
    """Property of the run: reserved + settled never exceeds the quota (0 overshoot), both
    as sampled from Redis and exactly at every release (the worker's own books: actual cost
    settled so far + declared cost it holds); every accepted job is completed exactly once;
    at the end the settled usage equals the sum of the actual costs reported."""
    clock = ShiftedClock(T0_US + 600_000_000 - time.time_ns() // 1000)
    jn = make_janus(standalone_url, prefix, BODY.replace("WINDOW", window), clock)  # type: ignore[arg-type]
    w = jn.worker("api", group="g", consumer="w")
    coord = Coordinator(jn.store, dependencies=["api"])
    stop = threading.Event()
    errors: list[BaseException] = []
    reported: dict[str, int] = {}  # job id -> actual cost settled by its completion
    completions: list[str] = []
    books = {"settled": 0, "peak": 0}

    def work() -> None:
        rng = random.Random(1)
        try:
            while not stop.is_set():
                jobs = w.fetch(count=50, block_ms=100)
                held = sum(j.cost for j in jobs)
                books["peak"] = max(books["peak"], books["settled"] + held)
                for job in jobs:
                    actual = max(job.cost - rng.randint(0, 2), 0)
                    w.complete(job, actual_cost=actual)
                    books["settled"] += actual
                    reported[job.id] = actual
                    completions.append(job.id)
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)

    def steps() -> None:
        try:
            while not stop.wait(0.005):  # a coordinator stepping on its own, alongside
                coord.step("api", clock())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work), threading.Thread(target=steps)]
    for t in threads:
        t.start()
    peak = 0

    def sample() -> int:
        nonlocal peak
        peak = max(peak, jn.scope_status("api", "shared").quota_used or 0)
        return peak

    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_producer, args=(standalone_url, prefix, n, clock, out))
        for n in range(16)
    ]
    results: list[tuple[dict[str, int], list[str]]] = []

    def producers_done() -> bool:
        sample()
        try:
            while True:
                results.append(out.get_nowait())
        except queue.Empty:
            pass
        return len(results) == 16

    for p in procs:
        p.start()
    try:
        wait_until(producers_done, 120, "16 producers to finish submitting")
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        accepted = {job_id for _, ids in results for job_id in ids}

        def all_completed() -> bool:
            sample()
            return bool(errors) or accepted <= set(completions[:])

        wait_until(all_completed, 60, "the worker to complete every accepted job")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for p in procs:
            if p.is_alive():
                p.kill()
    assert not errors, errors
    sample()
    statuses = {k: sum(r[k] for r, _ in results) for k in ("ready", "scheduled", "rejected")}
    k = Keys(prefix, "api")
    q = jn.store.client.hgetall(k.quota("shared"))
    settled = int(q.get(b"used", q.get(b"sum", b"0")))
    print(
        f"\n{window}: submits {statuses}; completed {len(completions)}; peak reserved+used "
        f"{peak} (sampled), {books['peak']} (at every release) <= {LIMIT}; settled {settled} "
        f"= sum of actual {sum(reported.values())}"
    )
    assert statuses["rejected"] > 0, "the quota was never exhausted: the test tested nothing"
    assert sum(statuses.values()) == 16 * 20 * 5
    assert len(accepted) == statuses["ready"] + statuses["scheduled"]
    assert peak <= LIMIT
    assert books["peak"] <= LIMIT
    assert sorted(completions) == sorted(accepted)  # each accepted job completed exactly once
    st = jn.status("api")
    assert (st.scheduled, st.in_flight) == (0, 0)
    assert jn.store.stream_counts("api") == {"g": (0, 0)}  # every entry ended with its job
    if window == "fixed":
        assert int(q[b"reserved"]) == 0
    assert settled == sum(reported.values()) == books["settled"]
    assert settled <= LIMIT
