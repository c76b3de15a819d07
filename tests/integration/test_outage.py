"""The outage scenario, simulated tick by tick with explicit time (deterministic).

Producers keep submitting 80 jobs/s to a dependency (rate 100/s). From t=5 s to t=25 s the
dependency fails every call with HTTP 503; then it recovers. Workers fetch whatever Janus
releases and report honestly; Janus alone decides retries. The retry budget (ratio 0.1,
1/s) and the circuit breaker must keep attempts within (1 + ratio) x first attempts +
min_per_second x seconds, and after recovery every accepted job must end completed or
dead-lettered (for its attempts, never for waiting: a retry without a token is parked).

Attempts are counted as they start: each fetched job is a started attempt, placed in time by
its started time (the release time its stream entry id carries).

The budget is a bucket that holds up to `window` (10 s) of deposits, like Finagle's retry
budget: retries in the outage may also spend what the 10 s before it deposited. So the
bound for the outage stretch alone carries that term; over the whole run (from an empty
budget) it is exactly (1 + ratio) x first attempts + min_per_second x seconds.
"""

from __future__ import annotations

from collections import Counter

from janus.client import Job
from janus.coordinator import Coordinator
from janus.measure import check_rate

from tests.helpers import FakeClock, make_janus, started

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
    budget: {{ratio: {RATIO}, min_per_second: {MPS}, window: 10s}}
  circuit: {{failure_ratio: 0.5, min_requests: 20, window: 5s, open_for: 1s, half_open_probes: 3}}
"""
TICK_MS, OUTAGE = 50, (5_000, 25_000)


def _within_budget(attempts: list[tuple[int, int]], since_ms: int, carried: float) -> None:
    """At every started time T >= since_ms: retries started in [since_ms, T] <= ratio x
    first attempts started in [since_ms, T] + min_per_second x (T - since_ms) + carried."""
    firsts = retries = 0
    for i, (t, attempt) in enumerate(attempts):
        if attempt == 1:
            firsts += 1
        else:
            retries += 1
        if i + 1 < len(attempts) and attempts[i + 1][0] == t:
            continue  # check once all attempts started at t are counted
        bound = RATIO * firsts + MPS * (t - since_ms) / 1000 + carried
        assert retries <= bound + 1e-9, (t, firsts, retries, bound)


def test_outage_stays_within_the_retry_budget_and_nothing_is_lost(
    redis_url: str, prefix: str
) -> None:
    """Property of the run, measured from started attempts: retries <= ratio x first
    attempts + mps x seconds at every moment of the outage (plus what the budget held when
    it began) and of the whole run; started cost stays within the rate; every accepted job
    ends completed or dead-lettered for using up its attempts."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    w = jn.worker("api", group="g", consumer="w")
    coord = Coordinator(jn.store)
    start = clock.now_ms
    accepted: set[str] = set()
    attempts: list[tuple[int, int]] = []  # (started ms since start, attempt), in start order
    jobs = []
    n = 0
    t = 0
    while True:
        t = clock.now_ms - start
        if t < 35_000:
            batch = [Job(scope=f"tenant-{(n + i) % 4}", job_id=f"j{n + i}") for i in range(4)]
            n += 4
            accepted |= {d.job_id for d in jn.submit_many("api", batch) if d.accepted}
        coord.step("api", clock())
        while got := w.fetch(count=200, block_ms=None):
            for job in got:
                at = job.started_ms - start
                attempts.append((at, job.attempt))
                jobs.append(job)
                if OUTAGE[0] <= at < OUTAGE[1]:
                    w.fail(job, "http_503")
                else:
                    w.complete(job)
        st = jn.status("api")
        if t >= 35_000 and st.scheduled == 0 and st.in_flight == 0:
            break
        assert t < 300_000, "the backlog never drained"
        clock.advance_ms(TICK_MS)

    assert attempts == sorted(attempts, key=lambda a: a[0])  # started times never go back
    during = Counter(
        "first" if a == 1 else "retry" for at, a in attempts if OUTAGE[0] <= at < OUTAGE[1]
    )
    before = Counter(a == 1 for at, a in attempts if OUTAGE[0] - 10_000 <= at < OUTAGE[0])
    total = Counter("first" if a == 1 else "retry" for _, a in attempts)
    outage_s = (OUTAGE[1] - OUTAGE[0]) / 1000
    amplification = (during["first"] + during["retry"]) / max(during["first"], 1)
    print(
        f"\noutage {outage_s:.0f}s: first attempts {during['first']}, retries {during['retry']}, "
        f"amplification {amplification:.3f} (bound {1 + RATIO} + {MPS}/s x {outage_s:.0f}s / "
        f"first); whole run: first {total['first']}, retries {total['retry']}, "
        f"{t / 1000:.0f}s"
    )
    assert during["first"] > 100, "the outage saw too little traffic to mean anything"
    carried = RATIO * before[True] + MPS * 10  # at most what the budget could hold
    assert during["retry"] <= RATIO * during["first"] + MPS * outage_s + carried
    _within_budget([a for a in attempts if OUTAGE[0] <= a[0] < OUTAGE[1]], OUTAGE[0], carried)
    run_s = t / 1000
    overall = (total["first"] + total["retry"]) / total["first"]
    print(
        f"whole run amplification {overall:.3f} <= {1 + RATIO} + {MPS * run_s / total['first']:.3f}"
    )
    assert total["retry"] <= RATIO * total["first"] + MPS * run_s
    _within_budget(attempts, 0, 0.0)
    for rep in check_rate(started(jobs), 100, 20, (50, 500, 5_000)):
        assert rep.ok, rep
    statuses = Counter(jn.job("api", i).status for i in accepted)  # type: ignore[union-attr]
    letters = jn.dead_letters("api")
    print(f"accepted {len(accepted)}: {dict(statuses)}; dead letters {len(letters)}")
    assert set(statuses) <= {"completed", "dead"}
    assert statuses["dead"] == len(letters)
    assert {d.reason for d in letters} <= {"attempts_exhausted"}  # never for waiting
    assert jn.status("api").parked == 0
