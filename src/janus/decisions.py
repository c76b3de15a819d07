"""Decision values and the parsing of script replies. Pure: no Redis, no clock.

A submit always ends in one of three outcomes, each an ordinary value:

``released``   the job is on the dependency's stream now.
``scheduled``  the job holds a reservation and waits in the delay queue; ``not_before_ms`` is a
               lower bound on its release time (the dependency's share is decided at release).
``rejected``   nothing was kept; ``reason`` says why (``unknown_dependency``,
               ``max_wait_exceeded``) and ``retry_after_ms`` how long the job would have waited.
"""

from __future__ import annotations

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
    """Turn release.lua's reply (5 integers) into a :class:`ReleaseStep`."""
    if not isinstance(reply, list) or len(reply) != 5:
        raise ProtocolError(f"release.lua replied {reply!r:.200}")
    released, cost, respaced, next_us, now_us = (_int(v) for v in reply)
    return ReleaseStep(released, cost, respaced, None if next_us < 0 else next_us, now_us)
