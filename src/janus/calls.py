"""The one pure call layer: every script call Janus makes is built here and every reply is
parsed here. Pure: no Redis client, no clock.

A :class:`Call` carries a function's name, its KEYS and ARGV (passed *by name* through
:data:`janus.scripts.SPECS`, so a call site cannot pass a key the function does not declare)
and the function that turns the reply into typed values. :class:`Commands` is the same for
plain commands on one slot (reads, mostly), sent as one pipeline. What takes more than one
round trip (a status: the groups first, then their streams; dead letters read in pages) is an
*operation*: a generator that yields calls and commands and receives their parsed replies
(:data:`Op`). The stores (:class:`janus.store.Store`, :class:`janus.aio.AsyncStore`) only
send what they are given (``run``, ``commands``) and drive operations (``drive``); nothing
about a function's layout, a key or a reply's shape is known outside this module, so the
sync and the asyncio API cannot drift apart.

Plain replies are read in the shapes redis-py's RESP2 reply callbacks give (the same for
its sync and asyncio clients): ``HGETALL`` a dict, ``SMEMBERS`` a set, ``XRANGE`` a list of
(id, fields), ``TIME`` a pair of integers, counters integers, everything else as sent.

The positional layouts that cross the Lua boundary (a job in a submit, a lease, an outcome,
each reply's values) are defined once, below, as tuples of field names; the architecture
test checks each against the header of its Lua script.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, Literal, TypeVar, cast

from janus import scripts
from janus.decisions import (
    DeadLetter,
    Decision,
    DeleteProgress,
    DependencyStatus,
    Event,
    FetchResult,
    HeartbeatResult,
    JobInfo,
    LeasedJob,
    PauseResult,
    ReportResult,
    ScopeLoad,
    ScopeStatus,
    StepResult,
    parse_dead_letter,
    parse_job,
)
from janus.errors import InvalidInput, ProtocolError
from janus.keys import Keys, encode_part, registry
from janus.policy import SCOPE_FIELDS, CompiledPolicy

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
#: pause.lua and delete.lua replies.
PAUSE_REPLY = ("status", "until_ms", "held_scopes")
DELETE_REPLY = ("waiting", "running", "dropped", "deleted")
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
class Commands(Generic[R]):
    """Plain commands on one slot, sent as one pipeline (no transaction): what to send and
    how to read the replies."""

    key: str | None
    """A key of the slot the commands touch (routes them on a cluster); None: any node."""
    commands: tuple[tuple[Arg, ...], ...]
    parse: Callable[[list[Any]], R]
    what: str
    errors_ok: bool = False
    """True: error replies reach ``parse`` as exception values; False: the first raises."""


Request = Call[Any] | Commands[Any]
#: An operation: yields calls and commands, receives each one's parsed reply, returns R.
Op = Generator[Request, Any, R]


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


# -- admin: pause by hand, delete a policy --------------------------------------------------

#: How long a pause may last (pause.lua refuses longer), and the hold "until resumed".
MAX_PAUSE_MS = 10 * 365 * 86_400_000
HOLD_FOREVER_US = 9_000_000_000_000_000


def pause(
    keys: Keys, scope: str | None, for_ms: int, now_us: int | None
) -> Call[PauseResult | None]:
    """Hold releases (``for_ms`` > 0: that long; -1: until resumed) or resume them (0), for
    the dependency or one scope. None: the dependency has no policy."""
    dependency = keys.dependency

    def parse(reply: object) -> PauseResult | None:
        status, until_ms, held = _rows(reply, len(PAUSE_REPLY), 1, "pause")
        text = _text(status)
        if text == "unknown_dependency":
            return None
        if text not in ("paused", "resumed", "not_paused"):
            raise ProtocolError(f"pause.lua replied status {text!r}")
        until = _int(until_ms)
        return PauseResult(
            dependency=dependency,
            scope=scope,
            status=cast(Literal["paused", "resumed", "not_paused"], text),
            until_ms=until if until > 0 else None,
            held_scopes=_int(held),
        )

    argv: dict[str, Arg] = {
        "scope_enc": "" if scope is None else encode_part(scope),
        "scope": scope or "",
        "for_ms": for_ms,
        "now_us": _now(now_us),
    }
    what = "resuming" if for_ms == 0 else "pausing"
    target = f"scope {scope!r} of {dependency!r}" if scope is not None else repr(dependency)
    return _call("pause", keys, argv, parse, f"{what} {target}")


def delete_policy(
    keys: Keys, *, drop: bool, max_steps: int, now_us: int | None
) -> Call[DeleteProgress]:
    """One step of a policy deletion (delete.lua): mark it, drop waiting work if asked,
    remove the policy once nothing waits and nothing runs."""
    dependency = keys.dependency

    def parse(reply: object) -> DeleteProgress:
        waiting, running, dropped, deleted = (
            _int(v) for v in _rows(reply, len(DELETE_REPLY), 1, "delete")
        )
        return DeleteProgress(dependency, waiting, running, dropped, deleted == 1)

    argv: dict[str, Arg] = {"now_us": _now(now_us), "drop": int(drop), "max_steps": max_steps}
    return _call("delete", keys, argv, parse, f"deleting the policy of {dependency!r}")


def register(keys: Keys) -> Commands[int]:
    """List the dependency in the registry (what ``apply_policy_op`` does after applying)."""
    key = registry(keys.prefix)
    what = f"registering {keys.dependency!r}"
    return Commands(key, (("SADD", key, keys.dependency),), _first, what)


def unregister(keys: Keys) -> Commands[int]:
    """Take a deleted dependency out of the registry (another slot; coordinators and
    ``janus status`` stop listing it)."""
    key = registry(keys.prefix)
    what = f"unregistering {keys.dependency!r}"
    return Commands(key, (("SREM", key, keys.dependency),), _first, what)


def events(
    keys: Keys, *, after: str | None = None, last: int | None = None, count: int = 1000
) -> Commands[list[Event]]:
    """Events, oldest first: those after the entry id ``after`` (exclusive; up to
    ``count``), or the ``last`` N, or the first ``count``."""
    dependency = keys.dependency
    if last is not None:
        command: tuple[Arg, ...] = ("XREVRANGE", keys.events, "+", "-", "COUNT", last)
    else:
        start = "-" if after is None else f"({after}"
        command = ("XRANGE", keys.events, start, "+", "COUNT", count)

    def parse(replies: list[Any]) -> list[Event]:
        rows = replies[0]
        if last is not None:
            rows = list(reversed(rows))
        out = []
        for eid, raw in rows:
            fields = {_decode(k): _decode(v) for k, v in raw.items()}
            kind = fields.pop("kind", "")
            at_ms = int(fields.pop("at_ms", "0") or 0)
            out.append(Event(dependency, _decode(eid), kind, at_ms, fields))
        return out

    return Commands(keys.events, (command,), parse, f"reading the events of {dependency!r}")


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


def apply_policy_op(keys: Keys, compiled: CompiledPolicy) -> Op[tuple[int, bool]]:
    """Apply the policy, then list the dependency in the registry (another slot: it is only
    a directory for coordinators and ``janus status``, so it is written after the policy)."""
    done: tuple[int, bool] = yield apply_policy(keys, compiled)
    yield register(keys)
    return done


# -- plain reads and operations ------------------------------------------------------------


def _first(replies: list[Any]) -> Any:
    return replies[0]


def _scored(reply: Any) -> list[tuple[Any, float]]:
    """``ZRANGE ... WITHSCORES`` as (member, score) pairs: redis-py hands it flat or as
    pairs depending on its version."""
    if reply and isinstance(reply[0], list | tuple):
        return [(m, float(score)) for m, score in reply]
    return [(m, float(score)) for m, score in zip(reply[::2], reply[1::2], strict=True)]


def _decode(raw: object) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def time_us() -> Commands[int]:
    """Redis's clock, in microseconds."""

    def parse(replies: list[Any]) -> int:
        sec, usec = replies[0]
        return int(sec) * 1_000_000 + int(usec)

    return Commands(None, (("TIME",),), parse, "reading the Redis clock")


def dependencies(prefix: str) -> Commands[list[str]]:
    key = registry(prefix)

    def parse(replies: list[Any]) -> list[str]:
        return sorted(_decode(m) for m in replies[0])

    return Commands(key, (("SMEMBERS", key),), parse, "listing dependencies")


def test_mode_dependencies(prefix: str, keys_of: Callable[[str], Keys]) -> Op[list[str]]:
    """Dependencies whose policy was applied in test mode (their functions accept a caller's
    clock). One read per dependency: each lives in its own slot."""
    out = []
    for dep in (yield dependencies(prefix)):
        policy = keys_of(dep).policy
        flag = yield Commands(
            policy, (("HGET", policy, "test_clock"),), _first, "reading the policies"
        )
        if flag == b"1":
            out.append(dep)
    return out


def applied_policy(keys: Keys) -> Commands[tuple[dict[str, str] | None, dict[str, str]]]:
    """The applied policy's hash (None: none applied) and its scopes hash."""

    def parse(replies: list[Any]) -> tuple[dict[str, str] | None, dict[str, str]]:
        fields, scopes = ({_decode(k): _decode(v) for k, v in r.items()} for r in replies)
        return (fields or None), scopes

    what = f"reading the applied policy of {keys.dependency!r}"
    return Commands(keys.policy, (("HGETALL", keys.policy), ("HGETALL", keys.scopes)), parse, what)


def policy_fields(keys: Keys) -> Commands[dict[str, str]]:
    def parse(replies: list[Any]) -> dict[str, str]:
        return {_decode(k): _decode(v) for k, v in replies[0].items()}

    return Commands(
        keys.policy,
        (("HGETALL", keys.policy),),
        parse,
        f"reading the policy of {keys.dependency!r}",
    )


def state_fields(keys: Keys) -> Commands[dict[str, float]]:
    """The dependency's packed state as {field: number} (:data:`STATE_PACKED`), with the
    circuit's fields when it has some, and wake_at / timer_until."""

    def parse(replies: list[Any]) -> dict[str, float]:
        st, c, wake, timer = replies[0]
        out = unpack_fields(st, STATE_PACKED)
        if c:
            out.update(unpack_fields(c, CIRCUIT_PACKED))
        out["wake_at"] = float(wake) if wake else 0.0
        out["timer_until"] = float(timer) if timer else 0.0
        return out

    return Commands(
        keys.state,
        (("HMGET", keys.state, "st", "c", "wake_at", "timer_until"),),
        parse,
        f"reading the state of {keys.dependency!r}",
    )


def groups(keys: Keys) -> Commands[list[str]]:
    """The consumer groups that ever fetched work of the dependency."""

    def parse(replies: list[Any]) -> list[str]:
        return sorted(_decode(m) for m in replies[0])

    return Commands(
        keys.groups,
        (("SMEMBERS", keys.groups),),
        parse,
        f"reading the groups of {keys.dependency!r}",
    )


def stream_counts(keys: Keys) -> Op[dict[str, tuple[int, int]]]:
    """group -> (entries on its stream, entries pending in its consumer group)."""
    names: list[str] = yield groups(keys)
    if not names:
        return {}
    commands: list[tuple[Arg, ...]] = []
    for g in names:
        commands += [("XLEN", keys.stream(g)), ("XPENDING", keys.stream(g), g)]

    def parse(replies: list[Any]) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for i, g in enumerate(names):
            length, pending = replies[2 * i], replies[2 * i + 1]
            n = int(length) if isinstance(length, int) else 0
            p = int(pending["pending"]) if isinstance(pending, dict) else 0
            out[g] = (n, p)
        return out

    counts: dict[str, tuple[int, int]] = yield Commands(
        keys.groups,
        tuple(commands),
        parse,
        f"reading the streams of {keys.dependency!r}",
        errors_ok=True,  # a stream or group deleted meanwhile counts 0
    )
    return counts


def _now_ms(now_us: int | None) -> Op[int]:
    if now_us is None:
        now_us = yield time_us()
    return now_us // 1000


def parse_hold(raw: object, now_ms: int) -> tuple[int | None, int]:
    """The state field ``hold`` (lua/include/core.lua) as (the dependency's pause by hand:
    its end in ms, -1 until resumed, None when not held; the number of held scopes)."""
    parts = _decode(raw).split() if raw else []
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        return None, 0  # (what the functions read a malformed value as: not held)
    until_us, held = int(parts[0]), int(parts[1])
    if until_us >= HOLD_FOREVER_US:
        return -1, held
    return (until_us // 1000 if until_us // 1000 > now_ms else None), held


def status(keys: Keys, now_us: int | None, top: int = 0) -> Op[DependencyStatus]:
    """The dependency's counts, circuit, pauses and budget (read only), and its ``top``
    scopes by waiting work."""
    now_ms = yield from _now_ms(now_us)
    streams = yield from stream_counts(keys)
    loads, oldest = (yield from top_scopes(keys, top, now_ms)) if top > 0 else ([], None)
    dependency = keys.dependency

    def parse(replies: list[Any]) -> DependencyStatus:
        (version, circuit_on, deleting, interval, burst, max_fl), *rest = replies
        active_scopes, in_flight, parked, st, head, dead = rest
        state = unpack_fields(st[0], STATE_PACKED)
        c = unpack_fields(st[1], CIRCUIT_PACKED)
        circuit_until = int(c["c_until"])
        paused = int(state["paused_until"])
        budget = int(state["b_milli"]) if st[0] and state["b_milli"] >= 0 else None
        held_until, held_scopes = parse_hold(st[2], now_ms)
        tokens: float | None = None
        if interval and burst:  # the dependency bucket (GCRA, lua/include/buckets.lua)
            ahead = max(state["dtat"] - now_ms * 1000, 0) / int(interval)
            tokens = max(int(burst) - ahead, 0.0)
        # Derived from the applied policy: a circuit state left from an earlier policy that
        # had a breaker is not shown (nor used: the functions ignore it too).
        if version is None or _decode(circuit_on or b"0") != "1":
            circuit = "off"
        else:
            circuit = CIRCUIT_STATES.get(int(c["c_state"]), "closed") if st[1] else "closed"
        return DependencyStatus(
            dependency=dependency,
            policy_version=None if version is None else int(version),
            scheduled=int(state["queued_count"]),
            in_flight=int(in_flight),
            stream_length=sum(n for n, _ in streams.values()),
            queued_cost=int(state["queued_cost"]),
            next_due_us=int(_scored(head)[0][1]) if head else None,
            circuit=circuit,
            circuit_open_until_ms=circuit_until // 1000
            if circuit == "open" and circuit_until
            else None,
            paused_until_ms=paused // 1000 if paused and paused // 1000 > now_ms else None,
            retry_budget=None if budget is None else budget / 1000,
            dead_letters=int(dead),
            active_scopes=int(active_scopes),
            parked=int(parked),
            circuit_opens=int(c["c_opens"]) if circuit != "off" else 0,
            held_until_ms=held_until,
            held_scopes=held_scopes,
            deleting=deleting == b"1",
            top_scopes=tuple(loads),
            oldest_waiting_ms=oldest,
            max_in_flight=int(max_fl) if max_fl and int(max_fl) > 0 else None,
            tokens=tokens,
        )

    result: DependencyStatus = yield Commands(
        keys.policy,
        (
            (
                "HMGET",
                keys.policy,
                "version",
                "circuit_enabled",
                "deleting",
                "interval_us",
                "burst",
                "max_in_flight",
            ),
            ("ZCARD", keys.active),
            ("ZCOUNT", keys.inflight, f"({now_ms}", "+inf"),
            ("ZCARD", keys.parked),
            ("HMGET", keys.state, "st", "c", "hold"),
            ("ZRANGE", keys.delayed, 0, 0, "WITHSCORES"),
            ("XLEN", keys.dead),
        ),
        parse,
        f"reading the status of {dependency!r}",
    )
    return result


#: How many scopes a status looks at for its top scopes: the fair queue's (active and
#: throttled, by their order there) and those of the delay queue's first jobs.
TOP_CANDIDATES = 500


def top_scopes(keys: Keys, n: int, now_ms: int) -> Op[tuple[list[ScopeLoad], int | None]]:
    """The ``n`` scopes with the most work waiting, among the scopes in the fair queue and
    those of the next jobs due (a bounded sample: a status must stay cheap with a million
    tenants), and when the oldest job among their first ones was submitted (ms; None when
    nothing waits). Names come from each scope's first waiting job record."""
    lim = TOP_CANDIDATES
    what = f"reading the scopes of {keys.dependency!r}"
    active, throttled, delayed = yield Commands(
        keys.active,
        (
            ("ZRANGE", keys.active, 0, lim - 1),
            ("ZRANGE", keys.throttled, 0, lim - 1),
            ("ZRANGE", keys.delayed, 0, lim - 1),
        ),
        list,
        what,
    )
    first_job: dict[str, str] = {}  # scope enc -> the key of a job of it (for its name)
    if delayed:
        records = [keys.job_prefix + _decode(e) for e in delayed]
        scope_encs = yield Commands(
            keys.active, tuple(("HGET", r, "scope_enc") for r in records), list, what
        )
        for record, scope_enc in zip(records, scope_encs, strict=True):
            if scope_enc is not None:
                first_job.setdefault(_decode(scope_enc), record)
    encs = list(dict.fromkeys([_decode(e) for e in (*active, *throttled)] + list(first_job)))
    if not encs:
        return [], None
    commands: list[tuple[Arg, ...]] = []
    for enc in encs:
        commands += [
            ("HGET", keys.scope_prefix + enc, "v"),
            ("LINDEX", keys.ready_prefix + enc, 0),
            ("HGET", keys.state, "hold:" + enc),
        ]
    replies = yield Commands(keys.active, tuple(commands), list, what)
    rows = []
    for i, enc in enumerate(encs):
        packed, head, hold = replies[3 * i : 3 * i + 3]
        v = unpack_fields(packed, SCOPE_PACKED)
        if head is not None:
            first_job[enc] = keys.job_prefix + _decode(head)
        held: int | None = None
        first = _decode(hold).split(" ", 1)[0] if hold else ""
        if first.isdigit():
            until_us = int(first)
            if until_us >= HOLD_FOREVER_US:
                held = -1
            elif until_us // 1000 > now_ms:
                held = until_us // 1000
        rows.append((enc, int(v["qn"]), int(v["qc"]), held))
    firsts = list(first_job.items())
    submitted = yield Commands(
        keys.active, tuple(("HGET", k, "submitted_ms") for _, k in firsts), list, what
    )
    times = [int(t) for t in submitted if t is not None]
    oldest = min(times) if times else None
    rows.sort(key=lambda r: (-r[1], -r[2], r[0]))
    rows = rows[:n]
    # An encoded scope (~digest) is named by the record of one of its jobs.
    hashed = [r[0] for r in rows if r[0].startswith("~") and r[0] in first_job]
    names: dict[str, str] = {}
    if hashed:
        found = yield Commands(
            keys.active, tuple(("HGET", first_job[e], "scope") for e in hashed), list, what
        )
        names = {e: _decode(f) for e, f in zip(hashed, found, strict=True) if f is not None}
    loads = [ScopeLoad(names.get(enc, enc), jobs_n, cost, held) for enc, jobs_n, cost, held in rows]
    return loads, oldest


def counters(keys: Keys) -> Commands[dict[str, int]]:
    """The dependency's fleet-wide counters: the ``m:<name>`` fields the functions add to in
    its state hash (names in lua/include/core.lua, e.g. ``submit:ready``,
    ``rejected:max_wait_exceeded``, ``completed``, ``dead:attempts_exhausted``)."""

    def parse(replies: list[Any]) -> dict[str, int]:
        fields = replies[0]
        flat = not isinstance(fields, dict)
        pairs = zip(fields[::2], fields[1::2], strict=True) if flat else fields.items()
        out = {}
        for name, value in pairs:
            text = _decode(name)
            if text.startswith("m:"):
                out[text[2:]] = int(value)
        return out

    what = f"reading the counters of {keys.dependency!r}"
    return Commands(keys.state, (("HGETALL", keys.state),), parse, what)


def scope_status(keys: Keys, scope: str, now_us: int | None) -> Op[ScopeStatus]:
    """A scope's limits, place in the fair queue, waiting work and quota (read only)."""
    now_ms = yield from _now_ms(now_us)
    dependency = keys.dependency
    enc = encode_part(scope)
    quota_key = keys.quota(scope)

    def parse(replies: list[Any]) -> ScopeStatus:
        override, defaults, packed, active, throttled, st, ready, q, log = replies
        counts = unpack_fields(packed, SCOPE_PACKED)
        active_w = unpack_fields(st, STATE_PACKED)["active_w"]
        if defaults[0] is None:
            raise InvalidInput(f"dependency {dependency!r} has no applied policy")
        nums = [int(v) for v in (override.split() if override else defaults)]
        _, _, weight, max_queued, max_queued_cost, q_limit, q_period, q_rolling, _ = nums
        place = "active" if active is not None else "throttled" if throttled else "idle"
        total_w = int(active_w)
        used: int | None = None
        resets: int | None = None
        if q_limit:
            if q_rolling:
                live = [
                    (int(m.split(b":", 1)[0]), int(t))
                    for m, t in _scored(log)
                    if t > now_ms - q_period
                ]
                used = sum(amount for amount, _ in live)
                resets = min((t for _, t in live), default=now_ms) + q_period
            else:
                window = now_ms // q_period
                same = q[0] is not None and int(q[0]) == window
                used = int(q[1] or 0) + int(q[2] or 0) if same else 0
                resets = (window + 1) * q_period
        return ScopeStatus(
            dependency=dependency,
            scope=scope,
            weight=weight / 1000,
            place=place,
            share=weight / total_w if place == "active" and total_w else 0.0,
            waiting_jobs=int(counts["qn"]),
            waiting_cost=int(counts["qc"]),
            ready_jobs=int(ready),
            max_queued=max_queued or None,
            max_queued_cost=max_queued_cost or None,
            quota_limit=q_limit or None,
            quota_used=used,
            quota_period_ms=q_period or None,
            quota_resets_at_ms=resets,
        )

    result: ScopeStatus = yield Commands(
        keys.policy,
        (
            ("HGET", keys.scopes, enc),
            ("HMGET", keys.policy, *SCOPE_FIELDS),
            ("HGET", keys.scope(scope), "v"),
            ("ZSCORE", keys.active, enc),
            ("ZSCORE", keys.throttled, enc),
            ("HGET", keys.state, "st"),
            ("LLEN", keys.ready(scope)),
            ("HMGET", quota_key, "win", "used", "reserved"),
            ("ZRANGE", quota_key + ":log", 0, -1, "WITHSCORES"),
        ),
        parse,
        f"reading scope {scope!r} of {dependency!r}",
    )
    return result


def job_fates(keys: Keys, job_ids: Sequence[str]) -> Commands[list[tuple[str | None, int, int]]]:
    """Per job id: (its record's status, or None when there is no record; attempts started;
    attempts reported completed, from its history). One pipeline; the caller chunks it."""

    def parse(replies: list[Any]) -> list[tuple[str | None, int, int]]:
        out: list[tuple[str | None, int, int]] = []
        for status, attempt, history in replies:
            done = 0
            if history:
                try:
                    done = sum(1 for h in json.loads(history) if h.get("outcome") == "completed")
                except (ValueError, AttributeError):
                    done = 0
            out.append((_decode(status) if status else None, int(attempt or 0), done))
        return out

    commands = tuple(("HMGET", keys.job(j), "status", "attempt", "history") for j in job_ids)
    return Commands(keys.policy, commands, parse, f"reading the jobs of {keys.dependency!r}")


def job(keys: Keys, job_id: str) -> Commands[JobInfo | None]:
    """A job's record; None when unknown (or its record expired)."""
    key = keys.job(job_id)
    dependency = keys.dependency

    def parse(replies: list[Any]) -> JobInfo | None:
        return parse_job(dependency, replies[0]) if replies[0] else None

    return Commands(key, (("HGETALL", key),), parse, f"reading job {job_id!r} of {dependency!r}")


def dead_letter_entries(
    keys: Keys, *, start: str = "-", count: int | None = None
) -> Op[list[tuple[str, dict[bytes, bytes]]]]:
    """Entries of the dead-letter stream from ``start`` (an id; "(" excludes it), oldest
    first; all of them when ``count`` is None (read in pages of 1000)."""
    out: list[tuple[str, dict[bytes, bytes]]] = []
    page = 1000 if count is None else min(count, 1000)
    what = f"reading dead letters of {keys.dependency!r}"
    while count is None or len(out) < count:
        rows = yield Commands(
            keys.dead, (("XRANGE", keys.dead, start, "+", "COUNT", page),), _first, what
        )
        out.extend((_decode(eid), fields) for eid, fields in rows)
        if len(rows) < page:
            break
        start = "(" + _decode(rows[-1][0])
    return out if count is None else out[:count]


def dead_letters(
    keys: Keys,
    *,
    scope: str | None = None,
    job_id: str | None = None,
    since_ms: int | None = None,
    limit: int | None = None,
) -> Op[list[DeadLetter]]:
    """Dead letters, oldest first, filtered by scope, job id and time (Redis ms)."""
    start = "-" if since_ms is None else f"{since_ms}-0"
    out: list[DeadLetter] = []
    for entry_id, fields in (yield from dead_letter_entries(keys, start=start)):
        letter = parse_dead_letter(keys.dependency, entry_id, fields)
        if scope is not None and letter.scope != scope:
            continue
        if job_id is not None and letter.job_id != job_id:
            continue
        out.append(letter)
        if limit is not None and len(out) >= limit:
            break
    return out


def dead_letter_range(
    keys: Keys, *, start: str = "-", end: str = "+", count: int = 100, newest_first: bool = False
) -> Commands[list[DeadLetter]]:
    """One page of the dead-letter stream between the ids ``start`` and ``end`` (either may
    start with "(" to exclude it), at most ``count``, oldest first or ``newest_first``."""
    dependency = keys.dependency
    if newest_first:
        command: tuple[Arg, ...] = ("XREVRANGE", keys.dead, end, start, "COUNT", count)
    else:
        command = ("XRANGE", keys.dead, start, end, "COUNT", count)

    def parse(replies: list[Any]) -> list[DeadLetter]:
        return [parse_dead_letter(dependency, _decode(eid), f) for eid, f in replies[0]]

    return Commands(keys.dead, (command,), parse, f"reading dead letters of {dependency!r}")


def dead_letters_by_id(keys: Keys, entry_ids: Sequence[str]) -> Commands[list[DeadLetter]]:
    """The dead letters with these entry ids, in that order (missing ones left out)."""
    dependency = keys.dependency
    commands = tuple(("XRANGE", keys.dead, e, e, "COUNT", 1) for e in entry_ids)

    def parse(replies: list[Any]) -> list[DeadLetter]:
        return [
            parse_dead_letter(dependency, _decode(eid), f) for rows in replies for eid, f in rows
        ]

    return Commands(keys.dead, commands, parse, f"reading dead letters of {dependency!r}")


#: Entries one page of :func:`dead_letter_page` reads at most (a rare filter over 100,000
#: dead letters stops there and hands back a cursor, so a page stays cheap).
DEAD_LETTER_SCAN = 10_000


def dead_letter_page(
    keys: Keys,
    *,
    cursor: str | None = None,
    newest_first: bool = True,
    scope: str | None = None,
    reason: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 50,
    scan: int = DEAD_LETTER_SCAN,
) -> Op[tuple[list[DeadLetter], str | None, int]]:
    """Up to ``limit`` dead letters matching the filters (scope, reason, dead at or after
    ``since_ms`` and before ``until_ms``, by entry id), continuing after ``cursor`` (the
    last entry id a previous page read, exclusive). Reads at most ``scan`` entries. Returns
    (the letters, the cursor of the next page or None when the range is exhausted, the
    number of entries read)."""
    low = "-" if since_ms is None else f"{since_ms}-0"
    high = "+" if until_ms is None else f"({until_ms}-0"
    if cursor is not None:
        if newest_first:
            high = "(" + cursor
        else:
            low = "(" + cursor
    out: list[DeadLetter] = []
    read = 0
    last = cursor
    while read < scan:
        page = min(1000, scan - read)
        rows: list[DeadLetter] = yield dead_letter_range(
            keys, start=low, end=high, count=page, newest_first=newest_first
        )
        read += len(rows)
        for i, letter in enumerate(rows):
            if (scope is None or letter.scope == scope) and (
                reason is None or letter.reason == reason
            ):
                out.append(letter)
                if len(out) >= limit:
                    more = i < len(rows) - 1 or len(rows) == page
                    return out, letter.entry_id if more else None, read - len(rows) + i + 1
        if len(rows) < page:
            return out, None, read
        last = rows[-1].entry_id
        if newest_first:
            high = "(" + last
        else:
            low = "(" + last
    return out, last, read  # the scan budget ran out: the next page goes on from here


def scope_hold(keys: Keys, scope: str, now_us: int | None) -> Op[int | None]:
    """A scope's pause by hand: when it ends (Redis ms), -1 until resumed, None when not
    paused (the state field ``hold:<scope>``, read as :func:`top_scopes` reads it)."""
    now_ms = yield from _now_ms(now_us)
    field = "hold:" + encode_part(scope)
    what = f"reading the pause of scope {scope!r} of {keys.dependency!r}"
    raw = yield Commands(keys.state, (("HGET", keys.state, field),), _first, what)
    first = _decode(raw).split(" ", 1)[0] if raw else ""
    if not first.isdigit():
        return None
    until_us = int(first)
    if until_us >= HOLD_FOREVER_US:
        return -1
    return until_us // 1000 if until_us // 1000 > now_ms else None


def purge(keys: Keys, entry_ids: Sequence[str]) -> Op[int]:
    """Delete dead letters (and their replay marks); returns how many were deleted."""
    deleted = 0
    for i in range(0, len(entry_ids), 1000):
        chunk = list(entry_ids[i : i + 1000])
        deleted += yield Commands(
            keys.dead,
            (("XDEL", keys.dead, *chunk), ("ZREM", keys.replayed, *chunk)),
            _first,
            f"purging dead letters of {keys.dependency!r}",
        )
    return deleted


def forget_consumer(keys: Keys, group: str, consumer: str) -> Op[bool]:
    """Delete ``consumer`` from its group when it holds no entries (a worker that stops
    cleanly), so the group's consumer list does not grow with every worker process."""
    stream = keys.stream(group)
    what = f"removing consumer {consumer!r} of {keys.dependency!r}"
    (info,) = yield Commands(
        stream, (("XINFO", "CONSUMERS", stream, group),), list, what, errors_ok=True
    )
    if isinstance(info, Exception):
        if "NOGROUP" in str(info) or "no such key" in str(info):
            return False
        raise info

    def field(entry: dict[Any, Any], name: str) -> Any:
        return entry.get(name, entry.get(name.encode()))  # keys decoded or not, by version

    mine = [c for c in info if _decode(field(c, "name")) == consumer]
    if not mine:
        return True
    if int(field(mine[0], "pending") or 0):
        return False
    yield Commands(stream, (("XGROUP", "DELCONSUMER", stream, group, consumer),), _first, what)
    return True
