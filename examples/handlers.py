"""Example handlers that pretend to call a payments API.

Run one with a worker (from the repository root, or ``/app`` in the image)::

    janus worker payments --handler examples.handlers:charge --group billing
    janus worker payments --handler examples.handlers:charge_async --group billing

Each job "calls the dependency" by sleeping 20-80 ms, and about 5% of attempts fail with a
retryable ``http_503``. Both the latency and the failure are derived from a hash of the job
id and attempt number, so a given attempt always behaves the same way (reproducible runs),
while a retry of a failed job usually succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from janus.decisions import LeasedJob
from janus.worker import Retry

FAILURE_PERCENT = 5
"""Share of attempts (in percent) that fail with ``http_503``."""
MIN_LATENCY_S = 0.020
MAX_LATENCY_S = 0.080


def _roll(job: LeasedJob) -> int:
    """A stable number in [0, 2**32) for this job's attempt (not Python's salted hash())."""
    digest = hashlib.sha256(f"{job.dependency}:{job.id}:{job.attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def outcome(job: LeasedJob) -> tuple[float, bool]:
    """(simulated latency in seconds, whether this attempt fails) for ``job``."""
    roll = _roll(job)
    fails = roll % 100 < FAILURE_PERCENT
    latency = MIN_LATENCY_S + (roll >> 8) % 1000 / 1000 * (MAX_LATENCY_S - MIN_LATENCY_S)
    return latency, fails


def _result(job: LeasedJob, fails: bool) -> None:
    if fails:
        raise Retry("http_503", detail=f"simulated outage charging {job.scope}")


def charge(job: LeasedJob) -> None:
    """Synchronous handler (run in the worker's thread pool)."""
    latency, fails = outcome(job)
    time.sleep(latency)
    _result(job, fails)


async def charge_async(job: LeasedJob) -> None:
    """``async def`` handler (run as asyncio tasks by the worker)."""
    latency, fails = outcome(job)
    await asyncio.sleep(latency)
    _result(job, fails)
