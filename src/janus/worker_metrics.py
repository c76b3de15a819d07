"""Prometheus metrics a worker process measures about itself (``janus worker --metrics-port``).

The fleet-wide counters live in Redis and are exported by :mod:`janus.metrics`; what only
the worker can see is here: how long its handlers ran, how long its fetch calls took, which
of its reports and heartbeats were refused because the lease was lost, and how many handlers
run now. Pass one :class:`WorkerMetrics` to :class:`janus.Worker` or
:class:`janus.aio.AsyncWorker` (``metrics=``; None, the default, measures nothing) and serve
its registry::

    janus_worker_handler_duration_seconds{dependency,outcome}  histogram: handler start to
        return; outcome "completed" (it returned), "failed" (it raised janus.worker.Retry,
        a failure it classified), "error" (it raised anything else)
    janus_worker_fetch_duration_seconds{dependency}            histogram: each fetch call to
        Redis, answered or not (not the wait for work between fetches)
    janus_worker_reports_total{dependency,outcome}             reports Janus accepted:
        "completed", "failed", "returned" (given back unstarted)
    janus_worker_leases_lost_total{dependency}                 attempts whose heartbeat or
        report was refused (lease expired, attempt superseded, job already finished or
        unknown); an attempt counts once, however many refusals say so
    janus_worker_jobs_running{dependency}                      handlers running now

Each instance owns its registry (never prometheus-client's global one), so two workers in
one process do not collide; several workers of one process may share one instance (the
``dependency`` label tells them apart). No per-scope label: a tenant label would multiply the
series by the number of tenants.
"""

from __future__ import annotations

import threading
import time
from typing import Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.context_managers import Timer

from janus.decisions import LeasedJob

HandlerOutcome = Literal["completed", "failed", "error"]
HANDLER_OUTCOMES: tuple[HandlerOutcome, ...] = ("completed", "failed", "error")
#: The kinds of report a worker sends (janus.calls.Outcome.kind).
REPORT_OUTCOMES = ("completed", "failed", "returned")
#: Handlers run from milliseconds to minutes.
HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: A fetch is one script call: sub-millisecond on a quiet Redis, up to the socket timeout.
FETCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: How many lost attempts are remembered, so that each is counted once.
LOST_REMEMBERED = 4096


class WorkerMetrics:
    """The metrics of this process's workers, in a registry of their own (``registry``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._handler = Histogram(
            "janus_worker_handler_duration_seconds",
            "Time from a handler's start to its return, by how it ended.",
            ["dependency", "outcome"],
            registry=self.registry,
            buckets=HANDLER_BUCKETS,
        )
        self._fetch = Histogram(
            "janus_worker_fetch_duration_seconds",
            "Latency of each fetch call to Redis (not the wait for work).",
            ["dependency"],
            registry=self.registry,
            buckets=FETCH_BUCKETS,
        )
        self._reports = Counter(
            "janus_worker_reports_total",
            "Reports Janus accepted from this worker, by outcome.",
            ["dependency", "outcome"],
            registry=self.registry,
        )
        self._lost = Counter(
            "janus_worker_leases_lost_total",
            "Attempts whose heartbeat or report was refused: the lease was lost.",
            ["dependency"],
            registry=self.registry,
        )
        self._running = Gauge(
            "janus_worker_jobs_running",
            "Handlers running now.",
            ["dependency"],
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._seen_lost: dict[tuple[str, str, int], None] = {}  # insertion-ordered set

    def declare(self, dependency: str) -> None:
        """Create every series of ``dependency`` at zero, so that the first failure or lost
        lease is an increase a ``rate()`` sees, not a series appearing."""
        for outcome in HANDLER_OUTCOMES:
            self._handler.labels(dependency, outcome)
        for kind in REPORT_OUTCOMES:
            self._reports.labels(dependency, kind)
        self._fetch.labels(dependency)
        self._lost.labels(dependency)
        self._running.labels(dependency)

    def time_fetch(self, dependency: str) -> Timer:
        """A context manager that observes the fetch call it wraps."""
        return self._fetch.labels(dependency).time()

    def handler_started(self, dependency: str) -> float:
        """A handler starts: counted as running; returns the start for :meth:`handler_ended`."""
        self._running.labels(dependency).inc()
        return time.perf_counter()

    def handler_ended(
        self, dependency: str, started: float, outcome: HandlerOutcome | None
    ) -> None:
        """The handler started at ``started`` ended; ``outcome`` None (cancelled by a
        shutdown: it never returned) is not observed."""
        if outcome is not None:
            self._handler.labels(dependency, outcome).observe(time.perf_counter() - started)
        self._running.labels(dependency).dec()

    def reported(self, dependency: str, kind: str) -> None:
        """Janus accepted a report of ``kind`` ("completed", "failed", "returned")."""
        self._reports.labels(dependency, kind).inc()

    def lease_lost(self, job: LeasedJob) -> None:
        """A heartbeat or report of ``job``'s attempt was refused. A run loop goes on beating
        a lost lease until the handler returns, then reports: the attempt counts once."""
        key = (job.dependency, job.id, job.attempt)
        with self._lock:
            if key in self._seen_lost:
                return
            self._seen_lost[key] = None
            if len(self._seen_lost) > LOST_REMEMBERED:
                del self._seen_lost[next(iter(self._seen_lost))]
        self._lost.labels(job.dependency).inc()

    def serve(self, port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, threading.Thread]:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread; ``server.shutdown()``
        stops it. Port 0 picks a free port (``server.server_port``)."""
        return start_http_server(port, addr=addr, registry=self.registry)
