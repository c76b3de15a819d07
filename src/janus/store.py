"""The Redis-facing module of the sync API: it sends what :mod:`janus.calls` builds.

Everything else in Janus is either pure (policy, keys, calls, decisions, scripts) or a
front-end that drives this module (client, worker, coordinator, CLI, demo). Calls are built
and their replies parsed in :mod:`janus.calls`; :meth:`Store.run` only sends them.

The life of a job (the scripts hold the detail; this is the map):

* Limits live in Redis (``apply_policy.lua``), never in the caller's arguments.
* ``submit.lua`` reserves the job's **scope** bucket: that fixes when its scope allows it.
  The job waits in Janus: in its scope's ready line when its scope allows it now, else in
  the delay queue until it does. Nothing is released at submit.
* ``fetch.lua`` (a worker with free slots asks for work) is the release: it takes jobs from
  the fair queue (start-time fair queueing between scopes) under the **dependency** bucket,
  ``max_in_flight``, the circuit, the scope's release-time bucket and quota and the retry
  budget, adds each to the worker's group stream, delivers it to that worker (XREADGROUP, in
  the same script) and starts its lease. So started cost in any window W is at most
  ``rate * W + burst`` per dependency and per scope, whatever the workers do, and work
  waiting for a worker never uses an attempt.
* ``report.lua`` ends attempts (completed, failed -> retry or dead letter, returned
  unstarted); ``heartbeat.lua`` extends leases.
* ``step.lua`` (the coordinator) and every fetch do the due work: reclaim expired leases,
  move jobs that came due, bring back throttled scopes and parked retries. The coordinator is
  the timer: it sleeps until the next event and wakes one idle worker when work may go.

Re-sent calls: connection errors and timeouts are retried a bounded number of times by
redis-py, so every state-changing function gives a re-sent call the answer the first one got:
job ids are fixed before a submit (an existing id is a no-op), a fetch carries a fetch id
(a re-send gets the same jobs), reports carry report ids.

The Lua is one Redis Functions library (:func:`janus.scripts.library`), called with FCALL.
It is loaded on first use on each primary (and replaced when an older revision is there);
when it is missing later (FUNCTION FLUSH, a new or restarted node without persistence, a
failover to a node without it), the call that finds it missing loads it and is sent again.
Functions that may write are refused whole by Redis under OOM, so a call then changes
nothing at all. Calls are never sent inside a cluster pipeline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar, cast

import redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from janus import calls, scripts
from janus.calls import Call, Commands, Op, Request
from janus.decisions import DependencyStatus, ScopeStatus
from janus.errors import (
    AccessDenied,
    AuthenticationFailed,
    InvalidCost,
    InvalidInput,
    NotReplicated,
    PayloadTooLarge,
    RedisOutOfMemory,
    RedisReadOnly,
    RedisUnavailable,
)
from janus.keys import Keys, registry
from janus.policy import CompiledPolicy
from janus.urls import check_url, redact, redact_text

AnyRedis = redis.Redis | RedisCluster
R = TypeVar("R")

#: Bounded retries for connection errors and timeouts (all our calls are idempotent).
RETRIES = 3
#: Extra attempts when the library vanished between loading it and calling it.
LOAD_RETRIES = 3


def _retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES)


def _async_retry() -> AsyncRetry:
    """:func:`_retry` for redis.asyncio (its clients need their own Retry class: the sync
    one would never await the call it is meant to retry)."""
    return AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES)


_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
    redis.exceptions.ClusterError,  # "TTL exhausted": a slot migrating, redirects ran out
)


#: Error replies that mean "this server cannot serve now" (out of memory, a replica after a
#: failover, a long script or a load in progress, a cluster reconfiguring): retry later.
_TRANSIENT_REPLIES = frozenset(
    {
        "OOM",
        "READONLY",
        "BUSY",
        "LOADING",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "NOREPLICAS",
        "MISCONF",  # a failed RDB save stops writes until it succeeds
    }
)


def translate(exc: Exception, what: str) -> Exception:
    """The Janus exception for a redis-py exception raised while doing ``what``."""
    if isinstance(exc, redis.exceptions.ResponseError) and "JANUS_INVALID" in str(exc):
        detail = str(exc).split("JANUS_INVALID", 1)[1].strip()
        detail = detail.split(" script: ", 1)[0]  # Redis appends where a raised error came from
        index, _, text = detail.partition(" ")
        if not index.isdigit() and index != "-":
            index, text = "-", detail
        prefix = f"job #{index} of the batch: " if index.isdigit() else ""
        if "payload" in text:
            return PayloadTooLarge(f"{what}: {prefix}{text}")
        if "cost" in text:
            return InvalidCost(f"{what}: {prefix}{text}")
        return InvalidInput(f"{what}: {prefix}{text}")
    first = str(exc).split(" ", 1)[0] if isinstance(exc, redis.exceptions.ResponseError) else ""
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
        return AuthenticationFailed(
            f"{what}: Redis refused the credentials ({redact_text(str(exc))}); check the user "
            "and password in the URL"
        )
    if isinstance(exc, redis.exceptions.NoPermissionError) or first == "NOPERM":
        return AccessDenied(
            f"{what}: the Redis user may not do this ({redact_text(str(exc))}); see the ACL "
            "rules Janus needs in the README (Security)"
        )
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or first == "OOM":
        return RedisOutOfMemory(
            f"{what}: Redis is out of memory (maxmemory reached, noeviction) and refused the "
            "call before it ran; nothing was changed. Free memory or raise maxmemory"
        )
    if isinstance(exc, redis.exceptions.ReadOnlyError) or first == "READONLY":
        return RedisReadOnly(
            f"{what}: the server is a read-only replica (a failover?) and refused the call; "
            "nothing was changed"
        )
    if isinstance(exc, _UNAVAILABLE) or first in _TRANSIENT_REPLIES:
        return RedisUnavailable(
            f"{what}: Redis is unavailable ({redact_text(str(exc))}); nothing was changed"
        )
    if _library_missing(exc):
        return RedisUnavailable(
            f"{what}: Janus's function library keeps disappearing from Redis (FUNCTION "
            "FLUSH, failover?) even after loading it again; nothing was changed"
        )
    return exc


def _library_missing(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.ResponseError) and "Function not found" in str(exc)


class _Cluster(RedisCluster):
    """redis-py's cluster client, routing FCALL by its keys the way it routes EVALSHA
    (it would otherwise ask the server for the keys of every FCALL: one more round trip)."""

    def determine_slot(self, *args: Any) -> int | None:
        if args and str(args[0]).upper() in ("FCALL", "FCALL_RO") and len(args) > 3:
            keys = args[3 : 3 + int(args[2])]
            if keys:
                slots = {self.keyslot(k) for k in keys}  # type: ignore[no-untyped-call]
                if len(slots) == 1:
                    return slots.pop()  # type: ignore[no-any-return]
        return super().determine_slot(*args)


#: Everything redis-py raises (its cluster errors do not all derive from RedisError).
_REDIS_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Translate redis-py's exceptions into Janus's tree."""
    try:
        yield
    except _REDIS_ERRORS as exc:
        mapped = translate(exc, what)
        if mapped is exc:
            raise
        raise mapped from (exc if isinstance(mapped, RedisUnavailable) else None)


def connect(url: str, *, socket_timeout: float = 5.0) -> AnyRedis:
    """Open a client for ``url``; a Redis Cluster node is detected and handled as a cluster.

    Detection uses HELLO (``@fast @connection``), not INFO (``@dangerous``), so a
    least-privilege ACL user can connect. The URL is checked first (InvalidUrl) and shown
    redacted in every message."""
    check_url(url)
    with guard(f"connecting to {redact(url)}"):
        probe = redis.Redis.from_url(url, socket_timeout=socket_timeout, retry=_retry())
        try:
            hello = probe.execute_command("HELLO", "2")  # type: ignore[no-untyped-call]
        finally:
            probe.close()
        mode = _hello_field(hello, "mode")
        if mode == "cluster":
            return _Cluster.from_url(url, socket_timeout=socket_timeout, retry=_retry())
        return redis.Redis.from_url(url, socket_timeout=socket_timeout, retry=_retry())


def _node_id(node: redis.Redis) -> str:
    kw = node.connection_pool.connection_kwargs
    return f"{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}"


def _hello_field(reply: object, name: str) -> str:
    """A field of HELLO's reply (a flat list in RESP2; redis-py may hand a dict)."""
    items: list[Any]
    if isinstance(reply, dict):
        items = [x for pair in reply.items() for x in pair]
    elif isinstance(reply, list):
        items = reply
    else:
        return ""
    for key, value in zip(items[::2], items[1::2], strict=False):
        key_s = key.decode() if isinstance(key, bytes) else str(key)
        if key_s == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def check_durability(wait_replicas: object, wait_timeout_ms: object) -> None:
    """The opt-in durability settings (shared by the sync and the asyncio store)."""
    if (
        isinstance(wait_replicas, bool)
        or not isinstance(wait_replicas, int)
        or not (0 <= wait_replicas <= 100)
    ):
        raise InvalidInput(f"wait_replicas must be an integer 0..100, got {wait_replicas!r}")
    if (
        isinstance(wait_timeout_ms, bool)
        or not isinstance(wait_timeout_ms, int)
        or not 1 <= wait_timeout_ms <= 600_000
    ):
        raise InvalidInput(f"wait_timeout_ms must be an integer 1..600000, got {wait_timeout_ms!r}")


class Prefixed:
    """A deployment's key prefix and the :class:`~janus.keys.Keys` of its dependencies."""

    def __init__(self, prefix: str) -> None:
        registry(prefix)  # validates the prefix
        self.prefix = prefix
        self._keys: dict[str, Keys] = {}

    def keys(self, dependency: str) -> Keys:
        k = self._keys.get(dependency)
        if k is None:
            k = Keys(self.prefix, dependency)
            if len(self._keys) < 10_000:
                self._keys[dependency] = k
        return k


def not_replicated(what: str, acked: int, wanted: int, timeout_ms: int) -> NotReplicated:
    """The error of a call that too few replicas confirmed in time (see ``wait_replicas``)."""
    return NotReplicated(
        f"{what}: done on the primary, but only {acked} of {wanted} replica(s) confirmed it "
        f"within {timeout_ms} ms, so a failover could lose it; retrying the same call is safe"
    )


def parse_reply(call: Call[R], reply: object) -> R:
    """A call's reply parsed; a redis-py error as the Janus error it means (raised)."""
    if not isinstance(reply, BaseException):
        return call.parse(reply)
    mapped = translate(reply, call.what) if isinstance(reply, _REDIS_ERRORS) else reply
    if mapped is reply:
        raise reply
    raise mapped from (reply if isinstance(mapped, RedisUnavailable) else None)


def raise_any(replies: list[Any], errors_ok: bool = False) -> list[Any]:
    """``replies`` of a pipeline sent with ``raise_on_error=False``; raises the first error
    (unless ``errors_ok``: the caller parses errors as replies)."""
    for reply in () if errors_ok else replies:
        if isinstance(reply, Exception):
            raise reply
    return list(replies)


def block_s(timeout_s: float, socket_timeout: float | None) -> float:
    """A server-side blocking wait, kept below the client's socket timeout."""
    if socket_timeout:
        timeout_s = min(timeout_s, socket_timeout * 0.75)
    return max(timeout_s, 0.01)


class Store(Prefixed):
    """Janus's state in one Redis (or one Redis Cluster) under one key prefix."""

    def __init__(
        self,
        client: AnyRedis,
        *,
        prefix: str = "janus",
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        check_durability(wait_replicas, wait_timeout_ms)
        super().__init__(prefix)
        self.client = client
        #: Durability (opt-in): each state-changing call returns only once this many replicas
        #: have it (WAIT), so an async-replica failover cannot lose what was acknowledged.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        if isinstance(client, RedisCluster):
            kwargs = client.nodes_manager.connection_kwargs
        else:
            kwargs = client.connection_pool.connection_kwargs
        #: Blocking waits stay below the client's socket timeout, or they would time out.
        self.socket_timeout: float | None = kwargs.get("socket_timeout")
        self._functions = {name: scripts.function_name(name) for name in scripts.SPECS}
        self._library, self._digest = scripts.library()
        self._loaded: set[str] = set()  # nodes on which the library was checked
        self._standalone_ready = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "janus",
        socket_timeout: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> Store:
        return cls(
            connect(url, socket_timeout=socket_timeout),
            prefix=prefix,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def close(self) -> None:
        self.client.close()

    # -- scripts -------------------------------------------------------------------------

    def run(self, call: Call[R]) -> R:
        """Send one script call and parse its reply; redis-py's errors become Janus's."""
        try:
            reply = self._eval_durable(call) if self.wait_replicas else self._eval(call)
        except _REDIS_ERRORS as exc:
            reply = exc
        return parse_reply(call, reply)

    def _node(self, key: str) -> redis.Redis:
        """The plain client of the primary that serves ``key``."""
        if isinstance(self.client, RedisCluster):
            node = self.client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            conn = node.redis_connection
            if conn is None:
                conn = self.client.get_redis_connection(node)
            return conn  # type: ignore[no-any-return]
        return self.client

    def _eval(self, call: Call[Any]) -> Any:
        """FCALL the call's function; load the library where it is missing and send again."""
        name = self._functions[call.script]
        if self._standalone_ready:  # the hot path: one server, library checked
            try:
                return self.client.fcall(name, len(call.keys), *call.keys, *call.args)
            except redis.exceptions.ResponseError as exc:
                if not _library_missing(exc):
                    raise
                self._standalone_ready = False
                self._loaded.clear()
        for attempt in range(LOAD_RETRIES + 1):
            node = self._node(call.keys[0])
            node_id = _node_id(node)
            if node_id not in self._loaded:
                self.ensure_library(node)
            try:
                return self.client.fcall(name, len(call.keys), *call.keys, *call.args)
            except redis.exceptions.ResponseError as exc:
                if not _library_missing(exc) or attempt == LOAD_RETRIES:
                    raise
                self._loaded.discard(node_id)  # flushed, or a node that never had it

    def ensure_library(self, node: redis.Redis) -> str:
        """Make sure ``node`` runs this build's library: load it if missing, replace a lower
        revision (or the same revision with other code), keep a higher one. Returns what was
        done: ``present`` | ``loaded`` | ``replaced`` | ``newer``."""
        action = scripts.library_action(self._library_info(node), self._digest)
        done = {"replace": "replaced", "load": "loaded"}.get(action, action)
        if action in ("load", "replace"):
            try:
                node.function_load(self._library, replace=action == "replace")
            except redis.exceptions.ResponseError as exc:
                if "already exists" not in str(exc):
                    raise
                done = "present"  # another client loaded it meanwhile
        self._loaded.add(_node_id(node))
        self._standalone_ready = not isinstance(self.client, RedisCluster)
        return done

    def _library_info(self, node: redis.Redis) -> tuple[int, int, str] | None:
        """(protocol, revision, digest) of the library loaded on ``node``, or None."""
        try:
            reply = node.fcall(scripts.function_name("info"), 0)
        except redis.exceptions.ResponseError as exc:
            if _library_missing(exc):
                return None
            raise
        return scripts.parse_info(reply)

    def library_versions(self) -> dict[str, tuple[int, int, str] | None]:
        """Each primary ("host:port") and the Janus library it has loaded (None: none)."""
        out: dict[str, tuple[int, int, str] | None] = {}
        with guard("reading the loaded library"):
            for name, conn in self._primaries():
                out[name] = self._library_info(conn)
        return out

    def load_library(self) -> dict[str, str]:
        """:meth:`ensure_library` on every primary ("host:port" -> what was done)."""
        with guard("loading the library"):
            return {name: self.ensure_library(conn) for name, conn in self._primaries()}

    def _primaries(self) -> list[tuple[str, redis.Redis]]:
        if isinstance(self.client, RedisCluster):
            out = []
            for node in self.client.get_primaries():  # type: ignore[no-untyped-call]
                conn = node.redis_connection or self.client.get_redis_connection(node)
                out.append((node.name, conn))
            return out
        kw = self.client.connection_pool.connection_kwargs
        return [(f"{kw.get('host', '?')}:{kw.get('port', '?')}", self.client)]

    def _eval_durable(self, call: Call[Any]) -> Any:
        """The call and a WAIT for ``wait_replicas`` replicas, in one round trip on one
        connection (WAIT counts the replicas that have this connection's writes). Too few in
        time: NotReplicated; the call's effect is on the primary but may not survive a
        failover, and retrying it is safe (job ids, fetch ids, report ids)."""
        name = self._functions[call.script]
        for attempt in range(LOAD_RETRIES + 1):
            node = self._node(call.keys[0])
            if _node_id(node) not in self._loaded:
                self.ensure_library(node)
            pipe = node.pipeline(transaction=False)
            pipe.fcall(name, len(call.keys), *call.keys, *call.args)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)  # type: ignore[no-untyped-call]
            reply, acked = pipe.execute(raise_on_error=False)
            if _library_missing(reply) and attempt < LOAD_RETRIES:
                self._loaded.discard(_node_id(node))
                continue
            if isinstance(reply, Exception):
                raise reply
            if isinstance(acked, Exception):
                raise acked
            if int(acked) < self.wait_replicas:
                raise not_replicated(
                    call.what, int(acked), self.wait_replicas, self.wait_timeout_ms
                )
            return reply
        raise redis.exceptions.ResponseError("Function not found (repeatedly)")

    def commands(self, c: Commands[R]) -> R:
        """Send plain commands of one slot as one pipeline and parse the replies."""
        with guard(c.what):
            if c.key is None and isinstance(self.client, RedisCluster):
                replies = [
                    self.client.execute_command(*args, target_nodes=RedisCluster.RANDOM)  # type: ignore[no-untyped-call]
                    for args in c.commands
                ]
            elif len(c.commands) == 1 and not c.errors_ok:
                replies = [self.client.execute_command(*c.commands[0])]  # type: ignore[no-untyped-call]
            else:
                pipe = self.client.pipeline(transaction=False)
                for args in c.commands:
                    pipe.execute_command(*args)
                replies = pipe.execute(raise_on_error=False)
                if not c.errors_ok:
                    raise_any(replies)
        return c.parse(replies)

    def send(self, request: Request) -> Any:
        return self.run(request) if isinstance(request, Call) else self.commands(request)

    def drive(self, op: Op[R]) -> R:
        """Run an operation of :mod:`janus.calls`: send what it yields, give it the replies."""
        try:
            request = next(op)
            while True:
                request = op.send(self.send(request))
        except StopIteration as done:
            return cast(R, done.value)

    def apply_policy(self, compiled: CompiledPolicy) -> tuple[int, bool]:
        """Install one dependency's policy; returns (version, changed)."""
        return self.drive(calls.apply_policy_op(self.keys(compiled.dependency), compiled))

    # -- blocking waits and reads ----------------------------------------------------------

    def wait_wake(self, dependency: str, timeout_s: float) -> bool:
        """Block (server side) until a function signals the coordinator, or the timeout."""
        key = self.keys(dependency).wake
        with guard(f"waiting for work on {dependency!r}"):
            return (
                self.client.blpop([key], timeout=block_s(timeout_s, self.socket_timeout))
                is not None
            )

    def wait_work(self, dependency: str, timeout_s: float) -> bool:
        """Block (server side) until a function signals idle workers, or the timeout."""
        key = self.keys(dependency).work
        with guard(f"waiting for work on {dependency!r}"):
            return (
                self.client.blpop([key], timeout=block_s(timeout_s, self.socket_timeout))
                is not None
            )

    def forget_consumer(self, dependency: str, group: str, consumer: str) -> bool:
        return self.drive(calls.forget_consumer(self.keys(dependency), group, consumer))

    def job(self, dependency: str, job_id: str) -> dict[bytes, bytes]:
        """The raw job record (empty when unknown or expired)."""
        key = self.keys(dependency).job(job_id)
        with guard(f"reading job {job_id!r} of {dependency!r}"):
            return cast(dict[bytes, bytes], self.client.hgetall(key))

    def dead_letters(
        self, dependency: str, *, start: str = "-", count: int | None = None
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        op = calls.dead_letter_entries(self.keys(dependency), start=start, count=count)
        return self.drive(op)

    def purge(self, dependency: str, entry_ids: Sequence[str]) -> int:
        return self.drive(calls.purge(self.keys(dependency), entry_ids))

    def dependencies(self) -> list[str]:
        return self.commands(calls.dependencies(self.prefix))

    def test_mode_dependencies(self) -> list[str]:
        """Dependencies whose policy was applied in test mode (janus.testing): their
        functions accept a caller's clock. A deployment should have none."""
        return self.drive(calls.test_mode_dependencies(self.prefix, self.keys))

    def time_us(self) -> int:
        return self.commands(calls.time_us())

    def policy_fields(self, dependency: str) -> dict[str, str]:
        return self.commands(calls.policy_fields(self.keys(dependency)))

    def state_fields(self, dependency: str) -> dict[str, float]:
        return self.commands(calls.state_fields(self.keys(dependency)))

    def groups(self, dependency: str) -> list[str]:
        return self.commands(calls.groups(self.keys(dependency)))

    def stream_counts(self, dependency: str) -> dict[str, tuple[int, int]]:
        return self.drive(calls.stream_counts(self.keys(dependency)))

    def status(self, dependency: str, now_ms: int) -> DependencyStatus:
        return self.drive(calls.status(self.keys(dependency), now_ms * 1000))

    def scope_status(self, dependency: str, scope: str, now_ms: int) -> ScopeStatus:
        return self.drive(calls.scope_status(self.keys(dependency), scope, now_ms * 1000))

    def _named_primaries(self) -> list[tuple[str, redis.Redis]]:
        """("host:port", connection) of every primary (the one server when standalone)."""
        clients: list[tuple[str, redis.Redis]] = []
        if isinstance(self.client, RedisCluster):
            for node in self.client.get_primaries():  # type: ignore[no-untyped-call]
                conn = node.redis_connection
                if conn is not None:
                    clients.append((node.name, conn))
        else:
            kw = self.client.connection_pool.connection_kwargs
            clients.append((f"{kw.get('host', '?')}:{kw.get('port', '?')}", self.client))
        return clients

    def server_stats(self) -> dict[str, dict[str, float]]:
        """Per primary: CPU seconds used (``cpu_s``: user + sys), ``used_memory`` (bytes)
        and ``redis_version`` as a number-free field of its own (``version`` in the key)."""
        out: dict[str, dict[str, float]] = {}
        with guard("reading server statistics"):
            for name, conn in self._named_primaries():
                cpu = conn.info("cpu")
                mem = conn.info("memory")
                out[name] = {
                    "cpu_s": float(cpu.get("used_cpu_sys", 0)) + float(cpu.get("used_cpu_user", 0)),
                    "used_memory": float(mem.get("used_memory", 0)),
                }
        return out

    def server_versions(self) -> dict[str, str]:
        """Per primary: its redis_version."""
        with guard("reading server versions"):
            return {
                name: str(conn.info("server").get("redis_version", "?"))
                for name, conn in self._named_primaries()
            }

    def server_configs(self) -> dict[str, dict[str, str]]:
        """CONFIG GET of the settings `janus doctor` checks, per primary ("host:port" -> dict).

        A server that refuses CONFIG (some managed services) maps to an empty dict.
        """
        wanted = ("maxmemory-policy", "maxmemory", "appendonly", "save")
        out: dict[str, dict[str, str]] = {}
        with guard("reading server configuration"):
            for name, conn in self._named_primaries():
                values: dict[str, str] = {}
                for item in wanted:
                    try:
                        got = cast(dict[Any, Any], conn.config_get(item))
                    except redis.exceptions.ResponseError:
                        continue
                    for key, value in got.items():
                        k_s = key.decode() if isinstance(key, bytes) else str(key)
                        values[k_s] = value.decode() if isinstance(value, bytes) else str(value)
                out[name] = values
        return out
