"""A worker process for tests/realtime/test_reliability.py (started as a subprocess).

Run as ``python tests/reliability_worker.py MODE URL PREFIX DEP N``. Everything it reports
goes to Redis keys under ``PREFIX:t:*`` (outside Janus's own keys), so the test can read what
each worker saw even after the worker was SIGKILLed.

Modes:

``batch URL PREFIX DEP N`` and ``each URL PREFIX DEP N``
    Consumer ``b{N}-{pid}`` / ``e{N}-{pid}`` in group ``g``: an explicit fetch / work /
    report loop with :data:`SLOTS` slots. It INCRs ``PREFIX:t:ready`` once it is about to
    fetch, and ``PREFIX:t:group_created`` whenever a fetch says it created the group (a new
    group, or Redis came back without it). Each fetch asks for as many jobs as it has free
    slots (``Worker.fetch_result``), and waits for the idle-worker signal when it got none.

    * ``batch``: fetches into all its slots, works every job it got, then reports all of
      them in **one** ``w.report([...])`` call: a SIGKILL lands while it holds a fetched
      batch (those leases expire and are reclaimed) or while a batch report is in flight
      (applied in full or not at all).

      So that a test can kill it at those two points for certain, it stops when
      ``PREFIX:t:hold`` is ``"fetch <consumer>"`` (right after a fetch that gave it at least
      two jobs) or ``"report <consumer>"`` (right after a batch report that completed at
      least two jobs, before it records them), SETs ``PREFIX:t:held:<consumer>`` =
      ``"fetch|report job_id:attempt ..."`` and waits there to be killed.
    * ``each``: keeps its slots filled (fetches into the ones free), works the oldest job
      it holds and reports it alone (``w.report([one])``), so it holds fetched,
      not-yet-started jobs most of the time.

    After a report it RPUSHes, in one command, ``"job_id attempt consumer"`` to
    ``PREFIX:t:results`` for every accepted completion, and ``"job_id attempt consumer
    reason"`` to ``PREFIX:t:lost`` for every refused one. Redis outages (RedisUnavailable)
    are ridden out: a report whose answer was lost is re-sent with the *same* outcomes
    (same report ids) until Redis answers, so the worker always learns whether Janus took
    it (an outcome applied before the outage is answered ``ok`` again). Exits when
    ``PREFIX:t:stop`` exists, when its parent dies, or after ``MAX_LIFETIME_S``.

``pause URL PREFIX DEP N``
    Consumer ``p{N}-{pid}``: fetches one job, heartbeats it from a thread (every lease/3),
    SETs ``PREFIX:t:fetched`` = ``"job_id attempt consumer"``, then waits for the key
    ``PREFIX:t:go1``, calls ``complete`` and SETs ``PREFIX:t:outcome1`` (``completed`` or
    ``lease_lost:<reason>``); then the same with ``go2`` / ``outcome2``. The heartbeat thread
    stops at its first LeaseLost and SETs ``PREFIX:t:heartbeat`` = ``lease_lost:<reason>``.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from janus.calls import Outcome
from janus.client import Janus
from janus.decisions import LeasedJob, ReportResult
from janus.errors import LeaseLost, RedisUnavailable
from janus.worker import Worker

MAX_LIFETIME_S = 120.0
GROUP = "g"
#: Jobs a loop worker holds at most (its free slots bound every fetch).
SLOTS = 8
#: The consumer name's first letter, per mode (the test names processes the same way).
LETTERS = {"batch": "b", "each": "e", "pause": "p"}
T = TypeVar("T")


class _Watchdog:
    """Exit conditions shared by every mode: parent gone, or lived too long."""

    def __init__(self) -> None:
        self.parent = os.getppid()
        self.deadline = time.monotonic() + MAX_LIFETIME_S

    def expired(self) -> bool:
        return os.getppid() != self.parent or time.monotonic() > self.deadline


def _persist(what: Callable[[], T], watchdog: _Watchdog) -> T:
    """Run a plain Redis command until it goes through (Redis may be restarting)."""
    delay = 0.05
    while True:
        try:
            return what()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            if watchdog.expired():
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _ride_out(what: Callable[[], T], watchdog: _Watchdog) -> T:
    """Run a Janus call until Redis answers it (RedisUnavailable is ridden out)."""
    delay = 0.05
    while True:
        try:
            return what()
        except RedisUnavailable:
            if watchdog.expired():
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _connect(url: str, prefix: str, watchdog: _Watchdog) -> Janus:
    return _ride_out(lambda: Janus.from_url(url, prefix=prefix, socket_timeout=2.0), watchdog)


def _report(w: Worker, outcomes: list[Outcome], watchdog: _Watchdog) -> list[ReportResult]:
    """One report call for ``outcomes``, re-sent unchanged (same report ids) through outages:
    a re-send of outcomes Janus already applied gets the same answers."""
    return _ride_out(lambda: w.report(outcomes), watchdog)


def _hold(client: redis.Redis, key: str, what: str, jobs: list[LeasedJob], wd: _Watchdog) -> int:
    """Say where this worker stopped and which jobs it holds, then wait to be killed."""
    held = " ".join(f"{job.id}:{job.attempt}" for job in jobs)
    _persist(lambda: client.set(key, f"{what} {held}"), wd)
    while not wd.expired():
        time.sleep(0.05)
    return 3


def run_loop(mode: str, url: str, prefix: str, dependency: str, n: int) -> int:
    watchdog = _Watchdog()
    consumer = f"{LETTERS[mode]}{n}-{os.getpid()}"
    jn = _connect(url, prefix, watchdog)
    client = jn.store.client
    t = f"{prefix}:t"
    w = jn.worker(dependency, group=GROUP, consumer=consumer)
    _persist(lambda: client.incr(f"{t}:ready"), watchdog)
    rng = random.Random()
    held: list[LeasedJob] = []
    hold = ""
    while not watchdog.expired():
        try:
            stop, raw_hold = client.mget(f"{t}:stop", f"{t}:hold")
            if not held and stop:
                break
            hold = raw_hold.decode() if raw_hold else ""
            result = w.fetch_result(SLOTS - len(held))
            if result.group_created:
                _persist(lambda: client.incr(f"{t}:group_created"), watchdog)
            held.extend(result.jobs)
            if not held:
                w.wait_for_work(result, 0.2)
                continue
        except (RedisUnavailable, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            # The next fetch re-sends this one's fetch id: a lost answer is recovered then.
            # Meanwhile the jobs already held are worked and reported.
            if not held:
                time.sleep(0.05)
                continue
        if mode == "batch":
            batch, held = held, []
            if hold == f"fetch {consumer}" and len(batch) >= 2:
                return _hold(client, f"{t}:held:{consumer}", "fetch", batch, watchdog)
        else:
            batch, held = held[:1], held[1:]
        outcomes = []
        for job in batch:
            time.sleep(rng.uniform(0.001, 0.003))  # the "work"
            outcomes.append(w.completed(job))
        results = _report(w, outcomes, watchdog)
        answered = list(zip(outcomes, results, strict=True))
        done = [f"{o.job.id} {o.job.attempt} {consumer}" for o, r in answered if r.ok]
        lost = [
            f"{o.job.id} {o.job.attempt} {consumer} {r.reason}" for o, r in answered if not r.ok
        ]
        if mode == "batch" and hold == f"report {consumer}" and len(done) >= 2:
            accepted = [o.job for o, r in answered if r.ok]
            return _hold(client, f"{t}:held:{consumer}", "report", accepted, watchdog)
        for key, items in ((f"{t}:results", done), (f"{t}:lost", lost)):
            if items:  # one RPUSH per list: a SIGKILL leaves all its lines or none
                _persist(lambda key=key, items=items: client.rpush(key, *items), watchdog)
    jn.close()
    return 0


def run_pause(url: str, prefix: str, dependency: str, n: int) -> int:
    watchdog = _Watchdog()
    consumer = f"{LETTERS['pause']}{n}-{os.getpid()}"
    jn = Janus.from_url(url, prefix=prefix)
    client = jn.store.client
    w = jn.worker(dependency, group=GROUP, consumer=consumer)
    lease_ms = int(jn.store.policy_fields(dependency)["lease_ms"])
    jobs: list[LeasedJob] = []
    while not jobs:
        if watchdog.expired():
            return 2
        jobs = w.fetch(count=1, block_ms=200)
    (job,) = jobs
    done = threading.Event()

    def beat() -> None:
        held = job
        while not done.wait(lease_ms / 3000):
            try:
                held = w.heartbeat(held)
            except LeaseLost as exc:
                client.set(f"{prefix}:t:heartbeat", f"lease_lost:{exc.reason}")
                return

    threading.Thread(target=beat, daemon=True).start()
    client.set(f"{prefix}:t:fetched", f"{job.id} {job.attempt} {consumer}")
    for round_ in ("1", "2"):
        while not client.exists(f"{prefix}:t:go{round_}"):
            if watchdog.expired():
                return 2
            time.sleep(0.02)
        try:
            w.complete(job)
            outcome = "completed"
        except LeaseLost as exc:
            outcome = f"lease_lost:{exc.reason}"
        client.set(f"{prefix}:t:outcome{round_}", outcome)
    done.set()
    jn.close()
    return 0


def main(argv: list[str]) -> int:
    mode, url, prefix, dependency, n = argv
    if mode in ("batch", "each"):
        return run_loop(mode, url, prefix, dependency, int(n))
    if mode == "pause":
        return run_pause(url, prefix, dependency, int(n))
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
