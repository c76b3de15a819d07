"""Prometheus metrics: what the whole fleet did and where each dependency stands, read from
Redis at every scrape (``janus exporter``, ``janus coordinator --metrics-port``).

The counters are kept in Redis by the functions themselves (fields ``m:<name>`` of each
dependency's state hash, added to in the writes a decision makes anyway), so one exporter
sees every producer, worker and coordinator, and a restarted exporter loses nothing. The
gauges are the dependency's status at the scrape. Names are ``janus_*``, counters end in
``_total``, times are in seconds, every series has the label ``dependency``; a ``scope``
label only on the opt-in ``janus_scope_waiting_*`` gauges (``--top-scopes N``), for at most
N scopes per dependency (a tenant label on everything would multiply the series by the
number of tenants).

A scrape reads three small things per dependency (status, counters, policy version): run one
exporter per deployment, not one per process. When Redis does not answer, the scrape still
succeeds with ``janus_up 0`` and the error is logged, so an alert can tell "Janus reports
nothing" from "Janus is down".

What only a worker process can see (handler and fetch durations, its reports by outcome,
its lost leases, handlers running) that worker serves itself: see
:mod:`janus.worker_metrics` (``janus worker --metrics-port``), metrics named
``janus_worker_*``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from janus.client import Janus
from janus.decisions import DependencyStatus
from janus.errors import JanusError

log = logging.getLogger("janus.metrics")

#: Counters without a label of their own: counter name in Redis -> (metric, help).
SIMPLE = {
    "started": ("janus_started_total", "Attempts started (released to a worker, lease begun)."),
    "started_cost": ("janus_started_cost_total", "Cost of the attempts started."),
    "completed": ("janus_completed_total", "Attempts reported completed."),
    "failed": ("janus_failed_total", "Attempts reported failed by a worker."),
    "returned": ("janus_returned_total", "Attempts given back unstarted."),
    "retried": ("janus_retries_total", "Retries scheduled (after a failure or lease expiry)."),
    "lease_expired": ("janus_lease_expired_total", "Leases that expired unreported."),
    "paused": ("janus_pauses_total", "Pauses applied (a Retry-After from a worker)."),
    "held": ("janus_manual_pauses_total", "Pauses by hand (janus pause)."),
}
#: The release lag's buckets as the functions count them (lag_le:<ms>, lua/include/release.lua).
LAG_BUCKETS_MS = (5, 25, 100, 500, 1000, 5000, 30000, 120000)
#: Counters with a label: prefix in Redis -> (metric, label, help).
LABELLED = {
    "submit": ("janus_submits_total", "decision", "Submits accepted: ready, scheduled, existing."),
    "rejected": ("janus_rejections_total", "reason", "Submits rejected, by reason."),
    "dead": ("janus_dead_letters_total", "reason", "Jobs dead-lettered, by reason."),
    "circuit": ("janus_circuit_transitions_total", "to", "Circuit breaker state changes."),
}
CIRCUIT_STATES = ("closed", "open", "half_open")
#: The cap on opt-in per-scope series per dependency (``janus exporter --top-scopes``).
MAX_TOP_SCOPES = 100


class JanusCollector(Collector):
    """Collects every dependency's counters and status from Redis at each scrape."""

    def __init__(
        self, jn: Janus, dependencies: list[str] | None = None, *, top_scopes: int = 0
    ) -> None:
        if isinstance(top_scopes, bool) or not isinstance(top_scopes, int):
            raise TypeError(f"top_scopes must be an integer, got {top_scopes!r}")
        if not 0 <= top_scopes <= MAX_TOP_SCOPES:
            raise ValueError(f"top_scopes must be 0 to {MAX_TOP_SCOPES}, got {top_scopes}")
        self.jn = jn
        self.dependencies = dependencies
        self.top_scopes = top_scopes
        self._lock = threading.Lock()  # one scrape at a time over the client

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("janus_up", "1 when Janus's Redis answered this scrape.")
        with self._lock:
            try:
                rows = [(dep, *self._read(dep)) for dep in self._names()]
            except JanusError as exc:
                log.warning("scrape failed: %s", exc)
                up.add_metric([], 0)
                yield up
                return
        up.add_metric([], 1)
        yield up
        yield from _counter_families(rows)
        yield from _gauge_families(rows, self.jn.store.time_us() / 1e6)
        if self.top_scopes:
            yield from _scope_families(rows, self.top_scopes)

    def _names(self) -> list[str]:
        return self.dependencies or self.jn.store.dependencies()

    def _read(self, dep: str) -> tuple[DependencyStatus, dict[str, int]]:
        return self.jn.status(dep, top=max(self.top_scopes, 1)), self.jn.counters(dep)


def _counter_families(
    rows: list[tuple[str, DependencyStatus, dict[str, int]]],
) -> Iterator[Metric]:
    simple = {k: CounterMetricFamily(m.removesuffix("_total"), h, labels=["dependency"])
              for k, (m, h) in SIMPLE.items()}  # fmt: skip
    labelled = {
        k: CounterMetricFamily(m.removesuffix("_total"), h, labels=["dependency", label])
        for k, (m, label, h) in LABELLED.items()
    }
    for dep, _, counts in rows:
        for name in SIMPLE:
            simple[name].add_metric([dep], counts.get(name, 0))
        for name, value in sorted(counts.items()):
            kind, _, label = name.partition(":")
            if label and kind in labelled:
                labelled[kind].add_metric([dep, label], value)
    yield from simple.values()
    yield from labelled.values()
    lag = HistogramMetricFamily(
        "janus_release_lag_seconds",
        "From when Janus allowed a job to run (its not_before) to its release to a worker.",
        labels=["dependency"],
    )
    for dep, _, counts in rows:
        buckets, total = [], 0
        for le in LAG_BUCKETS_MS:
            total += counts.get(f"lag_le:{le}", 0)
            buckets.append((str(le / 1000), total))
        total += counts.get("lag_le:inf", 0)
        buckets.append(("+Inf", total))
        lag.add_metric([dep], buckets, counts.get("lag_ms_sum", 0) / 1000)
    yield lag


def _gauge_families(
    rows: list[tuple[str, DependencyStatus, dict[str, int]]], now_s: float
) -> Iterator[Metric]:
    def gauge(name: str, text: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, labels=["dependency", *labels])

    g = {
        "scheduled": gauge("janus_scheduled_jobs", "Jobs waiting in Janus (ready or delayed)."),
        "cost": gauge("janus_queued_cost", "Cost of the jobs waiting."),
        "in_flight": gauge("janus_in_flight", "Attempts running with a live lease."),
        "stream": gauge("janus_stream_entries", "Entries on the group streams."),
        "dead": gauge("janus_dead_letter_entries", "Dead letters kept (the DLQ's length)."),
        "scopes": gauge("janus_active_scopes", "Scopes with ready work."),
        "parked": gauge("janus_parked_retries", "Retries waiting for a retry-budget token."),
        "budget": gauge("janus_retry_budget_tokens", "Retry tokens banked (last update)."),
        "version": gauge("janus_policy_version", "Version of the applied policy."),
        "circuit": gauge("janus_circuit_state", "1 for the circuit's current state.", "state"),
        "open_until": gauge(
            "janus_circuit_open_until_seconds", "Unix time the open circuit half-opens."
        ),
        "paused": gauge("janus_paused_until_seconds", "Unix time a Retry-After pause ends."),
        "held": gauge(
            "janus_held", "1 while the dependency is paused by hand (janus pause), else 0."
        ),
        "held_until": gauge(
            "janus_held_until_seconds", "Unix time a timed pause by hand ends (absent: none)."
        ),
        "held_scopes": gauge("janus_held_scopes", "Scopes paused by hand."),
        "deleting": gauge("janus_deleting", "1 while the policy is being deleted (draining)."),
        "max_in_flight": gauge(
            "janus_max_in_flight", "The policy's in-flight limit (absent: none)."
        ),
        "tokens": gauge("janus_bucket_tokens", "Cost the dependency bucket lets through now."),
        "oldest": gauge(
            "janus_oldest_waiting_seconds",
            "Age of the oldest job among each scope's first waiting ones (absent: none waits).",
        ),
        "due_in": gauge(
            "janus_next_due_seconds", "Seconds until the next delayed job is due (<0: late)."
        ),
    }
    for dep, st, _ in rows:
        g["scheduled"].add_metric([dep], st.scheduled)
        g["cost"].add_metric([dep], st.queued_cost)
        g["in_flight"].add_metric([dep], st.in_flight)
        g["stream"].add_metric([dep], st.stream_length)
        g["dead"].add_metric([dep], st.dead_letters)
        g["scopes"].add_metric([dep], st.active_scopes)
        g["parked"].add_metric([dep], st.parked)
        if st.retry_budget is not None:
            g["budget"].add_metric([dep], st.retry_budget)
        if st.policy_version is not None:
            g["version"].add_metric([dep], st.policy_version)
        for state in CIRCUIT_STATES:
            g["circuit"].add_metric([dep, state], 1 if st.circuit == state else 0)
        if st.circuit_open_until_ms:
            g["open_until"].add_metric([dep], st.circuit_open_until_ms / 1000)
        if st.paused_until_ms:
            g["paused"].add_metric([dep], st.paused_until_ms / 1000)
        if st.next_due_us is not None:
            g["due_in"].add_metric([dep], st.next_due_us / 1e6 - now_s)
        g["held"].add_metric([dep], 1 if st.held_until_ms is not None else 0)
        if st.held_until_ms is not None and st.held_until_ms > 0:
            g["held_until"].add_metric([dep], st.held_until_ms / 1000)
        g["held_scopes"].add_metric([dep], st.held_scopes)
        g["deleting"].add_metric([dep], 1 if st.deleting else 0)
        if st.max_in_flight is not None:
            g["max_in_flight"].add_metric([dep], st.max_in_flight)
        if st.tokens is not None:
            g["tokens"].add_metric([dep], st.tokens)
        if st.oldest_waiting_ms is not None:
            g["oldest"].add_metric([dep], max(now_s - st.oldest_waiting_ms / 1000, 0.0))
    yield from g.values()


def _scope_families(
    rows: list[tuple[str, DependencyStatus, dict[str, int]]], top: int
) -> Iterator[Metric]:
    """Opt-in (``--top-scopes N``): each dependency's N scopes with the most work waiting,
    labelled ``scope``: at most N series per dependency, whatever the number of tenants."""
    jobs = GaugeMetricFamily(
        "janus_scope_waiting_jobs",
        "Jobs waiting, for each dependency's top scopes by waiting work (opt-in).",
        labels=["dependency", "scope"],
    )
    cost = GaugeMetricFamily(
        "janus_scope_waiting_cost",
        "Cost waiting, for each dependency's top scopes by waiting work (opt-in).",
        labels=["dependency", "scope"],
    )
    for dep, st, _ in rows:
        for load in st.top_scopes[:top]:
            jobs.add_metric([dep, load.scope], load.waiting_jobs)
            cost.add_metric([dep, load.scope], load.waiting_cost)
    yield jobs
    yield cost


def registry(
    jn: Janus, dependencies: list[str] | None = None, *, top_scopes: int = 0
) -> CollectorRegistry:
    """A registry holding only Janus's collector (no process metrics of this exporter)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(JanusCollector(jn, dependencies, top_scopes=top_scopes))
    return reg


def serve(
    jn: Janus,
    port: int,
    *,
    addr: str = "0.0.0.0",
    dependencies: list[str] | None = None,
    top_scopes: int = 0,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; ``server.shutdown()`` stops
    it. Port 0 picks a free port (``server.server_port``)."""
    reg = registry(jn, dependencies, top_scopes=top_scopes)
    server, thread = start_http_server(port, addr=addr, registry=reg)
    return server, thread
