"""Throwaway real ``redis-server`` processes for the demo and the tests (public as
:mod:`janus.testing`).

Nothing here talks to a Redis that someone else started: every server is a child process
bound to ``127.0.0.1`` on a random free port, with its own temporary directory (data, AOF,
``nodes.conf`` and log file). No Docker is needed, only the ``redis-server`` and
``redis-cli`` binaries (Debian: ``apt-get install -y redis-server``).

Lifetime guarantees:

* the context managers stop the server(s) and remove the temporary directory on exit;
* an :mod:`atexit` hook stops every server still running when the interpreter exits
  (a crashed test, a forgotten ``stop()``);
* on Linux, when ``setpriv`` is available and the server is started from the main thread,
  the kernel also kills the server if the Python process itself dies (``SIGKILL``,
  OOM killer), via ``PR_SET_PDEATHSIG``.

This module administers its own servers through redis-py (readiness ``PING`` and
``INFO server``, ``CLUSTER INFO``, ``SHUTDOWN NOSAVE``), one short-lived connection per
question, without retries; it never runs Janus's functions (that is :mod:`janus.store`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from janus.errors import EmbeddedRedisError

__all__ = [
    "INSTALL_HINT",
    "RedisCluster",
    "RedisServer",
    "find_redis_cli",
    "find_redis_server",
    "free_port",
]

INSTALL_HINT = "install Debian's redis-server package: apt-get install -y redis-server (as root)"
"""The exact fix printed whenever the ``redis-server`` binary cannot be found."""

HOST = "127.0.0.1"
_PORT_RANGE = (20000, 29999)
_BUS_OFFSET = 10000
_START_TIMEOUT = 10.0
_CLUSTER_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0
_LOG_TAIL_LINES = 40
_CLUSTER_SLOTS = 16384

# --------------------------------------------------------------------------------------
# binaries


def find_redis_server() -> str:
    """Path of the ``redis-server`` binary: ``$JANUS_REDIS_SERVER`` or the one on ``PATH``.

    Raises :class:`EmbeddedRedisError` with the install command when it is missing.
    """
    override = os.environ.get("JANUS_REDIS_SERVER")
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise EmbeddedRedisError(
            f"redis-server not found: JANUS_REDIS_SERVER={override!r} is not an executable "
            f"file; {INSTALL_HINT}"
        )
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError(f"redis-server not found on PATH; {INSTALL_HINT}")
    return found


def find_redis_cli() -> str:
    """Path of ``redis-cli``: next to ``redis-server`` if present there, else on ``PATH``."""
    beside = Path(find_redis_server()).resolve().parent / "redis-cli"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("redis-cli")
    if found is None:
        raise EmbeddedRedisError(
            f"redis-cli not found next to redis-server or on PATH; {INSTALL_HINT}"
        )
    return found


# --------------------------------------------------------------------------------------
# ports

_ports_lock = threading.Lock()
_handed_out: set[int] = set()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # redis-server itself binds with SO_REUSEADDR, so TIME_WAIT leftovers don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A free loopback TCP port in 20000-29999, chosen at random.

    With ``with_bus``, ``port + 10000`` (the cluster bus port) must be free as well. Random
    choice plus a per-process memory of ports already handed out keeps parallel runs and
    several servers of one run from colliding; :meth:`RedisServer.start` additionally
    retries on a fresh port if the server still loses the race.
    """
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randint(*_PORT_RANGE)
        with _ports_lock:
            if port in _handed_out or not _port_is_free(port):
                continue
            if with_bus and not _port_is_free(port + _BUS_OFFSET):
                continue
            _handed_out.add(port)
            return port
    raise EmbeddedRedisError(
        f"no free loopback port found in {_PORT_RANGE[0]}-{_PORT_RANGE[1]}"
        + (" (with cluster bus port +10000)" if with_bus else "")
    )


# --------------------------------------------------------------------------------------
# administration over redis-py


def _admin(port: int, timeout: float) -> redis.Redis:
    """A one-off client of our own server: short timeouts and no retries, because a
    server that is starting, paused or gone must be noticed at once, not waited out."""
    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _answering_pid(port: int) -> int | None:
    """``process_id`` of the server answering ``PING`` on ``port`` (tells ours apart from a
    squatter), or None while nothing answers (refused, timeout, ``-LOADING``)."""
    try:
        with _admin(port, 0.5) as client:
            client.ping()
            return int(client.info("server")["process_id"])
    except redis.RedisError:
        return None


# --------------------------------------------------------------------------------------
# process bookkeeping

_live_lock = threading.Lock()
_live: list[RedisServer] = []


def _register(server: RedisServer) -> None:
    with _live_lock:
        if server not in _live:
            _live.append(server)


def _unregister(server: RedisServer) -> None:
    with _live_lock:
        if server in _live:
            _live.remove(server)


@atexit.register
def _close_all() -> None:
    """Stop every server this process started and still owns (runs at interpreter exit)."""
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.close()


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL --`` when usable, so the server dies with this process.

    PR_SET_PDEATHSIG fires when the *thread* that spawned the child exits, so it is only
    used from the main thread (whose exit is the process exit).
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------
# one server


class RedisServer:
    """A ``redis-server`` child process on ``127.0.0.1``. Create with :meth:`start`."""

    host: str = HOST

    def __init__(
        self,
        *,
        binary: str,
        port: int,
        dir: Path,
        owns_dir: bool,
        appendonly: bool,
        extra_args: tuple[str, ...],
        cluster: bool,
    ) -> None:
        self._binary = binary
        self._port = port
        self._dir = dir
        self._owns_dir = owns_dir
        self._appendonly = appendonly
        self._extra_args = extra_args
        self._cluster = cluster
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._closed = False

    # ---- construction ---------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
        cluster: bool = False,
        dir: str | os.PathLike[str] | None = None,
    ) -> RedisServer:
        """Launch a server and wait (up to ~10 s) until it answers ``PING``.

        ``port=None`` picks a free random port (retrying on a fresh one if another process
        grabs it first). ``appendonly`` turns on AOF with ``appendfsync everysec`` instead of
        the default of no persistence at all. ``cluster`` enables cluster mode (use
        :class:`RedisCluster` to get a working cluster). ``dir`` is kept after the server
        stops; without it a fresh temporary directory is created and removed by
        :meth:`close` / the context manager. ``extra_args`` are appended verbatim, e.g.
        ``("--maxmemory", "64mb")``.
        """
        binary = find_redis_server()
        owns_dir = dir is None
        workdir = (
            Path(tempfile.mkdtemp(prefix="janus-redis-")) if dir is None else Path(dir).absolute()
        )
        workdir.mkdir(parents=True, exist_ok=True)
        last_error: EmbeddedRedisError | None = None
        for _ in range(1 if port is not None else 5):
            server = cls(
                binary=binary,
                port=port if port is not None else free_port(with_bus=cluster),
                dir=workdir,
                owns_dir=owns_dir,
                appendonly=appendonly,
                extra_args=tuple(extra_args),
                cluster=cluster,
            )
            try:
                server._launch()
            except EmbeddedRedisError as exc:
                server.stop()
                _unregister(server)
                last_error = exc
                if port is None and "Address already in use" in str(exc):
                    continue  # lost a port race with another process: try a new port
                break
            return server
        if owns_dir:
            shutil.rmtree(workdir, ignore_errors=True)
        assert last_error is not None
        raise last_error

    def _command_line(self) -> list[str]:
        args = [self._binary, "--port", str(self._port), "--bind", HOST, "--dir", str(self._dir)]
        args += ["--daemonize", "no", "--logfile", str(self.log_path), "--loglevel", "notice"]
        if self._appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        else:
            args += ["--appendonly", "no", "--save", ""]
        if self._cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-node-timeout", "2000"]
        return args + list(self._extra_args)

    def _launch(self) -> None:
        """Spawn the process and block until it answers PING (or raise with its log)."""
        if self._closed:
            raise EmbeddedRedisError("this RedisServer was closed; start a new one")
        stdio = open(self._dir / "redis-stdio.log", "ab")  # noqa: SIM115 - closed below
        try:
            self._proc = subprocess.Popen(
                _pdeathsig_prefix() + self._command_line(),
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal must not kill it mid-test
            )
        except OSError as exc:
            raise EmbeddedRedisError(f"could not execute {self._binary}: {exc}") from exc
        finally:
            stdio.close()
        self._paused = False
        _register(self)
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise self._failure(f"redis-server exited with status {self._proc.returncode}")
            answering = _answering_pid(self._port)
            if answering == self._proc.pid:
                return
            if answering is not None:
                # Another process owns the port; ours is about to exit with EADDRINUSE.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=2.0)
                self.kill()
                raise self._failure(
                    f"port {self._port} is answered by another redis-server "
                    f"(pid {answering}): Address already in use"
                )
            if time.monotonic() > deadline:
                raise self._failure(f"redis-server did not answer PING within {_START_TIMEOUT:g} s")
            time.sleep(0.02)

    def _failure(self, what: str) -> EmbeddedRedisError:
        logs = "\n".join(
            part for part in (_tail(self.log_path), _tail(self._dir / "redis-stdio.log")) if part
        )
        return EmbeddedRedisError(
            f"{what} (port {self._port}, dir {self._dir}).\n"
            f"--- tail of its log ---\n{logs or '(empty)'}"
        )

    # ---- properties -----------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, or ``redis://127.0.0.1:PORT`` in cluster mode."""
        base = f"redis://{HOST}:{self._port}"
        return base if self._cluster else f"{base}/0"

    @property
    def dir(self) -> Path:
        """The server's working directory (data, AOF, nodes.conf, log)."""
        return self._dir

    @property
    def log_path(self) -> Path:
        return self._dir / "redis.log"

    @property
    def pid(self) -> int:
        """Process id of the current (or, after stop/kill, the last) server process."""
        if self._proc is None:
            raise EmbeddedRedisError("redis-server was never started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def appendonly(self) -> bool:
        return self._appendonly

    @property
    def cluster(self) -> bool:
        return self._cluster

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    # ---- lifecycle ------------------------------------------------------------------

    def stop(self) -> None:
        """Shut down (``SHUTDOWN NOSAVE``; then SIGTERM, then SIGKILL) and reap. Idempotent.

        The directory is kept, so :meth:`restart` can bring the same data back.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reap()
            return
        if self._paused:
            self.resume()
        # redis-py's shutdown() takes the connection closing under it as success; an error
        # reply or a timeout leaves the signals below to do the job.
        with contextlib.suppress(redis.RedisError), _admin(self._port, _STOP_TIMEOUT) as client:
            client.shutdown(nosave=True)
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash) and reap it. No-op if it is not running."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._reap()

    def _reap(self) -> None:
        self._paused = False
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port, dir and arguments.

        After :meth:`kill` this is a crash-and-recover: with ``appendonly`` the data written
        (and fsynced) before the crash is loaded back from the AOF.
        """
        self.stop()
        self._launch()

    def pause(self) -> None:
        """SIGSTOP the server: connections hang (simulates a frozen / partitioned Redis)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise EmbeddedRedisError("cannot pause: redis-server is not running")
        proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """Stop the server and remove its directory if it is a temporary one we created."""
        self.stop()
        self._closed = True
        _unregister(self)
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        mode = " cluster" if self._cluster else ""
        return f"<RedisServer{mode} {HOST}:{self._port} {state} dir={str(self._dir)!r}>"


# --------------------------------------------------------------------------------------
# a cluster


class RedisCluster:
    """``masters`` cluster-mode servers joined with ``redis-cli --cluster create``."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self._nodes = nodes

    @classmethod
    def start(cls, masters: int = 3) -> RedisCluster:
        """Start the nodes, create the cluster (no replicas) and wait until it is healthy.

        Healthy means every node reports ``cluster_state:ok``, all 16384 slots assigned and
        all ``masters`` nodes known (up to ~30 s).
        """
        if masters < 3:
            raise EmbeddedRedisError("redis-cli --cluster create needs at least 3 masters")
        cli = find_redis_cli()
        nodes: list[RedisServer] = []
        try:
            for _ in range(masters):
                nodes.append(RedisServer.start(cluster=True))
            cluster = cls(nodes)
            cluster._create(cli)
            cluster._wait_healthy()
        except BaseException:
            for node in nodes:
                node.close()
            raise
        return cluster

    def _create(self, cli: str) -> None:
        cmd = [cli, "--cluster", "create", *(f"{HOST}:{port}" for port in self.ports)]
        cmd += ["--cluster-replicas", "0", "--cluster-yes"]
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_CLUSTER_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise self._failure(
                f"redis-cli --cluster create timed out after {exc.timeout:g} s"
            ) from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise self._failure(
                f"redis-cli --cluster create failed with status {done.returncode}:\n{output}"
            )

    def _problem(self, node: RedisServer) -> str | None:
        """Why ``node`` does not yet see the whole cluster healthy (None once it does)."""
        try:
            with _admin(node.port, 2.0) as client:
                info: dict[str, str] = client.cluster("info")
        except redis.RedisError as exc:
            return f"{node.port}: {exc}"
        state = info.get("cluster_state")
        assigned = info.get("cluster_slots_assigned")
        known = info.get("cluster_known_nodes")
        if state == "ok" and assigned == str(_CLUSTER_SLOTS) and known == str(len(self._nodes)):
            return None
        return f"{node.port}: cluster_state={state} slots_assigned={assigned} known_nodes={known}"

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + _CLUSTER_TIMEOUT
        while problems := [p for p in map(self._problem, self._nodes) if p is not None]:
            if time.monotonic() > deadline:
                raise self._failure(
                    f"cluster not healthy after {_CLUSTER_TIMEOUT:g} s: " + "; ".join(problems)
                )
            time.sleep(0.05)

    def _failure(self, what: str) -> EmbeddedRedisError:
        logs = "\n".join(
            f"--- tail of node {node.port} log ---\n{node.log_tail(15) or '(empty)'}"
            for node in self._nodes
        )
        return EmbeddedRedisError(f"{what}\n{logs}")

    @property
    def nodes(self) -> list[RedisServer]:
        return list(self._nodes)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self._nodes]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` of the first node (any node bootstraps a cluster client)."""
        return self._nodes[0].url

    @property
    def host(self) -> str:
        return HOST

    def stop(self) -> None:
        """Stop every node (directories kept). Idempotent."""
        for node in self._nodes:
            node.stop()

    def close(self) -> None:
        """Stop every node and remove their temporary directories."""
        for node in self._nodes:
            node.close()

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RedisCluster {HOST} ports={self.ports}>"
