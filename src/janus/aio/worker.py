"""The asyncio worker: :class:`janus.Worker`'s API awaited, handlers run as tasks.

:meth:`AsyncWorker.run` is :meth:`janus.Worker.run` on an event loop: one task fetches into
free slots, each job runs as its own task (an ``async def`` handler is awaited; a plain
function runs in a thread through :func:`asyncio.to_thread`), one task reports finished
outcomes in batches, one extends every held lease in one call every lease / 3.

Cancellation is a shutdown without grace. Cancelling the task that awaits ``run()`` cancels
the running handlers, sends the outcomes that were already finished (best effort, bounded),
and re-raises: the cancelled jobs' leases are never reported, so they expire and Janus
reclaims and retries those attempts, as for a worker that died. Nothing is half reported: a
report is one atomic call, fenced by attempt and token, and carries its own report id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

from janus.aio.store import AsyncStore
from janus.calls import Outcome
from janus.decisions import FailOutcome, FetchResult, LeasedJob, ReportResult
from janus.errors import (
    AccessDenied,
    AuthenticationFailed,
    InvalidInput,
    JanusError,
    LeaseLost,
    RedisUnavailable,
)
from janus.worker import (
    MAX_ERROR_KIND,
    MIN_LEASE_SHARE,
    REPORT_BATCH,
    Handler,
    Retry,
    WorkerCore,
    WorkerStats,
    _lost,
    is_async_handler,
)

if TYPE_CHECKING:
    from janus.worker_metrics import HandlerOutcome, WorkerMetrics

log = logging.getLogger("janus.worker")
#: How long a cancelled run() still tries to send outcomes that had finished.
CANCEL_FLUSH_S = 2.0


class AsyncWorker(WorkerCore):
    """One consumer of a dependency in a consumer group, for asyncio (see
    :class:`janus.Worker`, also for ``metrics``). Use it from one event loop; :meth:`stop`
    may be called from any thread."""

    def __init__(
        self,
        store: AsyncStore,
        dependency: str,
        *,
        group: str,
        consumer: str | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        super().__init__(store, dependency, group=group, consumer=consumer, metrics=metrics)
        self.store = store
        self._fetch_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._stop_requested = threading.Event()  # stop() from a thread before run() began
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False

    # -- taking work ---------------------------------------------------------------------

    async def fetch(self, count: int = 10, block_ms: int | None = 1000) -> list[LeasedJob]:
        """See :meth:`janus.Worker.fetch`."""
        self._check_count(count)
        result = await self.fetch_result(count)
        if result.jobs or not block_ms:
            return result.jobs
        deadline = time.monotonic() + block_ms / 1000
        while (left := deadline - time.monotonic()) > 0:
            await self.wait_for_work(result, left)
            result = await self.fetch_result(count)
            if result.jobs:
                return result.jobs
        return []

    async def fetch_result(self, count: int) -> FetchResult:
        """See :meth:`janus.Worker.fetch_result`."""
        self._check_count(count)
        async with self._fetch_lock:
            with self._timed_fetch():
                return await self.store.drive(self._fetch_op(count))

    async def wait_for_work(self, last: FetchResult, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until work may be there; :meth:`stop` ends it."""
        seconds, local = self._wait_plan(last, timeout_s)
        stopped = asyncio.ensure_future(self._stop.wait())
        waits: set[asyncio.Future[object]] = {stopped}  # type: ignore[arg-type]
        if not local:
            waits.add(asyncio.ensure_future(self.store.wait_work(self.dependency, seconds)))
        try:
            done, _ = await asyncio.wait(
                waits,
                timeout=seconds + (1.0 if not local else 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            for future in done:
                future.result()  # a failed wait raises here
        finally:
            for future in waits:
                future.cancel()

    # -- leases and reports --------------------------------------------------------------

    async def heartbeat(self, job: LeasedJob) -> LeasedJob:
        """See :meth:`janus.Worker.heartbeat`."""
        (renewed,) = await self.heartbeat_many([job])
        if isinstance(renewed, LeaseLost):
            raise renewed
        return renewed

    async def heartbeat_many(self, jobs: Sequence[LeasedJob]) -> list[LeasedJob | LeaseLost]:
        """See :meth:`janus.Worker.heartbeat_many`."""
        return await self.store.drive(self._heartbeat_op(jobs))

    async def complete(self, job: LeasedJob, actual_cost: int | None = None) -> None:
        """See :meth:`janus.Worker.complete`."""
        await self.store.drive(self._complete_op(job, actual_cost))

    async def fail(
        self,
        job: LeasedJob,
        error: str,
        retry_after_ms: int | None = None,
        detail: str = "",
        actual_cost: int | None = None,
    ) -> FailOutcome:
        """See :meth:`janus.Worker.fail`."""
        op = self._fail_op(job, error, retry_after_ms, detail, actual_cost)
        return await self.store.drive(op)

    async def return_unstarted(self, job: LeasedJob) -> None:
        """See :meth:`janus.Worker.return_unstarted`."""
        await self.store.drive(self._return_op(job))

    async def report(self, outcomes: Sequence[Outcome]) -> list[ReportResult]:
        """See :meth:`janus.Worker.report`."""
        return await self.store.drive(self._report_op(outcomes))

    async def forget(self) -> bool:
        """See :meth:`janus.Worker.forget`."""
        return await self.store.drive(self._forget_op())

    # -- the loop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to stop fetching (from any thread); running jobs finish."""
        self._stop_requested.set()
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stop.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._stop.set()
        else:
            loop.call_soon_threadsafe(self._stop.set)

    async def run(
        self,
        handler: Handler,
        *,
        concurrency: int = 8,
        install_signals: bool = True,
        grace_s: float | None = None,
    ) -> WorkerStats:
        """See :meth:`janus.Worker.run`. ``async def`` handlers are awaited on this loop;
        plain ones run in threads (at most ``concurrency`` at once). SIGTERM / SIGINT stop
        it gracefully when ``install_signals`` (main thread only)."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInput(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if not callable(handler):
            raise InvalidInput(f"handler must be callable, got {type(handler).__name__}")
        if self._running:
            raise InvalidInput("this worker's run() is already running; make another worker")
        self._running = True
        self._loop = asyncio.get_running_loop()
        if self._stop_requested.is_set():  # stop() came from a thread before the loop was known
            self._stop.set()
        signals = install_signals and threading.current_thread() is threading.main_thread()
        for sig in (signal.SIGTERM, signal.SIGINT) if signals else ():
            self._loop.add_signal_handler(sig, self._signalled, sig)
        loop = _AsyncRunLoop(self, handler, concurrency)
        try:
            try:
                await loop.run()
            except asyncio.CancelledError:
                raise
            except BaseException:
                await loop.shutdown(grace_s)
                raise
            else:
                await loop.shutdown(grace_s)
        except asyncio.CancelledError:  # cancelled while running or during the grace
            await loop.abort()
            raise
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT) if signals else ():
                self._loop.remove_signal_handler(sig)
            self._stop.clear()  # at the end, not the start: a stop() before run() counts
            self._stop_requested.clear()
            self._running = False
        return self.stats

    def _signalled(self, signum: int) -> None:
        log.info("signal %d: stopping after running jobs finish", signum)
        self._stop.set()


class _AsyncRunLoop:
    """The tasks of :meth:`AsyncWorker.run` (the shape of :class:`janus.worker._RunLoop`)."""

    def __init__(self, worker: AsyncWorker, handler: Handler, concurrency: int) -> None:
        self.w, self.handler, self.concurrency = worker, handler, concurrency
        self.is_async = is_async_handler(handler)
        self.held: dict[tuple[str, int], LeasedJob] = {}  # (id, attempt) -> latest lease
        self.running: set[asyncio.Task[None]] = set()
        self.outbox: list[Outcome] = []
        self.sending: list[Outcome] = []  # the batch being reported (re-sent if cancelled)
        self.changed = asyncio.Event()  # a slot, an outcome or the stop flag changed
        self.done = asyncio.Event()  # no more handlers will run: reporter and beats drain
        self.lease_s = 30.0
        self.cancelling = False  # set before this loop cancels its handler tasks
        self.reporter = asyncio.ensure_future(self._reports())
        self.beats = asyncio.ensure_future(self._heartbeats())

    async def _wait_changed(self, timeout: float) -> None:
        self.changed.clear()
        await _sleep_unless(self.changed, timeout)

    async def run(self) -> None:
        stop, backoff = self.w._stop, 0.0
        while not stop.is_set():
            if len(self.held) >= self.concurrency:
                await self._wait_changed(0.5)
                continue
            sent = time.monotonic()
            try:
                result = await self.w.fetch_result(self.concurrency - len(self.held))
                backoff = 0.0
            except (AuthenticationFailed, AccessDenied):
                raise  # waiting cannot fix these
            except JanusError as exc:
                backoff = min(max(backoff * 2, 0.1), 5.0)
                log.warning("fetch failed, retrying in %.1fs: %s", backoff, exc)
                await _sleep_unless(stop, backoff)
                continue
            for job in result.jobs:
                self._start(job, result.now_ms, sent)
            if not result.jobs:
                try:
                    await self.w.wait_for_work(result, 1.0)
                except RedisUnavailable as exc:
                    log.warning("waiting for work failed: %s", exc)
                    await _sleep_unless(stop, 0.5)

    def _start(self, job: LeasedJob, now_ms: int, sent: float) -> None:
        lease_ms = job.lease_deadline_ms - now_ms
        self.lease_s = max(lease_ms / 1000, 0.05)
        left_s = sent + lease_ms / 1000 - time.monotonic()
        self.held[(job.id, job.attempt)] = job
        if left_s < lease_ms / 1000 * MIN_LEASE_SHARE:
            log.warning("job %r arrived with %.3fs of its lease left: given back", job.id, left_s)
            self._finish(self.w.returned(job))
            return
        task = asyncio.ensure_future(self._execute(job))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _execute(self, job: LeasedJob) -> None:
        w = self.w
        started = w._handler_started()
        ended: HandlerOutcome | None = None  # how the handler ended, for the metrics
        try:
            if self.is_async:
                result = await self.handler(job)  # type: ignore[misc]
            else:
                result = await asyncio.to_thread(self.handler, job)
                if inspect.isawaitable(result):
                    result = await result
        except Retry as signalled:
            ended = "failed"
            outcome = w.retry_outcome(job, signalled)
        except asyncio.CancelledError:
            if self.cancelling:
                raise  # we cancel it (shutdown without grace): no outcome; the lease expires
            # The handler let out a CancelledError of its own (it awaited something that was
            # cancelled): that is its failure, or the job would hold its slot for ever.
            ended = "error"
            outcome = w.failed(job, "CancelledError", None, traceback.format_exc())
        except Exception as exc:  # the handler's failure is the job's outcome
            ended = "error"
            kind = type(exc).__name__[:MAX_ERROR_KIND]
            outcome = w.failed(job, kind, None, traceback.format_exc())
        else:
            del result
            ended = "completed"
            outcome = w.completed(job)
        finally:
            w._handler_ended(started, ended)
        self._finish(outcome)

    def _finish(self, outcome: Outcome) -> None:
        self.outbox.append(outcome)
        self.changed.set()

    def _take(self) -> list[Outcome]:
        batch, self.outbox = self.outbox[:REPORT_BATCH], self.outbox[REPORT_BATCH:]
        # The heartbeat task may have moved a lease on: report with the latest.
        return [
            dataclasses.replace(o, job=self.held.get((o.job.id, o.job.attempt), o.job))
            for o in batch
        ]

    def _release(self, batch: list[Outcome]) -> None:
        for o in batch:
            self.held.pop((o.job.id, o.job.attempt), None)
        self.changed.set()

    async def _reports(self) -> None:
        while True:
            while not self.outbox:
                if self.done.is_set() and not self.held:
                    return
                await self._wait_changed(0.5)
            self.sending = batch = self._take()
            await self._send(batch)
            self.sending = []
            self._release(batch)

    async def _send(self, batch: list[Outcome]) -> None:
        delay = 0.05
        while True:
            try:
                results = await self.w.report(batch)
            except RedisUnavailable as exc:
                now_us = self.w._now()
                now_ms = time.time() * 1000 if now_us is None else now_us / 1000
                if all(now_ms >= o.job.lease_deadline_ms for o in batch):
                    log.warning(
                        "could not report %d outcome(s) before their leases ended (%s); Janus "
                        "will retry those jobs",
                        len(batch),
                        exc,
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except Exception as exc:  # refused, or a bug: logged, never a dead reporter
                log.error("report refused: %s", exc)
                return
            for o, r in zip(batch, results, strict=True):
                if not r.ok:
                    log.warning("%s", _lost(f"report {o.kind!r} for", o.job, r.reason))
            return

    async def _heartbeats(self) -> None:
        """Extend every held lease once a third of the lease has passed since the last beat
        (re-read every 0.5 s at most: the lease is known only once a job arrives)."""
        last = time.monotonic()
        while not await _sleep_unless(self.done, min(max(self.lease_s / 3, 0.05), 0.5)):
            if time.monotonic() - last < max(self.lease_s / 3, 0.05):
                continue
            last = time.monotonic()
            jobs = list(self.held.values())
            if not jobs:
                continue
            try:
                renewed = await self.w.heartbeat_many(jobs)
            except Exception as exc:  # heartbeats go on; the leases may still be live
                log.warning("heartbeat failed: %s", exc)
                continue
            for sent, job in zip(jobs, renewed, strict=True):
                key = (sent.id, sent.attempt)
                if isinstance(job, LeaseLost):
                    # Reported by this worker while the heartbeat was on its way: normal.
                    log.log(logging.WARNING if key in self.held else logging.DEBUG, "%s", job)
                elif key in self.held:
                    self.held[key] = job

    async def shutdown(self, grace_s: float | None) -> None:
        """Stop fetching, let running handlers finish for ``grace_s`` (default: one lease),
        report what finished, cancel the rest (their leases expire; Janus retries them)."""
        self.w._stop.set()
        deadline = time.monotonic() + (self.lease_s if grace_s is None else grace_s)
        while self.held and (left := deadline - time.monotonic()) > 0:
            await self._wait_changed(min(0.1, left))
        abandoned = len(self.held)
        if abandoned:
            log.warning(
                "%d job(s) still running at shutdown; their leases will expire and Janus "
                "will retry them",
                abandoned,
            )
        await self._cancel_handlers()
        self.held.clear()
        self.done.set()
        self.changed.set()
        await asyncio.wait({self.reporter}, timeout=5.0)
        self.beats.cancel()
        if not self.reporter.done():  # stuck on Redis: stop it, send what it held, bounded
            self.reporter.cancel()
            await self._flush_bounded()
        if not abandoned:
            try:
                await self.w.forget()
            except JanusError as exc:
                log.debug("could not remove consumer %r: %s", self.w.consumer, exc)

    async def abort(self) -> None:
        """run() was cancelled: cancel handlers and helpers (at once, before any await, so
        a second cancel cannot leave a heartbeat renewing a lease), send finished outcomes."""
        self.w._stop.set()
        self.done.set()
        self.reporter.cancel()
        self.beats.cancel()
        self.cancelling = True
        for task in self.running:
            task.cancel()
        await asyncio.gather(self.reporter, self.beats, *self.running, return_exceptions=True)
        await self._flush_bounded()

    async def _flush_bounded(self) -> None:
        """Send the batch that was in flight and the finished outcomes, bounded in time.
        Outcomes keep their report ids: re-sending the batch in flight is safe."""
        finished, self.outbox, self.sending = self.sending + self.outbox, [], []
        if finished:
            try:
                await asyncio.wait_for(self.w.report(finished), CANCEL_FLUSH_S)
            except (JanusError, asyncio.TimeoutError) as exc:
                log.warning("stopping: %d outcome(s) not reported: %s", len(finished), exc)

    async def _cancel_handlers(self) -> None:
        self.cancelling = True
        for task in self.running:
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)


async def _sleep_unless(event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``event`` is set; whether it is set."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
