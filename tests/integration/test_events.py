"""The events stream: an outage run's state changes, in order, as `janus events` lists them
(text and JSON), followed live, and logged by the coordinator."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from janus.cli import main
from janus.client import Job
from janus.coordinator import Coordinator
from janus.testing import FakeClock

from tests.helpers import make_janus, take, wait_until

BODY = """
pay:
  rate: 1000
  burst: 100
  max_wait: 1h
  lease: 10s
  retry:
    max_attempts: 3
    budget: false
    backoff: {base: 1s, jitter: none}
    retry_on: [http_503, lease_expired]
  circuit: {failure_ratio: 0.5, min_requests: 2, window: 60s, open_for: 30s, half_open_probes: 1}
"""

OUTAGE = [
    "policy_applied",
    "circuit_open",  # two 503s of two outcomes
    "lease_reclaimed",  # the third attempt's worker vanished
    "circuit_half_open",  # open_for passed; one probe goes
    "circuit_closed",  # the probe succeeded
    "dead_letter",  # a job failed on its own account (not retryable)
    "paused",  # a Retry-After of 5 min
    "paused",  # an SRE paused by hand
    "resumed",
]


def _outage(url: str, prefix: str) -> None:
    clock = FakeClock()
    jn = make_janus(url, prefix, BODY, clock)
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(3)])
    w = jn.worker("pay", group="g", consumer="w1")
    a, b, _ = take(jn, "pay")  # the third one's worker vanishes
    w.fail(a, "http_503")
    w.fail(b, "http_503")  # 2 of 2 failed: open
    clock.advance_ms(10_001)  # c's lease expires unreported
    assert Coordinator(jn.store).step("pay", now_us=clock.now_us).reclaimed == 1
    clock.advance_ms(30_000)
    (probe,) = take(jn, "pay", count=1)
    w.complete(probe)
    jn.submit("pay", scope="a", job_id="bad")
    jobs = {job.id: job for job in take(jn, "pay")}
    w.fail(jobs.pop("bad"), "http_400")
    w.fail(jobs.popitem()[1], "http_503", retry_after_ms=300_000)
    jn.pause("pay", for_s=60)
    jn.resume("pay")
    jn.close()


def test_janus_events_lists_an_outage_in_order(redis_url: str, prefix: str) -> None:
    _outage(redis_url, prefix)
    args = ["--redis", redis_url, "--prefix", prefix]
    result = CliRunner().invoke(main, ["events", "pay", *args])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[1] for line in lines] == OUTAGE
    assert "reason=not_retryable" in lines[5] and "job=bad" in lines[5]
    assert "by=retry_after" in lines[6] and "by=hand" in lines[7]
    as_json = CliRunner().invoke(main, ["events", "pay", "--json", "--last", "3", *args])
    docs = [json.loads(line) for line in as_json.output.strip().splitlines()]
    assert [d["kind"] for d in docs] == OUTAGE[-3:]
    assert docs[0]["by"] == "retry_after" and docs[0]["until_iso"].endswith("Z")
    ids = [d["id"] for d in docs]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))


def test_bad_events_options_are_refused(standalone_url: str, prefix: str) -> None:
    args = ["--redis", standalone_url, "--prefix", prefix]
    bad = CliRunner().invoke(main, ["events", "pay", "--last", "0", *args])
    assert bad.exit_code == 2 and "--last" in bad.output
    bad_dep = CliRunner().invoke(main, ["events", "no{pe", *args])
    assert bad_dep.exit_code == 2 and "invalid dependency name" in bad_dep.output.lower()


def test_events_follow_prints_new_events_as_they_come(standalone_url: str, prefix: str) -> None:
    jn = make_janus(standalone_url, prefix, BODY)
    cmd = [sys.executable, "-m", "janus", "events", "pay", "--follow", "--poll", "0.1"]
    cmd += ["--redis", standalone_url, "--prefix", prefix]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split()[1] == "policy_applied"
        jn.pause("pay", scope="t1")
        line = proc.stdout.readline()
        assert line.split()[1] == "paused" and "scope=t1" in line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        jn.close()


def test_the_coordinator_logs_every_new_event(
    standalone_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever caused it (here a pause by hand), a running coordinator logs the event once,
    as a warning for a pause; the history before it started is not logged again."""
    jn = make_janus(standalone_url, prefix, BODY)
    coordinator = Coordinator(jn.store, watch_s=0.2)
    caplog.set_level(logging.INFO, logger="janus.coordinator")
    thread = coordinator.run_in_thread(check=False)
    try:
        wait_until(lambda: "pay" in coordinator._watchers, 30, "the watcher started")
        jn.pause("pay", for_s=5)

        def logged() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.getMessage().startswith("event pay")]

        wait_until(logged, 30, "the pause was logged")
        (record,) = logged()
        assert record.levelno == logging.WARNING
        assert "paused" in record.getMessage() and "by=hand" in record.getMessage()
        assert record.janus_event["kind"] == "paused"  # type: ignore[attr-defined]
    finally:
        coordinator.stop()
        thread.join(timeout=30)
        jn.close()
