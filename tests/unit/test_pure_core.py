"""Pure pieces: reply parsing, the doctor's verdicts, the window measurement."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from janus import doctor
from janus.decisions import parse_release, parse_submit
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
        [b"released"] * 6,
        [b"weird", b"", 0, -1, 1, 0, b""],
        [b"released", b"", 1.5, -1, 1, 0, b""],
    ],
)
def test_malformed_submit_reply_is_a_protocol_error(reply: object) -> None:
    """A reply of the wrong shape or type never becomes a decision."""
    with pytest.raises(ProtocolError):
        parse_submit("pay", ["a"], reply)


def test_release_reply() -> None:
    """-1 for next_us means the queue is empty."""
    assert parse_release([1, 2, 0, -1, 5, 0]).next_us is None
    assert parse_release([1, 2, 0, 7, 5, 1]).budget_dead == 1
    with pytest.raises(ProtocolError):
        parse_release([1, 2])


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
