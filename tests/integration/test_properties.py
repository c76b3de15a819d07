"""Property tests against real Redis with explicit time: whatever the arrivals, no overshoot.

Hypothesis draws a policy, a stream of submits (time gaps, scopes, costs, batch sizes) and
coordinator steps interleaved with them. No worker runs, so short leases expire and the
coordinator reclaims them: retries go through the same release-time limits. The released
history (every stream entry, read after each call: reclaim deletes entries) must satisfy the
rate bound for every window, per dependency and per scope; each attempt is released once;
every accepted job is still queued, in flight or dead-lettered: none vanished.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus.client import Job
from janus.coordinator import Coordinator
from janus.keys import Keys
from janus.measure import Release, by_scope, check_rate

from tests.helpers import FakeClock, keys_under, make_janus

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
    each attempt released once; accepted = dead-lettered + queued + in flight."""
    prefix = "h" + uuid.uuid4().hex[:12]
    in_flight = f"\n  max_in_flight: {max_in_flight}" if max_in_flight else ""
    body = f"""
pay:
  rate: {rate}
  burst: {burst}
  max_wait: 20s
  lease: 200ms
  retry: {{max_attempts: 2, backoff: {{base: 100ms, max: 100ms}}}}{in_flight}
  scopes:
    default: {{rate: {scope_rate}, burst: {scope_burst}}}
    vip: {{rate: {scope_rate * 2}, burst: {scope_burst}}}
"""
    clock = FakeClock()
    jn = make_janus(standalone_url, prefix, body, clock)
    coord = Coordinator(jn.store)
    accepted: set[str] = set()
    seen: dict[str, tuple[int, str, int, str, int]] = {}  # entry id -> release

    def record() -> None:
        for entry_id, fields in jn.store.client.xrange(Keys(prefix, "pay").stream):
            seen.setdefault(
                entry_id.decode(),
                (
                    int(entry_id.split(b"-")[0]),
                    fields[b"scope"].decode(),
                    int(fields[b"cost"]),
                    fields[b"id"].decode(),
                    int(fields[b"attempt"]),
                ),
            )

    for gap, scope, cost, n, step in arrivals:
        clock.advance_ms(gap)
        for d in jn.submit_many("pay", [Job(scope=scope, cost=cost) for _ in range(n)]):
            if d.accepted:
                accepted.add(d.job_id)
        record()
        if step:
            coord.step("pay", clock())
            record()
    for _ in range(400):  # drain: every job ends dead-lettered after its last lease expires
        done = coord.step("pay", clock.advance_ms(50)).next_us is None
        record()
        if done:
            break
    attempts = [(job_id, attempt) for *_, job_id, attempt in seen.values()]
    assert len(attempts) == len(set(attempts)), "an attempt was released twice"
    assert {job_id for job_id, _ in attempts} <= accepted
    dead = {f[b"id"].decode() for _, f in jn.store.dead_letters("pay")}
    k = Keys(prefix, "pay")
    client = jn.store.client
    waiting = set(client.zrange(k.delayed, 0, -1)) | set(client.zrange(k.inflight, 0, -1))
    for line in keys_under(client, prefix):
        if b":q:" in line:
            waiting |= set(client.lrange(line, 0, -1))
    assert len(dead) + len(waiting) == len(accepted), "an accepted job vanished"
    assert jn.status("pay").scheduled == len(waiting) - client.zcard(k.inflight)
    releases = [Release(ms, s, c) for ms, s, c, _, _ in seen.values()]
    for rep in check_rate(releases, rate, burst, WINDOWS):
        assert rep.ok, rep
    for scope, mine in by_scope(releases).items():
        r = scope_rate * 2 if scope == "vip" else scope_rate
        for rep in check_rate(mine, r, scope_burst, WINDOWS):
            assert rep.ok, (scope, rep)
    jn.close()
