"""Workers: run each released job once and report. They never retry and never sleep-and-retry;
Janus alone decides whether and when a job runs again.

Leases (shaped like redis-py's ``Lock``: acquired at release, extended by heartbeats, ended by
a report, with a clear "not owned" error)::

    release ──────── fetch ─────── heartbeat ─────── heartbeat ──── complete / fail
       │  lease starts  │  running      │ deadline = now + lease       │ accepted: the lease
       │  deadline =    │  on this      │ (only while live and         │ was live and current
       │  now + lease   │  consumer     │  current)                    │
       ▼                ▼               ▼                              ▼
    ───┼────────────────┼───────────────┼──────────────── deadline ────┼──────────────▶ time
                                                             │
                             no heartbeat in time: ──────────┘ the coordinator reclaims the
                             attempt (failed, error="lease_expired") and the retry decision
                             runs; any later report from this attempt raises LeaseLost.

A report is *fenced* by (attempt, token): ``token`` is the stream entry id of the release that
started the attempt. Acknowledging the stream entry happens inside the same script, never as
a bare ``XACK`` (which checks no owner). So a job is completed at most once, whatever a paused
or partitioned worker says later.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import FrameType

from janus.decisions import FailOutcome, LeasedJob, parse_start
from janus.errors import InvalidInput, JanusError, LeaseLost, RedisUnavailable
from janus.keys import check_dependency, encode_part
from janus.store import Store

log = logging.getLogger("janus.worker")

Handler = Callable[[LeasedJob], object]
Clock = Callable[[], int]
MAX_ERROR_KIND = 200


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
    """Import ``"package.module:function"``; a clear InvalidInput when that fails."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInput(f"handler {path!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"handler {path!r}: cannot import {module_name!r}: {exc}") from exc
    handler = getattr(module, attr, None)
    if handler is None or not callable(handler):
        raise InvalidInput(f"handler {path!r}: {module_name!r} has no callable {attr!r}")
    return handler  # type: ignore[no-any-return]


@dataclasses.dataclass
class WorkerStats:
    fetched: int = 0
    completed: int = 0
    failed: int = 0
    lease_lost: int = 0
    skipped: int = 0


class Worker:
    """One consumer of a dependency's stream, in the dependency's consumer group."""

    def __init__(
        self,
        store: Store,
        dependency: str,
        *,
        group: str,
        consumer: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        check_dependency(dependency)
        for kind, value in (("group", group), ("consumer", consumer)):
            if value is not None and (not isinstance(value, str) or not value or len(value) > 200):
                raise InvalidInput(f"{kind} must be a non-empty string of at most 200 characters")
        self.store = store
        self.dependency = dependency
        self.group = group
        self.consumer = consumer or default_consumer()
        self.clock = clock
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._beats_done = threading.Event()
        store.ensure_group(dependency, group)

    def _now(self) -> int | None:
        return None if self.clock is None else self.clock()

    def _check(self, job: LeasedJob) -> None:
        if not isinstance(job, LeasedJob):
            raise InvalidInput(f"expected a LeasedJob from fetch(), got {type(job).__name__}")
        if job.dependency != self.dependency:
            raise InvalidInput(
                f"job {job.id!r} belongs to dependency {job.dependency!r}, "
                f"not to this worker's {self.dependency!r}"
            )

    # -- one job at a time ---------------------------------------------------------------

    def fetch(self, count: int = 10, block_ms: int | None = 1000) -> list[LeasedJob]:
        """Read up to ``count`` released jobs (waiting up to ``block_ms``; None = don't wait)
        and take them. Stale entries (superseded, expired) are skipped and cleaned up."""
        if count < 1:
            raise InvalidInput("count must be >= 1")
        entries = self.store.read(self.dependency, self.group, self.consumer, count, block_ms)
        if not entries:
            return []
        args: list[tuple[str, str, int]] = []
        ids: list[tuple[str, str]] = []
        for entry_id, fields in entries:
            job_id = fields[b"id"].decode()
            args.append((encode_part(job_id), entry_id, int(fields[b"attempt"])))
            ids.append((entry_id, job_id))
        reply = self.store.start(self.dependency, self.group, self.consumer, args, self._now())
        jobs: list[LeasedJob] = []
        for item in parse_start(self.dependency, ids, reply):
            if isinstance(item, LeasedJob):
                jobs.append(item)
            else:
                self.stats.skipped += 1
        self.stats.fetched += len(jobs)
        return jobs

    def heartbeat(self, job: LeasedJob) -> LeasedJob:
        """Extend the lease to now + lease; returns the job with its new deadline.
        Raises LeaseLost if the lease already expired or the attempt is not current."""
        self._check(job)
        ok, reason, deadline = self.store.heartbeat(
            self.dependency, encode_part(job.id), job.attempt, job.token, self._now()
        )
        if ok != 1:
            raise _lost("extend the lease of", job, reason)
        return dataclasses.replace(job, lease_deadline_ms=int(deadline))

    def complete(self, job: LeasedJob, actual_cost: int | None = None) -> None:
        """Report success. ``actual_cost`` settles the scope's quota (default: the declared
        cost). Raises LeaseLost (and changes nothing) unless this attempt's lease is live and
        current: a job is completed at most once."""
        self._check(job)
        if actual_cost is not None and (
            isinstance(actual_cost, bool) or not isinstance(actual_cost, int) or actual_cost < 0
        ):
            raise InvalidInput(f"actual_cost must be an integer >= 0, got {actual_cost!r}")
        ok, reason = self.store.complete(
            self.dependency,
            self.group,
            encode_part(job.id),
            job.attempt,
            job.token,
            self._now(),
            actual_cost,
        )
        if ok != 1:
            raise _lost("complete", job, reason)
        self.stats.completed += 1

    def fail(
        self,
        job: LeasedJob,
        error: str,
        retry_after_ms: int | None = None,
        detail: str = "",
    ) -> FailOutcome:
        """Report a failure of kind ``error`` (e.g. ``"http_503"``, ``"timeout"``). Janus
        decides: retry at some time, or dead-letter. Raises LeaseLost like :meth:`complete`."""
        self._check(job)
        if not isinstance(error, str) or not error or len(error) > MAX_ERROR_KIND:
            raise InvalidInput(
                f"error must be a non-empty string of at most {MAX_ERROR_KIND} chars"
            )
        if retry_after_ms is not None and (
            isinstance(retry_after_ms, bool)
            or not isinstance(retry_after_ms, int)
            or retry_after_ms < 0
        ):
            raise InvalidInput(f"retry_after_ms must be an integer >= 0, got {retry_after_ms!r}")
        ok, reason, decision, at = self.store.fail(
            self.dependency,
            self.group,
            encode_part(job.id),
            job.attempt,
            job.token,
            error,
            retry_after_ms or 0,
            detail,
            self._now(),
        )
        if ok != 1:
            raise _lost("fail", job, reason)
        self.stats.failed += 1
        kind = decision.decode() if isinstance(decision, bytes) else str(decision)
        return FailOutcome(kind, int(at) if kind == "retry" else None)  # type: ignore[arg-type]

    # -- the loop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to stop fetching; running jobs finish and report."""
        self._stop.set()

    def run(
        self,
        handler: Handler,
        *,
        concurrency: int = 8,
        block_ms: int = 1000,
        install_signals: bool = True,
        grace_s: float | None = None,
    ) -> WorkerStats:
        """Fetch, run ``handler(job)`` in a pool of ``concurrency`` threads, report, repeat.

        A handler that returns normally completes the job; one that raises :class:`Retry`
        fails it with that error kind; any other exception fails it with the exception's
        type name as error kind and the traceback in the history. The worker keeps running.
        Leases are extended every third of the lease while a handler runs. SIGTERM/SIGINT
        (when ``install_signals`` and called from the main thread) stop fetching; running
        jobs get ``grace_s`` (default: one lease) to finish; the rest are reclaimed later.
        """
        if concurrency < 1:
            raise InvalidInput("concurrency must be >= 1")
        lease_ms = int(self.store.policy_fields(self.dependency).get("lease_ms", "30000"))
        restore = self._install_signals() if install_signals else None
        active: dict[Future[None], LeasedJob] = {}
        lock = threading.Lock()
        beat = threading.Thread(
            target=self._heartbeats,
            args=(active, lock, lease_ms),
            daemon=True,
            name=f"janus-heartbeat-{self.consumer}",
        )
        self._beats_done.clear()
        beat.start()
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix=f"janus-{self.dependency}")
        backoff = 0.0
        try:
            while not self._stop.is_set():
                with lock:
                    running = list(active)
                if len(running) >= concurrency:
                    wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                    continue
                try:
                    jobs = self.fetch(concurrency - len(running), block_ms)
                    backoff = 0.0
                except JanusError as exc:
                    backoff = min(max(backoff * 2, 0.1), 5.0)
                    log.warning("fetch failed, retrying in %.1fs: %s", backoff, exc)
                    self._stop.wait(backoff)
                    continue
                for job in jobs:
                    # Under the lock: a handler that finishes at once removes its job only
                    # after it was added, so no finished job is left holding a slot.
                    with lock:
                        future = pool.submit(self._execute, handler, job, active, lock)
                        active[future] = job
        finally:
            with lock:
                running = list(active)
            grace = lease_ms / 1000 if grace_s is None else grace_s
            _done, pending = wait(running, timeout=grace)
            if pending:
                log.warning(
                    "%d job(s) still running at shutdown; their leases will expire "
                    "and Janus will retry them",
                    len(pending),
                )
            pool.shutdown(wait=False, cancel_futures=True)
            self._stop.set()
            self._beats_done.set()  # running jobs are done (or abandoned): no more heartbeats
            if restore:
                restore()
        return self.stats

    def _execute(
        self,
        handler: Handler,
        job: LeasedJob,
        active: dict[Future[None], LeasedJob],
        lock: threading.Lock,
    ) -> None:
        report: Callable[[LeasedJob], object]
        try:
            handler(job)
        except Retry as signalled:
            error, after, detail = signalled.error, signalled.retry_after_ms, signalled.detail
            report = lambda j: self.fail(j, error, after, detail)  # noqa: E731
        except Exception as exc:  # the handler's failure is the job's outcome
            kind, trace = type(exc).__name__, traceback.format_exc()
            report = lambda j: self.fail(j, kind, None, trace)  # noqa: E731
        else:
            report = self.complete
        try:
            self._report(report, job, active, lock)
        finally:
            with lock:
                for future, held in list(active.items()):
                    if held.id == job.id and held.attempt == job.attempt:
                        del active[future]

    def _report(
        self,
        send: Callable[[LeasedJob], object],
        job: LeasedJob,
        active: dict[Future[None], LeasedJob],
        lock: threading.Lock,
    ) -> None:
        """Deliver a report, retrying through Redis outages until the lease would end."""
        delay = 0.05
        while True:
            with lock:  # the heartbeat thread may have moved the deadline and the job
                current = next(
                    (j for j in active.values() if j.id == job.id and j.attempt == job.attempt),
                    job,
                )
            try:
                send(current)
                return
            except LeaseLost as exc:
                self.stats.lease_lost += 1
                log.warning("%s", exc)
                return
            except RedisUnavailable as exc:
                if self._now_ms() >= current.lease_deadline_ms:
                    log.warning(
                        "could not report job %r before its lease ended (%s); Janus will retry it",
                        job.id,
                        exc,
                    )
                    return
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _now_ms(self) -> int:
        now = self._now()
        return int(time.time() * 1000) if now is None else now // 1000

    def _heartbeats(
        self, active: dict[Future[None], LeasedJob], lock: threading.Lock, lease_ms: int
    ) -> None:
        interval = max(lease_ms / 3000, 0.05)
        while not self._beats_done.wait(interval):
            with lock:
                held = list(active.items())
            for future, job in held:
                try:
                    renewed = self.heartbeat(job)
                except LeaseLost as exc:
                    log.warning("%s", exc)
                    continue
                except Exception as exc:  # heartbeats must go on for the other jobs
                    log.warning("heartbeat for %s failed: %s", job.id, exc)
                    continue
                with lock:
                    if future in active:
                        active[future] = renewed

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
