"""Regressions found in review, each against real Redis with explicit time."""

from __future__ import annotations

from janus.client import Job
from janus.coordinator import Coordinator
from janus.keys import Keys
from janus.policy import parse_policy_text

from tests.helpers import FakeClock, make_janus, policy


def test_half_open_circuit_is_not_stuck_when_a_probe_fails_on_its_own_account(
    redis_url: str, prefix: str
) -> None:
    """A probe that fails with a non-retryable kind says nothing about the dependency: its
    slot goes back and another probe is released, instead of half-open forever."""
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
    jn.submit_many("api", [Job(scope="t", job_id=f"later-{i}") for i in range(3)])
    assert coord.step("api", clock.advance_ms(1_001)).released == 1
    (probe,) = w.fetch(count=10, block_ms=None)
    assert w.fail(probe, "ValueError").decision == "dead"
    assert coord.step("api", clock.advance_ms(1)).released == 1  # another probe goes
    (probe2,) = w.fetch(count=10, block_ms=None)
    w.complete(probe2)
    assert jn.status("api").circuit == "closed"


def test_rolling_quota_forgets_expired_charges_even_without_a_new_reservation(
    redis_url: str, prefix: str
) -> None:
    """Pruning expired reservations from a rolling window updates the stored total at once
    (a check that reserves nothing used to leave it stale and starve the scope)."""
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
    w, coord = jn.worker("api", group="g", consumer="w"), Coordinator(jn.store)
    jn.submit("api", scope="t", cost=10)
    (job,) = w.fetch(block_ms=None)
    w.complete(job)
    assert jn.submit("api", scope="t", cost=10).status == "scheduled"  # window still full
    clock.advance_ms(12_000)
    # This submit prunes the expired charge while checking, and reserves nothing itself
    # (the job already waiting comes first).
    assert jn.submit("api", scope="t", cost=10, job_id="a").status == "scheduled"
    assert coord.step("api", clock.advance_ms(10)).released == 1  # the waiting job fits
    assert jn.scope_status("api", "t").quota_used == 10


def test_resent_start_and_reports_get_the_same_answer(redis_url: str, prefix: str) -> None:
    """redis-py re-sends a call whose reply was lost: start, complete and fail answer the
    re-send as they answered the original (no wasted attempt, no false LeaseLost)."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, "api:\n  rate: 100\n  burst: 10\n", clock)
    store = jn.store
    jn.submit_many("api", [Job(scope="t", job_id="a"), Job(scope="t", job_id="b")])
    w = jn.worker("api", group="g", consumer="w")
    entries = store.read("api", "g", "w", 10, None)
    args = [
        (
            Keys(prefix, "api").job(f[b"id"].decode())[len(Keys(prefix, "api").job_prefix) :],
            eid,
            int(f[b"attempt"]),
        )
        for eid, f in entries
    ]
    first = store.start("api", "g", "w", args, clock())
    again = store.start("api", "g", "w", args, clock())
    assert first[0::8] == [1, 1] and again[0::8] == [1, 1]
    a_enc, a_token, _ = args[0]
    b_enc, b_token, _ = args[1]
    # A re-send repeats the same report id; a new report (a real double complete) does not.
    assert store.complete("api", "g", a_enc, 1, a_token, clock(), None, "r1") == [1, b""]
    assert store.complete("api", "g", a_enc, 1, a_token, clock(), None, "r1") == [1, b""]
    assert store.complete("api", "g", a_enc, 1, a_token, clock(), None, "r2")[0] == 0
    once = store.fail("api", "g", b_enc, 1, b_token, "timeout", 0, "", clock(), "r3")
    twice = store.fail("api", "g", b_enc, 1, b_token, "timeout", 0, "", clock(), "r3")
    assert once[0] == 1 and once == twice
    assert w.stats.lease_lost == 0


def test_a_dead_lettered_failure_wakes_the_coordinator_for_the_freed_slot(
    redis_url: str, prefix: str
) -> None:
    """With max_in_flight, a failure that ends the job still frees its slot: the coordinator
    is told at once, as on complete."""
    body = "api:\n  rate: 100\n  burst: 10\n  max_in_flight: 1\n  retry: {retry_on: [timeout]}\n"
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, body, clock)
    jn.submit_many("api", [Job(scope="t"), Job(scope="t")])
    w = jn.worker("api", group="g", consumer="w")
    (job,) = w.fetch(block_ms=None)
    Coordinator(jn.store).step("api", clock())
    jn.store.client.delete(Keys(prefix, "api").wake)
    assert w.fail(job, "ValueError").decision == "dead"
    assert jn.store.client.llen(Keys(prefix, "api").wake) == 1


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
    state = Keys(prefix, "api").state
    assert jn.store.client.hget(state, "active_w") == b"6000"
    jn.apply_policies(parse_policy_text(policy(body.replace("weight: 3", "weight: 1")), "x"))
    coord = Coordinator(jn.store)
    for _ in range(10):
        coord.step("api", clock.advance_ms(1_000))
    assert jn.status("api").scheduled == 0
    assert jn.store.client.hget(state, "active_w") == b"0"
