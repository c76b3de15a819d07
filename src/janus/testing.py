"""Public test helpers: throwaway real Redis servers and an explicit clock, for
deterministic tests of Janus against a real Redis.

:class:`RedisServer` (a ``redis-server`` child process on a free loopback port, with its own
temporary directory) and :class:`RedisCluster` (three or more of them joined into a Redis
Cluster) stop themselves on exit, at interpreter exit and, on Linux, when this process dies;
:func:`free_port` picks the port. They need the ``redis-server`` binary only (no Docker) and
are administered through redis-py (defined in :mod:`janus._servers`).

The only clock in production is Redis's ``TIME``: no public constructor takes a clock, and
the scripts refuse an explicit time for any dependency whose policy was not applied in
*test mode*. A client from :func:`connect` with a :class:`FakeClock` applies its policies in
test mode (the policy field ``test_clock``); ``janus doctor`` reports such a dependency as an
error and the coordinator logs it at start-up, so test mode cannot slip into a deployment
unnoticed. A dependency is taken out of test mode by applying its policy normally
(``janus policy apply``).

>>> from janus.testing import FakeClock, RedisServer, connect
>>> with RedisServer.start() as server:                         # doctest: +SKIP
...     clock = FakeClock()
...     jn = connect(server.url, prefix="t1", clock=clock)
...     jn.apply_policies(policies)         # in test mode: the scripts use clock's time
...     jn.submit("pay", scope="a")
...     clock.advance_ms(100)
"""

from __future__ import annotations

from dataclasses import dataclass

from janus._servers import (
    INSTALL_HINT,
    RedisCluster,
    RedisServer,
    find_redis_server,
    free_port,
)
from janus.aio import AsyncJanus
from janus.client import Janus

__all__ = [
    "INSTALL_HINT",
    "T0_US",
    "FakeClock",
    "RedisCluster",
    "RedisServer",
    "connect",
    "connect_async",
    "find_redis_server",
    "free_port",
]

T0_US = 1_800_000_000_000_000
"""A fixed, realistic Redis time (2027) in microseconds: where a FakeClock starts."""


@dataclass
class FakeClock:
    """Time passed explicitly to the scripts (microseconds); never slept on."""

    now_us: int = T0_US

    def __call__(self) -> int:
        return self.now_us

    def advance_ms(self, ms: float) -> int:
        self.now_us += int(ms * 1000)
        return self.now_us

    @property
    def now_ms(self) -> int:
        return self.now_us // 1000


def connect(
    url: str,
    *,
    prefix: str = "janus",
    clock: FakeClock | None = None,
    socket_timeout: float = 5.0,
    max_payload_bytes: int | None = None,
) -> Janus:
    """A Janus client for tests. With ``clock``, every call it (and its workers) makes
    carries the clock's time, and the policies it applies are in test mode, so the scripts
    accept that time; without, it is an ordinary client."""
    kwargs = {} if max_payload_bytes is None else {"max_payload_bytes": max_payload_bytes}
    jn = Janus.from_url(url, prefix=prefix, socket_timeout=socket_timeout, **kwargs)
    jn._clock = clock
    return jn


async def connect_async(
    url: str,
    *,
    prefix: str = "janus",
    clock: FakeClock | None = None,
    socket_timeout: float = 5.0,
    max_payload_bytes: int | None = None,
) -> AsyncJanus:
    """:func:`connect` for asyncio: an :class:`janus.aio.AsyncJanus` (with ``clock``: in test
    mode, every call it and its workers make carries the clock's time)."""
    kwargs = {} if max_payload_bytes is None else {"max_payload_bytes": max_payload_bytes}
    jn = await AsyncJanus.from_url(url, prefix=prefix, socket_timeout=socket_timeout, **kwargs)
    jn._clock = clock
    return jn


def with_clock(jn: Janus, clock: FakeClock | None) -> Janus:
    """``jn`` (an existing client) using ``clock`` from now on (see :func:`connect`)."""
    jn._clock = clock
    return jn
