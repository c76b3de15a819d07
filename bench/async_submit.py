"""Async submit benchmark: one process, many submits in flight, against sequential sync ones.

Run::

    .venv/bin/python bench/async_submit.py [--cluster] [--quick] [--json PATH] [--no-fail]

It starts ONE throwaway ``redis-server`` (or a 3-master cluster) through
:mod:`janus.testing` and measures, in the same run and against the same server:

* **sync, sequential**: one thread calling ``Janus.submit`` in a loop (one round trip per
  job: what a producer without asyncio does);
* **async, 64 in flight**: one event loop keeping 64 ``AsyncJanus.submit`` coroutines in
  flight at all times (each done coroutine is replaced at once), so auto-pipelining sends
  the calls of one tick together. Every submit is still its own atomic decision; every
  reply is checked (status ``ready``, ``created``).

Both submit the same kind of job (a fresh uuid4 id, 100-byte payload, one scope, limits that
never bind). The two sides alternate over several rounds (the order rotates) so load spikes
on this shared machine hit both alike; the median round of each is reported, with latency
p50 / p99 of every submit (for the async side: from the coroutine's start to its result,
queueing in the pipeline included). Target: async submits/s >= 3x sync submits/s.

Exit status: 0 when the target is met, 1 when it is missed (``--no-fail``: 0), 2 when the
run itself failed; every figure is printed first. The figures are also written as JSON
(every table row with its verdict, the notes, the exit status): to ``--json PATH``, else to
``bench-results/async_submit-<UTC time>.json`` under the current directory (see
``bench/_common.py``); the path is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid

from _common import (
    PAYLOAD,
    Admin,
    Report,
    bench_main,
    conclude,
    log,
    machine_text,
    pct,
    print_environment,
    python_text,
    redis_line,
    redis_under_test,
)
from janus.aio import AsyncJanus
from janus.client import Janus
from janus.policy import parse_policy_text

PREFIX = "janusbench"
IN_FLIGHT = 64
POLICY = """
dependencies:
  fast:
    rate: 1000000
    burst: 1000000000
    max_wait: 1d
    scopes:
      default: {rate: 1000000, burst: 1000000000}
"""


def sync_round(jn: Janus, n: int) -> tuple[float, list[int]]:
    lat: list[int] = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        d = jn.submit("fast", scope="a", payload=PAYLOAD, job_id=uuid.uuid4().hex)
        lat.append(time.perf_counter_ns() - t0)
        if d.status != "ready" or not d.created:
            raise RuntimeError(f"unexpected decision {d}")
    return n / (time.perf_counter() - start), lat


async def async_round(jn: AsyncJanus, n: int, in_flight: int) -> tuple[float, list[int]]:
    lat: list[int] = []
    left = n

    async def one() -> None:
        t0 = time.perf_counter_ns()
        d = await jn.submit("fast", scope="a", payload=PAYLOAD, job_id=uuid.uuid4().hex)
        lat.append(time.perf_counter_ns() - t0)
        if d.status != "ready" or not d.created:
            raise RuntimeError(f"unexpected decision {d}")

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return n / (time.perf_counter() - start), lat


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms"


def run(args: argparse.Namespace) -> int:
    rounds, n_sync, n_async = (3, 1500, 6000) if args.quick else (7, 4000, 16000)
    report = Report()
    with redis_under_test(args.cluster) as (url, pids):
        admin = Admin(list(pids))
        environment = [redis_line(admin, url, args.cluster), python_text(), machine_text()]
        print_environment(environment)
        policies = parse_policy_text(POLICY, "bench.yaml")
        sync = Janus.from_url(url, prefix=PREFIX)
        sync.apply_policies(policies)

        async def main() -> list[tuple[str, float, list[int]]]:
            out: list[tuple[str, float, list[int]]] = []
            ajn = await AsyncJanus.from_url(url, prefix=PREFIX)
            await async_round(ajn, 500, IN_FLIGHT)  # warm-up: connections, library check
            sync_round(sync, 300)
            for r in range(rounds):
                order = ["sync", "async"] if r % 2 == 0 else ["async", "sync"]
                for side in order:
                    if side == "sync":
                        rate, lat = sync_round(sync, n_sync)
                    else:
                        rate, lat = await async_round(ajn, n_async, IN_FLIGHT)
                    log(f"round {r + 1}/{rounds} {side}: {rate:,.0f} submits/s")
                    out.append((side, rate, lat))
            await ajn.close()
            return out

        results = asyncio.run(main())
        sync.close()
        admin.close()
    by_side = {
        s: [(rate, lat) for side, rate, lat in results if side == s] for s in ("sync", "async")
    }
    medians = {s: statistics.median(rate for rate, _ in v) for s, v in by_side.items()}
    lats = {s: [x for _, lat in v for x in lat] for s, v in by_side.items()}
    ratio = medians["async"] / medians["sync"]
    report.section(f"submits from one process ({'cluster' if args.cluster else 'standalone'})")
    report.add("sync Janus.submit, sequential", f"{medians['sync']:,.0f} submits/s")
    report.add(f"AsyncJanus.submit, {IN_FLIGHT} in flight", f"{medians['async']:,.0f} submits/s")
    report.add("async / sync", f"{ratio:.2f}x", ">= 3x", ratio >= 3)
    for side in ("sync", "async"):
        report.add(f"{side} latency p50", ms(pct(lats[side], 50)))
        report.add(f"{side} latency p99", ms(pct(lats[side], 99)))
    for side in ("sync", "async"):
        runs = ", ".join(f"{rate:,.0f}" for rate, _ in by_side[side])
        report.notes.append(f"{side} rounds (submits/s): {runs}")
    report.notes.append(
        f"{rounds} rounds of {n_sync} sync and {n_async} async submits, alternating; medians"
    )
    return conclude(
        "async_submit",
        report,
        [],
        json_path=args.json,
        no_fail=args.no_fail,
        quick=args.quick,
        environment=environment,
        figures={
            "sync_submits_per_s": medians["sync"],
            "async_submits_per_s": medians["async"],
            "in_flight": IN_FLIGHT,
            "ratio": ratio,
            "ratio_pass": ratio >= 3,
            "rounds": {s: [rate for rate, _ in v] for s, v in by_side.items()},
        },
        cluster=args.cluster,
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main(
        "async_submit", __doc__, argv, run, quick_help="fewer, shorter rounds", cluster=True
    )


if __name__ == "__main__":
    sys.exit(main())
