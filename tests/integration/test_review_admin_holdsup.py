"""Review: attacks on pause / resume / delete that held up (these pass)."""

from __future__ import annotations

from janus import calls
from janus.client import Job
from janus.policy import parse_policy_text
from janus.testing import FakeClock

from tests.helpers import make_janus, policy, raw_client, take

BODY = """
api:
  rate: 1000
  burst: 100
  max_wait: 1h
  lease: 10s
  scopes:
    default: {rate: 1, burst: 2}
  retry:
    max_attempts: 3
    backoff: {base: 1ms, max: 1ms, jitter: none}
    budget: {ratio: 0, min_per_second: 0.2, window: 10s}
"""


def _real_waiting(r, prefix: str, scopes: str) -> int:  # type: ignore[no-untyped-def]
    base = f"{prefix}:{{api}}"
    return (
        r.zcard(f"{base}:delayed")
        + r.zcard(f"{base}:parked")
        + sum(r.llen(f"{base}:q:{s}") for s in scopes)
    )


def test_partial_drops_then_a_cancel_keep_every_count_exact(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    r = raw_client(redis_url)
    w = jn.worker("api", group="g", consumer="w1")
    jn.submit_many("api", [Job(scope="a", job_id=f"a{i}") for i in range(2)])
    for j in take(jn, "api"):
        w.fail(j, "timeout")  # retries (parked for want of a budget token later)
    clock.advance_ms(5)
    take(jn, "api")
    jn.submit_many("api", [Job(scope=s, job_id=f"{s}{i}") for s in "bcd" for i in range(5)])
    jn.pause("api", scope="c")  # a held scope, set aside
    running = take(jn, "api", count=3)
    keys = jn.store.keys("api")
    for _ in range(3):
        step = jn.store.run(calls.delete_policy(keys, drop=True, max_steps=3, now_us=clock.now_us))
        st = jn.status("api")
        assert st.scheduled == step.waiting == _real_waiting(r, prefix, "abcd")
        assert sum(jn.scope_status("api", s).waiting_jobs for s in "abcd") == st.scheduled
    jn.apply_policies(parse_policy_text(policy(BODY), "again.yaml"))  # cancels
    assert not jn.status("api").deleting
    jn.resume("api", scope="c")
    for j in running:
        w.complete(j)
    seen: set[str] = {j.id for j in running}
    for _ in range(400):
        clock.advance_ms(1000)
        for j in take(jn, "api"):
            assert j.id not in seen
            seen.add(j.id)
            w.complete(j)
    dead = {d.job_id for d in jn.dead_letters("api")}
    everything = {f"a{i}" for i in range(2)} | {f"{s}{i}" for s in "bcd" for i in range(5)}
    assert seen | dead == everything and not seen & dead
    assert jn.status("api").scheduled == 0 == _real_waiting(r, prefix, "abcd")


def test_pause_resume_pause_and_timer_races_leave_no_scope_stuck(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    jn = make_janus(
        redis_url, prefix, BODY.replace("{rate: 1, burst: 2}", "{rate: 100, burst: 100}"), clock
    )
    jn.pause("api", scope="a", for_s=1800)  # held before it has work (within max_wait)
    assert jn.submit("api", scope="a", job_id="a0").status == "scheduled"
    assert take(jn, "api") == []
    jn.resume("api", scope="a")
    jn.pause("api", scope="a")  # again, at once
    assert take(jn, "api") == []
    assert jn.resume("api", scope="a").status == "resumed"
    assert [j.id for j in take(jn, "api")] == ["a0"]
    # a timed hold ending exactly when it is resumed
    jn.submit("api", scope="a", job_id="a1")
    jn.pause("api", scope="a", for_s=1)
    assert take(jn, "api") == []
    clock.advance_ms(1000)
    assert jn.resume("api", scope="a").status == "not_paused"
    assert [j.id for j in take(jn, "api")] == ["a1"]
    # resumed while its line is empty, and the whole dependency while a scope is held
    jn.pause("api", scope="b", for_s=5)
    jn.resume("api", scope="b")
    jn.submit("api", scope="b", job_id="b0")
    jn.pause("api")
    jn.pause("api", scope="b")
    assert take(jn, "api") == []
    jn.resume("api")
    assert take(jn, "api") == []
    jn.resume("api", scope="b")
    assert [j.id for j in take(jn, "api")] == ["b0"]


def test_old_state_without_hold_and_old_packed_policy_do_not_crash(
    redis_url: str, prefix: str
) -> None:
    """A packed policy without the `deleting` field (what revision 1 wrote) and a state hash
    without `hold`: submit, fetch, pause and delete run."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    r = raw_client(redis_url)
    pkey = f"{prefix}:{{api}}:policy"
    packed = r.hget(pkey, "packed").decode()
    r.hset(pkey, "packed", packed.rsplit(" ", 1)[0])  # 40 fields
    r.hdel(pkey, "deleting")
    r.hdel(f"{prefix}:{{api}}:state", "hold")
    assert jn.submit("api", scope="a", job_id="x").status == "ready"
    assert [j.id for j in take(jn, "api")] == ["x"]
    assert jn.pause("api", scope="a").status == "paused"
    assert jn.delete_policy("api", drop=True).running == 1
