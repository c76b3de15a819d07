"""16 producer processes spend one scope's quota at once (real Redis, real processes)."""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time

import pytest

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.keys import Keys

from tests.helpers import make_janus

LIMIT = 600
BODY = f"""
api:
  rate: 2000
  burst: 200
  max_wait: 1h
  lease: 1h
  max_cost: 5
  scopes:
    default: {{quota: {{limit: {LIMIT}, period: 1h, window: WINDOW, on_exhausted: reject}}}}
"""


def _producer(url: str, prefix: str, n: int, out: mp.Queue) -> None:
    jn = Janus.from_url(url, prefix=prefix)
    rng = random.Random(n)
    counts = {"released": 0, "scheduled": 0, "rejected": 0}
    for i in range(20):
        jobs = [
            Job(scope="shared", job_id=f"p{n}-{i}-{k}", cost=rng.randint(1, 5)) for k in range(5)
        ]
        for d in jn.submit_many("api", jobs):
            counts[d.status] += 1
    out.put(counts)
    jn.close()


@pytest.mark.slow
@pytest.mark.parametrize("window", ["fixed", "rolling"])
def test_sixteen_producers_never_overspend_one_quota(
    standalone_url: str, prefix: str, window: str
) -> None:
    """Property of the run: reserved + settled never exceeds the quota (0 overshoot) at any
    sample; at the end the settled usage equals the sum of the actual costs reported."""
    jn = make_janus(standalone_url, prefix, BODY.replace("WINDOW", window))
    coord = Coordinator(jn.store, dependencies=["api"])
    coord_thread = coord.run_in_thread(check=False)
    w = jn.worker("api", group="g", consumer="w")
    reported: list[int] = []
    stop = threading.Event()

    def work() -> None:
        rng = random.Random(1)
        while not stop.is_set():
            for job in w.fetch(count=50, block_ms=100):
                actual = max(job.cost - rng.randint(0, 2), 0)
                w.complete(job, actual_cost=actual)
                reported.append(actual)

    worker = threading.Thread(target=work)
    worker.start()
    peak = 0

    def quota_total() -> int:
        st = jn.scope_status("api", "shared")
        return st.quota_used or 0

    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_producer, args=(standalone_url, prefix, n, out)) for n in range(16)
    ]
    for p in procs:
        p.start()
    try:
        results = []
        deadline = time.monotonic() + 60
        while len(results) < 16 and time.monotonic() < deadline:
            peak = max(peak, quota_total())
            while not out.empty():
                results.append(out.get())
            time.sleep(0.01)
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        time.sleep(0.5)
        peak = max(peak, quota_total())
    finally:
        stop.set()
        worker.join(10)
        coord.stop()
        coord_thread.join(10)
        for p in procs:
            if p.is_alive():
                p.kill()
    statuses = {k: sum(r[k] for r in results) for k in ("released", "scheduled", "rejected")}
    released = [(ms, scope, cost) for ms, scope, cost, _ in jn.store.releases("api")]
    k = Keys(prefix, "api")
    q = jn.store.client.hgetall(k.quota("shared"))
    settled = int(q.get(b"used", q.get(b"sum", b"0")))
    print(
        f"\n{window}: submits {statuses}; completed {len(reported)}; peak reserved+used {peak} "
        f"<= {LIMIT}; settled {settled} = sum of actual {sum(reported)}"
    )
    assert statuses["rejected"] > 0, "the quota was never exhausted: the test tested nothing"
    assert peak <= LIMIT
    assert jn.status("api").scheduled == 0 and not released  # all completed, entries deleted
    if window == "fixed":
        assert int(q[b"reserved"]) == 0
    assert settled == sum(reported)
    assert settled <= LIMIT
