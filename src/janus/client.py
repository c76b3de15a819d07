"""The producer front-end: ``Janus.from_url(url).submit(...)``.

Producers need only the Redis URL: limits are read inside Redis from the applied policy.
This module validates input (cheaply, before any round trip), fixes every job id *before*
the call so a re-sent call is a no-op, and turns replies into :class:`~janus.decisions.Decision`
values. It builds no key strings and sends no commands itself (see :mod:`janus.store`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, cast

from janus import calls
from janus.calls import JobArgs, Op
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
from janus.errors import InvalidCost, InvalidInput, PayloadTooLarge, UnknownDependency
from janus.keys import Keys, check_dependency, check_user_name
from janus.policy import CompiledPolicy, PolicySet, compile_policy, policy_diff
from janus.store import Store
from janus.worker import Worker
from janus.worker_metrics import WorkerMetrics

#: Default client-side payload limit; the policy's ``max_payload`` is checked in Redis too.
DEFAULT_MAX_PAYLOAD = 1024 * 1024
#: Jobs per script call in submit_many (bounds how long one call holds Redis).
DEFAULT_BATCH_SIZE = 500
_BATCH_BYTES = 8 * 1024 * 1024
_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
#: The largest stream entry id (each part below 2**64).
_MAX_ID = f"{2**64 - 1}-{2**64 - 1}"

Clock = Callable[[], int]
"""Returns the current time in microseconds: only janus.testing uses one (Redis TIME is the
clock)."""


@dataclass(frozen=True)
class Job:
    """One job for :meth:`Janus.submit_many`. ``job_id=None`` means "generate one"."""

    scope: str = "default"
    payload: bytes | str = b""
    job_id: str | None = None
    cost: int = 1


def new_job_id() -> str:
    return uuid.uuid4().hex


class _KeyedStore(Protocol):
    prefix: str

    def keys(self, dependency: str) -> Keys: ...


class ClientCore:
    """What :class:`Janus` and :class:`janus.aio.AsyncJanus` share: the settings, the input
    checks and the operations of every method (built by :mod:`janus.calls`). Pure: the two
    clients only send these through their store, one with ``drive``, one with ``await``."""

    store: _KeyedStore

    def __init__(
        self,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if (
            isinstance(max_payload_bytes, bool)
            or not isinstance(max_payload_bytes, int)
            or max_payload_bytes < 0
        ):
            raise InvalidInput(
                f"max_payload_bytes must be an integer >= 0, got {max_payload_bytes!r}"
            )
        #: Only janus.testing sets this (and then applies policies in test mode): the one
        #: clock is Redis's, and the functions refuse an explicit time anywhere else.
        self._clock: Clock | None = None
        self.max_payload_bytes = max_payload_bytes
        self.batch_size = batch_size
        self._valid_dependencies: set[str] = set()

    def _now(self) -> int | None:
        return None if self._clock is None else self._clock()

    # -- the operations behind each public method ------------------------------------------

    def _submit_op(
        self, dependency: str, scope: str, payload: bytes | str, job_id: str | None, cost: int
    ) -> Op[Decision]:
        self._check_dependency(dependency)
        job = self._job_args(Job(scope=scope, payload=payload, job_id=job_id, cost=cost), None)
        decisions = yield calls.submit(self.store.keys(dependency), [job], self._now())
        return cast(Decision, decisions[0])

    def _submit_many_op(
        self, dependency: str, jobs: Iterable[Job | Mapping[str, object]]
    ) -> Op[list[Decision]]:
        self._check_dependency(dependency)
        args = [self._job_args(self._as_job(j, i), i) for i, j in enumerate(jobs)]
        keys = self.store.keys(dependency)
        out: list[Decision] = []
        for chunk in _chunks(args, self.batch_size, _BATCH_BYTES):
            out.extend((yield calls.submit(keys, chunk, self._now())))
        return out

    def _apply_op(self, policies: PolicySet) -> Op[dict[str, tuple[int, bool]]]:
        out = {}
        for name, policy in sorted(policies.dependencies.items()):
            compiled = compile_policy(name, policy)
            if self._clock is not None:
                compiled = _test_mode(compiled)
            keys = self.store.keys(compiled.dependency)
            out[name] = yield from calls.apply_policy_op(keys, compiled)
        return out

    def _diff_op(self, policies: PolicySet) -> Op[dict[str, list[str]]]:
        out = {}
        for name, policy in sorted(policies.dependencies.items()):
            compiled = compile_policy(name, policy)
            if self._clock is not None:
                compiled = _test_mode(compiled)
            fields, scopes = yield calls.applied_policy(self.store.keys(name))
            out[name] = policy_diff(compiled, fields, scopes)
        return out

    def _job_op(self, dependency: str, job_id: str) -> Op[JobInfo | None]:
        self._check_dependency(dependency)
        check_user_name("job_id", job_id)
        info: JobInfo | None = yield calls.job(self.store.keys(dependency), job_id)
        return info

    def _dead_letters_op(
        self,
        dependency: str,
        scope: str | None,
        job_id: str | None,
        since_ms: int | None,
        limit: int | None,
    ) -> Op[list[DeadLetter]]:
        self._check_dependency(dependency)
        keys = self.store.keys(dependency)
        return (
            yield from calls.dead_letters(
                keys, scope=scope, job_id=job_id, since_ms=since_ms, limit=limit
            )
        )

    def _replay_op(self, dependency: str, letters: Iterable[DeadLetter]) -> Op[dict[str, str]]:
        self._check_dependency(dependency)
        triples = [(d.entry_id, d.job_id, d.scope) for d in letters]
        keys = self.store.keys(dependency)
        out: dict[str, str] = {}
        for i in range(0, len(triples), self.batch_size):
            chunk = triples[i : i + self.batch_size]
            statuses = yield calls.replay(keys, chunk, self._now())
            for (entry_id, _, _), status in zip(chunk, statuses, strict=True):
                out[entry_id] = status
        return out

    def _purge_op(self, dependency: str, letters: Iterable[DeadLetter]) -> Op[int]:
        self._check_dependency(dependency)
        ids = [d.entry_id for d in letters]
        return (yield from calls.purge(self.store.keys(dependency), ids))

    def _scope_status_op(self, dependency: str, scope: str) -> Op[ScopeStatus]:
        self._check_dependency(dependency)
        check_user_name("scope", scope)
        return (yield from calls.scope_status(self.store.keys(dependency), scope, self._now()))

    def _status_op(self, dependency: str, top: int = 0) -> Op[DependencyStatus]:
        self._check_dependency(dependency)
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 100:
            raise InvalidInput(f"top must be an integer from 0 to 100, got {top!r}")
        return (yield from calls.status(self.store.keys(dependency), self._now(), top))

    def _pause_op(
        self, dependency: str, for_s: float | None, scope: str | None, resume: bool = False
    ) -> Op[PauseResult]:
        self._check_dependency(dependency)
        if scope is not None:
            check_user_name("scope", scope)
        if resume:
            for_ms = 0
        elif for_s is None:
            for_ms = -1
        elif (
            isinstance(for_s, bool)
            or not isinstance(for_s, int | float)
            or not 0 < for_s <= calls.MAX_PAUSE_MS / 1000
        ):
            raise InvalidInput(
                f"for_s must be a number of seconds > 0 and at most ten years (or None: "
                f"until resumed), got {for_s!r}"
            )
        else:
            for_ms = max(int(for_s * 1000 + 0.999), 1)
        result = yield calls.pause(self.store.keys(dependency), scope, for_ms, self._now())
        if result is None:
            raise UnknownDependency(f"dependency {dependency!r} has no applied policy")
        return cast(PauseResult, result)

    def _delete_op(self, dependency: str, drop: bool) -> Op[DeleteProgress]:
        self._check_dependency(dependency)
        if not isinstance(drop, bool):
            raise InvalidInput(f"drop must be True or False, got {drop!r}")
        keys = self.store.keys(dependency)
        dropped = 0
        while True:
            step: DeleteProgress = yield calls.delete_policy(
                keys, drop=drop, max_steps=self.batch_size, now_us=self._now()
            )
            dropped += step.dropped
            if not (drop and step.dropped and step.waiting):
                break
        if step.deleted:
            yield calls.unregister(keys)
            # Applied again meanwhile (by another operator)? Then it stays listed.
            fields: dict[str, str] = yield calls.policy_fields(keys)
            if fields:
                yield calls.register(keys)
        return dataclasses.replace(step, dropped=dropped)

    def _events_op(
        self, dependency: str, after: str | None, last: int | None, count: int
    ) -> Op[list[Event]]:
        self._check_dependency(dependency)
        if after is not None and (
            not isinstance(after, str)
            or not _STREAM_ID.fullmatch(after)
            or any(int(part) >= 2**64 for part in after.split("-"))
            or after == f"{2**64 - 1}-{2**64 - 1}"  # (nothing can come after the largest)
        ):
            raise InvalidInput(f"after must be an event id like 1700000000000-0, got {after!r}")
        if after is not None and last is not None:
            raise InvalidInput("give after (follow the stream) or last (the newest), not both")
        for name, n in (("last", last), ("count", count)):
            if n is not None and (
                isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000
            ):
                raise InvalidInput(f"{name} must be an integer from 1 to 10000, got {n!r}")
        events: list[Event] = yield calls.events(
            self.store.keys(dependency), after=after, last=last, count=count
        )
        return events

    def _counters_op(self, dependency: str) -> Op[dict[str, int]]:
        self._check_dependency(dependency)
        counts: dict[str, int] = yield calls.counters(self.store.keys(dependency))
        return counts

    # -- input checks ----------------------------------------------------------------------

    def _check_dependency(self, dependency: str) -> None:
        if dependency not in self._valid_dependencies:
            check_dependency(dependency)
            if len(self._valid_dependencies) < 10_000:
                self._valid_dependencies.add(dependency)

    @staticmethod
    def _as_job(item: Job | Mapping[str, object], index: int) -> Job:
        if isinstance(item, Job):
            return item
        if isinstance(item, Mapping):
            unknown = set(item) - {"scope", "payload", "job_id", "cost"}
            if unknown:
                raise InvalidInput(f"job #{index}: unknown field(s) {sorted(unknown)}")
            return Job(**item)  # type: ignore[arg-type]
        raise InvalidInput(f"job #{index}: expected a Job or a mapping, got {type(item).__name__}")

    def _job_args(self, job: Job, index: int | None) -> JobArgs:
        where = "" if index is None else f"job #{index}: "
        scope = check_user_name("scope", job.scope)
        job_id = new_job_id() if job.job_id is None else check_user_name("job_id", job.job_id)
        cost = job.cost
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise InvalidCost(f"{where}cost must be an integer >= 1, got {cost!r}")
        payload = job.payload
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise InvalidInput(f"{where}payload must be bytes or str, got {type(payload).__name__}")
        payload = bytes(payload)
        if len(payload) > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"{where}payload is {len(payload)} bytes; the limit is "
                f"{self.max_payload_bytes} bytes"
            )
        return JobArgs(job_id, scope, cost, payload)

    # -- paged dead letters (the dashboard) ----------------------------------------------

    def _dead_letter_page_op(
        self,
        dependency: str,
        *,
        cursor: str | None,
        newest_first: bool,
        scope: str | None,
        reason: str | None,
        since_ms: int | None,
        until_ms: int | None,
        limit: int,
        scan: int = calls.DEAD_LETTER_SCAN,
    ) -> Op[tuple[list[DeadLetter], str | None, int]]:
        self._check_dependency(dependency)
        if cursor is not None:
            _check_entry_id("cursor", cursor)
            if cursor in ("0-0", _MAX_ID):  # (no entry has either: no page hands them out)
                raise InvalidInput(f"cursor must be an entry id a page handed out, got {cursor!r}")
        for name, ms in (("since_ms", since_ms), ("until_ms", until_ms)):
            if ms is not None and (
                isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms < 2**64
            ):
                raise InvalidInput(f"{name} must be a Redis time in ms (>= 0), got {ms!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be an integer from 1 to 1000, got {limit!r}")
        if (
            isinstance(scan, bool)
            or not isinstance(scan, int)
            or not 1 <= scan <= calls.DEAD_LETTER_SCAN
        ):
            raise InvalidInput(
                f"scan must be an integer from 1 to {calls.DEAD_LETTER_SCAN}, got {scan!r}"
            )
        if until_ms == 0:
            return [], None, 0  # (nothing is older than time 0; "(0-0" is no valid range end)
        return (
            yield from calls.dead_letter_page(
                self.store.keys(dependency),
                cursor=cursor,
                newest_first=newest_first,
                scope=scope,
                reason=reason,
                since_ms=since_ms,
                until_ms=until_ms,
                limit=limit,
                scan=scan,
            )
        )

    def _dead_letters_by_id_op(self, dependency: str, entry_ids: list[str]) -> Op[list[DeadLetter]]:
        self._check_dependency(dependency)
        for entry_id in entry_ids:
            _check_entry_id("entry id", entry_id)
        out: list[DeadLetter] = []
        keys = self.store.keys(dependency)
        for i in range(0, len(entry_ids), 1000):
            out.extend((yield calls.dead_letters_by_id(keys, entry_ids[i : i + 1000])))
        return out

    def _scope_hold_op(self, dependency: str, scope: str) -> Op[int | None]:
        self._check_dependency(dependency)
        check_user_name("scope", scope)
        return (yield from calls.scope_hold(self.store.keys(dependency), scope, self._now()))


class Janus(ClientCore):
    """A producer's handle on Janus. Thread-safe; create one per process and share it.
    (For asyncio applications: :class:`janus.aio.AsyncJanus`, the same API awaited.)"""

    store: Store

    def __init__(
        self,
        store: Store,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        super().__init__(max_payload_bytes=max_payload_bytes, batch_size=batch_size)
        self.store = store

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "janus",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        batch_size: int = DEFAULT_BATCH_SIZE,
        socket_timeout: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> Janus:
        """Connect to Redis or Redis Cluster (detected) at ``url``.

        ``wait_replicas`` (opt-in durability): every state-changing call returns only once
        that many replicas confirmed it (WAIT, within ``wait_timeout_ms``; else
        :class:`~janus.errors.NotReplicated`), so a failover to an async replica loses no
        acknowledged submit, fetch or report. It costs one replication round trip per call.
        """
        store = Store.from_url(
            url,
            prefix=prefix,
            socket_timeout=socket_timeout,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )
        return cls(store, max_payload_bytes=max_payload_bytes, batch_size=batch_size)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Janus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- producing ---------------------------------------------------------------------

    def submit(
        self,
        dependency: str,
        *,
        scope: str = "default",
        payload: bytes | str = b"",
        job_id: str | None = None,
        cost: int = 1,
    ) -> Decision:
        """Ask to run one job against ``dependency`` on behalf of ``scope``.

        Returns a decision: ``ready`` (its scope allows it now: the next worker that asks
        may take it), ``scheduled`` (reserved; waits until at least ``not_before_ms``) or
        ``rejected`` (nothing kept; see ``reason`` and ``retry_after_ms``). Either way the
        job is released only when a worker fetches it. Submitting an existing ``job_id``
        again returns that job's state and changes nothing (``created=False``).

        Raises :class:`~janus.errors.InvalidInput` subclasses for bad arguments and
        :class:`~janus.errors.RedisUnavailable` when Redis cannot be reached; in both cases
        nothing was admitted.
        """
        return self.store.drive(self._submit_op(dependency, scope, payload, job_id, cost))

    def submit_many(
        self, dependency: str, jobs: Iterable[Job | Mapping[str, object]]
    ) -> list[Decision]:
        """Submit many jobs for one dependency: one call per batch of ``batch_size``.

        Each job gets exactly the decision :meth:`submit` would have given it in that order.
        Every job is validated before anything is sent; a bad job raises and admits nothing.
        A policy-level refusal (cost above ``max_cost``, payload above ``max_payload``) raises
        for the batch that holds it; earlier batches stay admitted.
        """
        return self.store.drive(self._submit_many_op(dependency, jobs))

    # -- operating ---------------------------------------------------------------------

    def apply_policies(self, policies: PolicySet) -> dict[str, tuple[int, bool]]:
        """Write each dependency of a policy set into Redis: name -> (version, changed)."""
        return self.store.drive(self._apply_op(policies))

    def worker(
        self,
        dependency: str,
        *,
        group: str,
        consumer: str | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> Worker:
        """A worker in ``group`` (one group per dependency per deployment; many consumers).
        ``consumer`` defaults to ``<hostname>-<pid>``; ``metrics`` (a
        :class:`janus.worker_metrics.WorkerMetrics`) measures it for Prometheus."""
        w = Worker(self.store, dependency, group=group, consumer=consumer, metrics=metrics)
        w._clock = self._clock
        return w

    def job(self, dependency: str, job_id: str) -> JobInfo | None:
        """A job's state, attempts and history; None when unknown (or its record expired)."""
        return self.store.drive(self._job_op(dependency, job_id))

    # -- dead letters ------------------------------------------------------------------

    def dead_letters(
        self,
        dependency: str,
        *,
        scope: str | None = None,
        job_id: str | None = None,
        since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Dead letters of ``dependency``, oldest first, filtered by scope, job id and time
        (``since_ms``: Redis time in ms). Reading changes nothing."""
        op = self._dead_letters_op(dependency, scope, job_id, since_ms, limit)
        return self.store.drive(op)

    def replay(self, dependency: str, letters: Iterable[DeadLetter]) -> dict[str, str]:
        """Send dead-lettered jobs back through admission (attempts reset, history kept).
        Returns entry id -> replayed | already_replayed | active | missing. The dead letters
        stay until purged."""
        return self.store.drive(self._replay_op(dependency, letters))

    def purge(self, dependency: str, letters: Iterable[DeadLetter]) -> int:
        """Delete dead letters for good; returns how many were deleted."""
        return self.store.drive(self._purge_op(dependency, letters))

    def scope_status(self, dependency: str, scope: str) -> ScopeStatus:
        """A scope's share of the dependency, its waiting work and its quota."""
        return self.store.drive(self._scope_status_op(dependency, scope))

    def status(self, dependency: str, *, top: int = 0) -> DependencyStatus:
        """The dependency's counts, circuit, pauses and retry budget, and (``top`` > 0) the
        ``top`` scopes with the most work waiting."""
        return self.store.drive(self._status_op(dependency, top))

    def pause(
        self, dependency: str, *, for_s: float | None = None, scope: str | None = None
    ) -> PauseResult:
        """Hold the releases of the dependency (or of one ``scope``) for ``for_s`` seconds,
        or until :meth:`resume` (None). Waiting work stays (nothing is dropped, no attempt is
        used), running attempts run on, submits see the pause in their estimate
        (``dependency_paused`` when it is longer than ``max_wait``). Pausing again sets the
        new end. Raises UnknownDependency when no policy is applied."""
        return self.store.drive(self._pause_op(dependency, for_s, scope))

    def resume(self, dependency: str, *, scope: str | None = None) -> PauseResult:
        """End a pause by hand (status ``not_paused`` when there was none). A Retry-After
        pause is not cut short: it ends when the dependency said it would."""
        return self.store.drive(self._pause_op(dependency, None, scope, resume=True))

    def delete_policy(self, dependency: str, *, drop: bool = False) -> DeleteProgress:
        """Delete the dependency's policy without losing work: from the first call on,
        submits are rejected (``dependency_deleted``) and the admitted work drains under the
        same limits; ``drop`` moves the waiting work to the dead letters (reason
        ``dependency_deleted``, replayable) instead. The call that finds nothing waiting and
        nothing running removes the policy (``deleted``); until then, call again (``janus
        policy delete`` waits). Applying a policy first cancels the deletion."""
        return self.store.drive(self._delete_op(dependency, drop))

    def events(
        self,
        dependency: str,
        *,
        after: str | None = None,
        last: int | None = None,
        count: int = 1000,
    ) -> list[Event]:
        """The dependency's events (circuit transitions, pauses, dead letters, reclaimed
        leases, policy changes), oldest first: the ``last`` N, or up to ``count`` after the
        event id ``after`` (to follow the stream), or the first ``count``."""
        return self.store.drive(self._events_op(dependency, after, last, count))

    def policy_diff(self, policies: PolicySet) -> dict[str, list[str]]:
        """What :meth:`apply_policies` would change, per dependency (read only): one line
        per changed field (``name: old -> new``), ``[]`` when unchanged."""
        return self.store.drive(self._diff_op(policies))

    def counters(self, dependency: str) -> dict[str, int]:
        """The dependency's fleet-wide counters since its state was created (what every
        client and worker did): ``submit:ready``, ``rejected:<reason>``, ``started``,
        ``completed``, ``failed``, ``retried``, ``dead:<reason>``, ``lease_expired``, ... (see
        :mod:`janus.metrics`, which exports them to Prometheus)."""
        return self.store.drive(self._counters_op(dependency))

    def dead_letter_page(
        self,
        dependency: str,
        *,
        cursor: str | None = None,
        newest_first: bool = True,
        scope: str | None = None,
        reason: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 50,
        scan: int = calls.DEAD_LETTER_SCAN,
    ) -> tuple[list[DeadLetter], str | None, int]:
        """One page of dead letters (newest first by default) matching scope, reason and
        dead time (``since_ms`` <= entry time < ``until_ms``, Redis ms), after ``cursor``.
        Reads a bounded number of entries (:data:`janus.calls.DEAD_LETTER_SCAN`), so a page
        stays cheap with 100,000 of them (``scan``: fewer). Returns (letters, the next page's
        cursor or None at the end, entries read)."""
        op = self._dead_letter_page_op(
            dependency,
            cursor=cursor,
            newest_first=newest_first,
            scope=scope,
            reason=reason,
            since_ms=since_ms,
            until_ms=until_ms,
            limit=limit,
            scan=scan,
        )
        return self.store.drive(op)

    def dead_letters_by_id(self, dependency: str, entry_ids: Iterable[str]) -> list[DeadLetter]:
        """The dead letters with these entry ids (those still there), in that order."""
        return self.store.drive(self._dead_letters_by_id_op(dependency, list(entry_ids)))

    def scope_held_until(self, dependency: str, scope: str) -> int | None:
        """A scope's pause by hand (``pause(..., scope=)``): when it ends (Redis ms), -1
        until resumed, None when it is not paused by hand."""
        return self.store.drive(self._scope_hold_op(dependency, scope))


def _test_mode(compiled: CompiledPolicy) -> CompiledPolicy:
    """The policy as a test client applies it: the scripts then accept the test's clock
    (``test_clock``), and ``janus doctor`` and the coordinator report it loudly."""
    digest = hashlib.sha256(f"{compiled.digest}:test_clock".encode()).hexdigest()
    return dataclasses.replace(compiled, fields={**compiled.fields, "test_clock": 1}, digest=digest)


def _chunks(jobs: list[JobArgs], size: int, max_bytes: int) -> Iterable[list[JobArgs]]:
    chunk: list[JobArgs] = []
    used = 0
    for job in jobs:
        weight = len(job.payload) + len(job.job_id) + len(job.scope) + 64
        if chunk and (len(chunk) >= size or used + weight > max_bytes):
            yield chunk
            chunk, used = [], 0
        chunk.append(job)
        used += weight
    if chunk:
        yield chunk


def _check_entry_id(name: str, value: object) -> None:
    if (
        not isinstance(value, str)
        or not _STREAM_ID.fullmatch(value)
        or any(int(part) >= 2**64 for part in value.split("-"))
    ):
        raise InvalidInput(f"{name} must be a stream entry id like 1700000000000-0, got {value!r}")
