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


def snapshot(client: redis.Redis | redis.RedisCluster, prefix: str) -> dict[bytes, bytes | None]:
    """Every key under ``prefix`` with its serialized value (DUMP): equal snapshots = no write."""
    return {key: client.dump(key) for key in keys_under(client, prefix)}


@contextmanager
def unchanged(client: redis.Redis | redis.RedisCluster, prefix: str) -> Iterator[None]:
    """Assert that the block leaves every key under ``prefix`` exactly as it was."""
    before = snapshot(client, prefix)
    yield
    after = snapshot(client, prefix)
    assert after == before, f"keys changed: {sorted(set(after) ^ set(before))[:5]}"


def raw_client(url: str) -> redis.Redis | redis.RedisCluster:
    from janus.store import connect

    return connect(url)
