"""What Janus writes: one slot per dependency on a real cluster, and bounded keys.

The layout is in :mod:`janus.keys`: fixed keys per dependency, a stream per consumer group,
a fetch log per consumer, and per-job / per-scope keys. Everything either expires or is
bounded by work that is waiting or running."""

from __future__ import annotations

import redis
from redis.crc import key_slot

from janus.calls import SCOPE_PACKED, unpack_fields
from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.keys import Keys, encode_part, registry

from tests.helpers import FakeClock, keys_under, make_janus

ODD_SCOPES = ["{", "}", "a:b", "tenant 42", "ünïcødé 🙂", "x" * 10_000, "{pay}"]
#: Group and consumer names are user data too: (group, consumer) of the workers.
WORKERS = [("billing", "w1"), ("{pay}", "host 1 {x}"), ("ünï:cødé", "y" * 200)]
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
LEASE_MS, RETENTION_MS = 2_000, 10_000


def _run_some_work(url: str, prefix: str) -> tuple[Janus, FakeClock]:
    """Jobs in every state: waiting (delayed and ready), running, completed, waiting for a
    retry; fetched by workers of three groups with odd names; then a coordinator step."""
    clock = FakeClock()
    jn = make_janus(url, prefix, BODY, clock)
    for scope in ODD_SCOPES:
        jn.submit_many("pay", [Job(scope=scope, job_id=f"{scope}/{i}") for i in range(4)])
    got = []
    for group, consumer in WORKERS:
        w = jn.worker("pay", group=group, consumer=consumer)
        got.append((w, w.fetch(count=1, block_ms=None)))
        clock.advance_ms(200)  # the dependency's rate: one more job every 200 ms
    (w0, (done,)), (w1, (failed,)), _ = got
    w0.complete(done)
    assert w1.fail(failed, "http_503").decision == "retry"
    Coordinator(jn.store).step("pay", clock.advance_ms(300))
    return jn, clock


def test_odd_names_keep_every_key_in_the_dependency_slot(
    redis_url: str, prefix: str, redis_client: redis.Redis
) -> None:
    """Braces, colons, spaces, unicode, 10 KB scope names, 200-character group and consumer
    names: every key (scope state, ready lines, job records, group streams, fetch logs)
    stays in slot({pay}), and no two names collide."""
    _run_some_work(redis_url, prefix)
    written = [k for k in keys_under(redis_client, prefix) if k != registry(prefix).encode()]
    assert len(written) > len(ODD_SCOPES)
    assert {key_slot(k) for k in written} == {key_slot(b"{pay}")}
    assert all(k.count(b"{") == 1 and k.count(b"}") == 1 for k in written)  # only the tag
    assert len([k for k in written if b":s:" in k]) == len(ODD_SCOPES)
    k = Keys(prefix, "pay")
    streams = {key for key in written if key.startswith(k.stream_prefix.encode())}
    assert streams == {k.stream(g).encode() for g, _ in WORKERS}
    logs = {key for key in written if key.startswith(f"{k.base}:f:".encode())}
    assert logs == {k.fetch_log(g, c).encode() for g, c in WORKERS}
    assert sorted(redis_client.smembers(k.groups)) == sorted(g.encode() for g, _ in WORKERS)


def test_every_key_has_a_ttl_or_is_bounded_by_its_work(
    redis_url: str, prefix: str, redis_client: redis.Redis
) -> None:
    """Fixed keys are one per dependency; finished job records, fetch logs and full scope
    state expire; what has no TTL is bounded by work that waits or runs: job records
    without TTL are exactly the waiting jobs (delay queue, ready lines, parked retries,
    record "scheduled" or "failed") and the running ones (the in-flight index, record
    "running"); ready lines exist only while not empty; a group's stream holds exactly its
    running attempts; a scope's state is kept only while it has work waiting (qn)."""
    _run_some_work(redis_url, prefix)
    k = Keys(prefix, "pay")
    fixed = {key.encode() for key in k.all_fixed()} | {registry(prefix).encode()}
    everything = keys_under(redis_client, prefix)
    lines = [key for key in everything if key.startswith(k.ready_prefix.encode())]
    streams = [key for key in everything if key.startswith(k.stream_prefix.encode())]
    waiting = list(redis_client.zrange(k.delayed, 0, -1))
    waiting += list(redis_client.zrange(k.parked, 0, -1))
    for line in lines:
        assert redis_client.llen(line) > 0
        waiting += redis_client.lrange(line, 0, -1)
    queued = {k.job_prefix.encode() + m for m in waiting}
    running = {k.job_prefix.encode() + m for m in redis_client.zrange(k.inflight, 0, -1)}
    assert queued and len(queued) == len(waiting) and running and not queued & running
    per_scope: dict[bytes, int] = {}
    for key in queued:
        assert redis_client.hget(key, "status") in (b"scheduled", b"failed")
        scope_enc = redis_client.hget(key, "scope_enc")
        per_scope[scope_enc] = per_scope.get(scope_enc, 0) + 1
    tokens = set()
    for key in running:
        status, token, held = redis_client.hmget(key, "status", "token", "held")
        assert status == b"running"
        stream = held.split(b"\0")[0]  # held: stream, group, consumer
        tokens.add((stream, token))
    entries = {(s, eid) for s in streams for eid, _ in redis_client.xrange(s)}
    assert entries == tokens, "a group stream holds something other than running attempts"
    finished = 0
    for key in everything:
        ttl = redis_client.pttl(key)
        if key in fixed or key in queued or key in running or key in lines or key in streams:
            assert ttl == -1, f"{key[:80]!r} should live as long as its work"
            continue
        if key.startswith(k.scope_prefix.encode()) and ttl == -1:
            scope_enc = key.split(b":s:", 1)[1]
            qn = unpack_fields(redis_client.hget(key, "v"), SCOPE_PACKED)["qn"]
            assert qn == per_scope[scope_enc] > 0
            continue
        assert ttl > 0, f"{key[:80]!r} has no TTL"
        if key.startswith(k.scope_prefix.encode()):
            assert ttl <= 2_000 + 1_000  # at most the time until its buckets are full, + 1 s
        elif key.startswith(k.job_prefix.encode()):
            assert redis_client.hget(key, "status") in (b"completed", b"dead")
            assert ttl <= RETENTION_MS
            finished += 1
        else:
            assert key.startswith(f"{k.base}:f:".encode()), key[:80]
            assert ttl <= 2 * LEASE_MS + 1_000  # a fetch log outlives re-sends, no more
    assert finished == 1


def test_cluster_spreads_dependencies_over_shards(cluster_server: object, prefix: str) -> None:
    """Several dependencies land on several masters, each wholly on one."""
    from janus.testing import RedisCluster

    assert isinstance(cluster_server, RedisCluster)
    names = [f"dep{i}" for i in range(12)]
    body = "".join(f"{n}:\n  rate: 5\n  burst: 5\n" for n in names)
    jn = make_janus(cluster_server.url, prefix, body, FakeClock())
    for n in names:
        assert jn.submit(n, scope="t").status == "ready"
        (job,) = jn.worker(n, group="g", consumer="w").fetch(block_ms=None)
        assert job.dependency == n
    client = jn.store.client
    assert isinstance(client, redis.RedisCluster)
    for n in names:
        k = Keys(prefix, n)
        node_names = {client.get_node_from_key(key).name for key in [*k.all_fixed(), k.stream("g")]}
        assert len(node_names) == 1
    nodes = {client.get_node_from_key(Keys(prefix, n).stream("g")).name for n in names}
    assert len(nodes) >= 2


RECLAIM_BODY = """
pay:
  rate: 100
  burst: 10
  lease: 2s
  retention: 10s
  retry: {max_attempts: 3, backoff: {base: 1s, factor: 2, max: 60s, jitter: none}}
"""


def test_a_running_attempt_lives_until_a_report_or_reclaim_ends_it(
    redis_url: str, prefix: str, redis_client: redis.Redis
) -> None:
    """A running job's record has no TTL and its in-flight entry stays, even when lease +
    retention has passed and other calls (submits, reports) ran meanwhile: only an outcome
    ends it. Then the next step reclaims it (lease_expired) and retries it as attempt 2;
    the index holds only running attempts afterwards."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, RECLAIM_BODY, clock)
    k = Keys(prefix, "pay")
    jn.submit_many("pay", [Job(scope="a", job_id=j) for j in ("stuck", "done")])
    w = jn.worker("pay", group="g", consumer="w1")
    stuck, done = w.fetch(count=2, block_ms=None)
    assert (stuck.id, done.id) == ("stuck", "done")
    enc = encode_part("stuck").encode()
    assert redis_client.pttl(k.job("stuck")) == -1
    assert redis_client.zscore(k.inflight, enc) == clock.now_ms + 2_000

    clock.advance_ms(2_000 + 10_000 + 1)  # lease + retention later, nothing stepped yet
    assert jn.submit("pay", scope="b", job_id="later").accepted
    results = w.report([w.completed(done)])
    assert (results[0].ok, results[0].reason) == (False, "expired")  # its lease ended too
    info = jn.job("pay", "stuck")
    assert info is not None and (info.status, info.attempt) == ("running", 1)
    assert redis_client.pttl(k.job("stuck")) == -1
    assert redis_client.zscore(k.inflight, enc) == stuck.lease_deadline_ms
    assert jn.store.stream_counts("pay") == {"g": (2, 2)}

    step = Coordinator(jn.store).step("pay", clock())
    assert (step.reclaimed, step.retried, step.dead_lettered) == (2, 2, 0)
    info = jn.job("pay", "stuck")
    assert info is not None and (info.status, info.last_error) == ("failed", "lease_expired")
    assert info.not_before_ms == clock.now_ms + 1_000
    assert redis_client.pttl(k.job("stuck")) == -1  # a waiting retry lives as long as it waits
    assert redis_client.zcard(k.inflight) == 0
    assert jn.store.stream_counts("pay") == {"g": (0, 0)}

    clock.advance_ms(1_000)
    again = w.fetch(count=10, block_ms=None)
    assert sorted((j.id, j.attempt) for j in again) == [("done", 2), ("later", 1), ("stuck", 2)]
    assert set(redis_client.zrange(k.inflight, 0, -1)) == {
        encode_part(j.id).encode() for j in again
    }
