"""The Redis Functions library: loaded where it is missing, versioned by name, replaced only
by a newer revision. Real redis-server processes (and the session's cluster)."""

from __future__ import annotations

import redis
from click.testing import CliRunner

from janus import scripts
from janus.cli import main
from janus.client import Janus, Job
from janus.policy import parse_policy_text
from janus.testing import RedisCluster, RedisServer

from tests.helpers import library_loaded, policy, wait_until

BODY = """
pay:
  rate: 100
  burst: 10
"""


def _apply(jn: Janus) -> None:
    jn.apply_policies(parse_policy_text(policy(BODY), "p.yaml"))


def test_a_restarted_node_without_persistence_gets_the_library_again(prefix: str) -> None:
    """A server restarted empty (no AOF) has lost the library with the data: the first call
    of a client that loaded it before loads it again; nothing raises."""
    with RedisServer.start() as server:
        jn = Janus.from_url(server.url, prefix=prefix)
        _apply(jn)
        assert jn.submit("pay", scope="a").status == "ready"
        server.restart()
        raw = redis.Redis(port=server.port)
        assert raw.function_list() == []
        _apply(jn)  # the data is gone too: the operator applies the policy again
        assert library_loaded(raw) == [True]
        assert jn.submit("pay", scope="a").status == "ready"
        assert len(jn.worker("pay", group="g", consumer="c").fetch(block_ms=None)) == 1


def test_one_cluster_node_losing_the_library_is_repaired_on_that_node(
    cluster_server: RedisCluster, prefix: str
) -> None:
    """The library is loaded on every primary that serves a dependency; when one node loses
    it (a node replaced, FUNCTION FLUSH there), calls for keys on that node load it there
    and go on; the other nodes are untouched."""
    names = [f"d{i}" for i in range(12)]
    jn = Janus.from_url(cluster_server.url, prefix=prefix)
    jn.apply_policies(parse_policy_text(policy("".join(f"{n}:\n  rate: 5\n  burst: 5\n"
                                                       for n in names)), "p.yaml"))  # fmt: skip
    client = jn.store.client
    assert isinstance(client, redis.RedisCluster)
    assert all(library_loaded(client))
    victim = client.get_node_from_key(jn.store.keys(names[0]).policy)
    conn = victim.redis_connection or client.get_redis_connection(victim)
    conn.function_flush()
    assert library_loaded(client).count(False) == 1
    for name in names:
        assert jn.submit(name, scope="t").status == "ready"
    assert all(library_loaded(client))


def test_a_promoted_replica_already_has_the_library(prefix: str) -> None:
    """Functions replicate with the data: after a failover the new primary runs the calls
    at once (and a client still holding the old connection state simply goes on)."""
    with RedisServer.start() as primary:
        args = ("--replicaof", "127.0.0.1", str(primary.port))
        with RedisServer.start(extra_args=args) as replica:
            jn = Janus.from_url(primary.url, prefix=prefix)
            _apply(jn)
            jn.submit("pay", scope="a", job_id="before")
            raw = redis.Redis(port=replica.port)
            wait_until(lambda: raw.exists(jn.store.keys("pay").job("before")), 30, "replication")
            primary.kill()
            raw.execute_command("REPLICAOF", "NO", "ONE")
            assert library_loaded(raw) == [True]
            after = Janus.from_url(f"redis://127.0.0.1:{replica.port}/0", prefix=prefix)
            assert after.job("pay", "before") is not None
            assert after.submit("pay", scope="a").status in ("ready", "scheduled")


def test_versions_an_older_revision_is_replaced_a_newer_one_kept(prefix: str) -> None:
    """Within a protocol, a client replaces a loaded library of a lower revision (or the
    same revision with other code) and keeps a higher one; `library_versions` tells which."""
    with RedisServer.start() as server:
        raw = redis.Redis(port=server.port)
        code, digest = scripts.library()
        old = code.replace(
            f"return {{{scripts.PROTOCOL}, {scripts.REVISION}, '{digest}'}}",
            f"return {{{scripts.PROTOCOL}, {scripts.REVISION - 1}, 'old'}}",
        )
        raw.function_load(old)
        jn = Janus.from_url(server.url, prefix=prefix)
        assert jn.store.ensure_library(raw) == "replaced"
        (version,) = jn.store.library_versions().values()
        assert version == (scripts.PROTOCOL, scripts.REVISION, digest)
        newer = code.replace(
            f"return {{{scripts.PROTOCOL}, {scripts.REVISION}, '{digest}'}}",
            f"return {{{scripts.PROTOCOL}, {scripts.REVISION + 1}, 'future'}}",
        )
        raw.function_load(newer, replace=True)
        assert Janus.from_url(server.url, prefix=prefix).store.ensure_library(raw) == "newer"
        assert raw.fcall(scripts.function_name("info"), 0)[2] == b"future"


def test_another_protocol_version_runs_beside_this_one(prefix: str) -> None:
    """A rolling deploy: a library of another protocol (other names) stays loaded beside
    janus_p<PROTOCOL>, and both answer."""
    with RedisServer.start() as server:
        raw = redis.Redis(port=server.port)
        other = scripts.PROTOCOL + 1
        code, _ = scripts.library()
        future = code.replace(f"janus_p{scripts.PROTOCOL}", f"janus_p{other}")
        raw.function_load(future)
        jn = Janus.from_url(server.url, prefix=prefix)
        _apply(jn)
        jn.submit_many("pay", [Job(scope="a") for _ in range(3)])
        libraries = sorted(dict(zip(lib[::2], lib[1::2], strict=True))[b"library_name"]
                           for lib in raw.function_list())  # fmt: skip
        assert libraries == [f"janus_p{scripts.PROTOCOL}".encode(), f"janus_p{other}".encode()]
        assert raw.fcall(f"janus_p{other}_info", 0)[0] == scripts.PROTOCOL  # its own copy


def test_cli_library_show_load_status_and_doctor() -> None:
    """`janus library show` prints what FUNCTION LOAD takes; `load` loads it on every
    primary; `status` and `doctor` tell what is loaded and flag an older revision."""
    runner = CliRunner()
    with RedisServer.start() as server:
        raw = redis.Redis(port=server.port)
        status = runner.invoke(main, ["library", "status", "--redis", server.url])
        assert status.exit_code == 0, status.output
        assert f"{scripts.LIBRARY} not loaded" in status.output

        shown = runner.invoke(main, ["library", "show"])
        assert shown.exit_code == 0
        assert shown.output == scripts.library()[0]
        code, digest = scripts.library()
        old = code.replace(
            f"return {{{scripts.PROTOCOL}, {scripts.REVISION}, '{digest}'}}",
            f"return {{{scripts.PROTOCOL}, {scripts.REVISION - 1}, 'old'}}",
        )
        raw.function_load(old)
        doctor = runner.invoke(main, ["doctor", "--redis", server.url])
        assert "older than this client's revision" in doctor.output
        assert doctor.exit_code == 1

        loaded = runner.invoke(main, ["library", "load", "--redis", server.url])
        assert loaded.exit_code == 0, loaded.output
        assert loaded.output.strip().endswith(": replaced")
        status = runner.invoke(main, ["library", "status", "--redis", server.url])
        assert f"revision {scripts.REVISION} digest {digest[:12]}" in status.output
        again = runner.invoke(main, ["library", "load", "--redis", server.url])
        assert again.output.strip().endswith(": present")
