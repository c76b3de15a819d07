"""The outage scenario, simulated tick by tick with explicit time (deterministic).

Producers keep submitting 80 jobs/s to a dependency (rate 100/s). From t=5 s to t=25 s the
dependency fails every call with HTTP 503; then it recovers. Workers report honestly; Janus
alone decides retries. The retry budget (ratio 0.1, 1/s) and the circuit breaker must keep
total attempts within (1 + ratio) x first attempts + min_per_second x seconds, and after
recovery every accepted job must end completed or dead-lettered.

The budget is a bucket that holds up to `window` (10 s) of deposits, like Finagle's retry
budget: retries in the outage may also spend what the 10 s before it deposited. So the
bound for the outage stretch alone carries that term; over the whole run (from an empty
budget) it is exactly (1 + ratio) x first attempts + min_per_second x seconds.
"""

from __future__ import annotations

from collections import Counter

from janus.client import Job
from janus.coordinator import Coordinator

from tests.helpers import FakeClock, make_janus

RATIO, MPS = 0.1, 1.0
BODY = f"""
api:
  rate: 100
  burst: 20
  max_wait: 1h
  lease: 5s
  retry:
    max_attempts: 5
    backoff: {{base: 100ms, factor: 2, max: 5s, jitter: full}}
    budget: {{ratio: {RATIO}, min_per_second: {MPS}, max_wait: 20s, window: 10s}}
  circuit: {{failure_ratio: 0.5, min_requests: 20, window: 5s, open_for: 1s, half_open_probes: 3}}
"""
TICK_MS, OUTAGE = 50, (5_000, 25_000)


def test_outage_stays_within_the_retry_budget_and_nothing_is_lost(
    redis_url: str, prefix: str
) -> None:
    """Property of the run: attempts <= (1 + ratio) * first attempts + mps * seconds, both
    during the outage and overall; every accepted job ends completed or dead-lettered."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    w = jn.worker("api", group="g", consumer="w")
    coord = Coordinator(jn.store)
    start = clock.now_ms
    accepted: set[str] = set()
    during: Counter[str] = Counter()
    before: Counter[str] = Counter()  # the budget window (10 s) before the outage
    total: Counter[str] = Counter()
    n = 0
    t = 0
    while True:
        t = clock.now_ms - start
        if t < 35_000:
            jobs = [Job(scope=f"tenant-{(n + i) % 4}", job_id=f"j{n + i}") for i in range(4)]
            n += 4
            accepted |= {d.job_id for d in jn.submit_many("api", jobs) if d.accepted}
        coord.step("api", clock())
        while batch := w.fetch(count=200, block_ms=None):
            for job in batch:
                kind = "first" if job.attempt == 1 else "retry"
                total[kind] += 1
                if OUTAGE[0] - 10_000 <= t < OUTAGE[0]:
                    before[kind] += 1
                if OUTAGE[0] <= t < OUTAGE[1]:
                    during[kind] += 1
                    w.fail(job, "http_503")
                else:
                    w.complete(job)
        st = jn.status("api")
        if t >= 35_000 and st.scheduled == 0 and st.in_flight == 0:
            break
        assert t < 300_000, "the backlog never drained"
        clock.advance_ms(TICK_MS)

    outage_s = (OUTAGE[1] - OUTAGE[0]) / 1000
    amplification = (during["first"] + during["retry"]) / max(during["first"], 1)
    print(
        f"\noutage {outage_s:.0f}s: first attempts {during['first']}, retries {during['retry']}, "
        f"amplification {amplification:.3f} (bound {1 + RATIO} + {MPS}/s x {outage_s:.0f}s / "
        f"first); whole run: first {total['first']}, retries {total['retry']}, "
        f"{t / 1000:.0f}s"
    )
    assert during["first"] > 100, "the outage saw too little traffic to mean anything"
    carried = RATIO * before["first"] + MPS * 10  # at most what the budget could hold
    assert during["retry"] <= RATIO * during["first"] + MPS * outage_s + carried
    run_s = t / 1000
    overall = (total["first"] + total["retry"]) / total["first"]
    print(
        f"whole run amplification {overall:.3f} <= {1 + RATIO} + {MPS * run_s / total['first']:.3f}"
    )
    assert total["retry"] <= RATIO * total["first"] + MPS * run_s
    statuses = Counter(jn.job("api", i).status for i in accepted)  # type: ignore[union-attr]
    print(f"accepted {len(accepted)}: {dict(statuses)}; dead letters {len(jn.dead_letters('api'))}")
    assert set(statuses) <= {"completed", "dead"}
    assert statuses["dead"] == len(jn.dead_letters("api"))
