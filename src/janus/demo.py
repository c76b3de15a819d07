"""``janus demo``: a live run against a throwaway redis-server that the demo starts itself.

Three tenants share one dependency ("payments": 20 jobs/s, burst 10, at most 8 in flight):
``tenant-a`` floods it, ``tenant-b`` submits steadily, ``tenant-vip`` has a larger scope
override. A coordinator releases due work and reclaims expired leases; two workers run a
handler against a simulated payments API (30-80 ms per call, 5% HTTP 503s, which Janus
retries with backoff). The run has a script:

* at 20% of the run a third worker crashes while holding jobs: Janus reclaims its leases
  and hands the jobs to the others;
* from 35% to 55% the API is down (every call a 503): the retry budget caps retries, the
  circuit breaker opens, work waits in the queue, then half-open probes close it again;
* at 70% the API answers one call with 429 and Retry-After 2 s: every release of the
  dependency pauses for 2 s, then resumes at the policy rate.

The table shows, live, per tenant what was submitted, rejected (backpressure via
``max_wait``), completed and retried, and the dependency's in-flight count, delay queue,
circuit, reclaims and dead letters.

At the end, every release the workers saw (stream entry ids carry Redis time) is checked
against ``rate * W + burst`` for several windows W, per dependency and per tenant, and the
in-flight bound; the demo exits non-zero if any limit was exceeded or a job was lost.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import LeasedJob
from janus.embedded import RedisCluster, RedisServer
from janus.measure import Release, by_scope, check_rate
from janus.policy import parse_policy_text
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
      budget: {ratio: 0.1, min_per_second: 1, max_wait: 5s}
    circuit: {failure_ratio: 0.5, min_requests: 10, window: 2s, open_for: 1s, half_open_probes: 2}
    scopes:
      default: {rate: 10, burst: 5}          # each tenant alone may use half the dependency
      tenant-vip: {rate: 16, burst: 8, weight: 2}
"""
RATE, BURST, MAX_IN_FLIGHT = 20.0, 10, 8
SCOPE_LIMITS = {"tenant-a": (10.0, 5), "tenant-b": (10.0, 5), "tenant-vip": (16.0, 8)}
TENANTS = {"tenant-a": (0.0, 40), "tenant-b": (0.15, 2), "tenant-vip": (0.5, 4)}
"""tenant -> (seconds between bursts, jobs per burst): a flood, a trickle, a steady VIP."""


class Demo:
    def __init__(self, jn: Janus) -> None:
        self.jn = jn
        self.counts: Counter[tuple[str, str]] = Counter()
        self.accepted: set[str] = set()
        self.releases: dict[str, Release] = {}  # stream entry id -> release seen by a worker
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

    def saw(self, job: LeasedJob) -> None:
        ms = int(job.token.split("-", 1)[0])
        with self.lock:
            self.releases[job.token] = Release(ms, job.scope, job.cost)

    def phase(self) -> str:
        share = (time.monotonic() - self.started) / self.seconds
        if 0.35 <= share < 0.55:
            return "outage"
        if share >= 0.70 and not self.sent_429:
            return "429"
        return "healthy"

    def payments_api(self, job: LeasedJob) -> None:
        """The simulated dependency: slowish, sometimes unavailable, once down for a while."""
        self.saw(job)
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
        doomed = self.jn.worker("payments", group="demo", consumer="worker-3")
        held: list[LeasedJob] = []
        until = time.monotonic() + 2.0
        while len(held) < 4 and time.monotonic() < until:
            held += doomed.fetch(count=4 - len(held), block_ms=100)
        for job in held:
            self.saw(job)
        self.event(
            f"worker-3 crashed holding {len(held)} job(s); their leases expire in 1.5s "
            "and Janus hands them to the others"
        )

    def table(self, coord: Coordinator, elapsed: float) -> Group:
        st = self.jn.status("payments")
        dead = st.dead_letters
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
        for col in ("tenant", "submitted", "rejected", "completed", "HTTP 503 -> retried"):
            table.add_column(col, justify="right")
        with self.lock:
            for tenant in TENANTS:
                sub = sum(self.counts[(tenant, s)] for s in ("released", "scheduled", "rejected"))
                table.add_row(
                    tenant,
                    str(sub),
                    str(self.counts[(tenant, "rejected")]),
                    str(self.counts[(tenant, "completed")]),
                    str(self.counts[(tenant, "http_503")]),
                )
            events = list(self.events)
        budget = "-" if st.retry_budget is None else f"{st.retry_budget:.1f}"
        table.caption = (
            f"in flight: {st.in_flight} (peak {self.peak_running})  |  delay queue: "
            f"{st.scheduled}  |  circuit: {st.circuit}  |  paused: "
            f"{'yes' if st.paused_until_ms else 'no'}  |  retry budget: {budget}  |  "
            f"leases reclaimed: {coord.reclaimed}  |  dead letters: {dead}"
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
        workers = [jn.worker("payments", group="demo", consumer=f"worker-{n}") for n in (1, 2)]
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
        for t in threads:
            t.start()
        start = demo.started = time.monotonic()
        with Live(console=console, refresh_per_second=4) as live:
            while (elapsed := time.monotonic() - start) < seconds:
                live.update(demo.table(coord, elapsed))
                time.sleep(0.25)
            demo.stop.set()  # producers stop; workers drain what is queued
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                st = jn.status("payments")
                live.update(demo.table(coord, time.monotonic() - start))
                if st.scheduled == 0 and st.in_flight == 0:
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


def _report(console: Console, demo: Demo, jn: Janus, workers: list[Worker]) -> bool:
    releases = list(demo.releases.values())
    console.print(
        f"\n[bold]Checking {len(releases)} releases against the limits[/bold] "
        "(stream entry ids, i.e. Redis time at release)"
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
    running_ok = demo.peak_running <= MAX_IN_FLIGHT
    ok &= running_ok
    console.print(
        f"peak concurrent calls to the API: {demo.peak_running} <= {MAX_IN_FLIGHT} "
        + ("ok" if running_ok else "[red]EXCEEDED[/red]")
    )
    statuses = Counter((jn.job("payments", i) or _Gone).status for i in demo.accepted)
    lost = statuses.get("gone", 0)
    ok &= lost == 0
    console.print(
        f"accepted jobs: {len(demo.accepted)}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + f"; completed by workers: {sum(w.stats.completed for w in workers)}"
    )
    console.print(
        "[bold green]limits held, nothing lost[/bold green]"
        if ok
        else "[bold red]LIMIT EXCEEDED or JOB LOST[/bold red]"
    )
    return ok


class _Gone:
    status = "gone"
