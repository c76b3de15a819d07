"""The producer front-end: ``Janus.from_url(url).submit(...)``.

Producers need only the Redis URL: limits are read inside Redis from the applied policy.
This module validates input (cheaply, before any round trip), fixes every job id *before*
the call so a re-sent call is a no-op, and turns replies into :class:`~janus.decisions.Decision`
values. It builds no key strings and sends no commands itself (see :mod:`janus.store`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType

from janus import calls
from janus.calls import JobArgs
from janus.decisions import (
    DeadLetter,
    Decision,
    JobInfo,
    ScopeStatus,
    parse_dead_letter,
    parse_job,
)
from janus.errors import InvalidCost, InvalidInput, PayloadTooLarge
from janus.keys import check_dependency, check_user_name
from janus.policy import CompiledPolicy, PolicySet, compile_policy
from janus.store import DependencyStatus, Store
from janus.worker import Worker

#: Default client-side payload limit; the policy's ``max_payload`` is checked in Redis too.
DEFAULT_MAX_PAYLOAD = 1024 * 1024
#: Jobs per script call in submit_many (bounds how long one call holds Redis).
DEFAULT_BATCH_SIZE = 500
_BATCH_BYTES = 8 * 1024 * 1024

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


class Janus:
    """A producer's handle on Janus. Thread-safe; create one per process and share it."""

    def __init__(
        self,
        store: Store,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise InvalidInput("batch_size must be >= 1")
        self.store = store
        #: Only janus.testing sets this (and then applies policies in test mode): the one
        #: clock is Redis's, and scripts refuse an explicit time anywhere else.
        self._clock: Clock | None = None
        self.max_payload_bytes = max_payload_bytes
        self.batch_size = batch_size
        self._valid_dependencies: set[str] = set()

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

    def _now(self) -> int | None:
        return None if self._clock is None else self._clock()

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
        self._check_dependency(dependency)
        job = self._job_args(Job(scope=scope, payload=payload, job_id=job_id, cost=cost), None)
        return self.store.run(calls.submit(self.store.keys(dependency), [job], self._now()))[0]

    def submit_many(
        self, dependency: str, jobs: Iterable[Job | Mapping[str, object]]
    ) -> list[Decision]:
        """Submit many jobs for one dependency: one script call per batch of ``batch_size``.

        Each job gets exactly the decision :meth:`submit` would have given it in that order.
        Every job is validated before anything is sent; a bad job raises and admits nothing.
        A policy-level refusal (cost above ``max_cost``, payload above ``max_payload``) raises
        for the batch that holds it; earlier batches stay admitted.
        """
        self._check_dependency(dependency)
        args = [self._job_args(self._as_job(j, i), i) for i, j in enumerate(jobs)]
        keys = self.store.keys(dependency)
        out: list[Decision] = []
        for chunk in _chunks(args, self.batch_size, _BATCH_BYTES):
            decisions: list[Decision] = self.store.run(calls.submit(keys, chunk, self._now()))
            out.extend(decisions)
        return out

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

    # -- operating ---------------------------------------------------------------------

    def apply_policies(self, policies: PolicySet) -> dict[str, tuple[int, bool]]:
        """Write each dependency of a policy set into Redis: name -> (version, changed)."""
        out = {}
        for name, policy in sorted(policies.dependencies.items()):
            compiled = compile_policy(name, policy)
            if self._clock is not None:
                compiled = _test_mode(compiled)
            out[name] = self.store.apply_policy(compiled)
        return out

    def worker(self, dependency: str, *, group: str, consumer: str | None = None) -> Worker:
        """A worker in ``group`` (one group per dependency per deployment; many consumers).
        ``consumer`` defaults to ``<hostname>-<pid>``."""
        w = Worker(self.store, dependency, group=group, consumer=consumer)
        w._clock = self._clock
        return w

    def job(self, dependency: str, job_id: str) -> JobInfo | None:
        """A job's state, attempts and history; None when unknown (or its record expired)."""
        self._check_dependency(dependency)
        check_user_name("job_id", job_id)
        raw = self.store.job(dependency, job_id)
        return parse_job(dependency, raw) if raw else None

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
        self._check_dependency(dependency)
        start = "-" if since_ms is None else f"{since_ms}-0"
        out: list[DeadLetter] = []
        for entry_id, fields in self.store.dead_letters(dependency, start=start):
            letter = parse_dead_letter(dependency, entry_id, fields)
            if scope is not None and letter.scope != scope:
                continue
            if job_id is not None and letter.job_id != job_id:
                continue
            out.append(letter)
            if limit is not None and len(out) >= limit:
                break
        return out

    def replay(self, dependency: str, letters: Iterable[DeadLetter]) -> dict[str, str]:
        """Send dead-lettered jobs back through admission (attempts reset, history kept).
        Returns entry id -> replayed | already_replayed | active | missing. The dead letters
        stay until purged."""
        self._check_dependency(dependency)
        triples = [(d.entry_id, d.job_id, d.scope) for d in letters]
        keys = self.store.keys(dependency)
        out: dict[str, str] = {}
        for i in range(0, len(triples), self.batch_size):
            chunk = triples[i : i + self.batch_size]
            statuses = self.store.run(calls.replay(keys, chunk, self._now()))
            for (entry_id, _, _), status in zip(chunk, statuses, strict=True):
                out[entry_id] = status
        return out

    def purge(self, dependency: str, letters: Iterable[DeadLetter]) -> int:
        """Delete dead letters for good; returns how many were deleted."""
        self._check_dependency(dependency)
        return self.store.purge(dependency, [d.entry_id for d in letters])

    def scope_status(self, dependency: str, scope: str) -> ScopeStatus:
        """A scope's share of the dependency, its waiting work and its quota."""
        self._check_dependency(dependency)
        check_user_name("scope", scope)
        now_us = self._now()
        if now_us is None:
            now_us = self.store.time_us()
        return self.store.scope_status(dependency, scope, now_us // 1000)

    def status(self, dependency: str) -> DependencyStatus:
        check_dependency(dependency)
        now_us = self._now()
        if now_us is None:
            now_us = self.store.time_us()
        return self.store.status(dependency, now_us // 1000)


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
