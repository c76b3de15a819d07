"""Test helpers: policy set-up, snapshots of what Janus wrote, fetching, waiting. The test
clock (FakeClock) is public, in janus.testing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from janus.client import Janus
from janus.decisions import LeasedJob
from janus.measure import Release
from janus.policy import parse_policy_text
from janus.testing import T0_US, FakeClock, connect

__all__ = [
    "T0_US",
    "FakeClock",
    "counters",
    "flush_library",
    "keys_under",
    "library_loaded",
    "make_janus",
    "policy",
    "snapshot",
    "started",
    "take",
    "unchanged",
    "wait_until",
]


def policy(text: str) -> str:
    return "dependencies:\n" + "\n".join("  " + line for line in text.strip("\n").splitlines())


#: Which front-end make_janus builds: "sync" (janus.Janus) or "async" (janus.aio.AsyncJanus
#: behind tests.async_bridge); set per test by the ``api`` fixture (tests/conftest.py).
API: dict[str, object] = {"mode": "sync", "loop": None}


def make_janus(url: str, prefix: str, yaml_body: str, clock: FakeClock | None = None) -> Janus:
    """A client with the given dependencies applied (``yaml_body`` is under ``dependencies:``).
    Under the ``api`` fixture's "async" run it is an AsyncJanus driven through a bridge."""
    jn = connect(url, prefix=prefix, clock=clock)
    if API["mode"] == "async":
        from tests.async_bridge import Loop, bridged_janus

        loop = API["loop"]
        assert isinstance(loop, Loop)
        jn = bridged_janus(loop, jn, url, prefix)  # type: ignore[assignment]
    jn.apply_policies(parse_policy_text(policy(yaml_body), "test-policy.yaml"))
    return jn


def keys_under(client: redis.Redis | redis.RedisCluster, prefix: str) -> list[bytes]:
    if isinstance(client, redis.RedisCluster):
        found = client.scan_iter(match=f"{prefix}:*", target_nodes=redis.RedisCluster.ALL_NODES)
    else:
        found = client.scan_iter(match=f"{prefix}:*")
    return sorted(set(found))


def _value(client: redis.Redis | redis.RedisCluster, key: bytes) -> object:
    kind = client.type(key)
    if kind == b"hash":
        return sorted(client.hgetall(key).items())
    if kind == b"zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == b"stream":
        return client.xrange(key)
    if kind == b"list":
        return client.lrange(key, 0, -1)
    if kind == b"set":
        return sorted(client.smembers(key))
    return client.get(key)


def snapshot(client: redis.Redis | redis.RedisCluster, prefix: str) -> dict[bytes, object]:
    """Every key under ``prefix`` with its logical content: equal snapshots = no write.
    (Not DUMP: a large hash's serialization order can change without a write.)"""
    values = {key: _value(client, key) for key in keys_under(client, prefix)}
    return {key: v for key, v in values.items() if v is not None}  # None: expired meanwhile


def _without_counters(values: dict[bytes, object]) -> dict[bytes, object]:
    """``values`` without the fleet-wide counters (``m:*`` fields of state hashes)."""
    out: dict[bytes, object] = {}
    for key, value in values.items():
        if key.endswith(b":state") and isinstance(value, list):
            value = [(f, v) for f, v in value if not f.startswith(b"m:")]
        out[key] = value
    return out


def counters(
    client: redis.Redis | redis.RedisCluster, prefix: str, dependency: str
) -> dict[str, int]:
    """The dependency's fleet-wide counters (``m:<name>`` fields of its state hash)."""
    raw = client.hgetall(f"{prefix}:{{{dependency}}}:state")
    return {f.decode()[2:]: int(v) for f, v in raw.items() if f.startswith(b"m:")}


@contextmanager
def unchanged(
    client: redis.Redis | redis.RedisCluster, prefix: str, *, but_counters: bool = False
) -> Iterator[None]:
    """Assert that the block writes nothing under ``prefix``: no key created, changed or
    deleted. A key that expires on its own meanwhile (TTLs run on the real clock while the
    scripts run on the test's clock) is not a write, so it may be missing afterwards.
    ``but_counters``: a decision that changes nothing may still count itself (a rejection,
    a repeated job id: the ``m:*`` counters); the caller checks those on their own."""
    clean = _without_counters if but_counters else (lambda values: values)
    before = clean(snapshot(client, prefix))
    # A TTL (> 0), or already expired since the snapshot (-2): no TTL is -1.
    expiring = {k for k in before if client.pttl(k) != -1}
    yield
    after = clean(snapshot(client, prefix))
    changed = sorted(
        k
        for k in set(after) | set(before)
        if after.get(k) != before.get(k) and not (k in expiring and k not in after)
    )
    assert not changed, f"keys changed: {changed[:5]}"


def raw_client(url: str) -> redis.Redis | redis.RedisCluster:
    from janus.store import connect

    return connect(url)


def take(
    jn: Janus, dependency: str, *, group: str = "g", consumer: str = "w1", count: int = 10_000
) -> list[LeasedJob]:
    """Everything a worker can fetch right now (at the test clock's time): the releases."""
    w = jn.worker(dependency, group=group, consumer=consumer)
    out: list[LeasedJob] = []
    while True:
        got = w.fetch(count=min(count - len(out), 500), block_ms=None)
        out.extend(got)
        if not got or len(out) >= count:
            return out


def started(jobs: list[LeasedJob]) -> list[Release]:
    """Started attempts as ``Release`` records for :func:`janus.measure.check_rate`: the
    release time is the stream id the attempt was handed over with."""
    return [Release(j.started_ms, j.scope, j.cost) for j in jobs]


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str = "") -> None:
    """Wait (polling every 10 ms) until ``predicate()`` is true; fail after ``timeout_s``.
    The one way tests wait for something real-time: generous timeouts, never a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what or predicate}")
        time.sleep(0.01)


def flush_library(client: redis.Redis | redis.RedisCluster) -> None:
    """FUNCTION FLUSH on every primary (what an operator, or a fresh node, does to Janus)."""
    if isinstance(client, redis.RedisCluster):
        for node in client.get_primaries():
            conn = node.redis_connection or client.get_redis_connection(node)
            conn.function_flush()
    else:
        client.function_flush()


def library_loaded(client: redis.Redis | redis.RedisCluster) -> list[bool]:
    """Per primary: is the Janus library there?"""
    from janus import scripts

    nodes = (
        [n.redis_connection or client.get_redis_connection(n) for n in client.get_primaries()]
        if isinstance(client, redis.RedisCluster)
        else [client]
    )
    return [bool(node.function_list(library=scripts.LIBRARY)) for node in nodes]
