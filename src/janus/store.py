"""The one module that talks to Redis: script registration, script calls, streams, config.

Everything else in Janus is either pure (policy, keys, decisions, scripts) or a front-end
that drives this module (client, coordinator, CLI, demo).

Admission design (the scripts hold the detail; this is the map):

* Limits live in Redis (``apply_policy.lua``), never in the caller's arguments.
* ``submit.lua`` reserves the job's **scope** bucket at submit time: that reservation is the
  job's place in the dependency's delay queue (a sorted set scored by eligible time). If the
  scope allows it now, nothing due is queued ahead, and the **dependency** bucket and
  ``max_in_flight`` allow it now, the job is released straight away (XADD). Otherwise it is
  scheduled, and ``not_before_ms`` is a lower bound.
* ``release.lua`` (the coordinator) takes due jobs in queue order and checks the dependency
  bucket, in-flight limit and the scope's release-time bucket *at release time*. Since the
  dependency's capacity is only ever taken at release, a flood from one scope cannot book the
  dependency's future ahead of a scope that arrives later (weighted fair sharing plugs in at
  this point), and a paused coordinator cannot dump its backlog (the buckets re-space it).
* Released cost in any window W is then at most ``rate * W + burst`` per dependency and per
  scope, whoever calls the scripts and however many of them run at once.

Calls: scripts are loaded once and called by SHA (redis-py's ``Script`` reloads on NOSCRIPT,
e.g. after ``SCRIPT FLUSH``; a NOSCRIPT that races that reload is retried a few more times).
Connection errors and timeouts are retried a bounded number of times by redis-py, so every
state-changing script must give a re-sent call the answer the first one got: job ids are fixed
before a submit (an existing id is a no-op), ``start`` hands a job running on the same
consumer back to it, and ``complete`` / ``fail`` carry a report id, so a re-send is answered
from the report it repeats while a second, different report is refused. Scripts are never
sent inside a cluster pipeline.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.retry import Retry

from janus import scripts
from janus.decisions import ScopeStatus
from janus.errors import (
    InvalidCost,
    InvalidInput,
    PayloadTooLarge,
    RedisUnavailable,
)
from janus.keys import Keys, encode_part, registry
from janus.policy import SCOPE_FIELDS, CompiledPolicy

AnyRedis = redis.Redis | RedisCluster
Arg = bytes | str | int

#: Bounded retries for connection errors and timeouts (all our calls are idempotent).
RETRIES = 3
#: Extra attempts when a script vanished between redis-py's reload and its call.
NOSCRIPT_RETRIES = 3


class _Plan(NamedTuple):
    keys: list[str]
    fill: dict[str, str]


#: ARGV that are key prefixes (they carry the hash tag): filled in from Keys by name.
_PREFIX_ARGV = ("job_prefix", "scope_prefix", "ready_prefix", "quota_prefix")


@dataclass(frozen=True)
class JobArgs:
    """One job as submit.lua takes it."""

    job_id: str
    job_enc: str
    scope: str
    scope_enc: str
    cost: int
    payload: bytes

    def flat(self) -> tuple[str, str, str, str, int, bytes]:
        return (self.job_enc, self.job_id, self.scope_enc, self.scope, self.cost, self.payload)


@dataclass(frozen=True)
class DependencyStatus:
    dependency: str
    policy_version: int | None
    scheduled: int
    """Jobs waiting: in the delay queue or a scope's ready line (new, retries, held back)."""
    in_flight: int
    """Released jobs whose lease is live and whose outcome is not reported."""
    stream_length: int
    queued_cost: int
    next_due_us: int | None
    circuit: str
    """closed | open | half_open ("closed" when the policy has no circuit breaker)."""
    circuit_open_until_ms: int | None
    paused_until_ms: int | None
    """A Retry-After pause of the whole dependency, while it lasts."""
    retry_budget: float | None
    """Retry tokens banked at the last update (None: no budget used yet)."""
    dead_letters: int
    active_scopes: int = 0
    """Scopes with ready work in the fair queue."""


def _retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), RETRIES)


_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException,
)


#: Error replies that mean "this server cannot serve now" (out of memory, a replica after a
#: failover, a long script or a load in progress, a cluster reconfiguring): retry later.
_TRANSIENT_REPLIES = frozenset(
    {"OOM", "READONLY", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"}
)


def translate(exc: Exception, what: str) -> Exception:
    """The Janus exception for a redis-py exception raised while doing ``what``."""
    if isinstance(exc, redis.exceptions.ResponseError) and "JANUS_INVALID" in str(exc):
        detail = str(exc).split("JANUS_INVALID", 1)[1].strip()
        index, _, text = detail.partition(" ")
        prefix = f"job #{index} of the batch: " if index.isdigit() else ""
        if "payload" in text:
            return PayloadTooLarge(f"{what}: {prefix}{text}")
        if "cost" in text:
            return InvalidCost(f"{what}: {prefix}{text}")
        return InvalidInput(f"{what}: {prefix}{text}")
    if isinstance(exc, _UNAVAILABLE) or (
        isinstance(exc, redis.exceptions.ResponseError)
        and str(exc).split(" ", 1)[0] in _TRANSIENT_REPLIES
    ):
        return RedisUnavailable(f"{what}: Redis is unavailable ({exc}); nothing was admitted")
    if isinstance(exc, redis.exceptions.NoScriptError):
        return RedisUnavailable(
            f"{what}: Janus's scripts keep disappearing from Redis (SCRIPT FLUSH, failover?) "
            "even after reloading them; nothing was admitted"
        )
    return exc


#: Everything redis-py raises (its cluster errors do not all derive from RedisError).
_REDIS_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Translate redis-py's exceptions into Janus's tree."""
    try:
        yield
    except _REDIS_ERRORS as exc:
        mapped = translate(exc, what)
        if mapped is exc:
            raise
        raise mapped from (exc if isinstance(mapped, RedisUnavailable) else None)


def connect(url: str, *, socket_timeout: float = 5.0) -> AnyRedis:
    """Open a client for ``url``; a Redis Cluster node is detected and handled as a cluster."""
    with guard(f"connecting to {url}"):
        probe = redis.Redis.from_url(url, socket_timeout=socket_timeout, retry=_retry())
        try:
            info = probe.info("cluster")
        finally:
            probe.close()
        if info.get("cluster_enabled") == 1:
            return RedisCluster.from_url(url, socket_timeout=socket_timeout, retry=_retry())
        return redis.Redis.from_url(url, socket_timeout=socket_timeout, retry=_retry())


class Store:
    """Janus's state in one Redis (or one Redis Cluster) under one key prefix."""

    def __init__(self, client: AnyRedis, *, prefix: str = "janus") -> None:
        self.client = client
        self.prefix = prefix
        registry(prefix)  # validates the prefix
        self._plans: dict[tuple[str, str], _Plan] = {}
        self._scripts: dict[str, Script] = {
            name: client.register_script(scripts.source(name)) for name in scripts.SPECS
        }

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "janus", socket_timeout: float = 5.0) -> Store:
        return cls(connect(url, socket_timeout=socket_timeout), prefix=prefix)

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def keys(self, dependency: str) -> Keys:
        return Keys(self.prefix, dependency)

    def close(self) -> None:
        self.client.close()

    # -- scripts -------------------------------------------------------------------------

    def _plan(self, name: str, dependency: str) -> _Plan:
        """A script's KEYS for one dependency, and the ARGV that are key prefixes, taken from
        :class:`~janus.keys.Keys` by the names in the script's header; built once, cached."""
        plan = self._plans.get((name, dependency))
        if plan is None:
            k = self.keys(dependency)
            spec = scripts.SPECS[name]
            keys = spec.keys_of({n: getattr(k, n) for n in spec.keys})
            fill = {n: getattr(k, n) for n in spec.argv if n in _PREFIX_ARGV}
            plan = _Plan(keys, fill)
            self._plans[(name, dependency)] = plan
        return plan

    def _run(
        self, name: str, dependency: str, argv: dict[str, Arg], rest: Sequence[Arg] = ()
    ) -> Any:
        plan = self._plan(name, dependency)
        args = scripts.SPECS[name].argv_of({**plan.fill, **argv}, rest)
        return self._call(name, plan.keys, args)

    def _call(self, name: str, keys: list[str], args: Sequence[Arg]) -> Any:
        """EVALSHA through redis-py's Script (which reloads once on NOSCRIPT). A SCRIPT FLUSH
        landing between that reload and the retried call raises NOSCRIPT again: that one
        error is safe to retry (nothing ran), so it is, a few times."""
        for _ in range(NOSCRIPT_RETRIES):
            try:
                return self._scripts[name](keys=keys, args=args, client=self.client)
            except redis.exceptions.NoScriptError:
                continue
        return self._scripts[name](keys=keys, args=args, client=self.client)

    def apply_policy(self, compiled: CompiledPolicy) -> tuple[int, bool]:
        """Install one dependency's policy; returns (version, changed)."""
        rest: list[Arg] = []
        pairs: list[tuple[str, Arg]] = [*compiled.fields.items(), *compiled.texts.items()]
        for name, value in sorted(pairs):
            rest += [name, value]
        rest.append(len(compiled.scopes))
        for enc, packed in sorted(compiled.scopes.items()):
            rest += [enc, packed]
        with guard(f"applying the policy of {compiled.dependency!r}"):
            version, changed = self._run(
                "apply_policy",
                compiled.dependency,
                {"digest": compiled.digest, "field_count": len(pairs)},
                rest,
            )
            # The registry lives in another slot; it is only a directory for coordinators
            # and `janus status`, so it is written after the policy itself.
            self.client.sadd(registry(self.prefix), compiled.dependency)
        return int(version), bool(changed)

    def submit(self, dependency: str, jobs: Sequence[JobArgs], now_us: int | None) -> Any:
        """One submit.lua call for a batch of jobs (the hot path: no per-call key building)."""
        plan = self._plan("submit", dependency)
        f = plan.fill  # submit.lua's ARGV order: the four prefixes, now_us, count, jobs...
        args: list[Arg] = [f["job_prefix"], f["scope_prefix"], f["ready_prefix"]]
        args += [f["quota_prefix"], _now(now_us), len(jobs)]
        for job in jobs:
            args.extend(job.flat())
        try:
            return self._call("submit", plan.keys, args)
        except _REDIS_ERRORS as exc:
            mapped = translate(exc, f"submitting to {dependency!r}")
            if mapped is exc:
                raise
            raise mapped from (exc if isinstance(mapped, RedisUnavailable) else None)

    def release(self, dependency: str, now_us: int | None, max_steps: int) -> Any:
        with guard(f"releasing due work of {dependency!r}"):
            return self._run(
                "release", dependency, {"now_us": _now(now_us), "max_steps": max_steps}
            )

    # -- workers and leases --------------------------------------------------------------

    def ensure_group(self, dependency: str, group: str) -> None:
        """Create the consumer group (reading from the start of the stream) if missing."""
        with guard(f"creating consumer group {group!r} on {dependency!r}"):
            try:
                self.client.xgroup_create(
                    self.keys(dependency).stream, group, id="0", mkstream=True
                )
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def read(
        self, dependency: str, group: str, consumer: str, count: int, block_ms: int | None
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """XREADGROUP of new entries: [(entry id, fields)]."""
        key = self.keys(dependency).stream
        with guard(f"reading work of {dependency!r}"):
            reply: Any = self.client.xreadgroup(
                group, consumer, {key: ">"}, count=count, block=block_ms
            )
        if not reply:
            return []
        # RESP2: [[stream, [(id, fields), ...]]]; RESP3: {stream: [[(id, fields), ...]]}
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        # An entry deleted after delivery comes back with no fields: nothing to run.
        return [(eid.decode(), fields) for eid, fields in entries if fields]

    def start(
        self,
        dependency: str,
        group: str,
        consumer: str,
        entries: Sequence[tuple[str, str, int]],
        now_us: int | None,
    ) -> Any:
        """start.lua for entries given as (job_enc, token, attempt)."""
        rest: list[Arg] = []
        for job_enc, token, attempt in entries:
            rest += [job_enc, token, attempt]
        argv: dict[str, Arg] = {
            "now_us": _now(now_us),
            "group": group,
            "consumer": consumer,
            "count": len(entries),
        }
        with guard(f"starting work of {dependency!r}"):
            return self._run("start", dependency, argv, rest)

    def heartbeat(
        self, dependency: str, job_enc: str, attempt: int, token: str, now_us: int | None
    ) -> Any:
        argv: dict[str, Arg] = {
            "now_us": _now(now_us),
            "job_enc": job_enc,
            "attempt": attempt,
            "token": token,
        }
        with guard(f"extending a lease on {dependency!r}"):
            return self._run("heartbeat", dependency, argv)

    def complete(
        self,
        dependency: str,
        group: str,
        job_enc: str,
        attempt: int,
        token: str,
        now_us: int | None,
        actual_cost: int | None = None,
        report_id: str | None = None,
    ) -> Any:
        argv: dict[str, Arg] = {
            "report_id": report_id or uuid.uuid4().hex,
            "now_us": _now(now_us),
            "group": group,
            "job_enc": job_enc,
            "attempt": attempt,
            "token": token,
            "actual_cost": -1 if actual_cost is None else actual_cost,
        }
        with guard(f"completing a job of {dependency!r}"):
            return self._run("complete", dependency, argv)

    def fail(
        self,
        dependency: str,
        group: str,
        job_enc: str,
        attempt: int,
        token: str,
        error: str,
        retry_after_ms: int,
        detail: str,
        now_us: int | None,
        report_id: str | None = None,
    ) -> Any:
        argv: dict[str, Arg] = {
            "report_id": report_id or uuid.uuid4().hex,
            "now_us": _now(now_us),
            "group": group,
            "job_enc": job_enc,
            "attempt": attempt,
            "token": token,
            "error": error,
            "retry_after_ms": retry_after_ms,
            "detail": detail,
        }
        with guard(f"reporting a failure on {dependency!r}"):
            return self._run("fail", dependency, argv)

    def reclaim(self, dependency: str, now_us: int | None, max_steps: int) -> Any:
        with guard(f"reclaiming expired leases of {dependency!r}"):
            return self._run(
                "reclaim", dependency, {"now_us": _now(now_us), "max_steps": max_steps}
            )

    def job(self, dependency: str, job_id: str) -> dict[bytes, bytes]:
        """The raw job record (empty when unknown or expired)."""
        with guard(f"reading job {job_id!r} of {dependency!r}"):
            return cast(dict[bytes, bytes], self.client.hgetall(self.keys(dependency).job(job_id)))

    def dead_letters(
        self, dependency: str, *, start: str = "-", count: int | None = None
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Entries of the dead-letter stream from ``start`` (an id; "(" excludes it), oldest
        first; all of them when ``count`` is None (read in pages)."""
        key = self.keys(dependency).dead
        out: list[tuple[str, dict[bytes, bytes]]] = []
        page = 1000 if count is None else min(count, 1000)
        with guard(f"reading dead letters of {dependency!r}"):
            while count is None or len(out) < count:
                rows = cast(
                    list[tuple[bytes, dict[bytes, bytes]]],
                    self.client.xrange(key, min=start, max="+", count=page),
                )
                out.extend((eid.decode(), fields) for eid, fields in rows)
                if len(rows) < page:
                    break
                start = "(" + rows[-1][0].decode()
        return out if count is None else out[:count]

    def replay(
        self, dependency: str, entries: Sequence[tuple[str, str, str]], now_us: int | None
    ) -> list[str]:
        """replay.lua for (dead-letter entry id, job_enc, scope_enc) triples."""
        rest: list[Arg] = []
        for triple in entries:
            rest.extend(triple)
        with guard(f"replaying dead letters of {dependency!r}"):
            reply = self._run(
                "replay", dependency, {"now_us": _now(now_us), "count": len(entries)}, rest
            )
        return [v.decode() if isinstance(v, bytes) else str(v) for v in reply]

    def purge(self, dependency: str, entry_ids: Sequence[str]) -> int:
        """Delete dead letters (and their replay marks); returns how many were deleted."""
        if not entry_ids:
            return 0
        k = self.keys(dependency)
        deleted = 0
        with guard(f"purging dead letters of {dependency!r}"):
            for i in range(0, len(entry_ids), 1000):
                chunk = list(entry_ids[i : i + 1000])
                deleted += int(self.client.xdel(k.dead, *chunk))
                self.client.hdel(k.replayed, *chunk)
        return deleted

    # -- plain commands ------------------------------------------------------------------

    def wait_wake(self, dependency: str, timeout_s: float) -> bool:
        """Block (server side) until submit.lua signals new earlier work, or the timeout."""
        with guard(f"waiting for work on {dependency!r}"):
            return self.client.blpop([self.keys(dependency).wake], timeout=timeout_s) is not None

    def dependencies(self) -> list[str]:
        with guard("listing dependencies"):
            members = cast(set[bytes], self.client.smembers(registry(self.prefix)))
        return sorted(m.decode() for m in members)

    def time_us(self) -> int:
        with guard("reading the Redis clock"):
            if isinstance(self.client, RedisCluster):
                sec, usec = self.client.time(target_nodes=RedisCluster.RANDOM)
            else:
                sec, usec = self.client.time()
        return sec * 1_000_000 + usec

    def policy_fields(self, dependency: str) -> dict[str, str]:
        with guard(f"reading the policy of {dependency!r}"):
            raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys(dependency).policy))
        return {key.decode(): value.decode() for key, value in raw.items()}

    def status(self, dependency: str, now_ms: int) -> DependencyStatus:
        k = self.keys(dependency)
        with guard(f"reading the status of {dependency!r}"):
            # Plain reads of one slot: one round trip, also on a cluster.
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(k.policy, "version")
            pipe.zcard(k.active)
            pipe.zcount(k.inflight, f"({now_ms}", "+inf")
            pipe.xlen(k.stream)
            pipe.hmget(
                k.state,
                "queued_cost",
                "c_state",
                "c_until",
                "paused_until",
                "b_milli",
                "queued_count",
                "active_w",
            )
            pipe.zrange(k.delayed, 0, 0, withscores=True)
            pipe.xlen(k.dead)
            version, active_scopes, in_flight, length, st, head, dead = pipe.execute()

        def num(raw: bytes | None) -> int | None:
            return None if raw is None else int(raw)

        circuit_until = num(st[2])
        paused = num(st[3])
        budget = num(st[4])
        circuit = st[1].decode() if st[1] else "closed"
        return DependencyStatus(
            dependency=dependency,
            policy_version=num(version),
            scheduled=num(st[5]) or 0,
            in_flight=int(in_flight),
            stream_length=int(length),
            queued_cost=num(st[0]) or 0,
            next_due_us=int(head[0][1]) if head else None,
            circuit=circuit,
            circuit_open_until_ms=circuit_until // 1000
            if circuit == "open" and circuit_until
            else None,
            paused_until_ms=paused // 1000 if paused and paused // 1000 > now_ms else None,
            retry_budget=None if budget is None else budget / 1000,
            dead_letters=int(dead),
            active_scopes=int(active_scopes),
        )

    def scope_status(self, dependency: str, scope: str, now_ms: int) -> ScopeStatus:
        """A scope's limits, place in the fair queue, waiting work and quota (read only)."""
        k = self.keys(dependency)
        enc = encode_part(scope)
        quota_key = k.quota(scope)
        with guard(f"reading scope {scope!r} of {dependency!r}"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(k.scopes, enc)
            pipe.hmget(k.policy, *SCOPE_FIELDS)
            pipe.hmget(k.scope(scope), "qn", "qc")
            pipe.zscore(k.active, enc)
            pipe.zscore(k.throttled, enc)
            pipe.hget(k.state, "active_w")
            pipe.llen(k.ready(scope))
            pipe.hmget(quota_key, "win", "used", "reserved")
            pipe.zrange(quota_key + ":log", 0, -1, withscores=True)
            override, defaults, counts, active, throttled, active_w, ready, q, log = pipe.execute()
        if defaults[0] is None:
            raise InvalidInput(f"dependency {dependency!r} has no applied policy")
        nums = [int(v) for v in (override.split() if override else defaults)]
        _, _, weight, max_queued, max_queued_cost, q_limit, q_period, q_rolling, _ = nums
        place = "active" if active is not None else "throttled" if throttled else "idle"
        total_w = int(active_w or 0)
        used: int | None = None
        resets: int | None = None
        if q_limit:
            if q_rolling:
                live = [(int(m.split(b":", 1)[0]), int(t)) for m, t in log if t > now_ms - q_period]
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
            waiting_jobs=int(counts[0] or 0),
            waiting_cost=int(counts[1] or 0),
            ready_jobs=int(ready),
            max_queued=max_queued or None,
            max_queued_cost=max_queued_cost or None,
            quota_limit=q_limit or None,
            quota_used=used,
            quota_period_ms=q_period or None,
            quota_resets_at_ms=resets,
        )

    def server_configs(self) -> dict[str, dict[str, str]]:
        """CONFIG GET of the settings `janus doctor` checks, per primary ("host:port" -> dict).

        A server that refuses CONFIG (some managed services) maps to an empty dict.
        """
        wanted = ("maxmemory-policy", "maxmemory", "appendonly", "save")
        clients: list[tuple[str, redis.Redis]] = []
        if isinstance(self.client, RedisCluster):
            for node in self.client.get_primaries():  # type: ignore[no-untyped-call]
                conn = node.redis_connection
                if conn is not None:
                    clients.append((node.name, conn))
        else:
            kw = self.client.connection_pool.connection_kwargs
            clients.append((f"{kw.get('host', '?')}:{kw.get('port', '?')}", self.client))
        out: dict[str, dict[str, str]] = {}
        with guard("reading server configuration"):
            for name, conn in clients:
                values: dict[str, str] = {}
                for item in wanted:
                    try:
                        got = cast(dict[Any, Any], conn.config_get(item))
                    except redis.exceptions.ResponseError:
                        continue
                    for key, value in got.items():
                        k_s = key.decode() if isinstance(key, bytes) else str(key)
                        values[k_s] = value.decode() if isinstance(value, bytes) else str(value)
                out[name] = values
        return out

    def releases(self, dependency: str, *, chunk: int = 5000) -> list[tuple[int, str, int, str]]:
        """Every entry still on the dependency's stream as ``(ms, scope, cost, job_id)``."""
        key = self.keys(dependency).stream
        out: list[tuple[int, str, int, str]] = []
        start = "-"
        with guard(f"reading the stream of {dependency!r}"):
            while True:
                batch = cast(
                    list[tuple[bytes, dict[bytes, bytes]]],
                    self.client.xrange(key, min=start, max="+", count=chunk),
                )
                out.extend(_parse_entry(i, f) for i, f in batch)
                if len(batch) < chunk:
                    return out
                start = "(" + batch[-1][0].decode()


def _now(now_us: int | None) -> Arg:
    return "" if now_us is None else now_us


def _parse_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> tuple[int, str, int, str]:
    ms = int(entry_id.split(b"-", 1)[0])
    return ms, fields[b"scope"].decode(), int(fields[b"cost"]), fields[b"id"].decode()
