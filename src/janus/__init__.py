"""Janus: a Redis-native distributed rate limiter and retry coordinator.

>>> from janus import Janus
>>> jn = Janus.from_url("redis://127.0.0.1:6379/0")      # doctest: +SKIP
>>> jn.submit("payments", scope="tenant-42", payload=b"{}").status  # doctest: +SKIP
'ready'
"""

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import Decision
from janus.errors import (
    InvalidCost,
    InvalidInput,
    InvalidName,
    JanusError,
    PayloadTooLarge,
    PolicyError,
    RedisUnavailable,
    UnknownDependency,
)

__version__ = "0.1.0"
__all__ = [
    "Coordinator",
    "Decision",
    "InvalidCost",
    "InvalidInput",
    "InvalidName",
    "Janus",
    "JanusError",
    "Job",
    "PayloadTooLarge",
    "PolicyError",
    "RedisUnavailable",
    "UnknownDependency",
]
