"""The throwaway redis-server processes (janus.testing) and the shared fixtures work."""

from __future__ import annotations

import importlib
import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from janus.errors import EmbeddedRedisError
from janus.testing import (
    INSTALL_HINT,
    RedisCluster,
    RedisServer,
    find_redis_server,
    free_port,
)

from tests import conftest

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Still in the process table: only acceptable as a zombie nobody reaped yet.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _port_refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


def _client(server: RedisServer, timeout: float = 2.0) -> redis.Redis:
    """A client that fails fast (no retries) when the server does not answer."""
    return redis.Redis(
        host=server.host,
        port=server.port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def test_standalone_answers_ping_on_loopback_without_persistence() -> None:
    """A started server answers PING, listens on 127.0.0.1 only and never snapshots; the
    process answering is the one it started."""
    with RedisServer.start() as server, _client(server) as client:
        assert server.host == "127.0.0.1"
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert client.ping()
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
        assert client.info("server")["process_id"] == server.pid


def test_stop_really_stops_the_process_and_is_idempotent() -> None:
    """stop() ends the process and frees the port; a second stop() is a no-op; the context
    manager removes the temporary directory."""
    with RedisServer.start() as server:
        pid, port, workdir = server.pid, server.port, server.dir
        assert server.running
        server.stop()
        assert not server.running
        assert _process_gone(pid)
        assert _port_refuses(port)
        server.stop()
        assert workdir.is_dir()  # kept after stop() so restart() could reuse it
    assert not workdir.exists()


def test_kill_leaves_no_process() -> None:
    """kill() SIGKILLs and reaps the server: no process, no listener, kill() again is a no-op."""
    with RedisServer.start() as server:
        pid = server.pid
        server.kill()
        assert not server.running
        assert _process_gone(pid)
        assert _port_refuses(server.port)
        server.kill()


def test_restart_after_crash_keeps_appendonly_data() -> None:
    """With appendonly, a key acknowledged before a SIGKILL is there after restart() on the
    same port and dir; a graceful restart() keeps it too."""
    with RedisServer.start(appendonly=True) as server:
        port = server.port
        client = redis.Redis(host=server.host, port=port)
        try:
            assert client.config_get("appendonly")["appendonly"] == "yes"
            client.config_set("appendfsync", "always")
            client.set("janus:aof:before-crash", b"v1")
            first_pid = server.pid

            server.kill()
            server.restart()
            assert server.port == port
            assert server.pid != first_pid
            assert client.get("janus:aof:before-crash") == b"v1"

            client.set("janus:aof:before-restart", b"v2")
            server.restart()
            assert client.get("janus:aof:before-crash") == b"v1"
            assert client.get("janus:aof:before-restart") == b"v2"
        finally:
            client.close()


def test_pause_freezes_and_resume_unfreezes() -> None:
    """pause() makes the server stop answering (SIGSTOP); resume() brings it back; stop()
    works even on a paused server."""
    with RedisServer.start() as server, _client(server, timeout=0.3) as client:
        server.pause()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        server.resume()
        assert client.ping()
        server.pause()
        server.stop()
        assert not server.running


def test_cluster_has_three_masters_covering_every_slot(cluster_server: RedisCluster) -> None:
    """The session cluster has exactly 3 masters, together owning slots 0..16383, and every
    node reports cluster_state:ok."""
    assert len(cluster_server.nodes) == 3
    assert cluster_server.url == f"redis://127.0.0.1:{cluster_server.ports[0]}"
    covered: set[int] = set()
    for node in cluster_server.nodes:
        with _client(node) as client:
            info = client.execute_command("CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert "cluster_slots_assigned:16384" in info
    with _client(cluster_server.nodes[0]) as client:
        nodes_reply = client.execute_command("CLUSTER", "NODES")
    masters = [line for line in nodes_reply.splitlines() if "master" in line.split()[2]]
    assert len(masters) == 3
    for line in masters:
        for slot_range in line.split()[8:]:
            start, _, end = slot_range.partition("-")
            covered.update(range(int(start), int(end or start) + 1))
    assert covered == set(range(16384))


def test_cluster_client_writes_and_reads_keys_on_every_node(
    cluster_server: RedisCluster, prefix: str
) -> None:
    """Keys written through redis.RedisCluster land on different masters and read back."""
    client = redis.RedisCluster.from_url(cluster_server.url)
    try:
        keys = [f"{prefix}:k{i}" for i in range(30)]
        for i, key in enumerate(keys):
            client.set(key, str(i))
        assert [client.get(key) for key in keys] == [str(i).encode() for i in range(30)]
        owners = {client.get_node_from_key(key).port for key in keys}
        assert owners == set(cluster_server.ports)
        client.delete(*keys)
    finally:
        client.close()


def test_redis_url_fixture_reaches_a_working_server(
    redis_url: str, redis_client: redis.Redis | redis.RedisCluster, prefix: str
) -> None:
    """redis_url/redis_client run each test against standalone and cluster; prefix is a
    valid, brace-free Janus name."""
    assert NAME_RE.fullmatch(prefix)
    assert "{" not in prefix
    key = f"{prefix}:probe"
    redis_client.set(key, b"x", px=5000)
    assert redis_client.get(key) == b"x"
    redis_client.delete(key)


def test_free_port_with_bus_leaves_both_ports_free() -> None:
    """free_port() picks from 20000-29999; with_bus also checks port+10000; never repeats."""
    ports = [free_port(with_bus=True) for _ in range(5)]
    assert len(set(ports)) == 5
    for port in ports:
        assert 20000 <= port <= 29999
        for candidate in (port, port + 10000):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", candidate))


def test_missing_binary_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a redis-server binary, starting fails with EmbeddedRedisError naming the fix."""
    monkeypatch.setenv("JANUS_REDIS_SERVER", "/nonexistent/redis-server")
    monkeypatch.setenv("PATH", "")
    for attempt in (find_redis_server, RedisServer.start, RedisCluster.start):
        with pytest.raises(EmbeddedRedisError) as info:
            attempt()
        assert INSTALL_HINT in str(info.value)
        assert "apt-get install -y redis-server" in str(info.value)
    monkeypatch.delenv("JANUS_REDIS_SERVER")
    with pytest.raises(EmbeddedRedisError, match=re.escape(INSTALL_HINT)):
        find_redis_server()


def test_failed_start_reports_the_server_log() -> None:
    """A server that cannot start raises EmbeddedRedisError quoting the tail of its log."""
    with pytest.raises(EmbeddedRedisError, match="tail of its log") as info:
        RedisServer.start(extra_args=("--maxmemory-policy", "not-a-policy"))
    assert "maxmemory-policy" in str(info.value)


def test_no_server_outlives_the_python_process(tmp_path: os.PathLike[str]) -> None:
    """A process that starts servers and exits without stopping them leaves none behind."""
    script = textwrap.dedent(
        """
        from janus.testing import RedisServer
        server = RedisServer.start()
        print(server.pid, flush=True)
        raise SystemExit(0)  # no stop(): the atexit hook must do it
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=True
    )
    pid = int(done.stdout.strip())
    deadline = time.monotonic() + 3
    while not _process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_gone(pid)


def test_janus_embedded_is_a_deprecated_alias_of_janus_testing() -> None:
    """Old imports keep working: janus.embedded warns and hands out the same classes."""
    with pytest.warns(DeprecationWarning, match=r"janus\.testing"):
        import janus.embedded

        embedded = importlib.reload(janus.embedded)
    assert embedded.RedisServer is RedisServer
    assert embedded.RedisCluster is RedisCluster
    assert embedded.free_port is free_port


def test_docker_opt_in_fails_loudly_when_no_engine_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JANUS_TEST_DOCKER=1 with no Docker engine: starting the standalone fixture's server
    FAILS the test with the reason and both ways out; it never falls back to the binary."""
    monkeypatch.setenv(conftest.DOCKER_ENV, "1")
    monkeypatch.setattr(conftest, "docker_engine_problem", lambda: "no Docker engine (fake)")
    monkeypatch.setattr(RedisServer, "start", _must_not_be_called)
    with pytest.raises(pytest.fail.Exception) as info:
        conftest._start_or_fail(conftest.standalone_start())
    message = str(info.value)
    assert "JANUS_TEST_DOCKER=1 asks for a Redis container" in message
    assert "no Docker engine (fake)" in message
    assert "Start a Docker engine" in message and "unset JANUS_TEST_DOCKER" in message


def test_docker_probe_asks_testcontainers_own_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    """The probe pings through testcontainers' Docker client: pointed at a socket where no
    engine listens, it says that no engine answers (and raises nothing)."""
    import testcontainers.core.docker_client as tc_docker

    sock = f"unix://{tmp_path}/no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", sock)  # restored after: DockerClient() rewrites it
    monkeypatch.setattr(tc_docker, "get_docker_host", lambda: sock)  # over ~/.testcontainers*
    problem = conftest.docker_engine_problem()
    assert problem is not None and problem.startswith("no Docker engine answers"), problem


def test_without_the_opt_in_the_standalone_server_is_the_binary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JANUS_TEST_DOCKER unset, "0" or empty: the fixture starts the binary; "1": the
    container."""
    for value in (None, "0", ""):
        if value is None:
            monkeypatch.delenv(conftest.DOCKER_ENV, raising=False)
        else:
            monkeypatch.setenv(conftest.DOCKER_ENV, value)
        assert conftest.standalone_start() == RedisServer.start, value
    monkeypatch.setenv(conftest.DOCKER_ENV, "1")
    assert conftest.standalone_start() is conftest.start_container


def _must_not_be_called(*args: object, **kwargs: object) -> None:
    raise AssertionError("must not be called")
