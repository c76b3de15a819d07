"""Test helpers: an explicit clock, policy set-up, and snapshots of what Janus wrote."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from janus.client import Janus
from janus.policy import parse_policy_text

T0_US = 1_800_000_000_000_000  # a fixed, realistic Redis time (2027) in microseconds


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


def policy(text: str) -> str:
    return "dependencies:\n" + "\n".join("  " + line for line in text.strip("\n").splitlines())


def make_janus(url: str, prefix: str, yaml_body: str, clock: FakeClock | None = None) -> Janus:
    """A client with the given dependencies applied (``yaml_body`` is under ``dependencies:``)."""
    jn = Janus.from_url(url, prefix=prefix, clock=clock)
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


@contextmanager
def unchanged(client: redis.Redis | redis.RedisCluster, prefix: str) -> Iterator[None]:
    """Assert that the block writes nothing under ``prefix``: no key created, changed or
    deleted. A key that expires on its own meanwhile (TTLs run on the real clock while the
    scripts run on the test's clock) is not a write, so it may be missing afterwards."""
    before = snapshot(client, prefix)
    expiring = {k for k in before if client.pttl(k) > 0}
    yield
    after = snapshot(client, prefix)
    changed = sorted(
        k
        for k in set(after) | set(before)
        if after.get(k) != before.get(k) and not (k in expiring and k not in after)
    )
    assert not changed, f"keys changed: {changed[:5]}"


def raw_client(url: str) -> redis.Redis | redis.RedisCluster:
    from janus.store import connect

    return connect(url)
