"""The Redis-facing module of the asyncio API: it sends what :mod:`janus.calls` builds, as
:class:`janus.store.Store` does, over ``redis.asyncio``; it holds no decision logic.

**Auto-pipelining.** Calls made in the same event-loop tick (many ``submit`` coroutines in
flight) are queued and sent together in one pipeline per flush (no transaction): one round
trip for all of them, each still its own atomic function call with its own reply or error.
A caller cancelled while its call is in flight only stops waiting: the call runs or not as a
whole, and its effect is safe to repeat (job ids, fetch ids, report ids).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar, cast

import hiredis  # a dependency (redis[hiredis])
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster

from janus import scripts
from janus import store as base
from janus.calls import Call, Commands, Op
from janus.errors import InvalidInput
from janus.urls import check_url, redact

AnyAsyncRedis = aredis.Redis | RedisCluster
R = TypeVar("R")
PIPELINE_MAX = 8  # calls per pipeline: several in flight at once, so Redis and Python overlap


class _Connection(aredis.Connection):
    """Packs commands in C (hiredis) as sync redis-py does; redis.asyncio packs them in
    Python, a third of a pipelined submit's client CPU."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # "FUNCTION LOAD", as redis-py does
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


class _Cluster(RedisCluster):
    """Routes FCALL by its keys (redis-py would ask the server for them: a round trip)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_kwargs["connection_class"] = _Connection  # for nodes found later
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = _Connection

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() == "FCALL" and len(args) > 2 and int(args[1]):
            return self.keyslot(args[2])
        return await super()._determine_slot(command, *args)


async def connect(url: str, *, socket_timeout: float = 5.0) -> AnyAsyncRedis:
    """As :func:`janus.store.connect`: a Redis Cluster node is detected (HELLO)."""
    check_url(url)
    options: dict[str, Any] = {"socket_timeout": socket_timeout, "retry": base._async_retry()}
    with base.guard(f"connecting to {redact(url)}"):
        probe = aredis.Redis.from_url(url, **options)
        try:
            hello = await probe.execute_command("HELLO", "2")  # type: ignore[no-untyped-call]
        finally:
            await probe.aclose()
        if base._hello_field(hello, "mode") != "cluster":
            return aredis.Redis.from_url(url, connection_class=_Connection, **options)
        return await _Cluster.from_url(url, **options).initialize()


class AsyncStore(base.Prefixed):
    """Janus's state in one Redis (or Redis Cluster), for asyncio."""

    def __init__(
        self, client: AnyAsyncRedis, *, prefix: str = "janus", wait_replicas: int = 0,
        wait_timeout_ms: int = 1000, socket_timeout: float | None = 5.0,
    ) -> None:  # fmt: skip
        base.check_durability(wait_replicas, wait_timeout_ms)
        if wait_replicas and isinstance(client, RedisCluster):
            raise InvalidInput("wait_replicas on a Redis Cluster needs the sync janus.Janus")
        super().__init__(prefix)
        self.client, self.socket_timeout = client, socket_timeout
        self.wait_replicas, self.wait_timeout_ms = wait_replicas, wait_timeout_ms
        self._library, self._digest = scripts.library()
        self._ready = False  # the library was checked on every primary
        self._queue: list[tuple[Call[Any], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        await self.client.aclose()

    async def ensure_library(self) -> None:
        """Load the library where it is missing or older, on every primary."""
        cluster = isinstance(self.client, RedisCluster)
        nodes = self.client.get_primaries() if cluster else [None]  # type: ignore[union-attr]
        info_function = scripts.function_name("info")
        for node in nodes:
            where = {"target_nodes": node} if cluster else {}
            try:
                info = scripts.parse_info(
                    await self.client.execute_command("FCALL", info_function, 0, **where)
                )
            except base._REDIS_ERRORS as exc:
                if not base._library_missing(exc):
                    raise
                info = None
            action = scripts.library_action(info, self._digest)
            load = ["FUNCTION", "LOAD", *(["REPLACE"] if action == "replace" else [])]
            if action in ("load", "replace"):
                try:
                    await self.client.execute_command(*load, self._library, **where)
                except base._REDIS_ERRORS as exc:
                    if "already exists" not in str(exc):
                        raise  # else another client (or task) loaded it meanwhile
        self._ready = True

    async def run(self, call: Call[R]) -> R:
        """Send one call (auto-pipelined with the calls of the same tick); parse its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((call, future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        # A call whose caller was cancelled before it was sent is not sent.
        batch, self._queue = [(c, f) for c, f in self._queue if not f.done()], []
        for i in range(0, len(batch), PIPELINE_MAX):
            task = asyncio.ensure_future(self._send(batch[i : i + PIPELINE_MAX]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Call[Any], asyncio.Future[Any]]]) -> None:
        replies: list[Any] = [None] * len(batch)
        todo = list(range(len(batch)))
        try:
            for attempt in range(base.LOAD_RETRIES + 1):
                if not self._ready:
                    await self.ensure_library()
                got = await self._pipeline([batch[i][0] for i in todo])
                for i, reply in zip(todo, got, strict=True):
                    replies[i] = reply
                todo = [i for i in todo if base._library_missing(replies[i])]
                if not todo or attempt == base.LOAD_RETRIES:
                    break
                self._ready = False  # flushed, or a node that never had it: load, send again
        except asyncio.CancelledError:  # the loop is shutting down: nobody gets an answer
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the whole pipeline failed: every caller gets why
            replies = [exc] * len(batch)
        for (call, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # the caller was cancelled: the call's effect stands (idempotent)
            try:
                future.set_result(base.parse_reply(call, reply))
            except Exception as exc:
                future.set_exception(exc)

    async def _pipeline(self, calls_: list[Call[Any]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for c in calls_:
            pipe.fcall(scripts.function_name(c.script), len(c.keys), *c.keys, *c.args)
        if self.wait_replicas:
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
        replies = list(await pipe.execute(raise_on_error=False))
        if not self.wait_replicas:
            return replies
        wait, wanted = replies.pop(), self.wait_replicas
        if not isinstance(wait, Exception) and int(wait) < wanted:
            wait = base.not_replicated("the call", int(wait), wanted, self.wait_timeout_ms)
        if isinstance(wait, Exception):  # too few replicas, or WAIT refused (READONLY, ...)
            return [r if isinstance(r, Exception) else wait for r in replies]
        return replies

    async def commands(self, c: Commands[R]) -> R:
        """Plain commands of one slot as one pipeline (see :class:`janus.calls.Commands`)."""
        with base.guard(c.what):
            if c.key is None and isinstance(self.client, RedisCluster):
                nodes = {"target_nodes": RedisCluster.RANDOM}
                replies = [await self.client.execute_command(*a, **nodes) for a in c.commands]
            else:
                pipe = self.client.pipeline(transaction=False)
                for args in c.commands:
                    pipe.execute_command(*args)
                replies = base.raise_any(await pipe.execute(raise_on_error=False), c.errors_ok)
        return c.parse(replies)

    async def drive(self, op: Op[R]) -> R:
        """Run an operation of :mod:`janus.calls`: send what it yields, give it the replies."""
        try:
            request = next(op)
            while True:
                sent = self.run(request) if isinstance(request, Call) else self.commands(request)
                request = op.send(await sent)
        except StopIteration as done:
            return cast(R, done.value)

    async def wait_work(self, dependency: str, timeout_s: float) -> bool:
        """Block (server side) until a function signals idle workers, or the timeout."""
        key, seconds = self.keys(dependency).work, base.block_s(timeout_s, self.socket_timeout)
        with base.guard(f"waiting for work on {dependency!r}"):
            return await self.client.blpop([key], timeout=seconds) is not None
