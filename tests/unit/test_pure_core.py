"""Pure pieces: reply parsing, the doctor's verdicts, the window measurement."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from janus import doctor
from janus.calls import parse_fetch, parse_step, parse_submit
from janus.errors import ProtocolError
from janus.measure import Release, check_rate, worst_window


def test_submit_reply_parses_into_decisions() -> None:
    """A well-formed reply becomes one Decision per job, -1 meaning "no retry-after"."""
    reply = [b"scheduled", b"", 1000, -1, 1, 0, b"scheduled"]
    reply += [b"rejected", b"max_wait_exceeded", 9000, 8000, 0, 0, b""]
    a, b = parse_submit("pay", ["a", "b"], reply)
    assert (a.status, a.reason, a.retry_after_ms, a.created, a.state) == (
        "scheduled",
        None,
        None,
        True,
        "scheduled",
    )
    assert (b.status, b.reason, b.retry_after_ms, b.state, b.accepted) == (
        "rejected",
        "max_wait_exceeded",
        8000,
        None,
        False,
    )


@pytest.mark.parametrize(
    "reply",
    [
        None,
        [],
        [b"ready"] * 6,
        [b"weird", b"", 0, -1, 1, 0, b""],
        [b"ready", b"", 1.5, -1, 1, 0, b""],
    ],
)
def test_malformed_submit_reply_is_a_protocol_error(reply: object) -> None:
    """A reply of the wrong shape or type never becomes a decision."""
    with pytest.raises(ProtocolError):
        parse_submit("pay", ["a"], reply)


def test_step_reply() -> None:
    """-1 for next_us means nothing is pending; the seven values are named."""
    assert parse_step([1, 1, 0, 3, 0, -1, 5]).next_us is None
    step = parse_step([2, 1, 1, 0, 1, 7, 5])
    assert (step.reclaimed, step.retried, step.dead_lettered, step.ready, step.next_us) == (
        2,
        1,
        1,
        True,
        7,
    )
    with pytest.raises(ProtocolError):
        parse_step([1, 2])


def test_fetch_reply_parses_into_leased_jobs() -> None:
    """A header of six values, then seven per job; the payload stays bytes."""
    reply = [b"ok", 1000, -1, 1, 0, 1, b"j1", b"t1", 1, 2, b"1000-0", 31000, b"\x00\xff"]
    result = parse_fetch("pay", reply)
    (job,) = result.jobs
    assert (job.id, job.scope, job.attempt, job.cost, job.token) == ("j1", "t1", 1, 2, "1000-0")
    assert (job.payload, job.lease_deadline_ms, job.started_ms) == (b"\x00\xff", 31000, 1000)
    assert result.timer and result.known and not result.repeat and result.next_us is None


@pytest.mark.parametrize(
    "reply",
    [None, [b"ok", 1, -1, 0, 0], [b"ok", 1, -1, 0, 0, 1], [b"ok", 1, -1, 0, 0, 1, *[b"x"] * 7]],
)
def test_malformed_fetch_reply_is_a_protocol_error(reply: object) -> None:
    """A header that announces more (or other) values than follow is refused."""
    with pytest.raises(ProtocolError):
        parse_fetch("pay", reply)


def test_doctor_flags_eviction_and_missing_persistence() -> None:
    """allkeys-lru with a memory limit is an error; no persistence is a warning."""
    findings = doctor.evaluate(
        {
            "a:1": {
                "maxmemory-policy": "allkeys-lru",
                "maxmemory": "100mb",
                "appendonly": "no",
                "save": "",
            }
        }
    )
    assert doctor.worst(findings) == "error"
    text = "\n".join(map(str, findings))
    assert "maxmemory-policy is allkeys-lru" in text and "no persistence" in text


def test_doctor_accepts_a_safe_server_and_warns_when_config_is_hidden() -> None:
    """noeviction + AOF is ok; a server refusing CONFIG gets a warning to check by hand."""
    safe = {"maxmemory-policy": "noeviction", "maxmemory": "0", "appendonly": "yes", "save": ""}
    assert doctor.worst(doctor.evaluate({"a": safe})) == "ok"
    assert doctor.worst(doctor.evaluate({"b": {}})) == "warning"


def _brute(events: list[tuple[int, int]], window: int) -> int:
    return max(
        (sum(c for t, c in events if start <= t < start + window) for start, _ in events), default=0
    )


@given(
    st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 5)), max_size=60), st.integers(1, 500)
)
def test_worst_window_matches_brute_force(raw: list[tuple[int, int]], window: int) -> None:
    """Property: the sliding-window maximum equals the brute-force maximum."""
    events = sorted(raw)
    assert worst_window(events, window)[0] == _brute(events, window)


def test_check_rate_flags_an_overshoot() -> None:
    """Rate 10/s burst 2: 4 releases in the same millisecond exceed 2 + 10*0.001."""
    burst = [Release(1000, "a", 1)] * 4
    (report,) = check_rate(burst, 10, 2, [1])
    assert not report.ok and report.worst_cost == 4
