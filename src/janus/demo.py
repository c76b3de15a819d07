"""``janus demo``: a live run against a throwaway redis-server that the demo starts itself.

Three tenants share one dependency ("payments", 20 jobs/s, burst 10): ``tenant-a`` floods it,
``tenant-b`` submits steadily, ``tenant-vip`` has a larger scope override. A coordinator
releases due work; the table shows, per tenant, what was submitted, released, scheduled and
rejected (backpressure via ``max_wait``), and the release rate. At the end the released
history (stream ids carry Redis time) is checked against ``rate * W + burst`` for several
windows W, per dependency and per tenant, and the demo exits non-zero if any is exceeded.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

from rich.console import Console
from rich.live import Live
from rich.table import Table

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.embedded import RedisCluster, RedisServer
from janus.measure import Release, by_scope, check_rate
from janus.policy import parse_policy_text

DEMO_POLICY = """
dependencies:
  payments:
    rate: 20              # jobs per second, shared by every producer
    burst: 10
    max_wait: 3s          # longer waits are rejected: backpressure instead of a huge queue
    lease: 30s
    scopes:
      default: {rate: 10, burst: 5}          # each tenant alone may use half the dependency
      tenant-vip: {rate: 16, burst: 8, weight: 2}
"""
RATE, BURST = 20.0, 10
SCOPE_LIMITS = {"tenant-a": (10.0, 5), "tenant-b": (10.0, 5), "tenant-vip": (16.0, 8)}
TENANTS = {"tenant-a": (0.0, 40), "tenant-b": (0.15, 2), "tenant-vip": (0.5, 4)}
"""tenant -> (seconds between bursts, jobs per burst): a flood, a trickle, a steady VIP."""


def _producer(
    jn: Janus, tenant: str, stop: threading.Event, counts: Counter[tuple[str, str]]
) -> None:
    pause, per_burst = TENANTS[tenant]
    n = 0
    while not stop.is_set():
        jobs = [Job(scope=tenant, payload=f'{{"n": {n + i}}}') for i in range(per_burst)]
        n += per_burst
        for d in jn.submit_many("payments", jobs):
            counts[(tenant, d.status)] += 1
        stop.wait(pause if pause > 0 else 0.05)


def _table(
    jn: Janus, counts: Counter[tuple[str, str]], elapsed: float, recent: deque[tuple[float, int]]
) -> Table:
    st = jn.status("payments")
    released_total = sum(v for (t, s), v in counts.items() if s == "released")
    table = Table(
        title=f"janus demo: payments, {elapsed:4.1f}s "
        f"(policy v{st.policy_version}: {RATE:g}/s, burst {BURST})"
    )
    for col in ("tenant", "submitted", "released at once", "scheduled", "rejected"):
        table.add_column(col, justify="right")
    for tenant in TENANTS:
        row = [counts[(tenant, s)] for s in ("released", "scheduled", "rejected")]
        table.add_row(tenant, str(sum(row)), *map(str, row))
    now = time.monotonic()
    while recent and now - recent[0][0] > 1.0:
        recent.popleft()
    table.caption = (
        f"delay queue: {st.scheduled} jobs  |  stream: {st.stream_length} released"
        f"  |  in flight: {st.in_flight}  |  released at submit: {released_total}"
    )
    return table


def run_demo(*, seconds: float = 12.0, cluster: bool = False) -> int:
    console = Console()
    console.print(
        "[bold]Starting a throwaway redis-server[/bold]" + (" cluster" if cluster else "")
    )
    server = RedisCluster.start() if cluster else RedisServer.start()
    with server:
        jn = Janus.from_url(server.url, prefix="demo")
        policies = parse_policy_text(DEMO_POLICY, "demo-policy.yaml")
        console.print(f"Applied policy: {jn.apply_policies(policies)}  ({server.url})")
        coord = Coordinator(jn.store, dependencies=["payments"])
        coord.run_in_thread()
        stop = threading.Event()
        counts: Counter[tuple[str, str]] = Counter()
        threads = [
            threading.Thread(target=_producer, args=(jn, t, stop, counts), daemon=True)
            for t in TENANTS
        ]
        for t in threads:
            t.start()
        start = time.monotonic()
        recent: deque[tuple[float, int]] = deque()
        with Live(console=console, refresh_per_second=4) as live:
            while (elapsed := time.monotonic() - start) < seconds:
                live.update(_table(jn, counts, elapsed, recent))
                time.sleep(0.25)
            stop.set()
            for t in threads:
                t.join()
            # Let the coordinator drain what is still queued (bounded by max_wait).
            drain_until = time.monotonic() + 4.0
            while jn.status("payments").scheduled and time.monotonic() < drain_until:
                live.update(_table(jn, counts, time.monotonic() - start, recent))
                time.sleep(0.25)
            live.update(_table(jn, counts, time.monotonic() - start, recent))
        coord.stop()
        releases = [
            Release(ms, scope, cost) for ms, scope, cost, _ in jn.store.releases("payments")
        ]
        ok = _report(console, releases, jn.status("payments").scheduled)
        jn.close()
    return 0 if ok else 1


def _report(console: Console, releases: list[Release], left: int) -> bool:
    console.print(
        f"\n[bold]Checking {len(releases)} releases against the limits[/bold] "
        "(from stream ids, i.e. Redis time)"
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
    console.print(f"still queued at exit: {left}")
    console.print(
        "[bold green]limits held[/bold green]" if ok else "[bold red]LIMIT EXCEEDED[/bold red]"
    )
    return ok
