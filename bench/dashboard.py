"""Dashboard benchmark: how long the dashboard's pages take to render at scale.

Run::

    .venv/bin/python bench/dashboard.py [--scopes 10000] [--dead 100000] [--runs 5]

It starts ONE throwaway ``redis-server`` (:mod:`janus.testing`, never a Redis someone else
runs) and fills it (bounded: about half a minute on a small VM):

* ``big``: 10,000 scopes, each with two jobs waiting (``submit_many`` in batches);
* ``dlq``: 100,000 dead letters in 1,000 scopes: 100,000 jobs submitted, then dropped to the
  dead letters by ``delete_policy(drop=True)`` (the fastest honest way: the same function a
  ``janus policy delete --drop`` runs), the policy applied again; and 500 more that failed
  for real (a worker's report, each with its history);
* ``empty``: a dependency with nothing in it: the baseline.

Then it renders each page in process (Starlette's TestClient: routing, the Janus reads
against the real server, the templates; no network) and prints the median of ``--runs``
renders (after one warm-up), in ms, with its ratio to the baseline page (the empty
dependency's page, rendered in the same run): the overview, ``big``'s page (top 25 and top
100 scopes), ``dlq``'s dead-letter page (the first, a page deep in the stream, a rare scope
filter that reads a bounded 10,000 entries, one dead letter) and the JSON twins the live
refresh polls. No target: the figures are for reading (a page that grows with the number
of scopes or dead letters would show here as a ratio far from the others).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable

from janus.client import Janus, Job
from janus.dashboard.app import DashboardConfig, create_app
from janus.policy import parse_policy_text
from janus.testing import RedisServer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

POLICY = """
dependencies:
  big:
    rate: 1000000
    burst: 1000000000
    max_wait: 1h
    scopes:
      default: {rate: 1000000, burst: 1000000000}
  dlq:
    rate: 1000000
    burst: 1000000000
    max_wait: 1h
    max_dead_letters: 1000000
    retry: {max_attempts: 1, budget: false}
    scopes:
      default: {rate: 1000000, burst: 1000000000}
  empty:
    rate: 100
    burst: 100
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def timed(what: str, fn: Callable[[], object]) -> None:
    start = time.perf_counter()
    fn()
    log(f"  {what}: {time.perf_counter() - start:.1f} s")


def fill(jn: Janus, scopes: int, dead: int) -> None:
    payload = b'{"order": 12345, "amount_cents": 1999, "currency": "EUR", "note": "bench"}'

    def waiting() -> None:
        jobs = (Job(scope=f"tenant-{i % scopes:05d}", payload=payload) for i in range(2 * scopes))
        jn.submit_many("big", jobs)

    timed(f"{scopes:,} scopes with 2 jobs each in 'big'", waiting)

    def drop() -> None:
        jobs = (Job(scope=f"t{i % 1000:04d}", payload=payload) for i in range(dead))
        jn.submit_many("dlq", jobs)
        while not jn.delete_policy("dlq", drop=True).deleted:
            pass
        jn.apply_policies(parse_policy_text(POLICY, "bench.yaml"))

    timed(f"{dead:,} dead letters in 'dlq' (submit, then drop)", drop)

    def fail() -> None:
        jn.submit_many("dlq", (Job(scope="t0000", payload=payload) for _ in range(500)))
        w = jn.worker("dlq", group="bench", consumer="w1")
        detail = "Traceback (most recent call last): ..."
        while got := w.fetch(count=500, block_ms=None):
            w.report([w.failed(j, "http_503", detail=detail) for j in got])

    timed("500 dead letters that failed for real", fail)


def median_ms(client: TestClient, path: str, runs: int) -> tuple[float, int]:
    client.get(path)  # warm-up (templates compiled, connections open)
    times = []
    size = 0
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
        size = len(response.content)
    return statistics.median(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scopes", type=int, default=10_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with RedisServer.start() as server:
        jn = Janus.from_url(server.url, prefix="bench", socket_timeout=30)
        jn.apply_policies(parse_policy_text(POLICY, "bench.yaml"))
        log(f"filling a throwaway redis-server at {server.url}:")
        start = time.perf_counter()
        fill(jn, args.scopes, args.dead)
        log(f"  filled in {time.perf_counter() - start:.1f} s")
        st_big, st_dlq = jn.status("big", top=1), jn.status("dlq")
        client = TestClient(create_app(jn, DashboardConfig(redis_url=server.url, prefix="bench")))
        letters = jn.dead_letters("dlq")
        middle = letters[len(letters) // 2].entry_id
        pages = [
            ("baseline: an empty dependency's page", "/d/empty"),
            ("overview (3 dependencies)", "/"),
            ("overview JSON (live refresh)", "/api/overview"),
            (f"dependency page, {args.scopes:,} scopes (top 25)", "/d/big"),
            (f"dependency page, {args.scopes:,} scopes (top 100)", "/d/big?top=100"),
            ("dependency JSON (live refresh, top 25)", "/api/d/big"),
            (f"dead letters, first page of {len(letters):,}", "/d/dlq/dead"),
            ("dead letters, a page in the middle", f"/d/dlq/dead?cursor={middle}"),
            ("dead letters, a rare scope (reads <= 10,000)", "/d/dlq/dead?scope=nobody"),
            ("dead letters, the real failures (scope filter)", "/d/dlq/dead?scope=t0000"),
            ("one dead letter", f"/d/dlq/dead/{letters[-1].entry_id}"),
            ("job lookup", f"/job?dep=dlq&id={letters[-1].job_id}"),
        ]
        rows = []
        for name, path in pages:
            ms, size = median_ms(client, path, args.runs)
            rows.append((name, ms, size))
        jn.close()
    base = rows[0][1]
    print(f"janus dashboard render times (median of {args.runs}, in process, real redis-server)")
    print(
        f"data: 'big' {st_big.scheduled:,} jobs waiting in {args.scopes:,} scopes; "
        f"'dlq' {st_dlq.dead_letters:,} dead letters"
    )
    width = max(len(name) for name, _, _ in rows)
    print(f"{'page':<{width}}  {'ms':>8}  {'x baseline':>10}  {'bytes':>8}")
    for name, ms, size in rows:
        print(f"{name:<{width}}  {ms:8.1f}  {ms / base:10.1f}  {size:8,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
