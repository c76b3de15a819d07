"""Durability benchmark: what ``wait_replicas=1`` costs per call, against the same calls
without it, on one primary with one replica (both throwaway ``redis-server`` processes).

Run::

    .venv/bin/python bench/durability.py [--quick] [--json PATH] [--no-fail]

**What is measured.** In one run, alternating the two sides round by round (3 rounds,
medians): single ``submit`` latency (p50 / p99), ``submit_many`` throughput (batches of 500),
and the latency of a worker's ``fetch`` + batched ``report`` of 50 jobs, each with and
without durability. Durability sends each state-changing script and a ``WAIT 1`` in one
round trip on one connection, so the cost is the replica's acknowledgement: replication of
the write over loopback plus the replica's ``REPLCONF ACK``. The ratio with / without is the
figure; it has no target (it is the price of the guarantee), but the run fails if any call
raises or a single job is lost. What the guarantee buys is measured by
``tests/realtime/test_failover.py`` (30 of 30 acknowledged submits lost without it, 0 with).

Exit status: 0, or 2 when the run itself failed (a call raised, a job was left behind); no
figure here is a target, so none can miss (``--no-fail`` is accepted like in every benchmark
and changes nothing). The figures are also written as JSON (every table row, the notes, the
exit status): to ``--json PATH``, else to ``bench-results/durability-<UTC time>.json`` under
the current directory (see ``bench/_common.py``); the path is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

import redis

from _common import Report, bench_main, conclude, log, machine_text, pct, python_text
from janus.client import Janus, Job
from janus.policy import parse_policy_text
from janus.testing import RedisServer

POLICY = """
dependencies:
  dur:
    rate: 1000000
    burst: 1000000000
    max_wait: 1d
    lease: 60s
    scopes:
      default: {rate: 1000000, burst: 1000000000}
"""


def _sides(primary: RedisServer) -> dict[str, Janus]:
    plain = Janus.from_url(primary.url, prefix="durb")
    durable = Janus.from_url(primary.url, prefix="durb", wait_replicas=1, wait_timeout_ms=2000)
    plain.apply_policies(parse_policy_text(POLICY, "bench.yaml"))
    return {"plain": plain, "durable": durable}


def _singles(jn: Janus, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        jn.submit("dur", scope="t", job_id=uuid.uuid4().hex, payload=b"x" * 100)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def _batch_rate(jn: Janus, n: int) -> float:
    jobs = [Job(scope=f"s{i % 8}", job_id=uuid.uuid4().hex, payload=b"x" * 100) for i in range(n)]
    t0 = time.perf_counter()
    jn.submit_many("dur", jobs)
    return n / (time.perf_counter() - t0)


def _fetch_report(jn: Janus, rounds: int) -> list[float]:
    w = jn.worker("dur", group="g", consumer="c")
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jobs = w.fetch(count=50, block_ms=None)
        w.report([w.completed(j) for j in jobs])
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def run(args: argparse.Namespace) -> int:
    n_single = 300 if args.quick else 2000
    n_batch = 5000 if args.quick else 50_000
    problems: list[str] = []
    results: dict[str, dict[str, list[float]]] = {
        side: {"single": [], "batch": [], "fetch_report": []} for side in ("plain", "durable")
    }
    with (
        RedisServer.start() as primary,
        RedisServer.start(extra_args=("--replicaof", "127.0.0.1", str(primary.port))) as rep,
    ):
        link = redis.Redis(port=rep.port)
        deadline = time.monotonic() + 30
        while link.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync")
            time.sleep(0.05)
        log(f"primary {primary.port}, replica {rep.port} in sync")
        sides = _sides(primary)
        for rnd in range(3):
            order = ["plain", "durable"] if rnd % 2 == 0 else ["durable", "plain"]
            for side in order:
                jn = sides[side]
                results[side]["single"] += _singles(jn, n_single)
                results[side]["batch"].append(_batch_rate(jn, n_batch))
                results[side]["fetch_report"] += _fetch_report(jn, n_batch // 50)
                log(f"round {rnd + 1} {side}: done")
        drain = sides["plain"].worker("dur", group="g", consumer="drain")
        while jobs := drain.fetch(count=200, block_ms=None):  # what the timed loops left
            drain.report([drain.completed(j) for j in jobs])
        status = sides["plain"].status("dur")
        if status.in_flight or status.scheduled:
            problems.append(f"jobs left behind: {status}")
    report = Report()
    p, d = results["plain"], results["durable"]
    for name, label in (("single", "single submit"), ("fetch_report", "fetch 50 + report 50")):
        p50p, p50d = statistics.median(p[name]), statistics.median(d[name])
        report.add(f"{label} p50 plain / durable (us)", f"{p50p:.0f} / {p50d:.0f}")
        report.add(f"{label} p99 plain / durable (us)", f"{pct(p[name], 99):.0f} / "
                   f"{pct(d[name], 99):.0f}")  # fmt: skip
        report.add(f"{label} p50 durable / plain", f"{p50d / p50p:.2f}", "(the price)")
    bp, bd = statistics.median(p["batch"]), statistics.median(d["batch"])
    report.add("submit_many jobs/s plain / durable", f"{bp:,.0f} / {bd:,.0f}")
    report.add("submit_many durable / plain", f"{bd / bp:.2f}", "(the price)")
    report.notes.append(
        "durable = Janus.from_url(url, wait_replicas=1): each script and a WAIT 1 in one round "
        "trip; loopback replica on the same 2-core machine"
    )
    return conclude(
        "durability",
        report,
        problems,
        json_path=args.json,
        no_fail=args.no_fail,
        quick=args.quick,
        environment=[python_text(), machine_text()],
        figures={
            side: {
                "single_submit_us_p50": statistics.median(r["single"]),
                "single_submit_us_p99": pct(r["single"], 99),
                "fetch_report_50_us_p50": statistics.median(r["fetch_report"]),
                "fetch_report_50_us_p99": pct(r["fetch_report"], 99),
                "submit_many_jobs_per_s": statistics.median(r["batch"]),
            }
            for side, r in results.items()
        },
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main("durability", __doc__, argv, run, quick_help="fewer calls")


if __name__ == "__main__":
    sys.exit(main())
