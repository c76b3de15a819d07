"""Review: pauses by hand of one scope (lua/pause.lua, lua/include/holds.lua)."""

from __future__ import annotations

from janus.client import Job
from janus.testing import FakeClock

from tests.helpers import make_janus, raw_client, take

BODY = """
pay:
  rate: 1000
  burst: 100
  max_wait: 1h
  lease: 10s
  retry: {max_attempts: 3, budget: false, backoff: {base: 1s, jitter: none}}
"""


def test_shortening_a_scope_hold_after_it_was_set_aside_leaves_the_scope_stuck(
    redis_url: str, prefix: str
) -> None:
    """Pause scope a until resumed, let a fetch set it aside (throttled, score HOLD_FOREVER),
    then pause it again for 10 s ("pausing again sets the new end"). Once the 10 s are over
    the hold ends (event 'resumed by timer'), but the scope's throttled entry still says
    9e15: its jobs are never released again (until someone resumes a scope that is not
    paused, which answers not_paused and does nothing)."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit_many("pay", [Job(scope="a", job_id=f"a{i}") for i in range(3)])
    jn.pause("pay", scope="a")
    assert take(jn, "pay") == []  # the fetch sets a aside until the hold ends (never)
    again = jn.pause("pay", scope="a", for_s=10)
    assert again.status == "paused" and again.until_ms is not None
    clock.advance_ms(11_000)
    got = take(jn, "pay")
    kinds = [(e.kind, e.fields.get("by")) for e in jn.events("pay")]
    assert ("resumed", "timer") in kinds  # the hold did end
    assert jn.status("pay").held_scopes == 0
    r = raw_client(redis_url)
    score = r.zscore(f"{prefix}:{{pay}}:throttled", "a")
    assert sorted(j.id for j in got) == ["a0", "a1", "a2"], (
        f"hold over, but scope a is still set aside until {score} (us)"
    )


def test_shortening_a_timed_scope_hold_keeps_the_scope_set_aside_until_the_old_end(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit("pay", scope="a", job_id="a0")
    jn.pause("pay", scope="a", for_s=3600)
    assert take(jn, "pay") == []  # set aside until +1h
    jn.pause("pay", scope="a", for_s=1)  # the new end: in one second
    clock.advance_ms(2_000)
    assert [j.id for j in take(jn, "pay")] == ["a0"], "released only an hour later"


def test_a_shortened_hold_that_ended_frees_the_scope_and_new_work_flows(
    redis_url: str, prefix: str
) -> None:
    """(was: the scope stayed set aside until the first hold's end, 'until resumed', and a
    resume answered not_paused.) Now the shortened hold's end frees it, and new work flows."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit("pay", scope="a", job_id="a0")
    jn.pause("pay", scope="a")
    assert take(jn, "pay") == []
    jn.pause("pay", scope="a", for_s=1)
    clock.advance_ms(2_000)
    assert [j.id for j in take(jn, "pay")] == ["a0"]
    assert jn.resume("pay", scope="a").status == "not_paused"  # it ended by itself
    assert jn.submit("pay", scope="a", job_id="a1").status == "ready"
    assert [j.id for j in take(jn, "pay")] == ["a1"]


def test_a_timed_scope_hold_that_ends_unobserved_then_is_resumed_leaves_no_resumed_event(
    redis_url: str, prefix: str
) -> None:
    """The hold ended (by time) but no step or fetch ran before the operator's resume: the
    resume deletes the field and answers not_paused, so no 'resumed' event is ever written
    (neither by timer nor by hand): the events show the scope paused for ever."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.pause("pay", scope="a", for_s=1)
    clock.advance_ms(2_000)
    assert jn.resume("pay", scope="a").status == "not_paused"
    take(jn, "pay")  # any due work
    kinds = [(e.kind, e.fields.get("scope")) for e in jn.events("pay")]
    assert ("resumed", "a") in kinds, kinds


def test_re_pausing_the_dependency_after_an_unobserved_timed_end_skips_the_resumed_event(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.pause("pay", for_s=1)
    clock.advance_ms(2_000)
    jn.pause("pay", for_s=1)  # a new pause: the first one ended a second ago
    kinds = [e.kind for e in jn.events("pay")][1:]
    assert kinds == ["paused", "resumed", "paused"], kinds
