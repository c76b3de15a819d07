"""``janus demo``: a live run against a throwaway redis-server that the demo starts itself.

Three tenants share one dependency ("payments": 20 jobs/s, burst 10, at most 8 in flight):
``tenant-a`` floods it, ``tenant-b`` submits steadily, ``tenant-vip`` has a larger scope
override. Submitting releases nothing: each decision is ``ready`` (its tenant allows it now),
``scheduled`` (it waits until its time) or ``rejected`` (backpressure via ``max_wait``).
Work is released only when a worker asks for it: two workers run ``Worker.run`` against a
simulated payments API (30-80 ms per call, 5% HTTP 503s, which Janus retries with backoff),
and each fetch starts attempts under every limit. A coordinator is the timer (it moves due
work and wakes idle workers); any fetch also reclaims expired leases. The run has a script:

* at 20% of the run a third worker takes jobs and crashes without a word: their leases
  expire, Janus reclaims them and hands the jobs to the others;
* from 35% to 55% the API is down (every call a 503): the retry budget caps retries (the
  others wait, parked, never dead-lettered for waiting), the circuit breaker opens, work
  waits in Janus, then half-open probes close it again;
* at 70% the API answers one call with 429 and Retry-After 2 s: every release of the
  dependency pauses for 2 s, then resumes at the policy rate.

The table shows, live, per tenant the decisions (ready / scheduled / rejected), completions
and retried 503s, and the dependency's in-flight count, waiting work, circuit, retry budget,
reclaims and dead letters.

At the end, every attempt the demo's workers were handed (``LeasedJob.started_ms``: the
release time in Redis ms, from the stream entry id) is checked against ``rate * W + burst``
for several windows W, per dependency and per tenant; each attempt's end (the Redis time of
its outcome in the job's history) gives the in-flight count over time, checked against
``max_in_flight``. Every accepted job must end completed or dead-lettered. The demo prints
"limits held, nothing lost" and exits 0 when all of that holds, else it exits 1.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import FetchResult, LeasedJob
from janus.measure import Release, by_scope, check_rate
from janus.policy import parse_policy_text
from janus.testing import RedisCluster, RedisServer
from janus.worker import Retry, Worker

DEMO_POLICY = """
dependencies:
  payments:
    rate: 20              # jobs per second, shared by every producer
    burst: 10
    max_in_flight: 8      # at most 8 calls running against the API at once
    max_wait: 5s          # longer waits are rejected: backpressure instead of a huge queue
    lease: 1500ms         # a worker silent for longer is presumed dead
    retry:
      max_attempts: 4
      backoff: {base: 200ms, factor: 2, max: 2s, jitter: full}
      retry_on: [http_5xx, http_429, timeout]
      budget: {ratio: 0.1, min_per_second: 1}
    circuit: {failure_ratio: 0.5, min_requests: 10, window: 2s, open_for: 1s, half_open_probes: 2}
    scopes:
      default: {rate: 10, burst: 5}          # each tenant alone may use half the dependency
      tenant-vip: {rate: 16, burst: 8, weight: 2}
"""
RATE, BURST, MAX_IN_FLIGHT = 20.0, 10, 8
SCOPE_LIMITS = {"tenant-a": (10.0, 5), "tenant-b": (10.0, 5), "tenant-vip": (16.0, 8)}
TENANTS = {"tenant-a": (0.0, 40), "tenant-b": (0.15, 2), "tenant-vip": (0.5, 4)}
"""tenant -> (seconds between bursts, jobs per burst): a flood, a trickle, a steady VIP."""
DECISIONS = ("ready", "scheduled", "rejected")


class SeenWorker(Worker):
    """A worker that shows the demo every attempt it is handed, whatever it then does with
    it (runs it, gives it back unstarted, or dies holding it): each one is a release."""

    def __init__(self, jn: Janus, consumer: str, seen: Demo) -> None:
        super().__init__(jn.store, "payments", group="demo", consumer=consumer)
        self.seen = seen

    def fetch_result(self, count: int) -> FetchResult:
        result = super().fetch_result(count)
        self.seen.saw(result.jobs)
        return result


class Demo:
    def __init__(self, jn: Janus) -> None:
        self.jn = jn
        self.counts: Counter[tuple[str, str]] = Counter()
        self.accepted: set[str] = set()
        self.attempts: dict[str, LeasedJob] = {}  # token -> an attempt a worker was handed
        self.peak_running = 0
        self.running = 0
        self.lock = threading.Lock()
        self.events: list[str] = []
        self.stop = threading.Event()
        self.rng = random.Random(7)
        self.started = time.monotonic()
        self.seconds = 12.0
        self.sent_429 = False
        self.last_circuit = "closed"
        self.last_phase = "healthy"

    def event(self, text: str) -> None:
        with self.lock:
            self.events.append(f"t={time.monotonic() - self.started:4.1f}s {text}")

    def produce(self, tenant: str) -> None:
        pause, per_burst = TENANTS[tenant]
        n = 0
        while not self.stop.is_set():
            jobs = [Job(scope=tenant, payload=f'{{"n": {n + i}}}') for i in range(per_burst)]
            n += per_burst
            for d in self.jn.submit_many("payments", jobs):
                with self.lock:
                    self.counts[(tenant, d.status)] += 1
                    if d.accepted:
                        self.accepted.add(d.job_id)
            self.stop.wait(pause if pause > 0 else 0.05)

    def saw(self, jobs: list[LeasedJob]) -> None:
        with self.lock:
            for job in jobs:  # a re-sent fetch answers with the same tokens: kept once
                self.attempts[job.token] = job

    def phase(self) -> str:
        share = (time.monotonic() - self.started) / self.seconds
        if 0.35 <= share < 0.55:
            return "outage"
        if share >= 0.70 and not self.sent_429:
            return "429"
        return "healthy"

    def payments_api(self, job: LeasedJob) -> None:
        """The simulated dependency: slowish, sometimes unavailable, once down for a while."""
        with self.lock:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            time.sleep(self.rng.uniform(0.03, 0.08))
            phase = self.phase()
            if phase == "429":
                with self.lock:
                    first = not self.sent_429
                    self.sent_429 = True
                if first:
                    self.event(
                        "the API answered 429 with Retry-After 2s: every release of "
                        "payments pauses for 2s, then resumes at the policy rate"
                    )
                    raise Retry("http_429", retry_after_ms=2000)
            if phase == "outage" or self.rng.random() < 0.05:
                with self.lock:
                    self.counts[(job.scope, "http_503")] += 1
                raise Retry("http_503")
            with self.lock:
                self.counts[(job.scope, "completed")] += 1
        finally:
            with self.lock:
                self.running -= 1

    def crash_one_worker(self, at_s: float) -> None:
        """A worker that takes jobs and dies without a word (think kill -9)."""
        if self.stop.wait(at_s):
            return
        doomed = SeenWorker(self.jn, "worker-3", self)
        held: list[LeasedJob] = []
        # It asks like any worker; the fair queue serves it alongside the others.
        until = time.monotonic() + 3.0
        soon = time.monotonic() + 0.5
        while len(held) < 4 and time.monotonic() < until and not (held and time.monotonic() > soon):
            held += doomed.fetch(count=4 - len(held), block_ms=100)
        self.event(
            f"worker-3 crashed holding {len(held)} job(s); their leases expire in 1.5s "
            "and Janus hands them to the others"
        )

    def table(self, coord: Coordinator, elapsed: float) -> Group:
        st = self.jn.status("payments")
        phase = self.phase()
        if phase != self.last_phase and phase != "429":
            self.event(
                "the API is DOWN: every call fails with 503"
                if phase == "outage"
                else "the API is healthy again"
            )
            self.last_phase = phase
        if st.circuit != self.last_circuit:
            self.event(f"circuit breaker: {self.last_circuit} -> {st.circuit}")
            self.last_circuit = st.circuit
        title = f"janus demo: payments at {elapsed:4.1f}s  (20/s, burst 10, max 8 in flight)"
        table = Table(title=title)
        for col in (
            "tenant",
            "submitted",
            "ready",
            "scheduled",
            "rejected",
            "completed",
            "503s",
        ):
            table.add_column(col, justify="right", min_width=10 if col == "tenant" else None)
        with self.lock:
            for tenant in TENANTS:
                decided = [self.counts[(tenant, s)] for s in DECISIONS]
                table.add_row(
                    tenant,
                    str(sum(decided)),
                    *(str(n) for n in decided),
                    str(self.counts[(tenant, "completed")]),
                    str(self.counts[(tenant, "http_503")]),
                )
            events = list(self.events)
        budget = "-" if st.retry_budget is None else f"{st.retry_budget:.1f}"
        table.caption = (
            f"in flight: {st.in_flight} (peak {self.peak_running})  |  waiting: "
            f"{st.scheduled} (parked retries {st.parked})  |  circuit: {st.circuit}  |  "
            f"paused: {'yes' if st.paused_until_ms else 'no'}  |  retry budget: {budget}  |  "
            f"leases reclaimed by the coordinator: {coord.reclaimed}  |  dead letters: "
            f"{st.dead_letters}"
        )
        return Group(table, *(Text(e, style="yellow") for e in events))


def run_demo(*, seconds: float = 12.0, cluster: bool = False) -> int:
    console = Console()
    console.print(
        "[bold]Starting a throwaway redis-server[/bold]" + (" cluster" if cluster else "")
    )
    server = RedisCluster.start() if cluster else RedisServer.start()
    with server:
        jn = Janus.from_url(server.url, prefix="demo")
        console.print(
            f"Applied policy: {jn.apply_policies(parse_policy_text(DEMO_POLICY, 'demo.yaml'))}"
        )
        demo = Demo(jn)
        demo.seconds = seconds
        coord = Coordinator(jn.store, dependencies=["payments"])
        coord.run_in_thread(check=False)  # a throwaway server: no persistence, on purpose
        workers = [SeenWorker(jn, f"worker-{n}", demo) for n in (1, 2)]
        threads = [
            threading.Thread(
                target=w.run,
                args=(demo.payments_api,),
                kwargs={"concurrency": 6, "install_signals": False, "grace_s": 5.0},
                daemon=True,
            )
            for w in workers
        ]
        threads += [threading.Thread(target=demo.produce, args=(t,), daemon=True) for t in TENANTS]
        threads.append(
            threading.Thread(target=demo.crash_one_worker, args=(seconds / 5,), daemon=True)
        )
        start = demo.started = time.monotonic()
        for t in threads:
            t.start()
        with Live(console=console, refresh_per_second=4) as live:
            while (elapsed := time.monotonic() - start) < seconds:
                live.update(demo.table(coord, elapsed))
                time.sleep(0.25)
            demo.stop.set()  # producers stop; workers drain what waits
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                st = jn.status("payments")
                live.update(demo.table(coord, time.monotonic() - start))
                if st.scheduled == 0 and st.in_flight == 0 and st.parked == 0:
                    break
                time.sleep(0.25)
            live.update(demo.table(coord, time.monotonic() - start))
        for w in workers:
            w.stop()
        coord.stop()
        for t in threads[: len(workers)]:
            t.join(timeout=5)  # let the workers finish before the server goes away
        ok = _report(console, demo, jn, workers)
        jn.close()
    return 0 if ok else 1


def _intervals(demo: Demo, jn: Janus) -> tuple[list[tuple[int, int]], int, int]:
    """Each attempt a worker was handed as (started_ms, ended_ms), Redis time; the end is
    when its outcome was recorded (completed, failed, returned, or reclaimed after its lease
    expired: later than the lease deadline, so the in-flight count is never understated).
    An attempt with no outcome yet counts as running for ever. Also returns how many
    attempts had none and how many were reclaimed."""
    by_job: dict[str, list[LeasedJob]] = {}
    for job in demo.attempts.values():
        by_job.setdefault(job.id, []).append(job)
    out: list[tuple[int, int]] = []
    open_ended = reclaimed = 0
    forever = 2**62
    for job_id, attempts in by_job.items():
        info = jn.job("payments", job_id)
        history = info.history if info else []
        # The record's history has one entry per attempt handed out, in order (a job given
        # back unstarted reuses its attempt number, so pair by order, not by number).
        attempts.sort(key=lambda j: (j.started_ms, j.token))
        for i, job in enumerate(attempts):
            end = forever
            if i < len(history):
                at = history[i].get("at_ms")
                end = int(at) if isinstance(at, int) else forever
                reclaimed += history[i].get("error") == "lease_expired"
            open_ended += end == forever
            out.append((job.started_ms, end))
    return out, open_ended, reclaimed


def peak_in_flight(intervals: list[tuple[int, int]]) -> tuple[int, int]:
    """Most attempts running at once, and when (ms). An attempt ending in the same ms as
    another starts is counted as ended first: the stamps have 1 ms resolution, and Janus
    frees a slot before it hands it out again."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak, at, now = 0, 0, 0
    for ms, step in events:
        now += step
        if now > peak:
            peak, at = now, ms
    return peak, at


def _report(console: Console, demo: Demo, jn: Janus, workers: Sequence[Worker]) -> bool:
    releases = [Release(j.started_ms, j.scope, j.cost) for j in demo.attempts.values()]
    console.print(
        f"\n[bold]Checking {len(releases)} started attempts against the limits[/bold] "
        "(LeasedJob.started_ms: Redis time at release to a worker)"
    )
    ok = True
    groups = [("payments", releases, RATE, BURST)] + [
        (f"  {scope}", rs, *SCOPE_LIMITS[scope]) for scope, rs in sorted(by_scope(releases).items())
    ]
    for name, rs, rate, burst in groups:
        cells = []
        for rep in check_rate(rs, rate, int(burst), (100, 1000, 5000)):
            mark = "ok" if rep.ok else "[red]EXCEEDED[/red]"
            cells.append(
                f"W={rep.window_ms / 1000:g}s: {rep.worst_cost} <= {rep.allowed:.1f} {mark}"
            )
            ok &= rep.ok
        console.print(f"{name:<14} " + "   ".join(cells))
    stamps = sorted(r.ms for r in releases)
    if len(stamps) > 1:
        gap, at = max((b - a, a) for a, b in itertools.pairwise(stamps))
        console.print(
            f"longest pause between two releases: {gap} ms (from +{at - stamps[0]} ms; the "
            "Retry-After pause or the open circuit)"
        )
    intervals, open_ended, reclaimed = _intervals(demo, jn)
    peak, peak_at = peak_in_flight(intervals)
    in_flight_ok = peak <= MAX_IN_FLIGHT
    ok &= in_flight_ok
    console.print(
        f"peak attempts in flight (from started_ms to the outcome's time): {peak} <= "
        f"{MAX_IN_FLIGHT} "
        + ("ok" if in_flight_ok else f"[red]EXCEEDED[/red] at +{peak_at - stamps[0]} ms")
        + f"; {reclaimed} reclaimed after their lease expired, {open_ended} without an outcome"
        + f"; peak handler calls at once: {demo.peak_running}"
    )
    statuses = Counter((jn.job("payments", i) or _Gone).status for i in demo.accepted)
    # Accepted work ends completed or dead-lettered: "gone" (no record) would be a lost job,
    # anything else one that never finished.
    unfinished = sum(n for s, n in statuses.items() if s not in ("completed", "dead"))
    ok &= unfinished == 0
    console.print(
        f"accepted jobs: {len(demo.accepted)}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + f"; completed by workers: {sum(w.stats.completed for w in workers)}"
    )
    console.print(
        "[bold green]limits held, nothing lost[/bold green]"
        if ok
        else "[bold red]LIMIT EXCEEDED, or a job lost or unfinished[/bold red]"
    )
    return ok


class _Gone:
    status = "gone"
