"""Admission against real Redis (standalone and a 3-master cluster), with explicit time.

Every test passes time explicitly (FakeClock): the Lua uses it instead of Redis TIME, so the
schedules asserted here are exact. A submit only decides ready / scheduled / rejected; a job
is released when a worker fetches it, so releases are observed through fetches (``take``).
"""

from __future__ import annotations

import pytest

from janus.client import Job
from janus.coordinator import Coordinator
from janus.measure import check_rate

from tests.helpers import FakeClock, counters, make_janus, started, take, unchanged

#: Each contract test runs through the sync API and the asyncio API (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("api")

BASIC = """
pay:
  rate: 10
  burst: 3
  max_wait: 2s
  scopes:
    default: {rate: 10, burst: 3}
"""


def test_burst_is_released_then_work_is_spaced_at_the_rate(redis_url: str, prefix: str) -> None:
    """Given rate 10/s burst 3, when 5 jobs arrive at once, then 3 are ready and the next two
    scheduled 100 ms apart; a worker gets 3 now, then one every 100 ms."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BASIC, clock)
    ds = [jn.submit("pay", scope="a", job_id=f"j{i}") for i in range(5)]
    assert [d.status for d in ds] == ["ready"] * 3 + ["scheduled"] * 2
    assert [d.not_before_ms - clock.now_ms for d in ds[3:]] == [100, 200]
    assert all(d.created for d in ds) and [d.attempt for d in ds] == [0] * 5
    assert [j.id for j in take(jn, "pay")] == ["j0", "j1", "j2"]
    clock.advance_ms(99)
    assert take(jn, "pay") == []
    clock.advance_ms(1)
    assert [j.id for j in take(jn, "pay")] == ["j3"]
    clock.advance_ms(100)
    assert [(j.id, j.attempt) for j in take(jn, "pay")] == [("j4", 1)]


def test_wait_beyond_max_wait_is_rejected_and_writes_nothing(
    redis_url: str, prefix: str, redis_client: object
) -> None:
    """Given a queue 2 s deep, a submit that would wait longer than max_wait is rejected with
    the wait in retry_after_ms, and nothing is kept but the count of the rejection."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BASIC, clock)
    ds = jn.submit_many("pay", [Job(scope="a") for _ in range(23)])
    assert [d.status for d in ds].count("rejected") == 0
    before = counters(redis_client, prefix, "pay")  # type: ignore[arg-type]
    with unchanged(redis_client, prefix, but_counters=True):  # type: ignore[arg-type]
        d = jn.submit("pay", scope="a", job_id="late")
    assert (d.status, d.reason) == ("rejected", "max_wait_exceeded")
    after = counters(redis_client, prefix, "pay")  # type: ignore[arg-type]
    assert after == {**before, "rejected:max_wait_exceeded": 1}
    assert d.retry_after_ms is not None and d.retry_after_ms > 2000
    assert d.retry_after_ms == d.not_before_ms - clock.now_ms
    assert jn.submit("pay", scope="a", job_id="late").created is False or True


def test_unknown_dependency_is_rejected_and_writes_nothing(
    redis_url: str, prefix: str, redis_client: object
) -> None:
    """Fail safe: a dependency with no applied policy is never admitted."""
    jn = make_janus(redis_url, prefix, BASIC, FakeClock())
    with unchanged(redis_client, prefix):  # type: ignore[arg-type]
        d = jn.submit("other", scope="a", payload=b"x", job_id="j1")
        ds = jn.submit_many("other", [Job(scope="a"), Job(scope="b")])
    assert (d.status, d.reason, d.retry_after_ms) == ("rejected", "unknown_dependency", None)
    assert {(x.status, x.reason) for x in ds} == {("rejected", "unknown_dependency")}


def test_existing_job_id_returns_its_state_and_releases_nothing(
    redis_url: str, prefix: str, redis_client: object
) -> None:
    """Idempotency: a second submit with the same job id is a no-op reporting the first."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BASIC, clock)
    first = jn.submit("pay", scope="a", job_id="order-1", payload=b"1")
    jn.submit_many("pay", [Job(scope="a"), Job(scope="a"), Job(scope="a", job_id="order-2")])
    clock.advance_ms(5)
    before = counters(redis_client, prefix, "pay")  # type: ignore[arg-type]
    with unchanged(redis_client, prefix, but_counters=True):  # type: ignore[arg-type]
        again = jn.submit("pay", scope="a", job_id="order-1", payload=b"other")
        again2 = jn.submit("pay", scope="zzz", job_id="order-2")
    after = counters(redis_client, prefix, "pay")  # type: ignore[arg-type]
    assert after == {**before, "submit:existing": 2}
    assert first.status == "ready" and again.status == "ready"
    assert again.created is False and again.state == "scheduled" and again.attempt == 0
    assert again2.status == "scheduled" and again2.created is False
    take(jn, "pay", count=1)
    running = jn.submit("pay", scope="a", job_id="order-1")
    assert (running.created, running.state, running.attempt) == (False, "running", 1)
    assert again2.not_before_ms == jn.submit("pay", scope="a", job_id="order-2").not_before_ms


def test_resent_script_call_is_a_no_op(redis_url: str, prefix: str) -> None:
    """A call re-sent by the client library after a timeout (same job ids) admits nothing new."""
    from janus import calls

    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BASIC, clock)
    jobs = [jn._job_args(Job(scope="a", job_id=f"r{i}"), i) for i in range(5)]
    call = calls.submit(jn.store.keys("pay"), jobs, clock())
    assert all(d.created for d in jn.store.run(call))
    queued = jn.status("pay").scheduled
    for _ in range(3):
        assert [d.created for d in jn.store.run(call)] == [False] * 5
    assert jn.status("pay").scheduled == queued == 5


def test_submit_many_equals_submits_in_order(redis_url: str, prefix: str) -> None:
    """A batch gives each job exactly the decision a lone submit would have given it."""
    jobs = [Job(scope=f"s{i % 3}", job_id=f"j{i}", cost=1 + i % 2) for i in range(60)]
    one = make_janus(redis_url, prefix + "a", BASIC, FakeClock())
    many = make_janus(redis_url, prefix + "b", BASIC, FakeClock())
    singles = [one.submit("pay", scope=j.scope, job_id=j.job_id, cost=j.cost) for j in jobs]
    batch = many.submit_many("pay", jobs)
    key = lambda d: (d.status, d.reason, d.not_before_ms, d.retry_after_ms, d.attempt)  # noqa: E731
    assert [key(d) for d in batch] == [key(d) for d in singles]
    assert {d.status for d in batch} == {"ready", "scheduled", "rejected"}


def test_late_scope_is_not_queued_behind_an_earlier_flood(redis_url: str, prefix: str) -> None:
    """The dependency's capacity is taken at release: a flood from scope A does not book it
    ahead of scope B, whose first job is due right away and released within a few steps."""
    clock = FakeClock()
    body = """
pay:
  rate: 10
  burst: 1
  max_wait: 60s
  scopes:
    default: {rate: 10, burst: 1}
"""
    jn = make_janus(redis_url, prefix, body, clock)
    flood = jn.submit_many("pay", [Job(scope="A") for _ in range(100)])
    assert flood[-1].not_before_ms - clock.now_ms >= 9900
    late = jn.submit("pay", scope="B", job_id="b1")
    assert late.status in ("ready", "scheduled")  # an estimate (a lower bound)
    assert late.not_before_ms - clock.now_ms <= 300
    released_b_at = None
    for _ in range(20):
        got = take(jn, "pay")
        if any(j.id == "b1" for j in got):
            released_b_at = clock.now_ms
            break
        clock.advance_ms(100)
    assert released_b_at is not None, "scope B waited behind scope A's backlog"
    assert released_b_at - flood[0].not_before_ms <= 200


def test_in_flight_limit_holds_releases(redis_url: str, prefix: str) -> None:
    """max_in_flight: no release past the limit; work waits until leases expire."""
    clock = FakeClock()
    body = """
pay:
  rate: 1000
  burst: 100
  max_in_flight: 3
  lease: 1s
  max_wait: 10s
"""
    jn = make_janus(redis_url, prefix, body, clock)
    jn.submit_many("pay", [Job(scope="a") for _ in range(5)])
    assert len(take(jn, "pay")) == 3
    assert jn.status("pay").in_flight == 3
    coord = Coordinator(jn.store)
    step = coord.step("pay", clock.advance_ms(500))
    assert not step.ready and step.next_us is not None
    assert step.next_us == (clock.now_ms + 501) * 1000  # when the first lease ends
    assert take(jn, "pay") == []
    clock.advance_ms(501)
    assert len(take(jn, "pay")) == 2  # the expired leases were reclaimed by that fetch
    assert jn.status("pay").in_flight == 2


def test_absent_workers_get_no_catch_up_burst(redis_url: str, prefix: str) -> None:
    """Work that became due while no worker ran is started at burst + rate, not at once, per
    dependency and per scope, however eagerly the workers fetch when they return."""
    clock = FakeClock()
    body = """
pay:
  rate: 20
  burst: 4
  max_wait: 60s
  scopes:
    default: {rate: 10, burst: 2}
"""
    jn = make_janus(redis_url, prefix, body, clock)
    for scope in ("a", "b", "c"):
        jn.submit_many("pay", [Job(scope=scope) for _ in range(30)])
    clock.advance_ms(10_000)  # no worker for 10 s: everything is overdue
    first = take(jn, "pay")
    assert sum(j.cost for j in first) <= 4
    jobs = list(first)
    for _ in range(2000):  # 10 s of 5 ms fetches: ample for 90 jobs at 20/s
        clock.advance_ms(5)
        jobs += take(jn, "pay")
        if len(jobs) == 90:
            break
    releases = started(jobs)
    assert len(releases) == 90
    for rep in check_rate(releases, 20, 4, (5, 50, 500, 2000)):
        assert rep.ok, rep
    for scope in ("a", "b", "c"):
        mine = [r for r in releases if r.scope == scope]
        for rep in check_rate(mine, 10, 2, (5, 50, 500, 2000)):
            assert rep.ok, (scope, rep)


def test_weighted_cost_consumes_tokens(redis_url: str, prefix: str) -> None:
    """A job of cost 3 takes three tokens: rate 10 means the next job waits 300 ms."""
    clock = FakeClock()
    body = """
pay:
  rate: 10
  burst: 3
  max_wait: 5s
"""
    jn = make_janus(redis_url, prefix, body, clock)
    assert jn.submit("pay", scope="a", cost=3).status == "ready"
    assert [j.cost for j in take(jn, "pay")] == [3]
    d = jn.submit("pay", scope="b", cost=1)
    assert d.status == "scheduled" and d.not_before_ms - clock.now_ms == 100
    d = jn.submit("pay", scope="c", cost=3)
    assert d.status == "scheduled" and d.not_before_ms - clock.now_ms >= 300
    clock.advance_ms(100)
    assert [j.scope for j in take(jn, "pay")] == ["b"]
    clock.advance_ms(299)
    assert take(jn, "pay") == []
    clock.advance_ms(1)
    assert [j.scope for j in take(jn, "pay")] == ["c"]


def test_scope_override_gets_its_own_limits(redis_url: str, prefix: str) -> None:
    """A named scope override replaces the default scope limits for that scope only."""
    clock = FakeClock()
    body = """
pay:
  rate: 100
  burst: 100
  max_wait: 10s
  scopes:
    default: {rate: 1, burst: 1}
    "vip tenant {1}": {rate: 50, burst: 5}
"""
    jn = make_janus(redis_url, prefix, body, clock)
    plain = jn.submit_many("pay", [Job(scope="plain") for _ in range(3)])
    vip = jn.submit_many("pay", [Job(scope="vip tenant {1}") for _ in range(6)])
    assert [d.status for d in plain] == ["ready", "scheduled", "scheduled"]
    assert plain[2].not_before_ms - clock.now_ms == 2000
    assert [d.status for d in vip] == ["ready"] * 5 + ["scheduled"]
    assert vip[5].not_before_ms - clock.now_ms == 20
    got = take(jn, "pay")
    assert sorted(j.scope for j in got) == ["plain"] + ["vip tenant {1}"] * 5


def test_policy_is_read_from_redis_not_from_the_caller(redis_url: str, prefix: str) -> None:
    """A producer with no policy files obeys the applied policy; re-applying bumps the version
    only when something changed, and new limits apply to the next decision."""
    from janus.policy import parse_policy_text
    from janus.testing import connect

    from tests.helpers import policy

    clock = FakeClock()
    admin = make_janus(redis_url, prefix, BASIC, clock)
    producer = connect(redis_url, prefix=prefix, clock=clock)  # no policy files of its own
    assert [producer.submit("pay", scope="a").status for _ in range(4)].count("ready") == 3
    assert len(take(producer, "pay")) == 3
    assert admin.apply_policies(parse_policy_text(policy(BASIC), "same.yaml")) == {
        "pay": (1, False)
    }
    bigger = BASIC.replace("burst: 3\n  max_wait", "burst: 50\n  max_wait").replace(
        "{rate: 10, burst: 3}", "{rate: 10, burst: 50}"
    )
    assert admin.apply_policies(parse_policy_text(policy(bigger), "b.yaml")) == {"pay": (2, True)}
    clock.advance_ms(10_000)
    assert len(take(producer, "pay")) == 1  # the queued 4th job
    assert [producer.submit("pay", scope="b").status for _ in range(20)] == ["ready"] * 20
    assert len(take(producer, "pay")) == 20


@pytest.mark.parametrize("cost", [0, -1, 2.5, True, "1"])
def test_bad_cost_raises_and_writes_nothing(
    redis_url: str, prefix: str, redis_client: object, cost: object
) -> None:
    """cost must be an integer >= 1; anything else is a clear error and no write."""
    from janus.errors import InvalidCost

    jn = make_janus(redis_url, prefix, BASIC, FakeClock())
    with unchanged(redis_client, prefix), pytest.raises(InvalidCost) as err:  # type: ignore[arg-type]
        jn.submit("pay", scope="a", cost=cost)  # type: ignore[arg-type]
    assert "cost must be an integer >= 1" in str(err.value)


def test_cost_that_can_never_fit_raises_and_writes_nothing(
    redis_url: str, prefix: str, redis_client: object
) -> None:
    """A cost above max_cost (default: the smallest burst) can never be admitted: error."""
    from janus.errors import InvalidCost

    jn = make_janus(redis_url, prefix, BASIC, FakeClock())
    good = [Job(scope="a") for _ in range(3)]
    with unchanged(redis_client, prefix), pytest.raises(InvalidCost) as err:  # type: ignore[arg-type]
        jn.submit_many("pay", [*good, Job(scope="a", cost=4)])
    assert "cost 4 can never be admitted: max_cost is 3" in str(err.value)
    assert "job #4 of the batch" in str(err.value)


def test_payload_limits_raise_and_write_nothing(
    redis_url: str, prefix: str, redis_client: object
) -> None:
    """Payloads over the client limit (default 1 MiB) or the policy's max_payload are errors."""
    from janus.client import Janus
    from janus.errors import PayloadTooLarge

    body = BASIC + "  max_payload: 1KiB\n"
    jn = make_janus(redis_url, prefix, body, FakeClock())
    with unchanged(redis_client, prefix):  # type: ignore[arg-type]
        with pytest.raises(PayloadTooLarge) as err:
            jn.submit("pay", scope="a", payload=b"x" * (1024 * 1024 + 1))
        assert "payload is 1048577 bytes; the limit is 1048576 bytes" in str(err.value)
        with pytest.raises(PayloadTooLarge) as err:
            jn.submit("pay", scope="a", payload=b"x" * 1025)
        assert "payload is 1025 bytes; max_payload is 1024" in str(err.value)
    small = Janus(jn.store, max_payload_bytes=10)
    with pytest.raises(PayloadTooLarge):
        small.submit("pay", scope="a", payload="é" * 6)  # 12 bytes in UTF-8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scope": ""}, "scope must not be empty"),
        ({"scope": "x" * 16385}, "scope is 16385 bytes; the limit is 16384 bytes"),
        ({"job_id": ""}, "job_id must not be empty"),
        ({"job_id": "a\x00b"}, "job_id must not contain NUL"),
        ({"scope": 42}, "scope must be a string, got int"),
    ],
)
def test_bad_names_raise_and_write_nothing(
    redis_url: str, prefix: str, redis_client: object, kwargs: dict[str, object], message: str
) -> None:
    """Odd or oversized scope names and job ids are refused before anything is sent."""
    from janus.errors import InvalidName

    jn = make_janus(redis_url, prefix, BASIC, FakeClock())
    with unchanged(redis_client, prefix), pytest.raises(InvalidName) as err:  # type: ignore[arg-type]
        jn.submit("pay", **kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)


@pytest.mark.parametrize("dep", ["", "a{b}", "has space", "x" * 65, "-lead", "ünï"])
def test_bad_dependency_names_raise(redis_url: str, prefix: str, dep: str) -> None:
    """Dependency names become the hash tag: anything outside the safe alphabet is refused."""
    from janus.errors import InvalidName

    jn = make_janus(redis_url, prefix, BASIC, FakeClock())
    with pytest.raises(InvalidName) as err:
        jn.submit(dep, scope="a")
    assert "invalid dependency name" in str(err.value)
