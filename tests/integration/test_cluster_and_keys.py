"""What Janus writes: one slot per dependency on a real cluster, and bounded keys."""

from __future__ import annotations

import redis
from redis.crc import key_slot

from janus.client import Job
from janus.coordinator import Coordinator
from janus.keys import Keys, registry

from tests.helpers import FakeClock, keys_under, make_janus

ODD_SCOPES = ["{", "}", "a:b", "tenant 42", "ünïcødé 🙂", "x" * 10_000, "{pay}"]
BODY = """
pay:
  rate: 5
  burst: 2
  max_wait: 5s
  lease: 2s
  retention: 10s
  scopes:
    default: {rate: 5, burst: 2}
"""


def _run_some_work(url: str, prefix: str) -> FakeClock:
    clock = FakeClock()
    jn = make_janus(url, prefix, BODY, clock)
    for scope in ODD_SCOPES:
        jn.submit_many("pay", [Job(scope=scope, job_id=f"{scope}/{i}") for i in range(4)])
    Coordinator(jn.store).step("pay", clock.advance_ms(300))
    return clock


def test_odd_scope_names_keep_every_key_in_the_dependency_slot(
    redis_url: str, prefix: str, redis_client: redis.Redis
) -> None:
    """Braces, colons, spaces, unicode and 10 KB names: every key stays in slot({pay})."""
    _run_some_work(redis_url, prefix)
    written = [k for k in keys_under(redis_client, prefix) if k != registry(prefix).encode()]
    assert len(written) > len(ODD_SCOPES)
    assert {key_slot(k) for k in written} == {key_slot(b"{pay}")}
    scope_keys = [k for k in written if b":s:" in k]
    assert len(scope_keys) == len(ODD_SCOPES)  # no two names collided


def test_every_key_has_a_ttl_or_is_bounded_by_its_work(
    redis_url: str, prefix: str, redis_client: redis.Redis
) -> None:
    """Scope state and released job records expire; fixed keys are one per dependency;
    what has no TTL is bounded by waiting work: queued job records are exactly the members
    of the delay queue and the ready lines, ready lines exist only while not empty, and a
    scope's state is kept only while it has work waiting (its qn counts it)."""
    _run_some_work(redis_url, prefix)
    k = Keys(prefix, "pay")
    fixed = {key.encode() for key in k.all_fixed()} | {registry(prefix).encode()}
    lines = [key for key in keys_under(redis_client, prefix) if b":q:" in key]
    waiting = list(redis_client.zrange(k.delayed, 0, -1))
    for line in lines:
        assert redis_client.llen(line) > 0
        waiting += redis_client.lrange(line, 0, -1)
    queued = {k.job_prefix.encode() + m for m in waiting}
    assert queued and len(queued) == len(waiting)
    per_scope: dict[bytes, int] = {}
    for key in queued:
        assert redis_client.hget(key, "status") == b"scheduled"
        scope_enc = redis_client.hget(key, "scope_enc")
        per_scope[scope_enc] = per_scope.get(scope_enc, 0) + 1
    for key in keys_under(redis_client, prefix):
        ttl = redis_client.pttl(key)
        if key in fixed or key in queued or key in lines:
            continue
        if b":s:" in key and ttl == -1:
            scope_enc = key.split(b":s:", 1)[1]
            assert int(redis_client.hget(key, "qn")) == per_scope[scope_enc] > 0
            continue
        assert ttl > 0, f"{key[:80]!r} has no TTL"
        if b":s:" in key:
            assert ttl <= 2_000 + 1_000  # at most the time until its buckets are full, + 1 s
        else:
            assert ttl <= 12_000  # lease + retention


def test_cluster_spreads_dependencies_over_shards(cluster_server: object, prefix: str) -> None:
    """Several dependencies land on several masters, each wholly on one."""
    from janus.embedded import RedisCluster

    assert isinstance(cluster_server, RedisCluster)
    names = [f"dep{i}" for i in range(12)]
    body = "".join(f"{n}:\n  rate: 5\n  burst: 5\n" for n in names)
    jn = make_janus(cluster_server.url, prefix, body, FakeClock())
    for n in names:
        assert jn.submit(n, scope="t").status == "released"
    client = jn.store.client
    assert isinstance(client, redis.RedisCluster)
    nodes = {client.get_node_from_key(Keys(prefix, n).stream).name for n in names}
    assert len(nodes) >= 2


def test_in_flight_index_forgets_leases_older_than_the_retention(
    redis_url: str, prefix: str
) -> None:
    """The in-flight index stays bounded even if no outcome is ever reported: entries whose
    lease ended more than `retention` ago (their records have expired) are dropped."""
    clock = _run_some_work(redis_url, prefix)
    jn = make_janus(redis_url, prefix, BODY, clock)
    k = Keys(prefix, "pay")
    client = jn.store.client
    old = set(client.zrange(k.inflight, 0, -1))
    assert old
    Coordinator(jn.store).step("pay", clock.advance_ms(2_000 + 10_000 + 1))
    assert not old & set(client.zrange(k.inflight, 0, -1))
