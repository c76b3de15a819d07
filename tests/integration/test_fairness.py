"""Tenant isolation against real Redis, with explicit time: weighted fair sharing between
scopes (start-time fair queueing), bounded waiting lines, hard cost quotas.

Fairness is measured where the dependency feels it: at start time. A job is released when a
worker fetches it, so the shares, Jain's index and the SFQ bounds below are computed from
which jobs the workers got, in the order they got them (``take`` at the test clock's time)."""

from __future__ import annotations

import itertools
import math
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import LeasedJob
from janus.measure import check_rate

from tests.helpers import FakeClock, counters, make_janus, started, take, unchanged


def _serve(jn: Janus, clock: FakeClock, ms: int, tick_ms: int = 10) -> list[LeasedJob]:
    """A worker asks for work every ``tick_ms`` for ``ms`` and completes what it gets at
    once: the jobs it started, in start order (the order the fetches handed them over)."""
    w = jn.worker("api", group="g", consumer="w1")
    out: list[LeasedJob] = []
    for _ in range(ms // tick_ms):
        clock.advance_ms(tick_ms)
        jobs = take(jn, "api", consumer="w1")
        if jobs:
            assert all(r.ok for r in w.report([w.completed(j) for j in jobs]))
        out += jobs
    return out


def _cost_by_scope(jobs: list[LeasedJob], scopes: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(scopes, 0)
    for j in jobs:
        counts[j.scope] += j.cost
    return counts


def jain(xs: list[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def _backlogged(url: str, prefix: str, weights: dict[str, int]) -> tuple[Janus, FakeClock]:
    overrides = "".join(f"    {s}: {{weight: {w}}}\n" for s, w in weights.items())
    body = f"""
api:
  rate: 100
  burst: 1
  max_wait: 1d
  scopes:
    default: {{rate: 10000, burst: 10000}}
{overrides}"""
    clock = FakeClock()
    jn = make_janus(url, prefix, body, clock)
    for scope in weights:
        jn.submit_many("api", [Job(scope=scope) for _ in range(1500)])
    return jn, clock


def test_equal_weights_share_equally(redis_url: str, prefix: str) -> None:
    """4 backlogged scopes, equal weights, a worker fetching for 10 s at 100/s: Jain's index
    of started cost >= 0.99 (it is 1.0 up to one job), and the dependency ran at its rate."""
    jn, clock = _backlogged(redis_url, prefix, {f"t{i}": 1 for i in range(4)})
    jobs = _serve(jn, clock, 10_000)
    counts = _cost_by_scope(jobs, [f"t{i}" for i in range(4)])
    index = jain(list(counts.values()))
    print(f"\nstarted per scope: {counts}; Jain's index {index:.4f}")
    assert 990 <= sum(counts.values()) <= 100 * 10 + 1
    assert index >= 0.99
    assert max(counts.values()) - min(counts.values()) <= 1


def test_weights_1_2_4_get_shares_within_5_percent(redis_url: str, prefix: str) -> None:
    """Backlogged scopes with weights 1:2:4 start 1/7, 2/7, 4/7 of the dependency's cost
    (+-5%)."""
    weights = {"w1": 1, "w2": 2, "w4": 4}
    jn, clock = _backlogged(redis_url, prefix, weights)
    counts = _cost_by_scope(_serve(jn, clock, 10_000), list(weights))
    total = sum(counts.values())
    shares = {s: c / total for s, c in counts.items()}
    print(f"\nshares: { {s: round(v, 4) for s, v in shares.items()} } of {total}")
    assert total >= 990
    for scope, w in weights.items():
        assert abs(shares[scope] - w / 7) <= 0.05 * w / 7, (scope, shares[scope])


def test_light_scope_is_served_within_one_round_of_a_heavy_backlog(
    redis_url: str, prefix: str
) -> None:
    """A heavy scope queues 50,000 jobs; a light scope then submits one job every 100 ms
    while a worker fetches every 10 ms: its first job starts within one round (2 scopes x
    1 / rate = 20 ms, plus one 10 ms fetch tick), its p99 wait stays below 2 / rate x
    scopes, and the heavy scope starts everything else the dependency's rate allows."""
    body = """
api:
  rate: 100
  burst: 1
  max_wait: 1d
  scopes:
    default: {rate: 10000, burst: 10000}
"""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, body, clock)
    jn.submit_many("api", [Job(scope="heavy") for _ in range(50_000)])
    jobs = _serve(jn, clock, 1_000)  # the heavy backlog is being served
    assert {j.scope for j in jobs} == {"heavy"}
    submitted: dict[str, int] = {}
    for i in range(10):
        d = jn.submit("api", scope="light", job_id=f"light-{i}")
        assert d.accepted
        submitted[d.job_id] = clock.now_ms
        jobs += _serve(jn, clock, 100)
    light = {j.id: j for j in jobs if j.scope == "light"}
    assert sorted(light) == sorted(submitted)
    waits = []
    for job_id, at in submitted.items():
        info = jn.job("api", job_id)
        assert info is not None and info.started_ms == light[job_id].started_ms, job_id
        waits.append(light[job_id].started_ms - at)
    p99 = sorted(waits)[math.ceil(0.99 * len(waits)) - 1]
    print(f"\nlight scope waits (ms): {waits}; first {waits[0]}, p99 {p99}")
    assert waits[0] <= 20 + 10
    assert p99 < 2 / 100 * 2 * 1000 + 10
    heavy = sum(1 for j in jobs if j.scope == "heavy")
    assert len(jobs) >= 2_000 // 10 - 1  # the worker got the dependency's rate: 2 s at 100/s
    assert heavy == len(jobs) - 10  # the heavy scope kept all the rest
    for rep in check_rate(started(jobs), 100, 1, (10, 100, 1000)):
        assert rep.ok, rep


def test_scope_queue_bound_rejects_at_once_and_writes_nothing(redis_url: str, prefix: str) -> None:
    """max_queued bounds the jobs a scope has waiting in Janus (ready or scheduled): the
    submit that would exceed it is rejected scope_queue_full with a retry_after_ms, and
    nothing is kept; other scopes are unaffected; a job a worker takes frees a place."""
    body = """
api:
  rate: 1
  burst: 1
  max_wait: 1d
  scopes:
    default: {max_queued: 3}
"""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, body, clock)
    ds = jn.submit_many("api", [Job(scope="a") for _ in range(3)])
    assert [d.status for d in ds] == ["ready", "scheduled", "scheduled"]
    with unchanged(jn.store.client, prefix, but_counters=True):
        d = jn.submit("api", scope="a", job_id="x")
    assert (d.status, d.reason) == ("rejected", "scope_queue_full")
    assert counters(jn.store.client, prefix, "api")["rejected:scope_queue_full"] == 1
    assert d.retry_after_ms is not None and d.retry_after_ms > 0
    assert jn.submit("api", scope="b").accepted
    st = jn.scope_status("api", "a")
    assert (st.waiting_jobs, st.max_queued) == (3, 3)
    assert [j.id for j in take(jn, "api", count=1)] == [ds[0].job_id]
    assert jn.scope_status("api", "a").waiting_jobs == 2
    assert jn.submit("api", scope="a", job_id="x").accepted


def _quota_setup(
    url: str, prefix: str, window: str, on_exhausted: str, max_wait: str = "1d"
) -> tuple[Janus, FakeClock]:
    body = f"""
api:
  rate: 1000
  burst: 500
  max_wait: {max_wait}
  lease: 2h
  max_cost: 10
  scopes:
    default: {{quota: {{limit: 100, period: 1h, window: {window}, on_exhausted: {on_exhausted}}}}}
"""
    clock = FakeClock()
    return make_janus(url, prefix, body, clock), clock


@pytest.mark.parametrize("window", ["fixed", "rolling"])
def test_quota_rejects_when_spent_and_settles_actual_costs(
    redis_url: str, prefix: str, window: str
) -> None:
    """A submit that cannot fit the quota before max_wait (counting what its scope already
    has waiting) is rejected quota_exhausted with the reset time; a fetch reserves the
    declared cost of what it starts; a report settles the actual cost and frees the
    difference; a failed attempt is charged (it may have spent its cost); reserved + settled
    cost never exceeds the quota."""
    jn, clock = _quota_setup(redis_url, prefix, window, "reject", max_wait="1m")
    w = jn.worker("api", group="g", consumer="w")
    ds = jn.submit_many("api", [Job(scope="t", cost=10) for _ in range(10)])
    assert {d.status for d in ds} == {"ready"}
    assert jn.scope_status("api", "t").quota_used == 0  # nothing reserved before release
    late = jn.submit("api", scope="t", cost=1)
    assert (late.status, late.reason) == ("rejected", "quota_exhausted")
    assert late.retry_after_ms is not None and 0 < late.retry_after_ms <= 3_600_000
    assert jn.submit("api", scope="other", cost=10).status == "ready"  # per scope
    jobs = w.fetch(count=100, block_ms=None)
    mine = [j for j in jobs if j.scope == "t"]
    assert len(mine) == 10 and len(jobs) == 11
    assert jn.scope_status("api", "t").quota_used == 100  # reserved at release
    for job in mine[:5]:
        w.complete(job, actual_cost=4)  # 6 of each 10 reserved comes back
    for job in mine[5:7]:
        assert w.fail(job, "ValueError").decision == "retry"  # charged its declared 10
    st = jn.scope_status("api", "t")
    assert st.quota_used == 5 * 4 + 2 * 10 + 3 * 10  # settled (both kinds) + still reserved
    # The two retries wait in Janus and count against the quota a submit may still promise:
    # 40 settled + 30 reserved + 20 waiting + 10 = 100; the next window is beyond max_wait.
    more = jn.submit_many("api", [Job(scope="t", cost=10) for _ in range(4)])
    assert [d.status for d in more] == ["ready"] + ["rejected"] * 3
    assert {d.reason for d in more[1:]} == {"quota_exhausted"}
    clock.advance_ms(2_000)  # past the retries' backoff (1 s, full jitter)
    again = w.fetch(count=100, block_ms=None)
    assert sorted((j.id, j.attempt) for j in again) == sorted(
        [(more[0].job_id, 1)] + [(j.id, 2) for j in mine[5:7]]
    )
    assert jn.scope_status("api", "t").quota_used == 100  # reserved at release, exactly full


def test_quota_wait_mode_holds_work_until_the_window_resets(redis_url: str, prefix: str) -> None:
    """on_exhausted: wait: over-quota work waits (scheduled, not before the reset) and no
    worker gets it before the fixed window resets; at the reset it is started."""
    jn, clock = _quota_setup(redis_url, prefix, "fixed", "wait")
    window_start = clock.now_ms // 3_600_000 * 3_600_000
    reset_ms = window_start + 3_600_000
    ds = jn.submit_many("api", [Job(scope="t", cost=10, job_id=f"j{i}") for i in range(12)])
    assert [d.status for d in ds] == ["ready"] * 10 + ["scheduled"] * 2
    assert all(d.not_before_ms >= reset_ms for d in ds[10:])
    first = take(jn, "api")
    assert [j.id for j in first] == [f"j{i}" for i in range(10)]
    coord = Coordinator(jn.store)
    step = coord.step("api", clock.advance_ms(60_000))
    assert not step.ready and step.next_us == reset_ms * 1000
    assert take(jn, "api") == []
    clock.now_us = reset_ms * 1000 - 1000
    assert take(jn, "api") == []
    clock.now_us = reset_ms * 1000
    assert coord.step("api", clock()).ready
    assert [(j.id, j.started_ms) for j in take(jn, "api")] == [
        ("j10", reset_ms),
        ("j11", reset_ms),
    ]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    weights=st.lists(st.integers(1, 4), min_size=2, max_size=5),
    backlog=st.integers(20, 60),
)
def test_backlogged_scopes_wait_at_most_the_sfq_bound(
    standalone_url: str, weights: list[int], backlog: int
) -> None:
    """Property (unit costs, every scope backlogged): in the order workers start jobs,
    between two consecutive starts of a scope s any other scope j gets at most
    ceil(w_j / w_s) + 1 starts: the start-time fair queueing bound, so no backlogged scope
    waits more than a round."""
    prefix = "f" + uuid.uuid4().hex[:12]
    names = {f"s{i}": w for i, w in enumerate(weights)}
    clock = FakeClock()
    body = "api:\n  rate: 100\n  burst: 1\n  max_wait: 1d\n  scopes:\n"
    body += "    default: {rate: 10000, burst: 10000}\n"
    body += "".join(f"    {s}: {{weight: {w}}}\n" for s, w in names.items())
    jn = make_janus(standalone_url, prefix, body, clock)
    for scope in names:
        jn.submit_many("api", [Job(scope=scope) for _ in range(backlog)])
    jobs = _serve(jn, clock, backlog * 1000 // 100 // 2)  # half a backlog: all stay backlogged
    order = [j.scope for j in jobs]
    assert len(order) >= backlog // 2 - 1
    assert all(order.count(s) < backlog for s in names)
    for s, ws in names.items():
        mine = [i for i, x in enumerate(order) if x == s]
        assert mine, (s, order)  # every backlogged scope was served
        for a, b in itertools.pairwise(mine):
            between = order[a + 1 : b]
            for j, wj in names.items():
                if j != s:
                    assert between.count(j) <= math.ceil(wj / ws) + 1, (s, j, between)
    jn.close()
