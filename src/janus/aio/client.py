"""The asyncio producer front-end: ``jn = await AsyncJanus.from_url(url)``.

Every method is :class:`janus.Janus`'s, awaited: the same input checks and operations
(:class:`janus.client.ClientCore`), sent by :class:`janus.aio.AsyncStore`. Many ``submit``
coroutines in flight at once share round trips (auto-pipelining), each its own atomic
decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType

from janus.aio.store import AsyncStore, connect
from janus.aio.worker import AsyncWorker
from janus.client import DEFAULT_BATCH_SIZE, DEFAULT_MAX_PAYLOAD, ClientCore, Job
from janus.decisions import (
    DeadLetter,
    Decision,
    DeleteProgress,
    DependencyStatus,
    Event,
    JobInfo,
    PauseResult,
    ScopeStatus,
)
from janus.policy import PolicySet
from janus.worker_metrics import WorkerMetrics


class AsyncJanus(ClientCore):
    """A producer's handle for asyncio code. Create one per process (per event loop) and
    share it between tasks; close it with ``await jn.close()`` or ``async with``."""

    store: AsyncStore

    def __init__(
        self,
        store: AsyncStore,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        super().__init__(max_payload_bytes=max_payload_bytes, batch_size=batch_size)
        self.store = store

    @classmethod
    async def from_url(
        cls,
        url: str,
        *,
        prefix: str = "janus",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        batch_size: int = DEFAULT_BATCH_SIZE,
        socket_timeout: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> AsyncJanus:
        """Connect to Redis or Redis Cluster (detected) at ``url``; see
        :meth:`janus.Janus.from_url` (``wait_replicas`` works on a standalone Redis here)."""
        client = await connect(url, socket_timeout=socket_timeout)
        try:
            store = AsyncStore(
                client,
                prefix=prefix,
                wait_replicas=wait_replicas,
                wait_timeout_ms=wait_timeout_ms,
                socket_timeout=socket_timeout,
            )
            return cls(store, max_payload_bytes=max_payload_bytes, batch_size=batch_size)
        except BaseException:
            await client.aclose()
            raise

    async def close(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> AsyncJanus:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def submit(
        self,
        dependency: str,
        *,
        scope: str = "default",
        payload: bytes | str = b"",
        job_id: str | None = None,
        cost: int = 1,
    ) -> Decision:
        """See :meth:`janus.Janus.submit`. Cancelling the coroutine while the call is in
        flight leaves no half state: the decision happened (a later submit of the same
        ``job_id`` reports it) or did not."""
        return await self.store.drive(self._submit_op(dependency, scope, payload, job_id, cost))

    async def submit_many(
        self, dependency: str, jobs: Iterable[Job | Mapping[str, object]]
    ) -> list[Decision]:
        """See :meth:`janus.Janus.submit_many`."""
        return await self.store.drive(self._submit_many_op(dependency, jobs))

    async def apply_policies(self, policies: PolicySet) -> dict[str, tuple[int, bool]]:
        """See :meth:`janus.Janus.apply_policies`."""
        return await self.store.drive(self._apply_op(policies))

    def worker(
        self,
        dependency: str,
        *,
        group: str,
        consumer: str | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> AsyncWorker:
        """An asyncio worker in ``group`` (see :meth:`janus.Janus.worker`)."""
        w = AsyncWorker(self.store, dependency, group=group, consumer=consumer, metrics=metrics)
        w._clock = self._clock
        return w

    async def job(self, dependency: str, job_id: str) -> JobInfo | None:
        """See :meth:`janus.Janus.job`."""
        return await self.store.drive(self._job_op(dependency, job_id))

    async def dead_letters(
        self,
        dependency: str,
        *,
        scope: str | None = None,
        job_id: str | None = None,
        since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """See :meth:`janus.Janus.dead_letters`."""
        op = self._dead_letters_op(dependency, scope, job_id, since_ms, limit)
        return await self.store.drive(op)

    async def replay(self, dependency: str, letters: Iterable[DeadLetter]) -> dict[str, str]:
        """See :meth:`janus.Janus.replay`."""
        return await self.store.drive(self._replay_op(dependency, letters))

    async def purge(self, dependency: str, letters: Iterable[DeadLetter]) -> int:
        """See :meth:`janus.Janus.purge`."""
        return await self.store.drive(self._purge_op(dependency, letters))

    async def scope_status(self, dependency: str, scope: str) -> ScopeStatus:
        """See :meth:`janus.Janus.scope_status`."""
        return await self.store.drive(self._scope_status_op(dependency, scope))

    async def status(self, dependency: str, *, top: int = 0) -> DependencyStatus:
        """See :meth:`janus.Janus.status`."""
        return await self.store.drive(self._status_op(dependency, top))

    async def pause(
        self, dependency: str, *, for_s: float | None = None, scope: str | None = None
    ) -> PauseResult:
        """See :meth:`janus.Janus.pause`."""
        return await self.store.drive(self._pause_op(dependency, for_s, scope))

    async def resume(self, dependency: str, *, scope: str | None = None) -> PauseResult:
        """See :meth:`janus.Janus.resume`."""
        return await self.store.drive(self._pause_op(dependency, None, scope, resume=True))

    async def delete_policy(self, dependency: str, *, drop: bool = False) -> DeleteProgress:
        """See :meth:`janus.Janus.delete_policy`."""
        return await self.store.drive(self._delete_op(dependency, drop))

    async def events(
        self,
        dependency: str,
        *,
        after: str | None = None,
        last: int | None = None,
        count: int = 1000,
    ) -> list[Event]:
        """See :meth:`janus.Janus.events`."""
        return await self.store.drive(self._events_op(dependency, after, last, count))

    async def counters(self, dependency: str) -> dict[str, int]:
        """See :meth:`janus.Janus.counters`."""
        return await self.store.drive(self._counters_op(dependency))
