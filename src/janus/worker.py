"""Workers: run each released job once and report. They never retry and never sleep-and-retry;
Janus alone decides whether and when a job runs again.

Released means a worker has it. A job leaves Janus's queues only when a worker with a free
slot asks for work (:meth:`Worker.fetch`): the same atomic step releases it under every limit,
puts it on the worker's group stream, delivers it to this consumer and starts its lease. Work
that waits for a worker waits in Janus (where limits and fairness apply), never as a released
job with a running lease and nobody to run it, so a worker deploy gap costs no attempts.

Leases (shaped like redis-py's ``Lock``: acquired by fetch, extended by heartbeats, ended by a
report, with a clear "not owned" error)::

    fetch ───────────── heartbeat ─────── heartbeat ──────── complete / fail / return
      │ released to this   │ deadline = now + lease            │ accepted: the lease was
      │ worker; lease      │ (only while live and current)     │ live and current
      │ starts: deadline   │                                   │
      ▼ = now + lease      ▼                                   ▼
    ──┼────────────────────┼────────────────────────── deadline ─┼──────────────────▶ time
                                                         │
                  no heartbeat in time: ─────────────────┘ whoever steps the dependency next
                  (a coordinator, any worker's fetch) reclaims the attempt (failed,
                  "lease_expired") and the retry decision runs; any later report from this
                  attempt raises LeaseLost.

A report is *fenced* by (attempt, token): ``token`` is the stream entry id the attempt was
handed over with. Acknowledging the stream entry happens inside the same script, never as a
bare ``XACK`` (which checks no owner), so a job is completed at most once, whatever a paused
or partitioned worker says later. A fetch carries a fetch id chosen here and kept until the
fetch is answered: when redis-py re-sends a fetch whose reply was lost (a timeout, a stall),
the re-send returns the same jobs, so no job is ever held by a worker that does not know it.

:meth:`Worker.run` fetches as many jobs as it has free slots (never more than it can start at
once), runs them in threads, extends every lease in one heartbeat call, and reports finished
jobs in batches (one script call for all outcomes ready at that moment).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from janus import calls
from janus.calls import Op, Outcome
from janus.decisions import FailOutcome, FetchResult, LeasedJob, ReportResult
from janus.errors import (
    AccessDenied,
    AuthenticationFailed,
    InvalidInput,
    InvalidName,
    JanusError,
    LeaseLost,
    RedisUnavailable,
)
from janus.keys import Keys, check_dependency
from janus.store import Store

if TYPE_CHECKING:
    from janus.worker_metrics import HandlerOutcome, WorkerMetrics

log = logging.getLogger("janus.worker")

Handler = Callable[[LeasedJob], object]
Clock = Callable[[], int]
MAX_ERROR_KIND = 200
#: Largest cost a report may state (Lua keeps every integer exact below 2**53).
MAX_COST = 10**15
#: Longest Retry-After a report may state (100 years, in ms).
MAX_RETRY_AFTER_MS = 100 * 365 * 86_400_000
#: A failure's detail is kept to its last this many bytes (UTF-8, whole characters).
MAX_DETAIL_BYTES = 8192
#: Bound on the due work (reclaims, jobs coming due) one fetch does for the dependency.
FETCH_MAX_STEPS = 200
#: Longest single server-side wait for work (kept below the socket timeout).
MAX_BLOCK_S = 2.0
#: Most outcomes in one report call.
REPORT_BATCH = 200
#: A fetched job whose lease has less than this share left is given back, not started.
MIN_LEASE_SHARE = 0.1


class Retry(Exception):
    """Raise from a handler to report a classified failure, e.g.
    ``raise Retry("http_429", retry_after_ms=2000)``. Janus decides whether to retry."""

    def __init__(self, error: str, retry_after_ms: int | None = None, detail: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.retry_after_ms = retry_after_ms
        self.detail = detail


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def load_handler(path: str) -> Handler:
    """Import ``"package.module:function"``; a clear InvalidInput when that fails. The
    current directory is importable (like ``python -m``), so a module beside you loads."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInput(f"handler {path!r} must look like 'package.module:function'")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"handler {path!r}: cannot import {module_name!r}: {exc}") from exc
    handler = getattr(module, attr, None)
    if handler is None or not callable(handler):
        raise InvalidInput(f"handler {path!r}: {module_name!r} has no callable {attr!r}")
    return handler  # type: ignore[no-any-return]


def is_async_handler(handler: object) -> bool:
    """``async def`` functions, and callables whose ``__call__`` (or wrapped function) is."""
    target = handler
    while hasattr(target, "func"):  # functools.partial
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - a class with async __call__
    )


@dataclasses.dataclass
class WorkerStats:
    fetched: int = 0
    completed: int = 0
    failed: int = 0
    returned: int = 0
    lease_lost: int = 0


class _KeyedStore(Protocol):
    def keys(self, dependency: str) -> Keys: ...


class WorkerCore:
    """What :class:`Worker` and :class:`janus.aio.AsyncWorker` share: input checks, the
    operations of fetch, heartbeat and report (built by :mod:`janus.calls`), outcomes,
    counters and metrics. Pure: the two workers only send these through their store."""

    def __init__(
        self,
        store: _KeyedStore,
        dependency: str,
        *,
        group: str,
        consumer: str | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        check_dependency(dependency)
        for kind, value in (("group", group), ("consumer", consumer)):
            if value is not None and (
                not isinstance(value, str)
                or not value
                or len(value) > 200
                or not _encodable(value)
                or "\x00" in value
            ):
                raise InvalidName(
                    f"{kind} must be a non-empty string of at most 200 characters of valid "
                    f"Unicode text without NUL, got {value!r:.80}"
                )
        self.dependency = dependency
        self.group = group
        self.consumer = consumer or default_consumer()
        self._clock: Clock | None = None  # janus.testing only (see janus.client)
        self.stats = WorkerStats()
        self.metrics = metrics
        if metrics is not None:
            metrics.declare(dependency)
        self._keys = store.keys(dependency)
        self._pending_fetch: str | None = None
        self._warned_unknown = False

    def _now(self) -> int | None:
        return None if self._clock is None else self._clock()

    def _check(self, job: LeasedJob) -> None:
        if not isinstance(job, LeasedJob):
            raise InvalidInput(f"expected a LeasedJob from fetch(), got {type(job).__name__}")
        if job.dependency != self.dependency:
            raise InvalidInput(
                f"job {job.id!r} belongs to dependency {job.dependency!r}, "
                f"not to this worker's {self.dependency!r}"
            )

    @staticmethod
    def _check_count(count: object) -> int:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidInput(f"count must be an integer >= 1, got {count!r}")
        return count

    # -- operations ----------------------------------------------------------------------

    def _fetch_op(self, count: int) -> Op[FetchResult]:
        """One fetch; a fetch whose answer was lost (the call raised) is re-sent with the
        same fetch id by the next one, which then returns the jobs that fetch took. The
        caller holds its fetch lock around it."""
        fetch_id = self._pending_fetch or uuid.uuid4().hex
        self._pending_fetch = fetch_id
        result: FetchResult = yield calls.fetch(
            self._keys,
            group=self.group,
            consumer=self.consumer,
            count=count,
            fetch_id=fetch_id,
            max_steps=FETCH_MAX_STEPS,
            now_us=self._now(),
        )
        self._pending_fetch = None
        if result.group_created:
            log.info(
                "consumer group %r of %r was missing (new group, or Redis restarted empty): "
                "created",
                self.group,
                self.dependency,
            )
        if not result.known and not self._warned_unknown:
            self._warned_unknown = True
            log.warning("dependency %r has no applied policy: nothing to fetch", self.dependency)
        elif result.known:
            self._warned_unknown = False
        self.stats.fetched += len(result.jobs)
        return result

    def _wait_plan(self, last: FetchResult, timeout_s: float) -> tuple[float, bool]:
        """How to wait for work after ``last`` found none: (seconds, local). An idle-worker
        signal (a submit, a coordinator, another worker's fetch pushes one) ends a server-side
        wait (``local`` False: BLPOP on the work list) at once; when no coordinator keeps time
        for this dependency, the wait also ends at the next event the fetch reported, and one
        due sooner than Redis's 100 ms blocking-timeout tick is a precise local sleep."""
        limit = min(timeout_s, MAX_BLOCK_S)
        if (not last.timer or not last.known) and last.next_us is not None:
            until = max((last.next_us / 1000 - last.now_ms) / 1000, 0.0) + 0.001
            if until < limit:
                if until < 0.1:
                    return until, True
                limit = until
        return limit, False

    def _heartbeat_op(self, jobs: Sequence[LeasedJob]) -> Op[list[LeasedJob | LeaseLost]]:
        for job in jobs:
            self._check(job)
        if not jobs:
            return []
        results = yield calls.heartbeat(self._keys, jobs, self._now())
        if self.metrics is not None:
            for job, r in zip(jobs, results, strict=True):
                if not r.ok:
                    self.metrics.lease_lost(job)
        return [
            dataclasses.replace(job, lease_deadline_ms=r.lease_deadline_ms)
            if r.ok
            else _lost("extend the lease of", job, r.reason)
            for job, r in zip(jobs, results, strict=True)
        ]

    def _report_op(self, outcomes: Sequence[Outcome]) -> Op[list[ReportResult]]:
        for o in outcomes:
            if not isinstance(o, Outcome):
                raise InvalidInput(f"expected an Outcome, got {type(o).__name__}")
            self._check(o.job)
        out: list[ReportResult] = []
        for i in range(0, len(outcomes), REPORT_BATCH):
            chunk = outcomes[i : i + REPORT_BATCH]
            results = yield calls.report(self._keys, chunk, self._now())
            for o, r in zip(chunk, results, strict=True):
                self._count(o, r)
            out.extend(results)
        return out

    def _complete_op(self, job: LeasedJob, actual_cost: int | None) -> Op[None]:
        (result,) = yield from self._report_op([self.completed(job, actual_cost)])
        if not result.ok:
            raise _lost("complete", job, result.reason)

    def _fail_op(
        self,
        job: LeasedJob,
        error: str,
        retry_after_ms: int | None,
        detail: str,
        actual_cost: int | None,
    ) -> Op[FailOutcome]:
        outcome = self.failed(job, error, retry_after_ms, detail, actual_cost)
        (result,) = yield from self._report_op([outcome])
        if not result.ok:
            raise _lost("fail", job, result.reason)
        if result.decision == "retry":
            return FailOutcome("retry", result.retry_at_ms)
        return FailOutcome("dead", None)

    def _return_op(self, job: LeasedJob) -> Op[None]:
        (result,) = yield from self._report_op([self.returned(job)])
        if not result.ok:
            raise _lost("return", job, result.reason)

    def _forget_op(self) -> Op[bool]:
        return (yield from calls.forget_consumer(self._keys, self.group, self.consumer))

    # -- outcomes, for report() ------------------------------------------------------------

    def completed(self, job: LeasedJob, actual_cost: int | None = None) -> Outcome:
        """The outcome "completed" of ``job``, for :meth:`report`."""
        self._check(job)
        return Outcome(job, "completed", uuid.uuid4().hex, actual_cost=_actual(actual_cost))

    def retry_outcome(self, job: LeasedJob, signalled: Retry) -> Outcome:
        """The outcome of a handler's ``raise Retry(...)``. A Retry this client refuses
        (an empty error kind, a negative retry_after_ms) still fails the job, as
        ``InvalidRetry`` with the reason in its detail: an outcome that could not be built
        would leave the job held, its lease renewed, for ever."""
        try:
            return self.failed(job, signalled.error, signalled.retry_after_ms, signalled.detail)
        except InvalidInput as exc:
            log.error("job %s: the handler raised an invalid Retry: %s", job.id, exc)
            return self.failed(job, "InvalidRetry", None, f"{signalled!r}: {exc}")

    def failed(
        self,
        job: LeasedJob,
        error: str,
        retry_after_ms: int | None = None,
        detail: str = "",
        actual_cost: int | None = None,
    ) -> Outcome:
        """The outcome "failed with ``error``" of ``job``, for :meth:`report`. The attempt is
        charged to the scope's quota: ``actual_cost``, or its declared cost."""
        self._check(job)
        if (
            not isinstance(error, str)
            or not error
            or len(error) > MAX_ERROR_KIND
            or not _encodable(error)
        ):
            raise InvalidInput(
                f"error must be a non-empty string of at most {MAX_ERROR_KIND} chars, got "
                f"{error!r:.80}"
            )
        if retry_after_ms is not None and (
            isinstance(retry_after_ms, bool)
            or not isinstance(retry_after_ms, int)
            or not 0 <= retry_after_ms <= MAX_RETRY_AFTER_MS
        ):
            raise InvalidInput(
                "retry_after_ms must be an integer between 0 and 100 years in ms, got "
                f"{retry_after_ms!r:.80}"
            )
        if not isinstance(detail, str):
            raise InvalidInput(f"detail must be a string, got {type(detail).__name__}")
        return Outcome(
            job,
            "failed",
            uuid.uuid4().hex,
            actual_cost=_actual(actual_cost),
            error=error,
            retry_after_ms=retry_after_ms or 0,
            detail=_tail(detail, MAX_DETAIL_BYTES),
        )

    def returned(self, job: LeasedJob) -> Outcome:
        """The outcome "given back unstarted" of ``job``, for :meth:`report`."""
        self._check(job)
        return Outcome(job, "returned", uuid.uuid4().hex)

    def _count(self, outcome: Outcome, result: ReportResult) -> None:
        if not result.ok:
            self.stats.lease_lost += 1
        elif outcome.kind == "completed":
            self.stats.completed += 1
        elif outcome.kind == "failed":
            self.stats.failed += 1
        else:
            self.stats.returned += 1
        if self.metrics is not None:
            if result.ok:
                self.metrics.reported(self.dependency, outcome.kind)
            else:
                self.metrics.lease_lost(outcome.job)

    # -- metrics (None: nothing measured) ---------------------------------------------------

    def _timed_fetch(self) -> AbstractContextManager[object]:
        """Around one fetch call (inside the fetch lock: the call, not the wait for it)."""
        return nullcontext() if self.metrics is None else self.metrics.time_fetch(self.dependency)

    def _handler_started(self) -> float:
        return 0.0 if self.metrics is None else self.metrics.handler_started(self.dependency)

    def _handler_ended(self, started: float, outcome: HandlerOutcome | None) -> None:
        """A handler ended: ``outcome`` is how (None: cancelled by a shutdown, no return)."""
        if self.metrics is not None:
            self.metrics.handler_ended(self.dependency, started, outcome)


class Worker(WorkerCore):
    """One consumer of a dependency, in a consumer group (a pool of workers of one
    deployment; many consumers per group). Thread-safe. (For asyncio:
    :class:`janus.aio.AsyncWorker`, the same API awaited, handlers run as tasks.)
    ``metrics``: a :class:`janus.worker_metrics.WorkerMetrics` to measure this worker into
    (None: nothing measured)."""

    def __init__(
        self,
        store: Store,
        dependency: str,
        *,
        group: str,
        consumer: str | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        super().__init__(store, dependency, group=group, consumer=consumer, metrics=metrics)
        self.store = store
        self._stop = threading.Event()
        self._fetch_lock = threading.Lock()

    # -- taking work ---------------------------------------------------------------------

    def fetch(self, count: int = 10, block_ms: int | None = 1000) -> list[LeasedJob]:
        """Take up to ``count`` jobs: they are released to this worker now and their leases
        start. With ``block_ms``, wait up to that long for work (None or 0: don't wait).
        Take only what you will start at once: a taken job's lease is running."""
        self._check_count(count)
        result = self.fetch_result(count)
        if result.jobs or not block_ms:
            return result.jobs
        deadline = time.monotonic() + block_ms / 1000
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self.wait_for_work(result, left)
            result = self.fetch_result(count)
            if result.jobs:
                return result.jobs

    def fetch_result(self, count: int) -> FetchResult:
        """One fetch call, with what it says about the dependency (see :class:`FetchResult`).
        A fetch whose answer was lost (RedisUnavailable) is re-sent with the same fetch id by
        the next call, which then returns the jobs that fetch took."""
        with self._fetch_lock, self._timed_fetch():
            return self.store.drive(self._fetch_op(count))

    def wait_for_work(self, last: FetchResult, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until work may be there (see ``_wait_plan``)."""
        seconds, local = self._wait_plan(last, timeout_s)
        if local:
            self._stop.wait(seconds)
        else:
            self.store.wait_work(self.dependency, seconds)

    # -- leases --------------------------------------------------------------------------

    def heartbeat(self, job: LeasedJob) -> LeasedJob:
        """Extend the lease to now + lease; returns the job with its new deadline.
        Raises LeaseLost if the lease already expired or the attempt is not current."""
        (renewed,) = self.heartbeat_many([job])
        if isinstance(renewed, LeaseLost):
            raise renewed
        return renewed

    def heartbeat_many(self, jobs: Sequence[LeasedJob]) -> list[LeasedJob | LeaseLost]:
        """Extend many leases in one call: each job with its new deadline, or the LeaseLost
        that says why its lease cannot be extended."""
        return self.store.drive(self._heartbeat_op(jobs))

    # -- reports -------------------------------------------------------------------------

    def complete(self, job: LeasedJob, actual_cost: int | None = None) -> None:
        """Report success. ``actual_cost`` settles the scope's quota (default: the declared
        cost). Raises LeaseLost (and changes nothing) unless this attempt's lease is live and
        current: a job is completed at most once."""
        self.store.drive(self._complete_op(job, actual_cost))

    def fail(
        self,
        job: LeasedJob,
        error: str,
        retry_after_ms: int | None = None,
        detail: str = "",
        actual_cost: int | None = None,
    ) -> FailOutcome:
        """Report a failure of kind ``error`` (e.g. ``"http_503"``, ``"timeout"``). Janus
        decides: retry at some time, or dead-letter. The attempt is charged to the scope's
        quota (``actual_cost``, default: as declared). Raises LeaseLost like :meth:`complete`."""
        return self.store.drive(self._fail_op(job, error, retry_after_ms, detail, actual_cost))

    def return_unstarted(self, job: LeasedJob) -> None:
        """Give back a job this worker took but never started (shutting down, or too little
        lease left to start it): the attempt does not count, and the job goes back to the
        head of its scope's line. Raises LeaseLost like :meth:`complete`."""
        self.store.drive(self._return_op(job))

    def report(self, outcomes: Sequence[Outcome]) -> list[ReportResult]:
        """Report many outcomes in one call (build them with :meth:`completed`,
        :meth:`failed`, :meth:`returned`). Each is fenced and applied on its own: a refused
        one (``ok=False`` and its reason) changed nothing and does not stop the others. An
        outcome keeps its report id, so sending the same outcomes again is safe."""
        return self.store.drive(self._report_op(outcomes))

    def forget(self) -> bool:
        """Remove this consumer from its group if it holds nothing (graceful shutdown)."""
        return self.store.drive(self._forget_op())

    # -- the loop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to stop fetching; running jobs finish and report."""
        self._stop.set()

    def run(
        self,
        handler: Handler,
        *,
        concurrency: int = 8,
        install_signals: bool = True,
        grace_s: float | None = None,
    ) -> WorkerStats:
        """Fetch, run ``handler(job)`` in a pool of ``concurrency`` threads, report, repeat,
        until :meth:`stop` (or SIGTERM / SIGINT when ``install_signals``). Redis outages,
        OOM and read-only replicas are ridden out; AuthenticationFailed and AccessDenied stop
        the loop (running jobs still get their grace) and are raised.

        A handler that returns completes the job; ``raise Retry(kind, retry_after_ms=...)``
        or any exception fails it (the kind is the exception's type name). Jobs are fetched
        only into free slots and started at once; leases are extended in one call for all
        of them every lease / 3; outcomes are reported in batches. On stop, running jobs get
        ``grace_s`` (default: one lease) to finish and report.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInput(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if not callable(handler):
            raise InvalidInput(f"handler must be callable, got {type(handler).__name__}")
        if is_async_handler(handler):
            raise InvalidInput(
                "handler is an async def function: Worker.run runs handlers in threads and "
                "would never await it; run it with an asyncio worker instead"
            )
        restore = self._install_signals() if install_signals else None
        loop = _RunLoop(self, handler, concurrency)
        try:
            loop.run()
        finally:
            loop.shutdown(grace_s)
            if restore:
                restore()
            self._stop.clear()  # at the end, not the start: a stop() before run() counts
        return self.stats

    def _install_signals(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            return None

        def _handle(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping after running jobs finish", signum)
            self._stop.set()

        old = {sig: signal.signal(sig, _handle) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in old.items():
                signal.signal(sig, handler)

        return restore


class _RunLoop:
    """The threads of :meth:`Worker.run`: this one fetches into free slots; a pool runs
    handlers; a reporter sends finished outcomes in batches; a heartbeat thread extends every
    held lease in one call. A slot is free again once its job's outcome is reported."""

    def __init__(self, worker: Worker, handler: Handler, concurrency: int) -> None:
        self.w = worker
        self.handler = handler
        self.concurrency = concurrency
        self.cond = threading.Condition()
        self.held: dict[tuple[str, int], LeasedJob] = {}  # (id, attempt) -> latest lease
        self.outbox: list[Outcome] = []
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix=f"janus-{worker.dependency}")
        self.lease_s = 30.0
        self.done = threading.Event()  # no more handlers will run: reporter and beats drain
        self.reporter = threading.Thread(target=self._reports, daemon=True, name="janus-report")
        self.beats = threading.Thread(target=self._heartbeats, daemon=True, name="janus-beat")

    def run(self) -> None:
        self.reporter.start()
        self.beats.start()
        stop, backoff = self.w._stop, 0.0
        while not stop.is_set():
            with self.cond:
                while len(self.held) >= self.concurrency and not stop.is_set():
                    self.cond.wait(0.5)
                free = self.concurrency - len(self.held)
            if stop.is_set():
                break
            sent = time.monotonic()
            try:
                result = self.w.fetch_result(free)
                backoff = 0.0
            except (AuthenticationFailed, AccessDenied):
                raise  # waiting cannot fix these: run() stops and raises
            except JanusError as exc:
                backoff = min(max(backoff * 2, 0.1), 5.0)
                log.warning("fetch failed, retrying in %.1fs: %s", backoff, exc)
                stop.wait(backoff)
                continue
            for job in result.jobs:
                self._start(job, result.now_ms, sent)
            if not result.jobs:
                try:
                    self.w.wait_for_work(result, 1.0)
                except RedisUnavailable as exc:
                    log.warning("waiting for work failed: %s", exc)
                    stop.wait(0.5)

    def _start(self, job: LeasedJob, now_ms: int, sent: float) -> None:
        lease_ms = job.lease_deadline_ms - now_ms
        self.lease_s = max(lease_ms / 1000, 0.05)
        # The lease ran from no later than when the fetch was sent: a reply that took most
        # of the lease to arrive is given back instead of started on borrowed time.
        left_s = sent + lease_ms / 1000 - time.monotonic()
        with self.cond:
            self.held[(job.id, job.attempt)] = job
        if left_s < lease_ms / 1000 * MIN_LEASE_SHARE:
            log.warning("job %r arrived with %.3fs of its lease left: given back", job.id, left_s)
            self._finish(self.w.returned(job))
            return
        self.pool.submit(self._execute, job)

    def _execute(self, job: LeasedJob) -> None:
        w = self.w
        started = w._handler_started()
        ended: HandlerOutcome | None = None  # how the handler ended, for the metrics
        try:
            result = self.handler(job)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError(
                    "the handler returned an awaitable; Worker.run never awaits handlers "
                    "(use an asyncio worker for async handlers)"
                )
        except Retry as signalled:
            ended = "failed"
            outcome = w.retry_outcome(job, signalled)
        except Exception as exc:  # the handler's failure is the job's outcome
            ended = "error"
            kind = type(exc).__name__[:MAX_ERROR_KIND]
            outcome = w.failed(job, kind, None, traceback.format_exc())
        else:
            ended = "completed"
            outcome = w.completed(job)
        finally:
            w._handler_ended(started, ended)
        self._finish(outcome)

    def _finish(self, outcome: Outcome) -> None:
        with self.cond:
            self.outbox.append(outcome)
            self.cond.notify_all()

    def _reports(self) -> None:
        """Send outcomes as they come, all that are ready in one call; ride out Redis
        outages until the leases they are about would have ended."""
        while True:
            with self.cond:
                while not self.outbox and not (self.done.is_set() and not self.held):
                    self.cond.wait(0.5)
                if not self.outbox:
                    return
                batch, self.outbox = self.outbox[:REPORT_BATCH], self.outbox[REPORT_BATCH:]
                # The heartbeat thread may have moved a lease on: report with the latest.
                batch = [
                    dataclasses.replace(o, job=self.held.get((o.job.id, o.job.attempt), o.job))
                    for o in batch
                ]
            self._send(batch)
            with self.cond:
                for o in batch:
                    self.held.pop((o.job.id, o.job.attempt), None)
                self.cond.notify_all()

    def _send(self, batch: list[Outcome]) -> None:
        delay = 0.05
        while True:
            try:
                results = self.w.report(batch)
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
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except Exception as exc:  # refused, or a bug: logged, never a dead reporter thread
                log.error("report refused: %s", exc)
                return
            for o, r in zip(batch, results, strict=True):
                if not r.ok:
                    log.warning("%s", _lost(f"report {o.kind!r} for", o.job, r.reason))
            return

    def _heartbeats(self) -> None:
        """Extend every held lease once a third of the lease has passed since the last
        beat. The lease is known only once a job arrives, so the wait is re-read every
        0.5 s at most: a short lease is never left for a default interval."""
        last = time.monotonic()
        while not self.done.wait(min(max(self.lease_s / 3, 0.05), 0.5)):
            if time.monotonic() - last < max(self.lease_s / 3, 0.05):
                continue
            last = time.monotonic()
            with self.cond:
                jobs = list(self.held.values())
            if not jobs:
                continue
            try:
                renewed = self.w.heartbeat_many(jobs)
            except Exception as exc:  # heartbeats go on; the leases may still be live
                log.warning("heartbeat failed: %s", exc)
                continue
            with self.cond:
                for sent, job in zip(jobs, renewed, strict=True):
                    key = (sent.id, sent.attempt)
                    if isinstance(job, LeaseLost):
                        # Reported by this worker while the heartbeat was on its way: normal.
                        level = logging.WARNING if key in self.held else logging.DEBUG
                        log.log(level, "%s", job)
                        continue
                    if key in self.held:
                        self.held[key] = job

    def shutdown(self, grace_s: float | None) -> None:
        """Stop fetching (done by the caller), let running handlers finish for ``grace_s``
        (default: one lease), report what finished, then stop the helper threads."""
        self.w._stop.set()
        grace = self.lease_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        with self.cond:
            while self.held and time.monotonic() < deadline:
                self.cond.wait(min(0.1, max(deadline - time.monotonic(), 0.001)))
            abandoned = len(self.held)
            if abandoned:
                log.warning(
                    "%d job(s) still running at shutdown; their leases will expire and Janus "
                    "will retry them",
                    abandoned,
                )
                self.held.clear()
            self.done.set()
            self.cond.notify_all()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.reporter.join(timeout=5.0)
        self.beats.join(timeout=1.0)
        if not abandoned:
            try:
                self.w.forget()
            except JanusError as exc:
                log.debug("could not remove consumer %r: %s", self.w.consumer, exc)


def _actual(actual_cost: object) -> int | None:
    if actual_cost is None:
        return None
    if (
        isinstance(actual_cost, bool)
        or not isinstance(actual_cost, int)
        or not 0 <= actual_cost <= MAX_COST
    ):
        raise InvalidInput(
            f"actual_cost must be an integer between 0 and 10**15, got {actual_cost!r:.80}"
        )
    return actual_cost


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _tail(text: str, limit: int) -> str:
    """The end of ``text`` in at most ``limit`` UTF-8 bytes, on a character boundary; what
    UTF-8 cannot encode (a lone surrogate) is escaped, never an error."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) > limit:
        data = data[-limit:]
    return data.decode("utf-8", "ignore")


def _lost(action: str, job: LeasedJob, reason: object) -> LeaseLost:
    why = reason.decode() if isinstance(reason, bytes) else str(reason)
    text = {
        "expired": "its lease expired; Janus reclaims the attempt",
        "superseded": "that attempt is no longer current",
        "finished": "the job already finished",
        "unknown_job": "Janus has no such job (never submitted, or its record expired)",
    }.get(why, why)
    return LeaseLost(
        f"cannot {action} job {job.id!r} (attempt {job.attempt}) of {job.dependency!r}: {text}",
        why,
    )
