"""The throwaway redis-server processes (janus.embedded) and the shared fixtures work."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from janus.embedded import (
    INSTALL_HINT,
    RedisCluster,
    RedisServer,
    _send,
    find_redis_server,
    free_port,
)
from janus.errors import EmbeddedRedisError

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


def test_standalone_answers_ping_on_loopback_without_persistence(
    standalone_server: RedisServer,
) -> None:
    """The session server answers PING, listens on 127.0.0.1 only and never snapshots."""
    assert standalone_server.host == "127.0.0.1"
    assert standalone_server.url == f"redis://127.0.0.1:{standalone_server.port}/0"
    assert _send("127.0.0.1", standalone_server.port, "PING") == b"PONG"
    client = redis.Redis.from_url(standalone_server.url)
    try:
        assert client.ping()
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
        assert client.info("server")["process_id"] == standalone_server.pid
    finally:
        client.close()


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
    with RedisServer.start() as server:
        server.pause()
        with pytest.raises(OSError):
            _send(server.host, server.port, "PING", timeout=0.3)
        server.resume()
        assert _send(server.host, server.port, "PING") == b"PONG"
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
        info = _send(node.host, node.port, "CLUSTER", "INFO")
        assert isinstance(info, bytes)
        assert b"cluster_state:ok" in info
        assert b"cluster_slots_assigned:16384" in info
    nodes_reply = _send(cluster_server.nodes[0].host, cluster_server.ports[0], "CLUSTER", "NODES")
    assert isinstance(nodes_reply, bytes)
    masters = [line for line in nodes_reply.decode().splitlines() if "master" in line.split()[2]]
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
        from janus.embedded import RedisServer
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
