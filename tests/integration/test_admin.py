"""Admin actions against real Redis: pause / resume by hand (whole dependency or one scope,
timed or until resumed) and deleting a policy (drain, or drop to the dead letters). Each
shows nothing is lost: every job either completes or is a dead letter, and the counts add up.
Also the events stream these actions (and the flow) write, in order."""

from __future__ import annotations

import pytest

from janus.client import Job
from janus.errors import InvalidInput, UnknownDependency
from janus.testing import FakeClock

from tests.helpers import make_janus, raw_client, take, unchanged

BODY = """
pay:
  rate: 1000
  burst: 100
  max_wait: 1h
  lease: 10s
  retry: {max_attempts: 3, budget: false, backoff: {base: 1s, jitter: none}}
"""


def _kinds(jn, dep: str = "pay") -> list[str]:  # type: ignore[no-untyped-def]
    return [e.kind for e in jn.events(dep)]


def test_pause_holds_releases_until_resumed_and_loses_nothing(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(5)])
    paused = jn.pause("pay")
    assert (paused.status, paused.until_ms) == ("paused", None)
    assert take(jn, "pay") == []  # held: a worker gets nothing
    status = jn.status("pay")
    assert status.held_until_ms == -1 and status.scheduled == 5
    # A new submit waits behind the pause: longer than max_wait, so it is refused whole.
    d = jn.submit("pay", scope="a", job_id="late")
    assert (d.status, d.reason, d.retry_after_ms) == ("rejected", "dependency_paused", None)
    clock.advance_ms(3_600_000)
    assert take(jn, "pay") == [] and jn.status("pay").scheduled == 5  # nothing expires
    assert jn.resume("pay").status == "resumed"
    assert jn.resume("pay").status == "not_paused"
    got = take(jn, "pay")
    assert sorted(j.id for j in got) == [f"j{i}" for i in range(5)]
    w = jn.worker("pay", group="g", consumer="w1")
    for job in got:
        w.complete(job)
    s = jn.status("pay")
    assert (s.scheduled, s.in_flight, s.dead_letters, s.held_until_ms) == (0, 0, 0, None)
    assert _kinds(jn)[-2:] == ["paused", "resumed"]
    paused_ev, resumed_ev = jn.events("pay", last=2)
    assert paused_ev.fields == {"by": "hand", "scope": "", "until_ms": "-1"}
    assert resumed_ev.fields == {"by": "hand", "scope": ""}


def test_a_timed_pause_ends_by_itself_and_is_logged(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit("pay", scope="a", job_id="j1")
    p = jn.pause("pay", for_s=600)
    assert p.until_ms == clock.now_us // 1000 + 600_000
    # A submit that fits max_wait is accepted and scheduled after the pause.
    d = jn.submit("pay", scope="a", job_id="j2")
    assert d.status == "scheduled" and d.not_before_ms >= p.until_ms
    clock.advance_ms(599_000)
    assert take(jn, "pay") == []
    clock.advance_ms(1_000)
    assert sorted(j.id for j in take(jn, "pay")) == ["j1", "j2"]
    last = jn.events("pay", last=1)[0]
    assert (last.kind, last.fields["by"]) == ("resumed", "timer")


def test_pausing_one_scope_holds_only_that_scope(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit_many("pay", [Job(scope=s, job_id=f"{s}{i}") for s in ("a", "b") for i in range(3)])
    p = jn.pause("pay", scope="tenant with spaces")  # any scope name, held before it has work
    assert p.held_scopes == 1
    jn.pause("pay", scope="a", for_s=60)
    assert jn.status("pay").held_scopes == 2
    got = take(jn, "pay")
    assert sorted(j.id for j in got) == ["b0", "b1", "b2"]  # b flows, a waits
    st = jn.status("pay", top=5)
    assert st.oldest_waiting_ms == clock.now_us // 1000  # a0, submitted at the start
    assert st.tokens == 100 - 3  # burst 100, b's three released, the clock stood still
    top = st.top_scopes
    assert [(t.scope, t.waiting_jobs, t.held_until_ms is not None) for t in top][:1] == [
        ("a", 3, True)
    ]
    assert jn.resume("pay", scope="a").status == "resumed"
    assert sorted(j.id for j in take(jn, "pay")) == ["a0", "a1", "a2"]
    assert jn.resume("pay", scope="tenant with spaces").held_scopes == 0
    kinds = [(e.kind, e.fields.get("scope")) for e in jn.events("pay")]
    assert kinds == [
        ("policy_applied", None),
        ("paused", "tenant with spaces"),
        ("paused", "a"),
        ("resumed", "a"),
        ("resumed", "tenant with spaces"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"for_s": 0}, "for_s must be a number of seconds > 0"),
        ({"for_s": -5}, "for_s must be a number of seconds > 0"),
        ({"for_s": 11 * 365 * 86400}, "at most ten years"),
        ({"for_s": True}, "for_s must be"),
        ({"for_s": "10m"}, "for_s must be"),
        ({"scope": ""}, "scope"),
    ],
)
def test_bad_pause_input_is_refused_and_changes_nothing(
    redis_url: str, prefix: str, kwargs: dict[str, object], error: str
) -> None:
    jn = make_janus(redis_url, prefix, BODY)
    with unchanged(raw_client(redis_url), prefix), pytest.raises(InvalidInput, match=error):
        jn.pause("pay", **kwargs)  # type: ignore[arg-type]


def test_pause_of_an_unknown_dependency_is_refused(redis_url: str, prefix: str) -> None:
    jn = make_janus(redis_url, prefix, BODY)
    with unchanged(raw_client(redis_url), prefix):
        with pytest.raises(UnknownDependency, match="'nope' has no applied policy"):
            jn.pause("nope")
        with pytest.raises(UnknownDependency):
            jn.resume("nope", scope="a")


def test_pause_for_refused_in_lua_too(redis_url: str, prefix: str) -> None:
    """A caller in another language gets the same check from the function itself."""
    from janus import calls
    from janus.keys import Keys

    jn = make_janus(redis_url, prefix, BODY)
    r = raw_client(redis_url)
    c = calls.pause(Keys(prefix, "pay"), None, -7, None)
    with unchanged(r, prefix), pytest.raises(Exception, match="JANUS_INVALID - for_ms must be -1"):
        r.fcall("janus_p1_pause", len(c.keys), *c.keys, *c.args)
    jn.close()


def test_delete_drains_then_removes_the_policy(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(4)])
    running = take(jn, "pay", count=2)
    progress = jn.delete_policy("pay")
    assert (progress.waiting, progress.running, progress.deleted) == (2, 2, False)
    d = jn.submit("pay", scope="a", job_id="new")
    assert (d.status, d.reason, d.retry_after_ms) == ("rejected", "dependency_deleted", None)
    assert jn.submit("pay", scope="a", job_id="j3").created is False  # known ids: state
    w = jn.worker("pay", group="g", consumer="w1")
    w.fail(running[0], "http_503")  # still retried while draining
    w.complete(running[1])
    clock.advance_ms(2_000)
    rest = take(jn, "pay")
    assert sorted(j.id for j in rest) == ["j0", "j2", "j3"]
    assert not jn.delete_policy("pay").deleted  # they run
    for job in rest:
        w.complete(job)
    done = jn.delete_policy("pay")
    assert done.deleted and (done.waiting, done.running) == (0, 0)
    assert jn.submit("pay", scope="a").reason == "unknown_dependency"
    assert "pay" not in raw_client(redis_url).smembers(f"{prefix}:deps")
    kinds = _kinds(jn)
    assert kinds[0] == "policy_applied" and kinds[-1] == "policy_deleted"
    assert "policy_deleting" in kinds
    assert jn.counters("pay")["completed"] == 4  # every job ran once; nothing vanished


def test_delete_with_drop_dead_letters_the_waiting_work(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jobs = [Job(scope=s, job_id=f"{s}{i}") for s in ("a", "b", "c") for i in range(200)]
    jn.submit_many("pay", jobs)
    w = jn.worker("pay", group="g", consumer="w1")
    running = w.fetch(count=5, block_ms=None)
    w.fail(running[0], "http_503")  # a retry waiting in the delay queue
    jn.pause("pay", scope="c")
    jn.batch_size = 50  # several calls of 50 (bounded per call)
    progress = jn.delete_policy("pay", drop=True)
    assert (progress.waiting, progress.running, progress.dropped) == (0, 4, 596)
    letters = jn.dead_letters("pay")
    assert len(letters) == 596 and {d.reason for d in letters} == {"dependency_deleted"}
    for job in running[1:]:
        w.complete(job)
    assert jn.delete_policy("pay", drop=True).deleted
    # Every job is accounted for: completed or a dead letter (replayable), none lost.
    assert len({d.job_id for d in letters}) + 4 == 600
    # Re-applying a policy makes the dependency known again; the dead letters replay.
    jn2 = make_janus(redis_url, prefix, BODY, clock)
    statuses = jn2.replay("pay", letters[:10])
    assert set(statuses.values()) == {"replayed"}


def test_applying_the_policy_again_cancels_a_deletion(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit("pay", scope="a", job_id="j1")
    assert not jn.delete_policy("pay").deleted
    jn2 = make_janus(redis_url, prefix, BODY, clock)  # the same policy
    assert jn2.submit("pay", scope="a", job_id="j2").accepted
    assert jn2.status("pay").deleting is False
    applied = [e for e in jn.events("pay") if e.kind == "policy_applied"]
    assert [e.fields["deletion_cancelled"] for e in applied] == ["0", "1"]


def test_the_cli_pauses_resumes_and_deletes(redis_url: str, prefix: str) -> None:
    from click.testing import CliRunner

    from janus.cli import main

    jn = make_janus(redis_url, prefix, BODY)  # real time: the CLI reads Redis TIME
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(3)])
    (running,) = take(jn, "pay", count=1)
    run = CliRunner().invoke
    args = ["--redis", redis_url, "--prefix", prefix]
    out = run(main, ["pause", "pay", "--for", "10m", *args])
    assert out.exit_code == 0 and "pay: paused until " in out.output
    assert "(in 10 min)" in out.output or "(in 9 min)" in out.output
    assert jn.status("pay").held_until_ms is not None
    scoped = run(main, ["pause", "pay", "--scope", "a", *args])
    assert scoped.output.strip() == "pay scope 'a': paused until resumed"
    status = run(main, ["status", *args])
    assert "by hand until " in status.output and "1 scope(s) by hand" in status.output
    assert "a 2 jobs (cost 2), paused until resumed" in status.output
    assert run(main, ["resume", "pay", *args]).output.strip() == "pay: resumed"
    again = run(main, ["resume", "pay", *args])
    assert again.output.strip() == "pay: was not paused by hand"
    bad = run(main, ["pause", "pay", "--for", "soon", *args])
    assert bad.exit_code == 2 and "--for" in bad.output
    # One attempt runs: --no-wait reports the drain and exits 1; new submits are refused.
    draining = run(main, ["policy", "delete", "pay", "--drop", "--no-wait", *args])
    assert draining.exit_code == 1, draining.output
    assert "pay: deleting: 0 waiting, 1 running" in draining.output
    assert "2 dead-lettered" in draining.output and "still draining" in draining.output
    assert jn.submit("pay", scope="a").reason == "dependency_deleted"
    jn.worker("pay", group="g", consumer="w1").complete(running)
    done = run(main, ["policy", "delete", "pay", *args])
    assert done.exit_code == 0 and done.output.strip() == "pay: policy deleted"
    gone = run(main, ["policy", "delete", "pay", *args])
    assert gone.exit_code == 1 and "'pay' has no applied policy" in gone.output
    assert len(jn.dead_letters("pay")) == 2
