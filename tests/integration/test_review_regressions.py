"""Regressions found in review, each against real Redis with explicit time.

Each test keeps the property its fix protects, in the current flow (a job is released only
when a worker fetches it). The old check that the in-flight index is pruned by retention is
gone with the feature: running records no longer expire, so the index holds only running
attempts and nothing needs pruning."""

from __future__ import annotations

from janus import calls
from janus.client import Job
from janus.coordinator import Coordinator
from janus.keys import Keys
from janus.policy import parse_policy_text

from tests.helpers import FakeClock, make_janus, policy, take


def test_half_open_circuit_is_not_stuck_when_a_probe_fails_on_its_own_account(
    redis_url: str, prefix: str
) -> None:
    """A probe that fails with a non-retryable kind says nothing about the dependency: its
    slot goes back and the next fetch gets another probe, instead of half-open forever."""
    body = """
api:
  rate: 1000
  burst: 100
  max_wait: 1d
  retry: {retry_on: [timeout], budget: false, backoff: {base: 10ms, max: 10ms, jitter: none}}
  circuit: {failure_ratio: 0.5, min_requests: 2, window: 10s, open_for: 1s, half_open_probes: 1}
"""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, body, clock)
    w, coord = jn.worker("api", group="g", consumer="w"), Coordinator(jn.store)
    jn.submit_many("api", [Job(scope="t") for _ in range(2)])
    for job in w.fetch(count=10, block_ms=None):
        w.fail(job, "timeout")
    assert jn.status("api").circuit == "open"
    jn.submit_many("api", [Job(scope="t", job_id=f"later-{i}") for i in range(3)])
    assert coord.step("api", clock.advance_ms(1_001)).ready
    (probe,) = w.fetch(count=10, block_ms=None)
    assert w.fetch(count=10, block_ms=None) == []  # the one probe is out
    assert w.fail(probe, "ValueError").decision == "dead"
    assert coord.step("api", clock.advance_ms(1)).ready
    (probe2,) = w.fetch(count=10, block_ms=None)  # another probe goes
    assert jn.status("api").circuit == "half_open"
    w.complete(probe2)
    assert jn.status("api").circuit == "closed"


def test_rolling_quota_forgets_expired_charges_even_without_a_new_reservation(
    redis_url: str, prefix: str
) -> None:
    """Pruning expired charges from a rolling window updates the stored total at once: a
    check that reserves nothing (a submit) prunes them, and the next fetch, which finds
    nothing left to prune, still sees the window empty and releases the waiting work (a
    stale total used to starve the scope)."""
    body = """
api:
  rate: 1000
  burst: 100
  max_wait: 1d
  lease: 1h
  scopes:
    default: {quota: {limit: 10, period: 10s, window: rolling, on_exhausted: wait}}
"""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, body, clock)
    jn.submit("api", scope="t", cost=10)
    (job,) = take(jn, "api")
    w = jn.worker("api", group="g", consumer="w1")
    w.complete(job)
    assert jn.submit("api", scope="t", cost=5, job_id="w").status == "scheduled"  # full
    assert take(jn, "api") == []
    clock.advance_ms(12_000)
    quota = Keys(prefix, "api").quota("t")
    assert jn.store.client.hget(quota, "sum") == b"10"  # the expired charge, not pruned yet
    # This submit prunes the expired charge while checking, and reserves nothing itself.
    assert jn.submit("api", scope="t", cost=5, job_id="a").status == "ready"
    assert jn.store.client.hget(quota, "sum") == b"0"
    assert jn.store.client.zcard(quota + ":log") == 0
    assert sorted(j.id for j in take(jn, "api")) == ["a", "w"]  # both fit the window
    assert jn.scope_status("api", "t").quota_used == 10


def test_submit_behind_waiting_work_the_quota_cannot_fit_now_is_scheduled(
    redis_url: str, prefix: str
) -> None:
    """A submit whose scope's waiting work plus its own cost exceeds the quota's limit does
    not fit the window now: it is "scheduled" (not "ready"), and indeed no fetch takes it
    until the quota frees up."""
    body = """
api:
  rate: 1000
  burst: 100
  max_wait: 1d
  lease: 1h
  scopes:
    default: {quota: {limit: 10, period: 10s, window: rolling, on_exhausted: wait}}
"""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, body, clock)
    jn.submit("api", scope="t", cost=10)
    (job,) = take(jn, "api")
    jn.worker("api", group="g", consumer="w1").complete(job)
    assert jn.submit("api", scope="t", cost=10, job_id="w").status == "scheduled"
    clock.advance_ms(12_000)
    # "w" (cost 10) comes first and fills the window: "a" cannot go now.
    assert jn.submit("api", scope="t", cost=10, job_id="a").status == "scheduled"
    assert [j.id for j in take(jn, "api")] == ["w"]


def test_resent_fetch_and_reports_get_the_same_answer(redis_url: str, prefix: str) -> None:
    """redis-py re-sends a call whose reply was lost: a re-sent fetch (same fetch id) gets
    the same jobs and releases nothing new (no wasted attempt, no job held by a worker that
    does not know it); re-sent complete and fail outcomes (same report ids) get the answer
    the first send got (no false LeaseLost), while a new report of a finished job is
    refused."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, "api:\n  rate: 100\n  burst: 10\n", clock)
    store = jn.store
    keys = store.keys("api")
    jn.submit_many("api", [Job(scope="t", job_id=j) for j in ("a", "b", "c")])
    fetch = calls.fetch(
        keys, group="g", consumer="w", count=2, fetch_id="f1", max_steps=200, now_us=clock()
    )
    first = store.run(fetch)
    again = store.run(fetch)
    assert [(j.id, j.attempt) for j in first.jobs] == [("a", 1), ("b", 1)]
    assert not first.repeat and again.repeat
    assert again.jobs == first.jobs
    assert jn.status("api").in_flight == 2 and store.stream_counts("api") == {"g": (2, 2)}
    assert jn.job("api", "c").status == "scheduled"  # type: ignore[union-attr]
    w = jn.worker("api", group="g", consumer="w")
    a, b = first.jobs
    done = w.completed(a)
    failed = w.failed(b, "timeout")
    once = store.run(calls.report(keys, [done, failed], clock()))
    twice = store.run(calls.report(keys, [done, failed], clock()))
    assert [r.decision for r in once] == ["completed", "retry"] and all(r.ok for r in once)
    assert twice == once
    (double,) = w.report([w.completed(a)])  # a new report id: a real double complete
    assert (double.ok, double.reason) == (False, "finished")
    info_a, info_b = jn.job("api", "a"), jn.job("api", "b")
    assert info_a is not None and [h["outcome"] for h in info_a.history] == ["completed"]
    assert info_b is not None and [h["outcome"] for h in info_b.history] == ["failed"]
    assert (info_b.status, info_b.attempt) == ("failed", 1)


def test_a_dead_lettered_failure_wakes_a_worker_for_the_freed_slot(
    redis_url: str, prefix: str
) -> None:
    """With max_in_flight, a failure that ends the job still frees its slot: an idle worker
    is told at once (a token on the work list), as on complete, and its fetch gets the job
    that waited for the slot."""
    body = "api:\n  rate: 100\n  burst: 10\n  max_in_flight: 1\n  retry: {retry_on: [timeout]}\n"
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, body, clock)
    jn.submit_many("api", [Job(scope="t", job_id="x"), Job(scope="t", job_id="y")])
    w = jn.worker("api", group="g", consumer="w")
    (job,) = w.fetch(block_ms=None)
    assert w.fetch(block_ms=None) == []  # the one slot is taken
    work = Keys(prefix, "api").work
    jn.store.client.delete(work)
    assert w.fail(job, "ValueError").decision == "dead"
    assert jn.store.client.llen(work) == 1
    assert [j.id for j in w.fetch(block_ms=None)] == ["y" if job.id == "x" else "x"]


def test_changing_a_weight_while_active_does_not_skew_the_fair_queue(
    redis_url: str, prefix: str
) -> None:
    """A scope takes back exactly the weight it added when it leaves the fair queue, even if
    the policy changed its weight meanwhile: the sum of active weights stays right."""
    body = """
api:
  rate: 1
  burst: 1
  max_wait: 1d
  scopes:
    default: {rate: 1000, burst: 1000, weight: 3}
"""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, body, clock)
    jn.submit_many("api", [Job(scope=s) for s in ("a", "a", "b", "b")])
    assert jn.store.state_fields("api")["active_w"] == 6000
    jn.apply_policies(parse_policy_text(policy(body.replace("weight: 3", "weight: 1")), "x"))
    got = take(jn, "api")
    for _ in range(10):
        clock.advance_ms(1_000)
        got += take(jn, "api")
    assert len(got) == 4
    assert jn.status("api").scheduled == 0
    assert jn.store.state_fields("api")["active_w"] == 0
