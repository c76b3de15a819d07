"""Fleet-wide counters kept in Redis by the functions, exported to Prometheus: a known run,
scraped over HTTP and parsed with prometheus-client's own parser."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from janus import metrics
from janus.client import Job
from janus.testing import RedisServer, connect

from tests.helpers import FakeClock, make_janus, take

BODY = """
pay:
  rate: 10
  burst: 4
  max_wait: 50ms
  lease: 10s
  retry: {max_attempts: 2, retry_on: [http_503], backoff: {base: 1s, jitter: none}}
"""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:PORT/metrics, parsed by prometheus-client."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted({"dependency": "pay", **labels}.items())))]


def test_a_known_run_is_counted_in_redis_and_exported(redis_url: str, prefix: str) -> None:
    """4 ready submits, 1 repeated id, 2 rejected; 3 started: 1 completed, 1 failed for
    good (not retryable), 1 failed and retried; the counters say exactly that, and so does
    the scrape, with the status gauges beside them."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    ds = jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(4)])
    assert [d.status for d in ds] == ["ready"] * 4
    assert not jn.submit("pay", scope="a", job_id="j0").created
    assert [jn.submit("pay", scope="a").reason for _ in range(2)] == ["max_wait_exceeded"] * 2
    w = jn.worker("pay", group="g", consumer="c")
    a, b, c = take(jn, "pay", count=3)
    w.complete(a)
    w.fail(b, "http_400")
    w.fail(c, "http_503")
    assert jn.counters("pay") == {
        "submit:ready": 4,
        "submit:existing": 1,
        "rejected:max_wait_exceeded": 2,
        "started": 3,
        "started_cost": 3,
        "completed": 1,
        "failed": 2,
        "dead:not_retryable": 1,
        "retried": 1,
        "lag_le:5": 3,  # the test clock stands still: released at their not_before
        "lag_ms_sum": 0,
    }
    server, _ = metrics.serve(jn, 0, addr="127.0.0.1")
    try:
        got = scrape(server.server_port)
    finally:
        server.shutdown()
    assert got[("janus_up", ())] == 1
    assert sample(got, "janus_submits_total", decision="ready") == 4
    assert sample(got, "janus_submits_total", decision="existing") == 1
    assert sample(got, "janus_rejections_total", reason="max_wait_exceeded") == 2
    assert sample(got, "janus_started_total") == 3
    assert sample(got, "janus_started_cost_total") == 3
    assert sample(got, "janus_completed_total") == 1
    assert sample(got, "janus_failed_total") == 2
    assert sample(got, "janus_retries_total") == 1
    assert sample(got, "janus_dead_letters_total", reason="not_retryable") == 1
    assert sample(got, "janus_lease_expired_total") == 0
    assert got[("janus_release_lag_seconds_bucket", (("dependency", "pay"), ("le", "0.005")))] == 3
    assert got[("janus_release_lag_seconds_bucket", (("dependency", "pay"), ("le", "+Inf")))] == 3
    assert sample(got, "janus_release_lag_seconds_count") == 3
    assert sample(got, "janus_held") == 0 and sample(got, "janus_deleting") == 0
    assert sample(got, "janus_bucket_tokens") == 1.0  # burst 4, three taken, no time passed
    assert ("janus_max_in_flight", (("dependency", "pay"),)) not in got  # no limit
    assert ("janus_oldest_waiting_seconds", (("dependency", "pay"),)) in got  # j3 waits
    assert sample(got, "janus_scheduled_jobs") == 2  # j3 (never fetched) and the retry of c
    assert sample(got, "janus_in_flight") == 0
    assert sample(got, "janus_dead_letter_entries") == 1
    assert sample(got, "janus_policy_version") == 1
    # No breaker in this policy: the circuit is "off", no state is current.
    assert jn.status("pay").circuit == "off"
    for state in ("closed", "open", "half_open"):
        assert sample(got, "janus_circuit_state", state=state) == 0
    jn.close()


def test_a_scrape_while_redis_is_down_says_so(prefix: str) -> None:
    """Redis gone: the scrape answers (HTTP 200) with janus_up 0, not an error page."""
    server_redis = RedisServer.start()
    jn = connect(server_redis.url, prefix=prefix, socket_timeout=1.0)
    server, _ = metrics.serve(jn, 0, addr="127.0.0.1")
    try:
        assert scrape(server.server_port)[("janus_up", ())] == 1
        server_redis.stop()
        assert scrape(server.server_port)[("janus_up", ())] == 0
    finally:
        server.shutdown()
        server_redis.stop()
        jn.close()


def test_janus_exporter_serves_until_sigterm(standalone_url: str, prefix: str) -> None:
    """`janus exporter --port 0` says where it listens, serves /metrics, exits 0 on SIGTERM."""
    jn = make_janus(standalone_url, prefix, BODY)
    jn.submit("pay", scope="a")
    cmd = [sys.executable, "-m", "janus", "exporter", "--port", "0", "--addr", "127.0.0.1"]
    cmd += ["--redis", standalone_url, "--prefix", prefix]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert found, line
        got = scrape(int(found.group(1)))
        assert sample(got, "janus_submits_total", decision="ready") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    jn.close()


@pytest.mark.parametrize("bad", ["0", "70000", "x"])
def test_the_coordinator_refuses_a_bad_metrics_port(bad: str) -> None:
    from click.testing import CliRunner

    from janus.cli import main

    result = CliRunner().invoke(main, ["coordinator", "--metrics-port", bad])
    assert result.exit_code == 2 and "--metrics-port" in result.output


def test_release_lag_is_a_histogram_of_start_minus_not_before(
    standalone_url: str, prefix: str
) -> None:
    """Two jobs allowed at t, fetched 2 s later (no worker was free): each lags 2 s."""
    clock = FakeClock()
    jn = make_janus(standalone_url, prefix, BODY, clock)
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(2)])
    clock.advance_ms(2_000)
    assert len(take(jn, "pay")) == 2
    counts = jn.counters("pay")
    assert (counts["lag_le:5000"], counts["lag_ms_sum"]) == (2, 4_000)
    server, _ = metrics.serve(jn, 0, addr="127.0.0.1")
    try:
        got = scrape(server.server_port)
    finally:
        server.shutdown()
    bucket = "janus_release_lag_seconds_bucket"
    assert got[(bucket, (("dependency", "pay"), ("le", "1.0")))] == 0
    assert got[(bucket, (("dependency", "pay"), ("le", "5.0")))] == 2
    assert sample(got, "janus_release_lag_seconds_sum") == 4.0
    jn.close()


def test_scope_labels_are_opt_in_and_capped(standalone_url: str, prefix: str) -> None:
    """Without --top-scopes no series has a scope label; with 2, each dependency exports its
    2 scopes with the most waiting work, whatever the number of tenants."""
    jn = make_janus(standalone_url, prefix, BODY, FakeClock())
    for scope, n in (("big", 3), ("mid", 2), ("small", 1)):
        jn.submit_many("pay", [Job(scope=scope, job_id=f"{scope}{i}") for i in range(n)])
    plain, _ = metrics.serve(jn, 0, addr="127.0.0.1")
    capped, _ = metrics.serve(jn, 0, addr="127.0.0.1", top_scopes=2)
    try:
        without = scrape(plain.server_port)
        got = scrape(capped.server_port)
    finally:
        plain.shutdown()
        capped.shutdown()
    assert not any("scope" in dict(labels) for _, labels in without)
    scoped = {
        dict(labels)["scope"]: value
        for (name, labels), value in got.items()
        if name == "janus_scope_waiting_jobs"
    }
    assert scoped == {"big": 3, "mid": 2}
    with pytest.raises(ValueError, match="top_scopes must be 0 to 100"):
        metrics.JanusCollector(jn, top_scopes=101)
    jn.close()
