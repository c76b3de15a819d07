"""Handlers for worker processes started by the real-time tests (``janus worker --handler
tests.realtime.handlers:<name>``). Each records what it ran to Redis keys under
``$JANUS_TEST_PREFIX:t:*`` (outside Janus's own keys), so a test reads what every worker
process did, even one it killed.

Environment: ``JANUS_TEST_REDIS`` (URL), ``JANUS_TEST_PREFIX`` (key prefix),
``JANUS_TEST_SLEEP_MS`` (handler time, default 0).
"""

from __future__ import annotations

import os
import time

import redis

from janus.decisions import LeasedJob
from janus.worker import Retry

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["JANUS_TEST_REDIS"])
    return _client


def _key(name: str) -> str:
    return f"{os.environ['JANUS_TEST_PREFIX']}:t:{name}"


def _note(job: LeasedJob) -> None:
    line = f"{job.id} {job.attempt} {job.started_ms} {job.scope} {job.cost} {os.getpid()}"
    _redis().rpush(_key("started"), line)


def record(job: LeasedJob) -> None:
    """Note the start, work for JANUS_TEST_SLEEP_MS, succeed."""
    _note(job)
    time.sleep(int(os.environ.get("JANUS_TEST_SLEEP_MS", "0")) / 1000)


def fail_first(job: LeasedJob) -> None:
    """Note the start; the first attempt fails (retryable), later ones succeed."""
    _note(job)
    if job.attempt == 1:
        raise Retry("http_503")


def hang(job: LeasedJob) -> None:
    """Note the start, then never finish (the test kills this worker)."""
    _note(job)
    time.sleep(3600)
