"""Property tests against real Redis with explicit time: whatever happens, no overshoot and no
lost job.

Hypothesis draws a policy and a history: submits (time gaps, scopes, costs, batch sizes),
fetches by three workers (two consumers of one group, one of another: the release happens
there), batched reports of what they hold (complete, fail, fail with a Retry-After, return
unstarted, including late reports of attempts that already ended), heartbeats, and
coordinator steps. Leases are short and time jumps often pass them, so leases expire and
whoever steps the dependency next (any fetch, or the coordinator) reclaims them. At the end
a worker drains everything. A model follows every attempt and checks, after each call:

* started cost in every window W <= rate*W + burst, per dependency and per scope;
* attempts in flight (started, unreported, lease live) <= max_in_flight;
* each attempt is numbered as the rules say (a returned one does not count) and never
  exceeds max_attempts; a job is never handed out while an attempt of it runs;
* a report or heartbeat is accepted exactly when it comes from the current attempt's live
  lease (else refused with the reason the model expects); a fail is retried or
  dead-lettered as max_attempts says; a coordinator step reclaims exactly the expired
  leases nobody reclaimed yet;
* every accepted job is, in Redis, exactly where the model says: waiting (delay queue, a
  ready line or the parked retries, in exactly one of them), running (on the lease the
  worker holds), completed or dead-lettered; none vanished; running work is always held by
  the worker it was released to;
* no job is completed twice; after the drain every accepted job is completed or dead.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import NamedTuple

from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import LeasedJob
from janus.errors import LeaseLost
from janus.keys import Keys, encode_part
from janus.measure import by_scope, check_rate

from tests.helpers import FakeClock, make_janus, started

WINDOWS = (1, 7, 50, 333, 1000, 5000)
SCOPES = ("a", "b", "c", "vip")
LEASE_MS = 200
MAX_ATTEMPTS = 2
WORKERS = (("g", "w0"), ("g", "w1"), ("h", "w2"))
#: Report kinds a history can draw: (outcome, error, retry_after_ms).
REPORTS = {
    "complete": ("completed", "", None),
    "fail": ("failed", "http_503", None),
    "fail_429": ("failed", "http_429", 150),
    "return": ("returned", "", None),
}

KINDS = ("submit", "fetch", "report") * 3 + ("heartbeat", "step")
REPORT_KINDS = ("complete", "fail", "fail_429", "return", "complete", "fail")


class Op(NamedTuple):
    """One call of a history (the fields a kind does not use are ignored)."""

    kind: str
    gap_ms: int
    """Time before the call: mostly short (0-24 ms), one in five past a 200 ms lease."""
    who: int
    """submit: the scope (SCOPES[who]); fetch, report, heartbeat: the worker."""
    n: int
    """submit: jobs in the batch (1-4); fetch: most jobs to take."""
    cost: int
    picks: tuple[tuple[str, int, bool], ...]
    """report, heartbeat: (kind, which attempt: 0 = the latest, stale) per outcome; a
    stale pick may be an attempt that already ended (a late report)."""


ops = st.lists(
    st.builds(
        Op,
        kind=st.integers(0, len(KINDS) - 1).map(KINDS.__getitem__),
        gap_ms=st.integers(0, 99).map(lambda x: x % 25 if x < 80 else 150 + x),
        who=st.integers(0, 3),
        n=st.integers(1, 8),
        cost=st.integers(1, 3),
        picks=st.lists(
            st.tuples(
                st.integers(0, len(REPORT_KINDS) - 1).map(REPORT_KINDS.__getitem__),
                st.integers(0, 999),
                st.booleans(),
            ),
            min_size=1,
            max_size=3,
        ).map(tuple),
    ),
    min_size=10,
    max_size=50,
)


@dataclass
class Attempt:
    """One attempt a worker got from a fetch, as the model sees it."""

    job: LeasedJob
    worker: int
    deadline_ms: int
    ended: str | None = None
    """completed | failed | returned (accepted reports) | reclaimed (lease expired)."""


class Model:
    """What the history implies; every method checks Janus's answer against it."""

    def __init__(self, jn: Janus, clock: FakeClock, max_in_flight: int | None) -> None:
        self.jn, self.clock, self.max_in_flight = jn, clock, max_in_flight
        self.keys = Keys(jn.store.prefix, "pay")
        self.workers = [jn.worker("pay", group=g, consumer=c) for g, c in WORKERS]
        self.coord = Coordinator(jn.store)
        self.accepted: dict[str, str] = {}  # job id -> scope
        self.attempts: dict[str, list[Attempt]] = {}  # job id -> its attempts, in order
        self.held: list[list[Attempt]] = [[] for _ in WORKERS]  # per worker, in fetch order
        self.completions: dict[str, int] = {}
        self.next_id = 0
        self.seen: set[str] = set()  # what the history exercised (hypothesis events)

    @property
    def now_ms(self) -> int:
        return self.clock.now_ms

    def state(self, job_id: str) -> str:
        """waiting | running | completed | dead."""
        mine = self.attempts.get(job_id)
        if not mine:
            return "waiting"
        last = mine[-1]
        if last.ended is None:
            return "running"
        if last.ended == "completed":
            return "completed"
        if last.ended in ("failed", "reclaimed") and last.job.attempt >= MAX_ATTEMPTS:
            return "dead"
        return "waiting"

    def live(self, a: Attempt) -> bool:
        return a.ended is None and a.deadline_ms > self.now_ms

    def expected_refusal(self, a: Attempt) -> str | None:
        """None when a report or heartbeat of ``a`` must be accepted, else the reason."""
        if self.live(a):
            return None
        st_ = self.state(a.job.id)
        if st_ in ("completed", "dead"):
            return "finished"
        if st_ == "running" and self.attempts[a.job.id][-1] is a:
            return "expired"  # not reclaimed yet
        return "superseded"

    def all_finished(self) -> bool:
        return all(self.state(j) in ("completed", "dead") for j in self.accepted)

    # -- calls -----------------------------------------------------------------------

    def submit(self, scope: str, cost: int, n: int) -> None:
        ids = [f"j{self.next_id + i}" for i in range(n)]
        self.next_id += n
        jobs = [Job(scope=scope, cost=cost, job_id=i) for i in ids]
        for d in self.jn.submit_many("pay", jobs):
            assert (d.created, d.attempt, d.state) == (
                (True, 0, "scheduled") if d.accepted else (False, 0, None)
            ), d
            if d.accepted:
                self.accepted[d.job_id] = scope

    def _reclaimed_expired(self) -> list[Attempt]:
        """What any fetch or step must reclaim now: every expired lease not ended yet."""
        gone = [
            a
            for mine in self.attempts.values()
            for a in mine
            if a.ended is None and a.deadline_ms <= self.now_ms
        ]
        for a in gone:
            a.ended = "reclaimed"
        if gone:
            self.seen.add("reclaim")
        return gone

    def fetch(self, worker: int, count: int) -> list[LeasedJob]:
        w = self.workers[worker]
        jobs = w.fetch(count=count, block_ms=None)
        self._reclaimed_expired()
        assert len(jobs) <= count
        for job in jobs:
            assert job.id in self.accepted, job
            assert job.scope == self.accepted[job.id]
            assert job.started_ms == self.now_ms
            assert job.lease_deadline_ms == self.now_ms + LEASE_MS
            mine = self.attempts.setdefault(job.id, [])
            assert self.state(job.id) == "waiting", (job, "handed out while it runs or ended")
            if mine:
                prev = mine[-1]
                want = prev.job.attempt if prev.ended == "returned" else prev.job.attempt + 1
            else:
                want = 1
            assert job.attempt == want <= MAX_ATTEMPTS, (job, want)
            a = Attempt(job, worker, job.lease_deadline_ms)
            mine.append(a)
            self.held[worker].append(a)
        live = sum(1 for mine in self.attempts.values() for a in mine if self.live(a))
        if self.max_in_flight is not None:
            assert live <= self.max_in_flight, (live, self.max_in_flight)
        return jobs

    def _pick(self, worker: int, index: int, stale: bool) -> Attempt | None:
        """An attempt ``worker`` got (``index`` 0: the latest): one it has not reported, or
        (``stale``) any it ever got, so reports of attempts that already ended are tried."""
        pool = [a for a in self.held[worker] if stale or a.ended in (None, "reclaimed")]
        return pool[-1 - index % len(pool)] if pool else None

    def _holder(self, hint: int) -> int:
        """The worker ``hint``, or the next one that holds something it has not reported."""
        for k in range(len(WORKERS)):
            w = (hint + k) % len(WORKERS)
            if any(a.ended in (None, "reclaimed") for a in self.held[w]):
                return w
        return hint

    def report(self, worker: int, items: list[tuple[str, int, bool]]) -> None:
        worker = self._holder(worker)
        picked = [(kind, self._pick(worker, i, stale)) for kind, i, stale in items]
        self.send(worker, [(kind, a) for kind, a in picked if a is not None])

    def send(self, worker: int, chosen: list[tuple[str, Attempt]]) -> None:
        """One batched report of ``chosen`` (kind, attempt) by ``worker``."""
        if not chosen:
            return
        w = self.workers[worker]
        outcomes = []
        for kind, a in chosen:
            outcome, error, retry_after = REPORTS[kind]
            if outcome == "completed":
                outcomes.append(w.completed(a.job))
            elif outcome == "failed":
                outcomes.append(w.failed(a.job, error, retry_after_ms=retry_after))
            else:
                outcomes.append(w.returned(a.job))
        results = w.report(outcomes)
        assert len(results) == len(chosen)
        for (kind, a), r in zip(chosen, results, strict=True):
            why = self.expected_refusal(a)  # in order: an earlier outcome may end `a`
            assert (r.ok, r.reason) == (why is None, why), (kind, a.job, r)
            if not r.ok:
                assert r.decision is None
                self.seen.add(f"refused {why}")
                continue
            self.seen.add(f"{kind} ok")
            outcome = REPORTS[kind][0]
            a.ended = outcome
            if outcome == "completed":
                assert r.decision == "completed"
                self.completions[a.job.id] = self.completions.get(a.job.id, 0) + 1
                assert self.completions[a.job.id] == 1, ("completed twice", a.job)
            elif outcome == "failed":
                want = "retry" if a.job.attempt < MAX_ATTEMPTS else "dead"
                assert r.decision == want, (a.job, r)
                if want == "retry":
                    assert r.retry_at_ms is not None and r.retry_at_ms >= self.now_ms
            else:
                assert r.decision == "returned"

    def heartbeat(self, worker: int, items: list[tuple[str, int, bool]]) -> None:
        worker = self._holder(worker)
        chosen = [a for _, i, stale in items if (a := self._pick(worker, i, stale))]
        if not chosen:
            return
        expect = [self.expected_refusal(a) for a in chosen]
        results = self.workers[worker].heartbeat_many([a.job for a in chosen])
        for a, why, r in zip(chosen, expect, results, strict=True):
            if why is None:
                assert isinstance(r, LeasedJob), (a.job, r)
                assert r.lease_deadline_ms == self.now_ms + LEASE_MS
                a.deadline_ms = r.lease_deadline_ms
                a.job = r
            else:
                assert isinstance(r, LeaseLost) and r.reason == why, (a.job, why, r)

    def step(self) -> int | None:
        result = self.coord.step("pay", self.clock())
        gone = self._reclaimed_expired()
        dead = sum(1 for a in gone if a.job.attempt >= MAX_ATTEMPTS)
        assert (result.reclaimed, result.retried, result.dead_lettered) == (
            len(gone),
            len(gone) - dead,
            dead,
        ), result
        return result.next_us

    # -- Redis against the model -----------------------------------------------------

    def check_redis(self) -> None:
        """Every accepted job is exactly where the model says; nothing else runs."""
        k, client = self.keys, self.jn.store.client
        pipe = client.pipeline(transaction=False)
        pipe.zrange(k.delayed, 0, -1)
        pipe.zrange(k.parked, 0, -1)
        for scope in SCOPES:
            pipe.lrange(k.ready(scope), 0, -1)
        for job_id in self.accepted:
            pipe.hmget(k.job(job_id), "status", "attempt", "token", "held")
        pipe.zrange(k.inflight, 0, -1)
        replies = pipe.execute()
        delayed, parked = replies[0], replies[1]
        lines = replies[2 : 2 + len(SCOPES)]
        records = dict(zip(self.accepted, replies[2 + len(SCOPES) : -1], strict=True))
        inflight = {m.decode() for m in replies[-1]}
        places: list[bytes] = list(delayed) + list(parked) + [m for line in lines for m in line]
        assert len(places) == len(set(places)), "a job waits in two places at once"
        waiting = {m.decode() for m in places}
        dead = [f[b"id"].decode() for _, f in self.jn.store.dead_letters("pay")]
        assert len(dead) == len(set(dead)), "a job was dead-lettered twice"
        running = 0
        for job_id in self.accepted:
            want = self.state(job_id)
            status, attempt, token, held = (v.decode() if v else None for v in records[job_id])
            # held: the stream, group and consumer of a running attempt, NUL-separated
            _stream, group, consumer = (held or "\0\0").split("\0")
            enc = encode_part(job_id)
            where = (enc in waiting, enc in inflight, job_id in dead)
            if want == "waiting":
                assert status in ("scheduled", "failed"), (job_id, status)
                assert where == (True, False, False), (job_id, want, where)
            elif want == "running":
                running += 1
                a = self.attempts[job_id][-1]
                assert (status, attempt, token) == ("running", str(a.job.attempt), a.job.token)
                assert (group, consumer) == WORKERS[a.worker]  # held by whom it went to
                assert where == (False, True, False), (job_id, want, where)
            elif want == "completed":
                assert status == "completed" and where == (False, False, False), (job_id, where)
            else:
                assert status == "dead" and where == (False, False, True), (job_id, where)
        assert set(dead) <= set(self.accepted)
        assert {m for m in waiting | inflight} <= {encode_part(j) for j in self.accepted}
        st_ = self.jn.status("pay")
        assert st_.scheduled == len(waiting), (st_.scheduled, len(waiting))
        assert st_.parked == len(parked)
        if parked:
            self.seen.add("parked")
        if st_.circuit != "closed":
            self.seen.add(f"circuit {st_.circuit}")
        live = sum(1 for mine in self.attempts.values() for a in mine if self.live(a))
        assert st_.in_flight == live
        if self.max_in_flight and live == self.max_in_flight:
            self.seen.add("in flight at the limit")
        assert st_.stream_length == running  # one entry per attempt not ended yet
        assert sum(p for _, p in self.jn.store.stream_counts("pay").values()) == running

    def check_rates(self, rate: float, burst: int, scope_rate: float, scope_burst: int) -> None:
        releases = started([a.job for mine in self.attempts.values() for a in mine])
        for rep in check_rate(releases, rate, burst, WINDOWS):
            assert rep.ok, rep
        for scope, mine in by_scope(releases).items():
            r = scope_rate * 2 if scope == "vip" else scope_rate
            for rep in check_rate(mine, r, scope_burst, WINDOWS):
                assert rep.ok, (scope, rep)


def _drain(model: Model) -> None:
    """A worker takes everything left and completes it, jumping from event to event."""
    clock = model.clock
    for _ in range(5_000):
        if model.all_finished():
            return
        got = model.fetch(0, 100)
        if got:
            model.send(0, [("complete", a) for a in model.held[0][-len(got) :]])
            continue
        nxt = model.step()
        assert nxt is not None, "jobs wait but nothing is due for them"
        clock.now_us = max(nxt, clock.now_us + 1000)
    raise AssertionError("the drain did not finish")


@settings(
    max_examples=100,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),  # no slow "explain"
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rate=st.sampled_from([1, 3, 7.5, 20, 100]),
    burst=st.integers(3, 12),
    scope_rate=st.sampled_from([0.5, 2, 5, 50]),
    scope_burst=st.integers(3, 6),
    max_in_flight=st.one_of(st.none(), st.integers(1, 8)),
    circuit=st.booleans(),
    history=ops,
)
def test_no_overshoot_and_no_lost_job(
    standalone_url: str,
    rate: float,
    burst: int,
    scope_rate: float,
    scope_burst: int,
    max_in_flight: int | None,
    circuit: bool,
    history: list[Op],
) -> None:
    """Property: started cost in every window W <= rate*W + burst (dependency and each
    scope); in flight <= max_in_flight; attempts counted and fenced exactly; every accepted
    job waiting, running, completed or dead-lettered where the model says (none vanished);
    none completed twice; all completed or dead after the drain."""
    prefix = "h" + uuid.uuid4().hex[:12]
    in_flight = f"\n  max_in_flight: {max_in_flight}" if max_in_flight else ""
    breaker = "\n  circuit: {min_requests: 4, open_for: 300ms, half_open_probes: 1}"
    body = f"""
pay:
  rate: {rate}
  burst: {burst}
  max_wait: 20s
  lease: {LEASE_MS}ms
  retry: {{max_attempts: {MAX_ATTEMPTS}, backoff: {{base: 100ms, max: 100ms}}}}{in_flight}{
        breaker if circuit else ""
    }
  scopes:
    default: {{rate: {scope_rate}, burst: {scope_burst}}}
    vip: {{rate: {scope_rate * 2}, burst: {scope_burst}}}
"""
    clock = FakeClock()
    jn = make_janus(standalone_url, prefix, body, clock)
    model = Model(jn, clock, max_in_flight)
    try:
        for op in history:
            clock.advance_ms(op.gap_ms)
            if op.kind == "submit":
                model.submit(SCOPES[op.who], op.cost, op.n % 4 + 1)
            elif op.kind == "fetch":
                model.fetch(op.who % len(WORKERS), op.n)
            elif op.kind == "report":
                model.report(op.who % len(WORKERS), list(op.picks))
            elif op.kind == "heartbeat":
                model.heartbeat(op.who % len(WORKERS), list(op.picks))
            else:
                model.step()
            model.check_redis()
        model.check_rates(rate, burst, scope_rate, scope_burst)
        for what in sorted(model.seen):
            event(what)
        _drain(model)
        model.check_redis()
        model.check_rates(rate, burst, scope_rate, scope_burst)
        assert model.all_finished()
        for job_id in model.accepted:
            info = jn.job("pay", job_id)
            assert info is not None
            outcomes = [h["outcome"] for h in info.history]
            assert outcomes.count("completed") == (info.status == "completed")
    finally:
        jn.close()
