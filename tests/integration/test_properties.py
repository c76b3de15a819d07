"""Property tests against real Redis with explicit time: whatever the arrivals, no overshoot.

Hypothesis draws a policy, a stream of submits (time gaps, scopes, costs, batch sizes) and
coordinator steps interleaved with them. Afterwards the released history must satisfy the
rate bound for every window, per dependency and per scope; every accepted job is released
exactly once or still queued.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus.client import Job
from janus.coordinator import Coordinator
from janus.measure import Release, by_scope, check_rate

from tests.helpers import FakeClock, make_janus

WINDOWS = (1, 7, 50, 333, 1000, 5000)

events = st.lists(
    st.tuples(
        st.integers(0, 400),  # ms since the previous event
        st.sampled_from(["a", "b", "c", "vip"]),
        st.integers(1, 3),  # cost
        st.integers(1, 6),  # jobs in this submit
        st.booleans(),  # run a coordinator step after it
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rate=st.sampled_from([1, 3, 7.5, 20, 100]),
    burst=st.integers(3, 12),
    scope_rate=st.sampled_from([0.5, 2, 5, 50]),
    scope_burst=st.integers(3, 6),
    max_in_flight=st.one_of(st.none(), st.integers(1, 20)),
    arrivals=events,
)
def test_no_overshoot_and_no_lost_job(
    standalone_url: str,
    rate: float,
    burst: int,
    scope_rate: float,
    scope_burst: int,
    max_in_flight: int | None,
    arrivals: list[tuple[int, str, int, int, bool]],
) -> None:
    """Property: released cost in every window W <= rate*W + burst (dependency and each scope);
    accepted = released once + still queued."""
    prefix = "h" + uuid.uuid4().hex[:12]
    in_flight = f"\n  max_in_flight: {max_in_flight}\n  lease: 200ms" if max_in_flight else ""
    body = f"""
pay:
  rate: {rate}
  burst: {burst}
  max_wait: 20s{in_flight}
  scopes:
    default: {{rate: {scope_rate}, burst: {scope_burst}}}
    vip: {{rate: {scope_rate * 2}, burst: {scope_burst}}}
"""
    clock = FakeClock()
    jn = make_janus(standalone_url, prefix, body, clock)
    coord = Coordinator(jn.store)
    accepted: set[str] = set()
    for gap, scope, cost, n, step in arrivals:
        clock.advance_ms(gap)
        for d in jn.submit_many("pay", [Job(scope=scope, cost=cost) for _ in range(n)]):
            if d.accepted:
                accepted.add(d.job_id)
        if step:
            coord.step("pay", clock())
    for _ in range(400):  # drain
        if coord.step("pay", clock.advance_ms(50)).next_us is None:
            break
    rows = jn.store.releases("pay")
    ids = [job_id for *_, job_id in rows]
    assert len(ids) == len(set(ids))
    assert set(ids) <= accepted
    assert len(ids) + jn.status("pay").scheduled == len(accepted)
    releases = [Release(ms, s, c) for ms, s, c, _ in rows]
    for rep in check_rate(releases, rate, burst, WINDOWS):
        assert rep.ok, rep
    for scope, mine in by_scope(releases).items():
        r = scope_rate * 2 if scope == "vip" else scope_rate
        for rep in check_rate(mine, r, scope_burst, WINDOWS):
            assert rep.ok, (scope, rep)
    jn.close()
