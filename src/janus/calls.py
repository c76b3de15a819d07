"""The one pure call layer: every script call Janus makes is built here and every reply is
parsed here. Pure: no Redis client, no clock.

A :class:`Call` carries a script's name, its KEYS and ARGV (passed *by name* through
:data:`janus.scripts.SPECS`, so a call site cannot pass a key the script does not declare)
and the function that turns the reply into typed values. The stores
(:class:`janus.store.Store`, and the asyncio store) only send calls; nothing about a
script's layout is known outside this module.

The positional layouts that cross the Lua boundary (a job in a submit, a lease, an outcome,
each reply's values) are defined once, below, as tuples of field names; the architecture
test checks each against the header of its Lua script.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, Literal, TypeVar

from janus import scripts
from janus.decisions import (
    Decision,
    FetchResult,
    HeartbeatResult,
    LeasedJob,
    ReportResult,
    StepResult,
)
from janus.errors import ProtocolError
from janus.keys import Keys, encode_part
from janus.policy import CompiledPolicy

Arg = bytes | str | int
R = TypeVar("R")

# -- layouts (checked against the Lua headers by tests/unit/test_architecture.py) ---------

#: submit.lua ARGV, per job.
SUBMIT_JOB = ("job_enc", "job_id", "scope_enc", "scope", "cost", "payload")
#: submit.lua reply, per job.
SUBMIT_REPLY = (
    "status",
    "reason",
    "not_before_ms",
    "retry_after_ms",
    "created",
    "attempt",
    "state",
)
#: fetch.lua reply: the header, then per job.
FETCH_HEADER = ("status", "now_ms", "next_us", "timer", "group_created", "jobs")
FETCH_JOB = ("job_id", "scope", "attempt", "cost", "token", "lease_deadline_ms", "payload")
#: heartbeat.lua ARGV per lease, and its reply per lease.
LEASE = ("job_enc", "attempt", "token")
HEARTBEAT_REPLY = ("ok", "reason", "lease_deadline_ms")
#: report.lua ARGV per outcome, and its reply per outcome.
OUTCOME = (
    "job_enc",
    "attempt",
    "token",
    "report_id",
    "outcome",
    "actual_cost",
    "error",
    "retry_after_ms",
    "detail",
)
REPORT_REPLY = ("ok", "reason", "decision", "retry_at_ms")
#: step.lua reply.
STEP_REPLY = ("reclaimed", "retried", "dead_lettered", "moved", "ready", "next_us", "now_us")
#: replay.lua ARGV per entry.
REPLAY_ENTRY = ("entry_id", "job_enc", "scope_enc")
#: Packed state (lua/include/core.lua, lua/include/scopes.lua): the dependency state hash's
#: fields ``st`` and ``c``, and a scope hash's field ``v``; big-endian doubles, in order.
STATE_PACKED = (
    "dtat",
    "last_ms",
    "queued_cost",
    "queued_count",
    "paused_until",
    "vtime",
    "active_w",
    "b_parked",
    "b_milli",
    "b_at",
)
CIRCUIT_PACKED = (
    "c_state",
    "c_until",
    "c_opens",
    "c_probes",
    "c_probe_ok",
    "c_win",
    "c_cur_ok",
    "c_cur_fail",
    "c_prev_ok",
    "c_prev_fail",
)
SCOPE_PACKED = ("stat", "rtat", "pu", "vf", "qn", "qc", "aw", "th")
#: c_state's codes.
CIRCUIT_STATES = {0: "closed", 1: "open", 2: "half_open"}


def unpack_fields(raw: bytes | None, names: Sequence[str]) -> dict[str, float]:
    """A packed field as {name: number}; missing or unreadable -> every name 0 (what the
    scripts assume for a key that does not exist)."""
    if not isinstance(raw, bytes) or len(raw) != 8 * len(names):
        return dict.fromkeys(names, 0.0)
    return dict(zip(names, struct.unpack(f">{len(names)}d", raw), strict=True))


_STATUSES = frozenset({"ready", "scheduled", "rejected"})
_DECISIONS = frozenset({"completed", "retry", "dead", "returned"})


@dataclass(frozen=True)
class Call(Generic[R]):
    """One script call: what to send and how to read the answer."""

    script: str
    keys: list[str]
    args: list[Arg]
    parse: Callable[[object], R]
    what: str
    """What the call does, for error messages ("submitting to 'payments'")."""


@dataclass(frozen=True)
class JobArgs:
    """One job as submit.lua takes it (already validated by the client)."""

    job_id: str
    scope: str
    cost: int
    payload: bytes


@dataclass(frozen=True)
class Outcome:
    """One outcome of a batch report (see :meth:`janus.worker.Worker.report`)."""

    job: LeasedJob
    kind: Literal["completed", "failed", "returned"]
    report_id: str
    actual_cost: int | None = None
    error: str = ""
    retry_after_ms: int = 0
    detail: str = ""


# -- keys and prefixes, by name ----------------------------------------------------------

_PREFIXES = ("job_prefix", "scope_prefix", "ready_prefix", "quota_prefix")


@lru_cache(maxsize=4096)
def _fixed(script: str, keys: Keys) -> tuple[tuple[str, ...], dict[str, str]]:
    """A script's dependency-wide KEYS (in order) and its prefix ARGV, from Keys by name."""
    spec = scripts.SPECS[script]
    names = {n: getattr(keys, n) for n in spec.keys if n not in ("stream", "fetch_log")}
    prefixes = {n: getattr(keys, n) for n in spec.argv if n in _PREFIXES}
    return tuple(names.values()), prefixes


def _call(
    script: str,
    keys: Keys,
    argv: dict[str, Arg],
    parse: Callable[[object], R],
    what: str,
    *,
    rest: Sequence[Arg] = (),
    extra_keys: dict[str, str] | None = None,
) -> Call[R]:
    spec = scripts.SPECS[script]
    fixed, prefixes = _fixed(script, keys)
    if extra_keys:
        named = dict(zip((n for n in spec.keys if n not in extra_keys), fixed, strict=True))
        key_list = spec.keys_of({**named, **extra_keys})
    else:
        key_list = list(fixed)
    return Call(script, key_list, spec.argv_of({**prefixes, **argv}, rest), parse, what)


def _now(now_us: int | None) -> Arg:
    return "" if now_us is None else now_us


# -- reply helpers -----------------------------------------------------------------------


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    raise ProtocolError(f"expected a string in a script reply, got {value!r:.80}")


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ProtocolError(f"expected an integer in a script reply, got {value!r:.80}")


def _rows(reply: object, width: int, count: int, script: str, start: int = 0) -> list[object]:
    if not isinstance(reply, list) or len(reply) != start + width * count:
        raise ProtocolError(f"{script}.lua replied {reply!r:.200} for {count} item(s)")
    return reply


# -- submit ------------------------------------------------------------------------------


def submit(keys: Keys, jobs: Sequence[JobArgs], now_us: int | None) -> Call[list[Decision]]:
    rest: list[Arg] = []
    for j in jobs:
        rest += (encode_part(j.job_id), j.job_id, encode_part(j.scope), j.scope, j.cost, j.payload)
    ids = [j.job_id for j in jobs]
    dependency = keys.dependency

    def parse(reply: object) -> list[Decision]:
        return parse_submit(dependency, ids, reply)

    return _call(
        "submit",
        keys,
        {"now_us": _now(now_us), "count": len(jobs)},
        parse,
        f"submitting to {dependency!r}",
        rest=rest,
    )


def parse_submit(dependency: str, job_ids: Sequence[str], reply: object) -> list[Decision]:
    """submit.lua's flat reply (:data:`SUBMIT_REPLY` per job) as decisions."""
    width = len(SUBMIT_REPLY)
    rows = _rows(reply, width, len(job_ids), "submit")
    out: list[Decision] = []
    for i, job_id in enumerate(job_ids):
        status, reason, not_before, retry_after, created, attempt, state = rows[
            i * width : (i + 1) * width
        ]
        status_s = _text(status)
        if status_s not in _STATUSES:
            raise ProtocolError(f"submit.lua returned unknown status {status_s!r}")
        retry = _int(retry_after)
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
                state=_text(state) or None,
            )
        )
    return out


# -- fetch -------------------------------------------------------------------------------


def fetch(
    keys: Keys,
    *,
    group: str,
    consumer: str,
    count: int,
    fetch_id: str,
    max_steps: int,
    now_us: int | None,
) -> Call[FetchResult]:
    dependency = keys.dependency

    def parse(reply: object) -> FetchResult:
        return parse_fetch(dependency, reply)

    return _call(
        "fetch",
        keys,
        {
            "now_us": _now(now_us),
            "group": group,
            "consumer": consumer,
            "count": count,
            "fetch_id": fetch_id,
            "max_steps": max_steps,
        },
        parse,
        f"fetching work of {dependency!r}",
        extra_keys={"stream": keys.stream(group), "fetch_log": keys.fetch_log(group, consumer)},
    )


def parse_fetch(dependency: str, reply: object) -> FetchResult:
    head = len(FETCH_HEADER)
    if not isinstance(reply, list) or len(reply) < head:
        raise ProtocolError(f"fetch.lua replied {reply!r:.200}")
    status, now_ms, next_us, timer, created, n = reply[:head]
    status_s = _text(status)
    width = len(FETCH_JOB)
    rows = _rows(reply, width, _int(n), "fetch", head)
    jobs: list[LeasedJob] = []
    for i in range(_int(n)):
        job_id, scope, attempt, cost, token, deadline, payload = rows[
            head + i * width : head + (i + 1) * width
        ]
        if not isinstance(payload, bytes):
            raise ProtocolError(f"fetch.lua returned a payload of type {type(payload).__name__}")
        jobs.append(
            LeasedJob(
                dependency=dependency,
                id=_text(job_id),
                scope=_text(scope),
                payload=payload,
                attempt=_int(attempt),
                cost=_int(cost),
                lease_deadline_ms=_int(deadline),
                token=_text(token),
            )
        )
    nxt = _int(next_us)
    return FetchResult(
        jobs=jobs,
        known=status_s != "unknown_dependency",
        repeat=status_s == "repeat",
        now_ms=_int(now_ms),
        next_us=None if nxt < 0 else nxt,
        timer=_int(timer) == 1,
        group_created=_int(created) == 1,
    )


# -- the coordinator's step --------------------------------------------------------------


def step(keys: Keys, *, max_steps: int, timer_ms: int, now_us: int | None) -> Call[StepResult]:
    return _call(
        "step",
        keys,
        {"now_us": _now(now_us), "max_steps": max_steps, "timer_ms": timer_ms},
        parse_step,
        f"stepping {keys.dependency!r}",
    )


def parse_step(reply: object) -> StepResult:
    values = _rows(reply, len(STEP_REPLY), 1, "step")
    reclaimed, retried, dead, moved, ready, next_us, now_us = (_int(v) for v in values)
    return StepResult(
        reclaimed=reclaimed,
        retried=retried,
        dead_lettered=dead,
        moved=moved,
        ready=ready == 1,
        next_us=None if next_us < 0 else next_us,
        now_us=now_us,
    )


# -- leases and reports ------------------------------------------------------------------


def heartbeat(
    keys: Keys, jobs: Sequence[LeasedJob], now_us: int | None
) -> Call[list[HeartbeatResult]]:
    rest: list[Arg] = []
    for j in jobs:
        rest += (encode_part(j.id), j.attempt, j.token)
    count = len(jobs)

    def parse(reply: object) -> list[HeartbeatResult]:
        width = len(HEARTBEAT_REPLY)
        rows = _rows(reply, width, count, "heartbeat")
        out = []
        for i in range(count):
            ok, reason, deadline = rows[i * width : (i + 1) * width]
            out.append(HeartbeatResult(_int(ok) == 1, _text(reason) or None, _int(deadline)))
        return out

    return _call(
        "heartbeat",
        keys,
        {"now_us": _now(now_us), "count": count},
        parse,
        f"extending leases on {keys.dependency!r}",
        rest=rest,
    )


def report(keys: Keys, outcomes: Sequence[Outcome], now_us: int | None) -> Call[list[ReportResult]]:
    rest: list[Arg] = []
    for o in outcomes:
        rest += (
            encode_part(o.job.id),
            o.job.attempt,
            o.job.token,
            o.report_id,
            o.kind,
            -1 if o.actual_cost is None else o.actual_cost,
            o.error,
            o.retry_after_ms,
            o.detail,
        )
    count = len(outcomes)

    def parse(reply: object) -> list[ReportResult]:
        width = len(REPORT_REPLY)
        rows = _rows(reply, width, count, "report")
        out = []
        for i in range(count):
            ok, reason, decision, at = rows[i * width : (i + 1) * width]
            decision_s = _text(decision)
            if _int(ok) == 1 and decision_s not in _DECISIONS:
                raise ProtocolError(f"report.lua returned unknown decision {decision_s!r}")
            out.append(
                ReportResult(
                    ok=_int(ok) == 1,
                    reason=_text(reason) or None,
                    decision=decision_s or None,  # type: ignore[arg-type]
                    retry_at_ms=_int(at) if decision_s == "retry" else None,
                )
            )
        return out

    return _call(
        "report",
        keys,
        {"now_us": _now(now_us), "count": count},
        parse,
        f"reporting to {keys.dependency!r}",
        rest=rest,
    )


# -- operators ---------------------------------------------------------------------------


def replay(
    keys: Keys, entries: Sequence[tuple[str, str, str]], now_us: int | None
) -> Call[list[str]]:
    """``entries``: (dead-letter entry id, job id, scope)."""
    rest: list[Arg] = []
    for entry_id, job_id, scope in entries:
        rest += (entry_id, encode_part(job_id), encode_part(scope))
    count = len(entries)

    def parse(reply: object) -> list[str]:
        return [_text(v) for v in _rows(reply, 1, count, "replay")]

    return _call(
        "replay",
        keys,
        {"now_us": _now(now_us), "count": count},
        parse,
        f"replaying dead letters of {keys.dependency!r}",
        rest=rest,
    )


def apply_policy(keys: Keys, compiled: CompiledPolicy) -> Call[tuple[int, bool]]:
    rest: list[Arg] = []
    pairs: list[tuple[str, Arg]] = [*compiled.fields.items(), *compiled.texts.items()]
    for name, value in sorted(pairs):
        rest += [name, value]
    rest.append(len(compiled.scopes))
    for enc, packed in sorted(compiled.scopes.items()):
        rest += [enc, packed]

    def parse(reply: object) -> tuple[int, bool]:
        version, changed = (_int(v) for v in _rows(reply, 2, 1, "apply_policy"))
        return version, changed == 1

    return _call(
        "apply_policy",
        keys,
        {"digest": compiled.digest, "field_count": len(pairs)},
        parse,
        f"applying the policy of {compiled.dependency!r}",
        rest=rest,
    )
