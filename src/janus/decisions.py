"""The values Janus answers with, and the parsing of job records. Pure: no Redis, no clock.

A submit always ends in one of three outcomes, each an ordinary value:

``ready``      accepted; its scope allows it now and nothing known holds it: the next worker
               that asks for work may take it (within the fair share of its scope).
``scheduled``  accepted; it holds a reservation and waits until at least ``not_before_ms``
               (a lower bound: the dependency's share is decided when a worker takes it).
``rejected``   nothing was kept; ``reason`` says why (``unknown_dependency``,
               ``max_wait_exceeded``, ...) and ``retry_after_ms`` how long it would have waited.

A job is *released* only when a worker fetches it: released means a worker has it.
(Script replies are parsed in :mod:`janus.calls`.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

Status = Literal["ready", "scheduled", "rejected"]


@dataclass(frozen=True)
class Decision:
    """The answer to one submit."""

    dependency: str
    job_id: str
    status: Status
    reason: str | None
    not_before_ms: int
    retry_after_ms: int | None
    created: bool
    """False when the job id already existed: this decision reports that job's state."""
    attempt: int
    state: str | None
    """The job record's status (``scheduled``, ``queued``, ...); None when rejected."""

    @property
    def accepted(self) -> bool:
        return self.status != "rejected"


@dataclass(frozen=True)
class StepResult:
    """What one coordinator step did for one dependency."""

    reclaimed: int
    """Expired leases ended (each a failed attempt, ``lease_expired``)."""
    retried: int
    dead_lettered: int
    moved: int
    """Waiting jobs that came due (moved to their scope's ready line)."""
    ready: bool
    """A job may be released now (an idle worker was woken)."""
    next_us: int | None
    """When the next step is worth running (Redis time, us); None when nothing is pending."""
    now_us: int


@dataclass(frozen=True)
class LeasedJob:
    """A job a worker holds: run it once, then report with its worker.

    ``attempt`` and ``token`` identify the lease; reports carrying another attempt or token
    are refused. ``lease_deadline_ms`` is Redis time; heartbeats move it.
    """

    dependency: str
    id: str
    scope: str
    payload: bytes
    attempt: int
    cost: int
    lease_deadline_ms: int
    token: str
    """The stream entry id the attempt was handed over with: ``<release ms>-<seq>``."""

    @property
    def started_ms(self) -> int:
        """When the attempt was released to its worker (Redis time, ms)."""
        return int(self.token.split("-", 1)[0])


@dataclass(frozen=True)
class FetchResult:
    """What a worker's fetch got."""

    jobs: list[LeasedJob]
    known: bool
    """False when the dependency has no applied policy (nothing can be released)."""
    repeat: bool
    """The answer of an earlier call with the same fetch id (a re-sent call)."""
    now_ms: int
    next_us: int | None
    """When more work may be released (Redis time, us); None when nothing waits."""
    timer: bool
    """A coordinator stepped the dependency recently: it will wake idle workers on time."""
    group_created: bool
    """The consumer group (or its stream) was missing and has been created."""


@dataclass(frozen=True)
class HeartbeatResult:
    ok: bool
    reason: str | None
    lease_deadline_ms: int


Decided = Literal["completed", "retry", "dead", "returned"]


@dataclass(frozen=True)
class ReportResult:
    """The answer to one outcome of a report: accepted (with what Janus decided) or refused
    (``reason``: ``expired`` | ``superseded`` | ``finished`` | ``unknown_job``; nothing
    changed)."""

    ok: bool
    reason: str | None
    decision: Decided | None
    retry_at_ms: int | None


@dataclass(frozen=True)
class FailOutcome:
    """What Janus decided after a failure report."""

    decision: Literal["retry", "dead"]
    retry_at_ms: int | None


@dataclass(frozen=True)
class JobInfo:
    """A job's record: ``status`` is scheduled | running | completed | failed | dead
    (``scheduled``: waiting for its first attempt; ``running``: a worker holds it;
    ``failed``: the last attempt failed and a retry waits)."""

    dependency: str
    id: str
    scope: str
    status: str
    attempt: int
    cost: int
    payload: bytes
    submitted_ms: int | None
    not_before_ms: int | None
    started_ms: int | None
    """When the current (or last) attempt was released to a worker."""
    lease_deadline_ms: int | None
    finished_ms: int | None
    last_error: str | None
    history: list[dict[str, object]]


def _text(raw: bytes | None, default: str = "") -> str:
    return default if raw is None else raw.decode("utf-8", "replace")


def _num(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def parse_history(raw: bytes | None) -> list[dict[str, object]]:
    """A record's history (a JSON array of attempt outcomes). Never raises: a history that
    cannot be read (written by hand, or cut by an older version mid-character) becomes one
    entry saying so, so one bad record never makes a listing fail."""
    if not raw:
        return []
    try:
        history = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return [{"outcome": "unreadable", "raw": raw[:200].decode("utf-8", "replace")}]
    if isinstance(history, dict):  # cjson encodes an empty list as {}
        return []
    if not isinstance(history, list):
        return [{"outcome": "unreadable", "raw": repr(history)[:200]}]
    return [
        h if isinstance(h, dict) else {"outcome": "unreadable", "raw": repr(h)} for h in history
    ]


def parse_job(dependency: str, raw: dict[bytes, bytes]) -> JobInfo:
    """A job record (HGETALL) as a :class:`JobInfo`; never raises on odd field values."""

    def num(name: str) -> int | None:
        return _num(raw.get(name.encode()))

    error = raw.get(b"last_error")
    return JobInfo(
        dependency=dependency,
        id=_text(raw.get(b"id")),
        scope=_text(raw.get(b"scope")),
        status=_text(raw.get(b"status"), "unknown"),
        attempt=num("attempt") or 0,
        cost=num("cost") or 1,
        payload=raw.get(b"payload", b""),
        submitted_ms=num("submitted_ms"),
        not_before_ms=num("not_before_ms"),
        started_ms=num("started_ms"),
        lease_deadline_ms=num("lease_deadline_ms"),
        finished_ms=num("finished_ms"),
        last_error=_text(error) if error else None,
        history=parse_history(raw.get(b"history")),
    )


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a dependency's dead-letter stream."""

    entry_id: str
    dependency: str
    job_id: str
    scope: str
    cost: int
    reason: str
    """attempts_exhausted | not_retryable"""
    attempts: int
    error: str
    dead_ms: int
    payload: bytes
    history: list[dict[str, object]]


def parse_dead_letter(dependency: str, entry_id: str, f: dict[bytes, bytes]) -> DeadLetter:
    """A dead-letter stream entry; never raises on odd field values."""

    def text(name: str) -> str:
        return _text(f.get(name.encode()))

    return DeadLetter(
        entry_id=entry_id,
        dependency=dependency,
        job_id=text("id"),
        scope=text("scope"),
        cost=_num(f.get(b"cost")) or 1,
        reason=text("reason"),
        attempts=_num(f.get(b"attempts")) or 0,
        error=text("error"),
        dead_ms=_num(f.get(b"dead_ms")) or 0,
        payload=f.get(b"payload", b""),
        history=parse_history(f.get(b"history")),
    )


@dataclass(frozen=True)
class ScopeStatus:
    """One scope's view of a dependency (``jn.scope_status``)."""

    dependency: str
    scope: str
    weight: float
    place: str
    """active (has ready work in the fair queue) | throttled (held by its own bucket or
    quota) | idle"""
    share: float
    """Its weight over the weights of the active scopes: the share of the dependency it gets
    while they all stay backlogged (0 when it has nothing ready)."""
    waiting_jobs: int
    waiting_cost: int
    ready_jobs: int
    max_queued: int | None
    max_queued_cost: int | None
    quota_limit: int | None
    quota_used: int | None
    """Settled (actual) cost plus outstanding reservations in the current window."""
    quota_period_ms: int | None
    quota_resets_at_ms: int | None
    """Fixed windows: when the window resets; rolling: when the oldest charge leaves it."""


@dataclass(frozen=True)
class DependencyStatus:
    dependency: str
    policy_version: int | None
    scheduled: int
    """Jobs waiting: in the delay queue or a scope's ready line (new, retries, held back)."""
    in_flight: int
    """Started attempts whose lease is live and whose outcome is not reported."""
    stream_length: int
    """Entries on the dependency's group streams: attempts running (or not yet reclaimed)."""
    queued_cost: int
    next_due_us: int | None
    circuit: str
    """closed | open | half_open, or off (the applied policy has no circuit breaker)."""
    circuit_open_until_ms: int | None
    paused_until_ms: int | None
    """A Retry-After pause of the whole dependency, while it lasts."""
    retry_budget: float | None
    """Retry tokens banked at the last update (None: no budget used yet)."""
    dead_letters: int
    active_scopes: int = 0
    """Scopes with ready work in the fair queue."""
    parked: int = 0
    """Retries waiting for a retry-budget token."""
    circuit_opens: int = 0
    """Times the circuit opened in a row (each open lasts longer); 0 once it closes."""
    held_until_ms: int | None = None
    """A pause by hand of the whole dependency (``janus pause``): when it ends, -1 until
    resumed; None when not paused by hand."""
    held_scopes: int = 0
    """Scopes paused by hand (``janus pause --scope``)."""
    deleting: bool = False
    """The policy is being deleted (``janus policy delete``): submits are refused, the
    waiting work drains."""
    top_scopes: tuple[ScopeLoad, ...] = ()
    """The scopes with the most work waiting (filled in by ``status(..., top=N)``)."""
    oldest_waiting_ms: int | None = None
    """When the oldest of the scopes' first waiting jobs was submitted (with ``top`` > 0;
    a bounded sample, see :func:`janus.calls.top_scopes`); None when nothing waits."""
    max_in_flight: int | None = None
    """The policy's in-flight limit (None: unlimited)."""
    tokens: float | None = None
    """Cost the dependency bucket would let through now (0 .. burst)."""


@dataclass(frozen=True)
class ScopeLoad:
    """One scope's waiting work, for the top scopes of a status."""

    scope: str
    waiting_jobs: int
    waiting_cost: int
    held_until_ms: int | None = None
    """Paused by hand: when it ends, -1 until resumed; None when not."""


@dataclass(frozen=True)
class PauseResult:
    """What ``pause`` / ``resume`` did."""

    dependency: str
    scope: str | None
    status: Literal["paused", "resumed", "not_paused"]
    until_ms: int | None
    """When the pause ends (Redis ms); None: until resumed, or not paused (resumed)."""
    held_scopes: int


@dataclass(frozen=True)
class DeleteProgress:
    """Where a policy deletion stands after one call (see ``delete_policy``)."""

    dependency: str
    waiting: int
    """Jobs still waiting (they drain, or ``drop`` dead-letters them)."""
    running: int
    """Attempts in flight; their leases end by a report or by expiring."""
    dropped: int
    """Jobs moved to the dead letters so far (reason ``dependency_deleted``)."""
    deleted: bool
    """The policy is gone: the dependency is unknown now."""


@dataclass(frozen=True)
class Event:
    """One entry of a dependency's events stream (``janus events``)."""

    dependency: str
    event_id: str
    """The stream entry id (``<ms>-<seq>``): events are in this order."""
    kind: str
    """circuit_open | circuit_half_open | circuit_closed | paused | resumed | dead_letter |
    lease_reclaimed | policy_applied | policy_deleting | policy_deleted"""
    at_ms: int
    fields: dict[str, str]
