"""Decision values and the parsing of script replies. Pure: no Redis, no clock.

A submit always ends in one of three outcomes, each an ordinary value:

``released``   the job is on the dependency's stream now.
``scheduled``  the job holds a reservation and waits in the delay queue; ``not_before_ms`` is a
               lower bound on its release time (the dependency's share is decided at release).
``rejected``   nothing was kept; ``reason`` says why (``unknown_dependency``,
               ``max_wait_exceeded``) and ``retry_after_ms`` how long the job would have waited.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from janus.errors import ProtocolError

Status = Literal["released", "scheduled", "rejected"]
_STATUSES: frozenset[str] = frozenset({"released", "scheduled", "rejected"})
SUBMIT_WIDTH = 7


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
class ReleaseStep:
    """What one coordinator step did for one dependency."""

    released: int
    released_cost: int
    respaced: int
    next_us: int | None
    """When to run the next step (Redis time, microseconds); None when the queue is empty."""
    now_us: int
    budget_dead: int = 0
    """Retries dead-lettered because the retry budget had no token within budget.max_wait."""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise ProtocolError(f"expected a string in script reply, got {value!r}")


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ProtocolError(f"expected an integer in script reply, got {value!r}")


def parse_submit(dependency: str, job_ids: Sequence[str], reply: object) -> list[Decision]:
    """Turn submit.lua's flat reply (7 values per job) into decisions."""
    if not isinstance(reply, list) or len(reply) != SUBMIT_WIDTH * len(job_ids):
        raise ProtocolError(f"submit.lua replied {reply!r:.200} for {len(job_ids)} job(s)")
    out: list[Decision] = []
    for i, job_id in enumerate(job_ids):
        status, reason, not_before, retry_after, created, attempt, state = reply[
            i * SUBMIT_WIDTH : (i + 1) * SUBMIT_WIDTH
        ]
        status_s = _text(status)
        if status_s not in _STATUSES:
            raise ProtocolError(f"submit.lua returned unknown status {status_s!r}")
        retry = _int(retry_after)
        state_s = _text(state)
        out.append(
            Decision(
                dependency=dependency,
                job_id=job_id,
                status=status_s,  # type: ignore[arg-type]
                reason=_text(reason) or None,
                not_before_ms=_int(not_before),
                retry_after_ms=None if retry < 0 else retry,
                created=_int(created) == 1,
                attempt=_int(attempt),
                state=state_s or None,
            )
        )
    return out


def parse_release(reply: object) -> ReleaseStep:
    """Turn release.lua's reply (6 integers) into a :class:`ReleaseStep`."""
    if not isinstance(reply, list) or len(reply) != 6:
        raise ProtocolError(f"release.lua replied {reply!r:.200}")
    released, cost, respaced, next_us, now_us, budget_dead = (_int(v) for v in reply)
    return ReleaseStep(
        released, cost, respaced, None if next_us < 0 else next_us, now_us, budget_dead
    )


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


@dataclass(frozen=True)
class FailOutcome:
    """What Janus decided after a failure report."""

    decision: Literal["retry", "dead"]
    retry_at_ms: int | None


@dataclass(frozen=True)
class ReclaimStep:
    reclaimed: int
    retried: int
    dead_lettered: int
    next_deadline_ms: int | None


@dataclass(frozen=True)
class JobInfo:
    """A job's record: ``status`` is scheduled | queued | running | completed | failed | dead
    (``failed``: the last attempt failed and a retry is scheduled)."""

    dependency: str
    id: str
    scope: str
    status: str
    attempt: int
    cost: int
    payload: bytes
    submitted_ms: int | None
    not_before_ms: int | None
    released_ms: int | None
    lease_deadline_ms: int | None
    finished_ms: int | None
    last_error: str | None
    history: list[dict[str, object]]


def parse_start(
    dependency: str, entries: Sequence[tuple[str, str]], reply: object
) -> list[LeasedJob | str]:
    """start.lua's reply, aligned with ``entries`` (token, job id): a job, or why not taken."""
    if not isinstance(reply, list) or len(reply) != 8 * len(entries):
        raise ProtocolError(f"start.lua replied {reply!r:.200} for {len(entries)} entries")
    out: list[LeasedJob | str] = []
    for n, (token, _job_id) in enumerate(entries):
        ok, job_id, scope, cost, attempt, deadline, payload, reason = reply[8 * n : 8 * n + 8]
        if _int(ok) != 1:
            out.append(_text(reason))
            continue
        if not isinstance(payload, bytes):
            raise ProtocolError(f"start.lua returned a payload of type {type(payload).__name__}")
        out.append(
            LeasedJob(
                dependency=dependency,
                id=_text(job_id),
                scope=_text(scope),
                payload=payload,
                attempt=_int(attempt),
                cost=_int(cost),
                lease_deadline_ms=_int(deadline),
                token=token,
            )
        )
    return out


def parse_reclaim(reply: object) -> ReclaimStep:
    if not isinstance(reply, list) or len(reply) != 4:
        raise ProtocolError(f"reclaim.lua replied {reply!r:.200}")
    reclaimed, retried, dead, next_ms = (_int(v) for v in reply)
    return ReclaimStep(reclaimed, retried, dead, None if next_ms < 0 else next_ms)


def parse_job(dependency: str, raw: dict[bytes, bytes]) -> JobInfo:
    """A job record (HGETALL) as a :class:`JobInfo`."""

    def num(name: str) -> int | None:
        value = raw.get(name.encode())
        return None if value is None else int(value)

    history_raw = raw.get(b"history")
    history = json.loads(history_raw) if history_raw else []
    if isinstance(history, dict):  # cjson encodes an empty list as {}
        history = []
    error = raw.get(b"last_error")
    return JobInfo(
        dependency=dependency,
        id=raw[b"id"].decode(),
        scope=raw[b"scope"].decode(),
        status=raw[b"status"].decode(),
        attempt=num("attempt") or 0,
        cost=num("cost") or 1,
        payload=raw.get(b"payload", b""),
        submitted_ms=num("submitted_ms"),
        not_before_ms=num("not_before_ms"),
        released_ms=num("released_ms"),
        lease_deadline_ms=num("lease_deadline_ms"),
        finished_ms=num("finished_ms"),
        last_error=error.decode(errors="replace") if error else None,
        history=history,
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
    """attempts_exhausted | not_retryable | retry_budget_exhausted"""
    attempts: int
    error: str
    dead_ms: int
    payload: bytes
    history: list[dict[str, object]]


def parse_dead_letter(dependency: str, entry_id: str, f: dict[bytes, bytes]) -> DeadLetter:
    def text(name: str) -> str:
        return f.get(name.encode(), b"").decode("utf-8", "replace")

    history = json.loads(f[b"history"]) if f.get(b"history") else []
    return DeadLetter(
        entry_id=entry_id,
        dependency=dependency,
        job_id=text("id"),
        scope=text("scope"),
        cost=int(f.get(b"cost", b"1")),
        reason=text("reason"),
        attempts=int(f.get(b"attempts", b"0")),
        error=text("error"),
        dead_ms=int(f.get(b"dead_ms", b"0")),
        payload=f.get(b"payload", b""),
        history=history if isinstance(history, list) else [],
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
