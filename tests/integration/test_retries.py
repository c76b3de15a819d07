"""Retry coordination against real Redis (standalone and cluster), with explicit time:
backoff and jitter as the pure functions say, retry_on, Retry-After pauses, the retry
budget, the circuit breaker, dead letters and replay.

Nothing is released at submit or by the coordinator: a job (first attempt or retry) starts
only when a worker fetches it, under every limit, so what the limits allow is observed
through fetches and measured from the attempts' started times."""

from __future__ import annotations

import itertools

import pytest

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import LeasedJob
from janus.errors import LeaseLost
from janus.measure import check_rate
from janus.policy import parse_policy_text
from janus.retry import backoff_ms
from janus.worker import Worker

from tests.helpers import FakeClock, make_janus, policy, started, unchanged

#: Each contract test runs through the sync API and the asyncio API (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("api")


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
    """A single Retry-After of 2 s pauses releases of the whole dependency (other jobs, other
    scopes, new submits): for 2 s no fetch gets anything and the coordinator wakes no worker;
    then releases resume one interval apart at the policy rate, with no catch-up burst
    (measured from the started times of the attempts)."""
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
    out = w.fail(job, "http_429", retry_after_ms=2_000)
    resume_ms = clock.now_ms + 2_000
    assert out.retry_at_ms == resume_ms
    assert jn.status("api").paused_until_ms == resume_ms
    ds = jn.submit_many("api", [Job(scope=f"s{i % 3}", job_id=f"n{i}") for i in range(20)])
    assert {d.status for d in ds} == {"scheduled"}
    assert min(d.not_before_ms for d in ds) >= resume_ms
    for _ in range(19):  # up to 100 ms before the pause ends
        step = coord.step("api", clock.advance_ms(100))
        assert not step.ready
        assert _fetch_all(w) == []
    jobs: list[LeasedJob] = []
    for _ in range(60):  # 3 s in 50 ms steps: ample for 21 jobs at 10/s
        coord.step("api", clock.advance_ms(50))
        jobs += _fetch_all(w)
    assert sorted(j.id for j in jobs) == sorted(["first"] + [f"n{i}" for i in range(20)])
    starts = sorted(j.started_ms for j in jobs)
    assert starts[0] == resume_ms  # releases resume when the pause ends, not later
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 100, f"a catch-up burst after the pause: {starts[:6]}"
    for rep in check_rate(started(jobs), 10, 1, (100, 500, 1000, 2000)):
        assert rep.ok, rep


def test_retry_after_is_capped_and_can_apply_to_one_scope(redis_url: str, prefix: str) -> None:
    """pause_on_retry_after: scope pauses only that tenant (a worker's fetch gets the other
    tenant's job, not the paused one's); max_retry_after caps the wait."""
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
    assert jn.submit("api", scope="quiet", job_id="q").status == "ready"
    assert jn.submit("api", scope="noisy", job_id="n").status == "scheduled"
    assert [j.id for j in _fetch_all(w)] == ["q"]
    paused_until = clock.advance_ms(3_000) // 1000
    resumed = _fetch_all(w)  # the pause is over: the noisy tenant resumes at its rate
    clock.advance_ms(10)
    resumed += _fetch_all(w)
    assert sorted(j.id for j in resumed) == ["n", "x"]
    assert min(j.started_ms for j in resumed) == paused_until


BUDGET_BODY = """
api:
  rate: 1000
  burst: 100
  max_wait: 1h
  retry:
    max_attempts: 3
    backoff: {{base: 1ms, max: 1ms, jitter: none}}
    budget: {{ratio: {ratio}, min_per_second: {mps}, window: 10s}}
"""


def test_retries_without_a_budget_token_are_parked_then_released_by_time(
    redis_url: str, prefix: str
) -> None:
    """budget ratio 0, 1 retry/s: of 10 failed jobs none is released before a token exists;
    they are parked (status "failed", attempt not counted, never dead-lettered) and released
    one per second as time refills the budget: retries started by any time T stay within
    min_per_second x (T - start)."""
    jn, clock, w, _coord = _setup(redis_url, prefix, BUDGET_BODY.format(ratio=0, mps=1))
    ids = [f"j{i}" for i in range(10)]
    start = clock.now_ms
    jn.submit_many("api", [Job(scope="t", job_id=i) for i in ids])
    for job in _fetch_all(w):
        assert w.fail(job, "timeout").decision == "retry"
    clock.advance_ms(1)  # every retry is due; the budget holds no token yet
    assert _fetch_all(w) == []
    assert jn.status("api").parked == 10
    retries: list[LeasedJob] = []
    for _ in range(300):  # 15 s in 50 ms steps
        clock.advance_ms(50)
        for job in _fetch_all(w):
            retries.append(job)
            w.complete(job)
        if clock.now_ms - start == 5_501:  # half way: the rest still wait, for free
            waiting = set(ids) - {j.id for j in retries}
            assert len(waiting) == 5 and jn.status("api").parked == 5
            for job_id in waiting:
                info = jn.job("api", job_id)
                assert info is not None and (info.status, info.attempt) == ("failed", 1)
    assert sorted(j.id for j in retries) == ids and {j.attempt for j in retries} == {2}
    starts = sorted(j.started_ms for j in retries)
    for n, at in enumerate(starts, 1):  # the budget bound, at every retry
        assert n <= 1.0 * (at - start) / 1000, (n, at - start)
    assert all(b - a >= 1000 for a, b in itertools.pairwise(starts))
    assert starts[-1] - start <= 10_051  # one per second: released as soon as tokens exist
    assert jn.dead_letters("api") == []
    assert jn.status("api").parked == 0
    assert {jn.job("api", i).status for i in ids} == {"completed"}  # type: ignore[union-attr]


def test_parked_retries_wait_for_first_attempts_to_refill_the_budget(
    redis_url: str, prefix: str
) -> None:
    """budget ratio 0.5, no time refill: 2 first attempts pay for 1 retry; the other retry
    stays parked for an hour (past any max_wait: waiting is free, never dead-lettered, no
    attempt used) until 2 new first attempts pay for it. Attempts stay within
    (1 + ratio) x first attempts."""
    jn, clock, w, coord = _setup(redis_url, prefix, BUDGET_BODY.format(ratio=0.5, mps=0))
    jn.submit_many("api", [Job(scope="t", job_id="a"), Job(scope="t", job_id="b")])
    attempts = _fetch_all(w)
    assert len(attempts) == 2
    for job in attempts:
        w.fail(job, "timeout")
    clock.advance_ms(1)
    (paid,) = _fetch_all(w)
    assert paid.attempt == 2
    w.complete(paid)
    attempts.append(paid)
    waiting = ({"a", "b"} - {paid.id}).pop()
    assert jn.status("api").parked == 1
    for _ in range(6):  # an hour, in 10-minute steps
        coord.step("api", clock.advance_ms(600_000))
        assert _fetch_all(w) == []
    info = jn.job("api", waiting)
    assert info is not None and (info.status, info.attempt) == ("failed", 1)
    assert jn.dead_letters("api") == [] and jn.status("api").parked == 1
    jn.submit_many("api", [Job(scope="t", job_id="c"), Job(scope="t", job_id="d")])
    later = _fetch_all(w)
    assert sorted((j.id, j.attempt) for j in later) == sorted([("c", 1), ("d", 1), (waiting, 2)])
    attempts += later
    firsts = sum(1 for j in attempts if j.attempt == 1)
    assert len(attempts) <= (1 + 0.5) * firsts
    assert jn.status("api").parked == 0


def test_circuit_opens_holds_work_then_probes_and_closes(redis_url: str, prefix: str) -> None:
    """Failures past the threshold open the circuit: no fetch gets anything (work waits and
    burns no attempt); after open_for, half-open releases exactly half_open_probes jobs to
    the workers that fetch; their success closes it and everything waiting flows again."""
    body = """
api:
  rate: 1000
  burst: 100
  max_wait: 1h
  retry: {max_attempts: 10, budget: false, backoff: {base: 10ms, max: 10ms, jitter: none}}
  circuit: {failure_ratio: 0.5, min_requests: 4, window: 10s, open_for: 1s, half_open_probes: 2}
"""
    jn, clock, w, coord = _setup(redis_url, prefix, body)
    ids = [f"j{i}" for i in range(4)]
    jn.submit_many("api", [Job(scope="t", job_id=i) for i in ids])
    for job in _fetch_all(w):
        w.fail(job, "http_503")
    assert jn.status("api").circuit == "open"
    new = jn.submit("api", scope="t", job_id="new")
    assert new.status == "scheduled" and new.not_before_ms == clock.now_ms + 1_000
    step = coord.step("api", clock.advance_ms(500))  # open: nothing goes
    assert not step.ready and step.moved == 4
    assert _fetch_all(w) == []
    for job_id in ids:
        info = jn.job("api", job_id)
        assert info is not None and (info.status, info.attempt) == ("failed", 1)
    assert jn.job("api", "new").attempt == 0  # type: ignore[union-attr]
    assert coord.step("api", clock.advance_ms(501)).ready  # half-open: probes may go
    workers = [jn.worker("api", group="g", consumer=f"p{i}") for i in range(3)]
    probes = workers[0].fetch(count=1, block_ms=None) + workers[1].fetch(block_ms=None)
    assert len(probes) == 2
    assert workers[2].fetch(block_ms=None) == []  # the probes are out: the rest waits
    assert jn.status("api").circuit == "half_open"
    workers[0].complete(probes[0])
    workers[1].complete(probes[1])
    assert jn.status("api").circuit == "closed"
    rest = _fetch_all(w)
    assert len(rest) == 3  # everything waiting flows again
    attempts = {j.id: j.attempt for j in probes + rest}
    assert attempts == {"new": 1, **dict.fromkeys(ids, 2)}  # waiting burned no attempts


def test_circuit_reopens_for_longer_when_a_probe_fails(redis_url: str, prefix: str) -> None:
    """A failed probe opens the circuit again, for twice as long: fetches get nothing until
    then, and the next half-open releases one probe again."""
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
    clock.advance_ms(1_001)
    (probe,) = _fetch_all(w)
    w.fail(probe, "timeout")
    status = jn.status("api")
    assert status.circuit == "open" and status.circuit_open_until_ms == clock.now_ms + 2_000
    assert not coord.step("api", clock.advance_ms(1_999)).ready
    assert _fetch_all(w) == []
    assert coord.step("api", clock.advance_ms(2)).ready
    assert len(_fetch_all(w)) == 1


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
