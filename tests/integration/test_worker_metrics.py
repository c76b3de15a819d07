"""What a worker measures about itself (janus.worker_metrics): a known run through the sync
and the asyncio worker, scraped over HTTP and parsed with prometheus-client's own parser;
`janus worker --metrics-port` serving it from a worker process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import prometheus_client
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from janus.aio import AsyncWorker
from janus.cli import main
from janus.client import Janus, Job
from janus.decisions import LeasedJob
from janus.errors import LeaseLost
from janus.testing import connect_async
from janus.worker import Retry, Worker
from janus.worker_metrics import WorkerMetrics

from tests.async_bridge import Loop
from tests.helpers import FakeClock, make_janus, wait_until

REPO = Path(__file__).resolve().parents[2]
LEASE_MS = 60_000
#: One attempt per job (a failure or a lost lease dead-letters it): each job runs once.
BODY = """
pay:
  rate: 100
  burst: 10
  max_wait: 60s
  lease: 60s
  retry: {max_attempts: 1}
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:PORT/metrics, parsed by prometheus-client."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted({"dependency": "pay", **labels}.items())))]


def handled(samples: Samples, outcome: str) -> float:
    return sample(samples, "janus_worker_handler_duration_seconds_count", outcome=outcome)


def _decide(job: LeasedJob, clock: FakeClock) -> None:
    """j0, j1 return; j2 returns after its lease ran out (the clock moved past it, so its
    report is refused); j3 raises Retry("http_400"); j4 raises ValueError."""
    if job.id == "j2":
        clock.advance_ms(LEASE_MS + 1000)
    elif job.id == "j3":
        raise Retry("http_400")
    elif job.id == "j4":
        raise ValueError("bad payload")


def _run_sync(jn: Janus, clock: FakeClock, meter: WorkerMetrics) -> Worker:
    w = Worker(jn.store, "pay", group="g", consumer="c", metrics=meter)
    w._clock = clock  # as Janus.worker does (it takes no metrics=)
    thread = threading.Thread(
        target=w.run,
        args=(lambda job: _decide(job, clock),),
        kwargs={"concurrency": 1, "install_signals": False},
        daemon=True,
    )
    thread.start()
    _until_five_reported(w)
    w.stop()
    thread.join(30)
    assert not thread.is_alive()
    return w


def _run_async(
    loop: Loop, url: str, prefix: str, clock: FakeClock, meter: WorkerMetrics
) -> AsyncWorker:
    ajn = loop.run(connect_async(url, prefix=prefix, clock=clock))

    async def handler(job: LeasedJob) -> None:
        _decide(job, clock)

    w = AsyncWorker(ajn.store, "pay", group="g", consumer="c", metrics=meter)
    w._clock = clock  # as AsyncJanus.worker does (it takes no metrics=)
    run = w.run(handler, concurrency=1, install_signals=False)
    thread = threading.Thread(target=lambda: loop.run(run, timeout=None), daemon=True)
    thread.start()
    try:
        _until_five_reported(w)
        w.stop()
        thread.join(30)
        assert not thread.is_alive()
    finally:
        loop.run(ajn.close())
    return w


def _until_five_reported(w: Worker | AsyncWorker) -> None:
    s = w.stats
    wait_until(lambda: s.completed + s.failed + s.lease_lost >= 5, 60, "five reports")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_known_run_is_measured_by_the_worker_and_scraped(
    redis_url: str, prefix: str, kind: str, request: pytest.FixtureRequest
) -> None:
    """Given 5 jobs run one at a time: 3 handlers return (one of them after its lease ran
    out), one raises Retry, one raises ValueError. Then the worker's scrape says exactly
    that: 5 handler durations (3 completed, 1 failed, 1 error), reports accepted 2 completed
    and 2 failed, 1 lease lost, at least one fetch per job, nothing running; and the
    fleet-wide counters in Redis agree."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(5)])
    meter = WorkerMetrics()
    if kind == "sync":
        w: Worker | AsyncWorker = _run_sync(jn, clock, meter)
    else:
        w = _run_async(request.getfixturevalue("_aio_loop"), redis_url, prefix, clock, meter)
    server, _ = meter.serve(0)
    try:
        got = scrape(server.server_port)
    finally:
        server.shutdown()
    assert (w.stats.completed, w.stats.failed, w.stats.lease_lost) == (2, 2, 1)
    assert [handled(got, o) for o in ("completed", "failed", "error")] == [3, 1, 1]
    assert sample(got, "janus_worker_handler_duration_seconds_bucket", outcome="error", le="+Inf")
    assert sample(got, "janus_worker_reports_total", outcome="completed") == 2
    assert sample(got, "janus_worker_reports_total", outcome="failed") == 2
    assert sample(got, "janus_worker_reports_total", outcome="returned") == 0
    assert sample(got, "janus_worker_leases_lost_total") == 1
    assert sample(got, "janus_worker_fetch_duration_seconds_count") >= 5
    assert sample(got, "janus_worker_fetch_duration_seconds_sum") > 0
    assert sample(got, "janus_worker_jobs_running") == 0
    assert not any("scope" in dict(labels) for _, labels in got)
    counted = jn.counters("pay")
    assert (counted["completed"], counted["failed"]) == (2, 2)
    jn.close()


def test_a_lost_lease_counts_once_though_heartbeat_and_report_are_refused(
    redis_url: str, prefix: str
) -> None:
    """Given a fetched job whose lease ran out, when its heartbeat and then its report are
    refused (LeaseLost both times), then the worker counts one lost lease, not two, and no
    accepted report."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    jn.submit("pay", scope="a", job_id="late")
    meter = WorkerMetrics()
    w = Worker(jn.store, "pay", group="g", consumer="c", metrics=meter)
    w._clock = clock
    (job,) = w.fetch(block_ms=None)
    clock.advance_ms(LEASE_MS + 1)
    with pytest.raises(LeaseLost):
        w.heartbeat(job)
    with pytest.raises(LeaseLost):
        w.complete(job)
    value = meter.registry.get_sample_value
    assert value("janus_worker_leases_lost_total", {"dependency": "pay"}) == 1
    assert value("janus_worker_reports_total", {"dependency": "pay", "outcome": "completed"}) == 0
    assert value("janus_worker_fetch_duration_seconds_count", {"dependency": "pay"}) == 1
    jn.close()


def test_workers_in_one_process_keep_their_own_registries() -> None:
    """Two WorkerMetrics in one process: each has its own registry, neither touches
    prometheus-client's global one, so two workers in one test process never collide."""
    a, b = WorkerMetrics(), WorkerMetrics()
    a.declare("pay")
    b.declare("pay")
    a.reported("pay", "completed")
    labels = {"dependency": "pay", "outcome": "completed"}
    assert a.registry.get_sample_value("janus_worker_reports_total", labels) == 1
    assert b.registry.get_sample_value("janus_worker_reports_total", labels) == 0
    assert prometheus_client.REGISTRY.get_sample_value("janus_worker_reports_total", labels) is None


@pytest.mark.parametrize("handler", ["charge", "charge_async"])
def test_janus_worker_serves_its_metrics_until_sigterm(
    standalone_url: str, prefix: str, handler: str
) -> None:
    """Given 3 jobs, `janus worker --metrics-port 0` (threads for a plain handler, asyncio
    for an async one) says where its metrics are, and the scrape shows its 3 reports and 3
    handler durations; on SIGTERM it stops and exits 0."""
    jn = make_janus(standalone_url, prefix, BODY)  # real time
    jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(3)])
    cmd = [sys.executable, "-m", "janus", "worker", "pay", "--group", "g", "--concurrency", "2"]
    cmd += ["--handler", f"examples.handlers:{handler}", "--metrics-port", "0"]
    cmd += ["--metrics-host", "127.0.0.1", "--redis", standalone_url, "--prefix", prefix]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stderr is not None
        found = None
        while found is None and (line := proc.stderr.readline()):
            found = re.search(r"janus worker metrics: http://127\.0\.0\.1:(\d+)/metrics", line)
        assert found, "the worker never said where its metrics are"
        port = int(found.group(1))

        def reports() -> float:
            """Reports accepted so far (none listed until the worker, built just after its
            endpoint, declares its series)."""
            got = scrape(port).items()
            return sum(v for (name, _), v in got if name == "janus_worker_reports_total")

        wait_until(lambda: reports() == 3, 60, "the worker's 3 reports")
        got = scrape(port)
        assert sum(handled(got, o) for o in ("completed", "failed", "error")) == 3
        assert sample(got, "janus_worker_leases_lost_total") == 0
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "stopped:" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    jn.close()


@pytest.mark.parametrize("bad", ["-1", "70000", "x"])
def test_janus_worker_refuses_a_bad_metrics_port(bad: str) -> None:
    """A bad --metrics-port is a usage error (exit 2) naming the option, before any work."""
    args = ["worker", "pay", "--handler", "examples.handlers:charge", "--group", "g"]
    result = CliRunner().invoke(main, [*args, "--metrics-port", bad])
    assert result.exit_code == 2 and "--metrics-port" in result.output
