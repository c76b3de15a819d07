"""Review: deleting a policy (lua/delete.lua, janus.client Janus.delete_policy)."""

from __future__ import annotations

import pytest
import redis

from janus import calls
from janus.client import Job
from janus.errors import InvalidInput
from janus.policy import parse_policy_text
from janus.testing import FakeClock

from tests.helpers import make_janus, policy, raw_client, take, unchanged

BODY = """
pay:
  rate: 100000
  burst: 100000
  max_wait: 1h
  lease: 10s
  retry: {max_attempts: 3, budget: false, backoff: {base: 1s, jitter: none}}
"""


def _llen_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_llen", {}).get("calls", 0))


def test_one_delete_call_does_work_proportional_to_every_scope_not_to_max_steps(
    standalone_url: str, prefix: str
) -> None:
    """delete.lua walks every scope of `active` and `throttled` (ZRANGE 0 -1, an LLEN each)
    twice per call, whatever max_steps says: with S tenants a drop of N jobs costs
    N / batch_size calls x 2 S commands (quadratic: 100,000 one-job tenants took ~50 s of
    Redis time in calls of ~0.3 s; the drain loop of `janus policy delete` polls every
    0.5 s with the same O(S) call). Here: one call allowed to drop ONE job."""
    clock = FakeClock()
    jn = make_janus(standalone_url, prefix, BODY, clock)
    scopes = 3000
    jn.submit_many("pay", [Job(scope=f"t{i}", job_id=f"j{i}") for i in range(scopes)])
    r = raw_client(standalone_url)
    assert isinstance(r, redis.Redis)
    before = _llen_calls(r)
    step = jn.store.run(
        calls.delete_policy(jn.store.keys("pay"), drop=True, max_steps=1, now_us=clock.now_us)
    )
    used = _llen_calls(r) - before
    assert step.dropped == 1
    assert used <= 100, f"one call bounded by max_steps=1 ran LLEN {used} times"


def test_pauses_by_hand_outlive_the_deletion_and_come_back_with_the_next_policy(
    redis_url: str, prefix: str
) -> None:
    """A deleted dependency is 'unknown from then on', but its state hash keeps `hold` and
    `hold:<scope>`: applying a policy of that name later (a new service, a re-created
    dependency) starts paused until resumed, refusing every submit (dependency_paused)."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit_many("pay", [Job(scope="b", job_id=f"b{i}") for i in range(3)])
    jn.pause("pay")
    jn.pause("pay", scope="b")
    done = jn.delete_policy("pay", drop=True)
    assert done.deleted and done.dropped == 3
    jn.apply_policies(parse_policy_text(policy(BODY), "again.yaml"))
    st = jn.status("pay")
    d = jn.submit("pay", scope="c", job_id="fresh")
    assert (st.held_until_ms, st.held_scopes, d.status) == (None, 0, "ready"), (
        f"re-created dependency still held: held_until_ms={st.held_until_ms}, "
        f"held_scopes={st.held_scopes}, submit -> {d.status}/{d.reason}"
    )


def test_finishing_a_deletion_can_unregister_a_dependency_that_was_just_applied_again(
    redis_url: str, prefix: str
) -> None:
    """Janus.delete_policy removes the dependency from the registry (another slot) after the
    function that deleted the policy returned. A producer applying the policy in between
    (apply, then SADD) is undone by that SREM: the policy is there, the registry does not
    list it, so `janus status` and newly started coordinators never see it."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    # Janus.delete_policy, step by step (what _delete_op yields), with an apply in between.
    op = jn._delete_op("pay", False)
    request = next(op)
    request = op.send(jn.store.send(request))  # the deletion: done, the policy is gone
    assert request == calls.unregister(jn.store.keys("pay"))
    jn.apply_policies(parse_policy_text(policy(BODY), "again.yaml"))  # someone else, now
    try:
        while True:
            request = op.send(jn.store.send(request))
    except StopIteration as done:
        assert done.value.deleted
    assert jn.status("pay").policy_version is not None
    assert "pay" in jn.store.dependencies(), "applied, but unlisted: no coordinator steps it"


def test_a_job_in_flight_when_dropped_retries_into_the_deleting_dependency_and_is_dropped(
    redis_url: str, prefix: str
) -> None:
    """(holds up) drop with an attempt running: its failure retries, the next call drops it;
    nothing is lost and the policy goes only after."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit_many("pay", [Job(scope="a", job_id=f"a{i}") for i in range(3)])
    w = jn.worker("pay", group="g", consumer="w1")
    (job,) = take(jn, "pay", count=1)
    first = jn.delete_policy("pay", drop=True)
    assert (first.dropped, first.running, first.deleted) == (2, 1, False)
    assert w.fail(job, "timeout").decision == "retry"
    second = jn.delete_policy("pay", drop=True)
    assert (second.dropped, second.deleted) == (1, True)
    assert sorted(d.job_id for d in jn.dead_letters("pay")) == ["a0", "a1", "a2"]


def test_drop_beyond_max_dead_letters_trims_the_dropped_jobs_away(
    redis_url: str, prefix: str
) -> None:
    """delete.lua's doc: 'nothing vanishes, and they can be replayed once a policy is
    applied again'. dead_letter() trims the stream to ~max_dead_letters on every XADD, so a
    drop larger than that (the default is 100,000: a dependency down for a day easily has
    more waiting) keeps only the last ones: the rest are neither waiting nor replayable."""
    body = BODY.replace("max_wait: 1h", "max_wait: 1h\n  max_dead_letters: 10")
    jn = make_janus(redis_url, prefix, body, FakeClock())
    jn.submit_many("pay", [Job(scope=f"s{i % 5}", job_id=f"j{i}") for i in range(1000)])
    # (was: 1000 dropped, 41 kept.) Now refused whole, before anything is written.
    with (
        unchanged(raw_client(redis_url), prefix),
        pytest.raises(InvalidInput, match="past max_dead_letters"),
    ):
        jn.delete_policy("pay", drop=True)
    assert jn.status("pay").deleting is False
    assert jn.submit("pay", scope="s0", job_id="more").accepted
