"""A worker process for tests/integration/test_reliability.py (started as a subprocess).

Run as ``python tests/reliability_worker.py MODE URL PREFIX ...``. Everything it reports goes
to Redis keys under ``PREFIX:t:*`` (outside Janus's own keys), so the test can read what each
worker saw even after the worker was SIGKILLed.

Modes:

``loop URL PREFIX DEP N``
    Consumer ``w{N}-{pid}`` in group ``g``: an explicit fetch / work / complete loop. It
    INCRs ``PREFIX:t:ready`` once it is about to fetch. After a ``complete`` that succeeded
    it RPUSHes ``"job_id attempt consumer"`` to ``PREFIX:t:results``; after a LeaseLost it
    RPUSHes ``"job_id attempt consumer reason"`` to ``PREFIX:t:lost``. Redis outages
    (RedisUnavailable) are ridden out. Exits when ``PREFIX:t:stop`` exists, when its parent
    dies, or after ``MAX_LIFETIME_S``.

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

from janus.client import Janus
from janus.decisions import LeasedJob
from janus.errors import LeaseLost, RedisUnavailable
from janus.worker import Worker

MAX_LIFETIME_S = 120.0
T = TypeVar("T")


class _Watchdog:
    """Exit conditions shared by both modes: parent gone, or lived too long."""

    def __init__(self) -> None:
        self.parent = os.getppid()
        self.deadline = time.monotonic() + MAX_LIFETIME_S

    def expired(self) -> bool:
        return os.getppid() != self.parent or time.monotonic() > self.deadline


def _persist(what: Callable[[], T], watchdog: _Watchdog) -> T:
    """Run a plain Redis write until it goes through (Redis may be restarting)."""
    delay = 0.05
    while True:
        try:
            return what()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            if watchdog.expired():
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _connect(url: str, prefix: str, watchdog: _Watchdog) -> Janus:
    delay = 0.05
    while True:
        try:
            return Janus.from_url(url, prefix=prefix, socket_timeout=2.0)
        except RedisUnavailable:
            if watchdog.expired():
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _complete(w: Worker, job: LeasedJob) -> str | None:
    """Report success like Worker.run does: retry through outages while the lease may still
    be live. Returns None when accepted, else the LeaseLost reason (or "unreported")."""
    delay = 0.05
    while True:
        try:
            w.complete(job)
            return None
        except LeaseLost as exc:
            return exc.reason
        except RedisUnavailable:
            if time.time() * 1000 >= job.lease_deadline_ms:
                return "unreported"  # the lease is over: Janus reclaims the attempt
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def run_loop(url: str, prefix: str, dependency: str, n: int) -> int:
    watchdog = _Watchdog()
    consumer = f"w{n}-{os.getpid()}"
    jn = _connect(url, prefix, watchdog)
    client = jn.store.client
    results, lost, stop = f"{prefix}:t:results", f"{prefix}:t:lost", f"{prefix}:t:stop"
    w = _persist(lambda: jn.worker(dependency, group="g", consumer=consumer), watchdog)
    _persist(lambda: client.incr(f"{prefix}:t:ready"), watchdog)
    rng = random.Random()
    delay = 0.05
    while not watchdog.expired():
        try:
            if client.exists(stop):
                break
            jobs = w.fetch(count=8, block_ms=200)
            delay = 0.05
        except (RedisUnavailable, redis.exceptions.ConnectionError):
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            continue
        for job in jobs:
            time.sleep(rng.uniform(0.001, 0.003))  # the "work"
            reason = _complete(w, job)
            if reason is None:
                item = f"{job.id} {job.attempt} {consumer}"
                _persist(lambda item=item: client.rpush(results, item), watchdog)
            else:
                item = f"{job.id} {job.attempt} {consumer} {reason}"
                _persist(lambda item=item: client.rpush(lost, item), watchdog)
    jn.close()
    return 0


def run_pause(url: str, prefix: str, dependency: str, n: int) -> int:
    watchdog = _Watchdog()
    consumer = f"p{n}-{os.getpid()}"
    jn = Janus.from_url(url, prefix=prefix)
    client = jn.store.client
    w = jn.worker(dependency, group="g", consumer=consumer)
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
    if mode == "loop":
        return run_loop(url, prefix, dependency, int(n))
    if mode == "pause":
        return run_pause(url, prefix, dependency, int(n))
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
