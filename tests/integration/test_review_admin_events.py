"""Review: the events stream (lua/include/core.lua event/flush_events), the coordinator's
logging of it (Coordinator._log_events) and the events API."""

from __future__ import annotations

import logging

import pytest

from janus.client import Job
from janus.coordinator import Coordinator
from janus.errors import InvalidInput
from janus.testing import FakeClock

from tests.helpers import make_janus, raw_client

BODY = """
pay:
  rate: 100000
  burst: 100000
  max_wait: 1h
"""


def _event_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("event ")]


def test_a_coordinator_reads_1000_events_per_watch_pass_and_silently_loses_the_rest(
    standalone_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each watcher pass (one per watch_s, 2 s by default, unless woken) logs at most 1000
    new events. Two drops of 6,000 jobs, one watcher pass apart, each well inside the
    ~10,000 the stream keeps: the coordinator logs 1,000, falls 5,000 behind, the second
    burst trims what it has not read, and it goes on from the new head without a word:
    about 2,000 dead letters never reach the logs."""
    caplog.set_level(logging.INFO, logger="janus.coordinator")
    jn = make_janus(standalone_url, prefix, BODY, FakeClock())
    co = Coordinator(jn.store)
    after = co._log_events("pay", None)
    produced = 0
    for burst in range(2):
        ids = [f"b{burst}-{i}" for i in range(6000)]
        jn.submit_many("pay", [Job(scope=f"s{n % 20}", job_id=i) for n, i in enumerate(ids)])
        step = jn.delete_policy("pay", drop=True)  # 6,000 dead_letter events (+2)
        produced += step.dropped
        jn.apply_policies(jn_policies())  # back again for the next burst
        after = co._log_events("pay", after)  # the watcher pass between the bursts
    while True:
        new = co._log_events("pay", after)
        if new == after:
            break
        after = new
    logged = [m for m in _event_lines(caplog) if " dead_letter " in m]
    warned = [r for r in caplog.records if "skipped" in r.getMessage() or "lost" in r.getMessage()]
    assert len(logged) == produced or warned, (
        f"{produced} dead letters, {len(logged)} logged, no warning about the gap"
    )


def jn_policies():  # type: ignore[no-untyped-def]
    from janus.policy import parse_policy_text

    from tests.helpers import policy

    return parse_policy_text(policy(BODY), "again.yaml")


MAX_ID = "18446744073709551615-18446744073709551615"


@pytest.mark.parametrize("after", ["99999999999999999999-0", "1-99999999999999999999", MAX_ID])
def test_an_event_id_out_of_range_gets_a_redis_error_not_invalid_input(
    redis_url: str, prefix: str, after: str
) -> None:
    jn = make_janus(redis_url, prefix, BODY, FakeClock())
    with pytest.raises(InvalidInput):
        jn.events("pay", after=after)


def test_after_and_last_together_silently_ignore_after(redis_url: str, prefix: str) -> None:
    jn = make_janus(redis_url, prefix, BODY, FakeClock())
    jn.pause("pay")
    newest = jn.events("pay", last=1)[0].event_id
    with pytest.raises(InvalidInput):
        jn.events("pay", after=newest, last=5)  # returns the last 5, `after` unused


def test_status_crashes_on_a_hold_field_the_functions_accept(redis_url: str, prefix: str) -> None:
    """parse_hold (lua/include/core.lua) reads an unexpected `hold` value as 'not held'; the
    Python parse_hold raises ValueError, so `janus status`, the exporter and jn.status all
    fail for the dependency."""
    jn = make_janus(redis_url, prefix, BODY, FakeClock())
    raw_client(redis_url).hset(f"{prefix}:{{pay}}:state", "hold", "x 0 0")
    jn.submit("pay", scope="a", job_id="j")  # the functions are fine with it
    jn.status("pay")
