"""Retry coordination against real Redis (standalone and cluster), with explicit time:
backoff and jitter as the pure functions say, retry_on, Retry-After pauses, the retry
budget, the circuit breaker, dead letters and replay."""

from __future__ import annotations

import itertools

import pytest

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import LeasedJob
from janus.errors import LeaseLost
from janus.policy import parse_policy_text
from janus.retry import backoff_ms
from janus.worker import Worker

from tests.helpers import FakeClock, make_janus, policy, unchanged


def _setup(url: str, prefix: str, body: str) -> tuple[Janus, FakeClock, Worker, Coordinator]:
    clock = FakeClock()
    jn = make_janus(url, prefix, body, clock)
    return jn, clock, jn.worker("api", group="g", consumer="w"), Coordinator(jn.store)


def _fetch_all(w: Worker) -> list[LeasedJob]:
    out: list[LeasedJob] = []
    while batch := w.fetch(count=100, block_ms=None):
        out += batch
    return out


@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
def test_lua_backoff_matches_the_pure_function(redis_url: str, prefix: str, jitter: str) -> None:
    """Every retry is scheduled exactly where janus.retry.backoff_ms says (same jitter from
    job id and attempt), attempt after attempt."""
    body = f"""
api:
  rate: 1000
  burst: 1000
  max_wait: 1h
  retry:
    max_attempts: 5
    budget: false
    backoff: {{base: 100ms, factor: 3, max: 20s, jitter: {jitter}}}
"""
    jn, clock, w, coord = _setup(redis_url, prefix, body)
    rules = parse_policy_text(policy(body), "x").dependencies["api"].retry
    ids = [f"job-{i}" for i in range(20)]
    jn.submit_many("api", [Job(scope="t", job_id=i) for i in ids])
    previous: dict[str, int | None] = dict.fromkeys(ids)
    for attempt in range(1, 5):
        jobs = _fetch_all(w)
        assert sorted(j.id for j in jobs) == sorted(ids) and {j.attempt for j in jobs} == {attempt}
        for job in jobs:
            out = w.fail(job, "timeout")
            expected = backoff_ms(rules, job.id, attempt, previous[job.id])
            assert out.retry_at_ms == clock.now_ms + expected, (job.id, attempt)
            previous[job.id] = expected
        clock.advance_ms(20_001)
        coord.step("api", clock())
    if jitter != "none":
        assert len({previous[i] for i in ids}) > 10  # different jobs spread out


def test_error_kinds_outside_retry_on_are_dead_lettered(redis_url: str, prefix: str) -> None:
    """retry_on: [timeout, http_5xx]: http_503 is retried, http_404 goes to the dead letters."""
    body = """
api:
  rate: 100
  burst: 10
  retry: {retry_on: [timeout, http_5xx], budget: false}
"""
    jn, _, w, _ = _setup(redis_url, prefix, body)
    jn.submit_many("api", [Job(scope="t", job_id="a"), Job(scope="t", job_id="b")])
    a, b = sorted(_fetch_all(w), key=lambda j: j.id)
    assert w.fail(a, "http_503").decision == "retry"
    assert w.fail(b, "http_404").decision == "dead"
    (letter,) = jn.dead_letters("api")
    assert (letter.job_id, letter.reason, letter.error) == ("b", "not_retryable", "http_404")


def test_one_429_pauses_the_whole_dependency_then_releases_resume_at_the_rate(
    redis_url: str, prefix: str
) -> None:
    """A single Retry-After of 2 s stops every release of the dependency (other jobs, other
    scopes, new submits) for 2 s; then releases resume one interval apart: no burst."""
    body = """
api:
  rate: 10
  burst: 5
  max_wait: 1h
  retry: {budget: false, backoff: {jitter: none, base: 100ms}}
"""
    jn, clock, w, coord = _setup(redis_url, prefix, body)
    jn.submit("api", scope="t1", job_id="first")
    (job,) = _fetch_all(w)
    w.fail(job, "http_429", retry_after_ms=2_000)
    paused_at = clock.now_ms
    ds = jn.submit_many("api", [Job(scope=f"s{i % 3}", job_id=f"n{i}") for i in range(20)])
    assert {d.status for d in ds} == {"scheduled"}
    assert min(d.not_before_ms for d in ds) >= paused_at + 2_000
    for _ in range(19):
        assert coord.step("api", clock.advance_ms(100)).released == 0
    for _ in range(60):
        coord.step("api", clock.advance_ms(50))
    # Measured from stream entry ids (release time in Redis ms): the pause, then the rate.
    released_ms = [
        ms for ms, _scope, _cost, job_id in jn.store.releases("api") if job_id != "first"
    ]
    assert len(released_ms) == 20
    assert released_ms[0] >= paused_at + 2_000
    gaps = [b - a for a, b in itertools.pairwise(released_ms)]
    assert min(gaps) >= 100, f"a catch-up burst after the pause: {released_ms[:6]}"


def test_retry_after_is_capped_and_can_apply_to_one_scope(redis_url: str, prefix: str) -> None:
    """pause_on_retry_after: scope pauses only that tenant; max_retry_after caps the wait."""
    body = """
api:
  rate: 100
  burst: 10
  max_wait: 1h
  retry:
    budget: false
    max_retry_after: 3s
    pause_on_retry_after: scope
    backoff: {jitter: none, base: 10ms}
"""
    jn, clock, w, _coord = _setup(redis_url, prefix, body)
    jn.submit("api", scope="noisy", job_id="x")
    (job,) = _fetch_all(w)
    out = w.fail(job, "http_429", retry_after_ms=3_600_000)
    assert out.retry_at_ms == clock.now_ms + 3_000  # capped at max_retry_after
    assert jn.submit("api", scope="quiet", job_id="q").status == "released"
    assert jn.submit("api", scope="noisy", job_id="n").status == "scheduled"


def test_retry_budget_holds_retries_then_dead_letters_them(redis_url: str, prefix: str) -> None:
    """budget ratio 0, 1 retry/s: of 10 failed jobs one retry goes per second; the rest wait
    (not dropped) and, past budget.max_wait, are dead-lettered retry_budget_exhausted."""
    body = """
api:
  rate: 1000
  burst: 100
  max_wait: 1h
  retry:
    max_attempts: 3
    backoff: {base: 1ms, max: 1ms, jitter: none}
    budget: {ratio: 0, min_per_second: 1, max_wait: 3s, window: 10s}
"""
    jn, clock, w, coord = _setup(redis_url, prefix, body)
    jn.submit_many("api", [Job(scope="t", job_id=f"j{i}") for i in range(10)])
    for job in _fetch_all(w):
        w.fail(job, "timeout")
    retried: list[int] = []
    dead = 0
    for _ in range(100):  # 5 s in 50 ms steps
        step = coord.step("api", clock.advance_ms(50))
        dead += step.budget_dead
        for job in _fetch_all(w):
            retried.append(clock.now_ms)
            w.complete(job)
    assert 3 <= len(retried) <= 5  # ~1 per second while retries were still within max_wait
    assert dead == 10 - len(retried)
    reasons = {d.reason for d in jn.dead_letters("api")}
    assert reasons == {"retry_budget_exhausted"}
    assert all(b - a >= 990 for a, b in itertools.pairwise(retried))


def test_circuit_opens_holds_work_then_probes_and_closes(redis_url: str, prefix: str) -> None:
    """Failures past the threshold open the circuit: nothing is released (work waits, no
    attempts burn); after open_for, half-open releases the probes; their success closes it."""
    body = """
api:
  rate: 1000
  burst: 100
  max_wait: 1h
  retry: {max_attempts: 10, budget: false, backoff: {base: 10ms, max: 10ms, jitter: none}}
  circuit: {failure_ratio: 0.5, min_requests: 4, window: 10s, open_for: 1s, half_open_probes: 2}
"""
    jn, clock, w, coord = _setup(redis_url, prefix, body)
    jn.submit_many("api", [Job(scope="t", job_id=f"j{i}") for i in range(4)])
    for job in _fetch_all(w):
        w.fail(job, "http_503")
    state = jn.store.client.hget(f"{prefix}:{{api}}:state", "c_state")
    assert state == b"open"
    assert jn.submit("api", scope="t", job_id="new").status == "scheduled"
    assert coord.step("api", clock.advance_ms(500)).released == 0  # open: nothing goes
    assert _fetch_all(w) == []
    step = coord.step("api", clock.advance_ms(501))  # half-open: two probes
    assert step.released == 2
    probes = _fetch_all(w)
    for job in probes:
        w.complete(job)
    assert jn.store.client.hget(f"{prefix}:{{api}}:state", "c_state") == b"closed"
    assert coord.step("api", clock()).released == 3  # everything waiting flows again
    attempts = {j.id: j.attempt for j in probes + _fetch_all(w)}
    assert max(attempts.values()) <= 2  # waiting burned no attempts


def test_circuit_reopens_for_longer_when_a_probe_fails(redis_url: str, prefix: str) -> None:
    """A failed probe opens the circuit again, for twice as long."""
    body = """
api:
  rate: 1000
  burst: 100
  max_wait: 1h
  retry: {max_attempts: 10, budget: false, backoff: {base: 10ms, max: 10ms, jitter: none}}
  circuit: {failure_ratio: 0.5, min_requests: 2, window: 10s, open_for: 1s, half_open_probes: 1}
"""
    jn, clock, w, coord = _setup(redis_url, prefix, body)
    jn.submit_many("api", [Job(scope="t", job_id=f"j{i}") for i in range(2)])
    for job in _fetch_all(w):
        w.fail(job, "timeout")
    coord.step("api", clock.advance_ms(1_001))
    (probe,) = _fetch_all(w)
    w.fail(probe, "timeout")
    until = int(jn.store.client.hget(f"{prefix}:{{api}}:state", "c_until"))
    assert until == clock.now_us + 2_000_000
    assert coord.step("api", clock.advance_ms(1_999)).released == 0
    assert coord.step("api", clock.advance_ms(2)).released == 1


def test_late_failure_report_from_an_expired_attempt_changes_nothing(
    redis_url: str, prefix: str
) -> None:
    """After the coordinator reclaimed an attempt, that attempt's fail() is refused and
    nothing changes: no extra retry, no extra history entry, no budget spent."""
    body = """
api:
  rate: 100
  burst: 10
  lease: 1s
  max_wait: 1h
"""
    jn, clock, w, coord = _setup(redis_url, prefix, body)
    jn.submit("api", scope="t", job_id="z")
    (job,) = _fetch_all(w)
    coord.step("api", clock.advance_ms(1_001))
    with unchanged(jn.store.client, prefix), pytest.raises(LeaseLost) as err:
        w.fail(job, "http_503", retry_after_ms=60_000)
    assert err.value.reason == "superseded"
    info = jn.job("api", "z")
    assert info is not None and [h["error"] for h in info.history] == ["lease_expired"]


def test_replay_sends_dead_letters_back_through_admission(redis_url: str, prefix: str) -> None:
    """replay: attempts reset, history kept, dead letter kept until purged; a second replay
    of the same entry does nothing; purge deletes."""
    body = """
api:
  rate: 100
  burst: 10
  retry: {max_attempts: 1}
"""
    jn, clock, w, coord = _setup(redis_url, prefix, body)
    jn.submit_many("api", [Job(scope="a", job_id="x", payload=b"px"), Job(scope="b", job_id="y")])
    for job in _fetch_all(w):
        w.fail(job, "boom")
    assert len(jn.dead_letters("api")) == 2
    only_a = jn.dead_letters("api", scope="a")
    assert [d.job_id for d in only_a] == ["x"] and only_a[0].payload == b"px"
    assert jn.replay("api", only_a) == {only_a[0].entry_id: "replayed"}
    assert jn.replay("api", only_a) == {only_a[0].entry_id: "already_replayed"}
    coord.step("api", clock.advance_ms(10))
    (again,) = _fetch_all(w)
    assert (again.id, again.attempt, again.payload) == ("x", 1, b"px")
    w.complete(again)
    info = jn.job("api", "x")
    assert info is not None and [h["outcome"] for h in info.history] == [
        "failed",
        "replayed",
        "completed",
    ]
    assert len(jn.dead_letters("api")) == 2  # nothing deleted unless purged
    assert jn.purge("api", jn.dead_letters("api")) == 2
    assert jn.dead_letters("api") == []
