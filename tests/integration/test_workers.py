"""Workers and leases against real Redis (standalone and cluster), with explicit time.

A job is released when a worker fetches it: the fetch hands it to that consumer (its group's
stream, its pending entries) and starts its lease."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import LeasedJob
from janus.errors import InvalidInput, LeaseLost
from janus.keys import Keys
from janus.worker import Retry, load_handler

from tests.helpers import FakeClock, flush_library, make_janus, unchanged, wait_until

#: Each contract test runs through the sync API and the asyncio API (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("api")

BODY = """
pay:
  rate: 100
  burst: 10
  max_wait: 60s
  lease: 10s
  retention: 1h
  retry: {max_attempts: 3, backoff: {base: 1s, factor: 2, max: 60s, jitter: none}}
"""


def _setup(url: str, prefix: str, body: str = BODY) -> tuple[Janus, FakeClock]:
    clock = FakeClock()
    return make_janus(url, prefix, body, clock), clock


def _one(jn: Janus, job_id: str = "order-1", payload: bytes = b"p") -> LeasedJob:
    assert jn.submit("pay", scope="t1", job_id=job_id, payload=payload).status == "ready"
    jobs = jn.worker("pay", group="billing", consumer="w1").fetch(count=10, block_ms=None)
    assert [j.id for j in jobs] == [job_id]
    return jobs[0]


def test_fetch_then_complete_finishes_the_job_and_cleans_the_stream(
    redis_url: str, prefix: str
) -> None:
    """A fetched job is delivered to its consumer (pending entry), started, completed once;
    then its stream entry, pending entry and lease are gone."""
    jn, clock = _setup(redis_url, prefix)
    w = jn.worker("pay", group="billing", consumer="w1")
    jn.submit("pay", scope="t1", job_id="order-1", payload=b'{"n": 1}')
    assert jn.job("pay", "order-1").status == "scheduled"  # type: ignore[union-attr]
    (job,) = w.fetch(count=10, block_ms=None)
    assert (job.id, job.scope, job.payload, job.attempt) == ("order-1", "t1", b'{"n": 1}', 1)
    assert job.lease_deadline_ms == clock.now_ms + 10_000
    assert job.started_ms == clock.now_ms
    info = jn.job("pay", "order-1")
    assert info is not None and info.status == "running" and info.started_ms == clock.now_ms
    k = Keys(prefix, "pay")
    client = jn.store.client
    pending = client.xpending_range(k.stream("billing"), "billing", "-", "+", 10)
    assert [(p["message_id"].decode(), p["consumer"]) for p in pending] == [(job.token, b"w1")]
    assert client.pttl(k.job("order-1")) == -1  # a running record lives until its outcome
    w.complete(job)
    info = jn.job("pay", "order-1")
    assert info is not None and info.status == "completed" and info.attempt == 1
    assert [h["outcome"] for h in info.history] == ["completed"]
    assert info.history[0]["consumer"] == "w1"
    assert jn.store.stream_counts("pay") == {"billing": (0, 0)}
    assert jn.status("pay").in_flight == 0
    assert 0 < client.pttl(k.job("order-1")) <= 3_600_000
    assert w.fetch(block_ms=None) == []


def test_a_job_is_completed_at_most_once(redis_url: str, prefix: str) -> None:
    """A second complete (or a fail after complete) raises LeaseLost and changes nothing."""
    jn, _ = _setup(redis_url, prefix)
    job = _one(jn)
    w = jn.worker("pay", group="billing", consumer="w1")
    w.complete(job)
    with unchanged(jn.store.client, prefix):
        with pytest.raises(LeaseLost) as err:
            w.complete(job)
        assert err.value.reason == "finished"
        assert "cannot complete job 'order-1' (attempt 1) of 'pay'" in str(err.value)
        with pytest.raises(LeaseLost):
            w.fail(job, "boom")
        with pytest.raises(LeaseLost) as err:
            w.heartbeat(job)
        assert err.value.reason == "finished"


def test_heartbeat_extends_only_a_live_lease(redis_url: str, prefix: str) -> None:
    """Heartbeats move the deadline to now + lease; after the deadline they raise LeaseLost."""
    jn, clock = _setup(redis_url, prefix)
    job = _one(jn)
    w = jn.worker("pay", group="billing", consumer="w1")
    clock.advance_ms(9_000)
    renewed = w.heartbeat(job)
    assert renewed.lease_deadline_ms == clock.now_ms + 10_000
    clock.advance_ms(10_001)
    with unchanged(jn.store.client, prefix), pytest.raises(LeaseLost) as err:
        w.heartbeat(renewed)
    assert err.value.reason == "expired"


def test_expired_lease_is_reclaimed_retried_and_the_zombie_cannot_complete(
    redis_url: str, prefix: str
) -> None:
    """The coordinator reclaims an expired lease as a failed attempt (lease_expired); the job
    runs again as attempt 2; the first worker's late complete is refused."""
    jn, clock = _setup(redis_url, prefix)
    zombie_job = _one(jn)
    coord = Coordinator(jn.store)
    clock.advance_ms(10_001)
    step = coord.step("pay", clock())
    assert coord.reclaimed == 1
    info = jn.job("pay", "order-1")
    assert info is not None and info.status == "failed" and info.last_error == "lease_expired"
    assert info.not_before_ms == clock.now_ms + 1_000  # backoff base after attempt 1
    assert step.next_us == (clock.now_ms + 1_000) * 1000
    assert jn.store.stream_counts("pay") == {"billing": (0, 0)}  # the entry ended with it
    clock.advance_ms(1_000)
    w2 = jn.worker("pay", group="billing", consumer="w2")
    (again,) = w2.fetch(block_ms=None)
    assert again.attempt == 2 and again.token != zombie_job.token
    with pytest.raises(LeaseLost) as err:
        jn.worker("pay", group="billing", consumer="w1").complete(zombie_job)
    assert err.value.reason == "superseded"
    w2.complete(again)
    info = jn.job("pay", "order-1")
    assert info is not None and info.status == "completed"
    assert [(h["attempt"], h["outcome"], h.get("error")) for h in info.history] == [
        (1, "failed", "lease_expired"),
        (2, "completed", None),
    ]


def test_failures_back_off_then_dead_letter_with_history(redis_url: str, prefix: str) -> None:
    """fail -> retry after base*factor^(n-1) (at least retry_after_ms); after max_attempts the
    job is dead-lettered with its payload and every attempt's error."""
    jn, clock = _setup(redis_url, prefix)
    job = _one(jn, payload=b"keep me")
    w = jn.worker("pay", group="billing", consumer="w1")
    coord = Coordinator(jn.store)
    out = w.fail(job, "http_503")
    assert (out.decision, out.retry_at_ms) == ("retry", clock.now_ms + 1_000)
    clock.advance_ms(999)
    assert w.fetch(block_ms=None) == []
    coord.step("pay", clock.advance_ms(1))
    (job,) = w.fetch(block_ms=None)
    out = w.fail(job, "http_429", retry_after_ms=5_000)
    assert (out.decision, out.retry_at_ms) == ("retry", clock.now_ms + 5_000)  # > 2 s backoff
    clock.advance_ms(5_000)
    (job,) = w.fetch(block_ms=None)
    assert job.attempt == 3
    out = w.fail(job, "timeout", detail="Traceback: ...")
    assert (out.decision, out.retry_at_ms) == ("dead", None)
    info = jn.job("pay", "order-1")
    assert info is not None and info.status == "dead"
    ((_, dead),) = jn.store.dead_letters("pay")
    assert dead[b"id"] == b"order-1" and dead[b"payload"] == b"keep me"
    assert dead[b"reason"] == b"attempts_exhausted" and dead[b"attempts"] == b"3"
    assert [h["error"] for h in info.history] == ["http_503", "http_429", "timeout"]
    assert info.history[2]["detail"] == "Traceback: ..."
    assert jn.status("pay").in_flight == 0 and jn.status("pay").scheduled == 0


def test_in_flight_slot_is_freed_by_reports(redis_url: str, prefix: str) -> None:
    """max_in_flight counts started, unreported attempts; a report frees the slot and wakes an
    idle worker, which takes the next job."""
    body = BODY.replace("burst: 10", "burst: 10\n  max_in_flight: 1")
    jn, clock = _setup(redis_url, prefix, body)
    ds = jn.submit_many("pay", [Job(scope="t1", job_id=f"j{i}") for i in range(3)])
    assert [d.status for d in ds] == ["ready"] * 3
    w = jn.worker("pay", group="billing", consumer="w1")
    (first,) = w.fetch(count=3, block_ms=None)
    assert w.fetch(block_ms=None) == []
    coord = Coordinator(jn.store)
    assert not coord.step("pay", clock.advance_ms(100)).ready
    client = jn.store.client
    client.delete(Keys(prefix, "pay").work)
    w.complete(first)
    assert client.llen(Keys(prefix, "pay").work) == 1  # an idle worker is told at once
    (second,) = w.fetch(block_ms=None)
    w.fail(second, "http_500")
    assert [j.id for j in w.fetch(count=3, block_ms=None)] == ["j2"]


def test_no_worker_means_no_attempt_and_no_dead_letter(redis_url: str, prefix: str) -> None:
    """Waiting is free: with no worker for 10 leases, the coordinator steps on time and
    nothing is released, no attempt is used, nothing is dead-lettered."""
    jn, clock = _setup(redis_url, prefix)
    jn.submit_many("pay", [Job(scope="t1", job_id=f"j{i}") for i in range(8)])
    coord = Coordinator(jn.store)
    for _ in range(100):
        coord.step("pay", clock.advance_ms(1_000))  # 100 s = 10 leases
    st = jn.status("pay")
    assert (st.in_flight, st.scheduled, st.dead_letters, st.stream_length) == (0, 8, 0, 0)
    assert {jn.job("pay", f"j{i}").attempt for i in range(8)} == {0}  # type: ignore[union-attr]
    got = jn.worker("pay", group="billing", consumer="late").fetch(count=8, block_ms=None)
    assert sorted(j.id for j in got) == [f"j{i}" for i in range(8)]
    assert {j.attempt for j in got} == {1}


def test_a_resent_fetch_gets_the_same_jobs_and_nothing_more(redis_url: str, prefix: str) -> None:
    """A fetch whose reply was lost (redis-py re-sends it with the same fetch id) returns the
    jobs the first one took and releases nothing new; a new fetch id takes new work."""
    from janus import calls

    jn, clock = _setup(redis_url, prefix)
    jn.submit_many("pay", [Job(scope="t1", job_id=f"j{i}") for i in range(6)])
    w = jn.worker("pay", group="billing", consumer="w1")
    call = calls.fetch(
        jn.store.keys("pay"),
        group="billing",
        consumer="w1",
        count=2,
        fetch_id="f-1",
        max_steps=100,
        now_us=clock(),
    )
    first = jn.store.run(call)
    assert [j.id for j in first.jobs] == ["j0", "j1"] and not first.repeat
    for _ in range(3):
        again = jn.store.run(call)
        assert again.repeat and again.jobs == first.jobs
    assert jn.status("pay").in_flight == 2
    w.complete(first.jobs[0])
    again = jn.store.run(call)
    assert [j.id for j in again.jobs] == ["j1"]  # a finished job is not handed out again
    assert [j.id for j in w.fetch(count=2, block_ms=None)] == ["j2", "j3"]


def test_a_fetch_lost_in_transit_is_recovered_by_the_next_fetch(
    redis_url: str, prefix: str
) -> None:
    """When a fetch raised RedisUnavailable after Redis took jobs for it, the worker's next
    fetch re-sends it under the same id and gets those jobs: none is left held by nobody."""
    from janus.errors import RedisUnavailable

    jn, _ = _setup(redis_url, prefix)
    jn.submit_many("pay", [Job(scope="t1", job_id=f"j{i}") for i in range(4)])
    w = jn.worker("pay", group="billing", consumer="w1")
    store = w.store  # the worker's own store: janus.Store, or janus.aio.AsyncStore
    real_run = store.run
    calls_seen: list[str] = []

    def lose_first_fetch(call):  # type: ignore[no-untyped-def]
        calls_seen.append(call.script)
        if call.script == "fetch" and len(calls_seen) == 1:
            raise RedisUnavailable("fetching: reply lost")

    def lossy(call):  # type: ignore[no-untyped-def]
        result = real_run(call)
        lose_first_fetch(call)
        return result

    async def lossy_async(call):  # type: ignore[no-untyped-def]
        result = await real_run(call)
        lose_first_fetch(call)
        return result

    store.run = lossy_async if inspect.iscoroutinefunction(real_run) else lossy
    with pytest.raises(RedisUnavailable):
        w.fetch(count=2, block_ms=None)
    assert jn.status("pay").in_flight == 2
    got = w.fetch(count=2, block_ms=None)
    assert [j.id for j in got] == ["j0", "j1"]
    assert jn.status("pay").in_flight == 2


def test_return_unstarted_gives_the_job_back_without_using_an_attempt(
    redis_url: str, prefix: str
) -> None:
    """A job given back unstarted goes to the head of its scope's line with its attempt
    count unchanged; its slot and stream entry are freed."""
    jn, _ = _setup(redis_url, prefix)
    jn.submit_many("pay", [Job(scope="t1", job_id=f"j{i}") for i in range(3)])
    w = jn.worker("pay", group="billing", consumer="w1")
    a, _b = w.fetch(count=2, block_ms=None)
    w.return_unstarted(a)
    info = jn.job("pay", "j0")
    assert info is not None and (info.status, info.attempt) == ("scheduled", 0)
    assert [h["outcome"] for h in info.history] == ["returned"]
    assert jn.status("pay").in_flight == 1
    assert jn.store.stream_counts("pay") == {"billing": (1, 1)}
    (again,) = w.fetch(count=1, block_ms=None)
    assert (again.id, again.attempt) == ("j0", 1)
    with pytest.raises(LeaseLost):
        w.return_unstarted(a)


def test_batch_report_applies_each_outcome_on_its_own(redis_url: str, prefix: str) -> None:
    """One report call: each outcome fenced and applied alone; a refused one changes nothing
    and does not stop the others; re-sending the same outcomes answers the same."""
    jn, clock = _setup(redis_url, prefix)
    jn.submit_many("pay", [Job(scope="t1", job_id=f"j{i}") for i in range(4)])
    w = jn.worker("pay", group="billing", consumer="w1")
    a, b, c, d = w.fetch(count=4, block_ms=None)
    w.complete(d)
    outcomes = [w.completed(a), w.failed(b, "http_503"), w.returned(c), w.completed(d)]
    results = w.report(outcomes)
    assert [(r.ok, r.decision, r.reason) for r in results] == [
        (True, "completed", None),
        (True, "retry", None),
        (True, "returned", None),
        (False, None, "finished"),
    ]
    assert results[1].retry_at_ms == clock.now_ms + 1_000
    assert [(r.ok, r.decision) for r in w.report(outcomes[:3])] == [
        (True, "completed"),
        (True, "retry"),
        (True, "returned"),
    ]
    st = jn.status("pay")
    assert (st.in_flight, st.scheduled, st.stream_length) == (0, 2, 0)


def test_heartbeat_many_extends_every_live_lease_in_one_call(redis_url: str, prefix: str) -> None:
    """Each lease is extended on its own; a lost one is reported, the others renewed."""
    jn, clock = _setup(redis_url, prefix)
    jn.submit_many("pay", [Job(scope="t1", job_id=f"j{i}") for i in range(3)])
    w = jn.worker("pay", group="billing", consumer="w1")
    a, b, c = w.fetch(count=3, block_ms=None)
    w.complete(c)
    clock.advance_ms(5_000)
    ra, rb, rc = w.heartbeat_many([a, b, c])
    assert isinstance(ra, LeasedJob) and ra.lease_deadline_ms == clock.now_ms + 10_000
    assert isinstance(rb, LeasedJob) and rb.lease_deadline_ms == clock.now_ms + 10_000
    assert isinstance(rc, LeaseLost) and rc.reason == "finished"


def test_a_missing_group_is_recreated_by_the_next_fetch(redis_url: str, prefix: str) -> None:
    """Redis restarted empty (or the group was destroyed): the worker's fetch creates the
    stream and group again and delivers; nothing raises NOGROUP."""
    jn, _ = _setup(redis_url, prefix)
    job = _one(jn)
    w = jn.worker("pay", group="billing", consumer="w1")
    w.complete(job)
    stream = Keys(prefix, "pay").stream("billing")
    jn.store.client.delete(stream)
    jn.submit("pay", scope="t1", job_id="after")
    result = w.fetch_result(5)
    assert result.group_created and [j.id for j in result.jobs] == ["after"]
    pending = jn.store.client.xpending(stream, "billing")
    assert pending["pending"] == 1


def test_bad_reports_raise_and_change_nothing(redis_url: str, prefix: str) -> None:
    """Unknown job, wrong dependency, bad error kind or retry_after: clear errors, no writes."""
    body = BODY + "other:\n  rate: 1\n  burst: 1\n"
    jn, _ = _setup(redis_url, prefix, body)
    job = _one(jn)
    w = jn.worker("pay", group="billing", consumer="w1")
    other = jn.worker("other", group="billing", consumer="w1")
    ghost = LeasedJob("pay", "ghost", "t1", b"", 1, 1, 0, "1-1")
    with unchanged(jn.store.client, prefix):
        with pytest.raises(LeaseLost) as err:
            w.complete(ghost)
        assert err.value.reason == "unknown_job" and "Janus has no such job" in str(err.value)
        with pytest.raises(InvalidInput, match="belongs to dependency 'pay'"):
            other.complete(job)
        with pytest.raises(InvalidInput, match="error must be a non-empty string"):
            w.fail(job, "")
        with pytest.raises(InvalidInput, match="retry_after_ms must be an integer between 0 and"):
            w.fail(job, "http_429", retry_after_ms=-5)
        with pytest.raises(InvalidInput, match="retry_after_ms must be an integer between 0 and"):
            w.fail(job, "http_429", retry_after_ms=2**63)
        for bad in (-1, 10**20, 2.5, True):
            with pytest.raises(InvalidInput, match="actual_cost must be an integer between 0"):
                w.complete(job, actual_cost=bad)  # type: ignore[arg-type]
            with pytest.raises(InvalidInput, match="actual_cost must be an integer between 0"):
                w.fail(job, "boom", actual_cost=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="error must be a non-empty string"):
            w.fail(job, "kind\udcff")
        forged = LeasedJob("pay", job.id, "t1", b"", job.attempt, 1, 0, "0-1")
        with pytest.raises(LeaseLost) as err:
            w.complete(forged)
        assert err.value.reason == "superseded"
        with pytest.raises(InvalidInput, match="count must be an integer >= 1"):
            w.fetch(count=0)
        with pytest.raises(InvalidInput, match="expected an Outcome"):
            w.report(["completed"])  # type: ignore[list-item]
    assert jn.job("pay", "nope") is None


def test_handler_import_errors_are_clear() -> None:
    """A handler path that does not exist names what is wrong."""
    with pytest.raises(InvalidInput, match=r"must look like 'package\.module:function'"):
        load_handler("nocolon")
    with pytest.raises(InvalidInput, match="cannot import 'no_such_module_xyz'"):
        load_handler("no_such_module_xyz:run")
    with pytest.raises(InvalidInput, match="has no callable 'nope'"):
        load_handler("json:nope")
    assert load_handler("json:dumps") is not None


def test_run_loop_reports_successes_and_failures_and_keeps_going(
    redis_url: str, prefix: str
) -> None:
    """run(): returning completes, Retry(kind) fails with that kind, an exception fails with
    its type name and traceback; the worker keeps running and stops on request."""
    jn = make_janus(redis_url, prefix, BODY)  # real time
    ids = [f"j{i}" for i in range(9)]
    jn.submit_many("pay", [Job(scope="t1", job_id=i, payload=i) for i in ids])

    def handler(job: LeasedJob) -> None:
        n = int(job.id[1:])
        if n % 3 == 1:
            raise Retry("http_503", retry_after_ms=20)  # pauses the dependency 20 ms
        if n % 3 == 2:
            raise ValueError(f"bad payload {job.payload!r}")

    w = jn.worker("pay", group="billing", consumer="loop")
    thread = threading.Thread(
        target=w.run, args=(handler,), kwargs={"concurrency": 3, "install_signals": False}
    )
    thread.start()
    wait_until(lambda: w.stats.completed + w.stats.failed >= 9, 30)
    w.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert (w.stats.completed, w.stats.failed) == (3, 6)
    infos = {i: jn.job("pay", i) for i in ids}
    assert {i for i, info in infos.items() if info and info.status == "completed"} == {
        "j0",
        "j3",
        "j6",
    }
    assert infos["j1"].last_error == "http_503"  # type: ignore[union-attr]
    assert infos["j2"].last_error == "ValueError"  # type: ignore[union-attr]
    assert "ValueError: bad payload b'j2'" in str(infos["j2"].history[-1]["detail"])  # type: ignore[union-attr]
    # It stopped cleanly: nothing held, and its consumer left the group.
    assert jn.store.stream_counts("pay") == {"billing": (0, 0)}
    consumers = jn.store.client.xinfo_consumers(Keys(prefix, "pay").stream("billing"), "billing")
    assert consumers == []


def _async_handlers() -> list[object]:
    import functools

    async def handler(job: LeasedJob) -> None:
        await asyncio.sleep(0)

    class Callable:
        async def __call__(self, job: LeasedJob) -> None:
            await asyncio.sleep(0)

    return [handler, functools.partial(handler), Callable()]


def _run_in_thread(w: object, handler: object) -> threading.Thread:
    thread = threading.Thread(
        target=w.run,  # type: ignore[attr-defined]
        args=(handler,),
        kwargs={"install_signals": False},
        daemon=True,
    )
    thread.start()
    return thread


def test_async_handlers_are_refused_by_threads_and_awaited_by_asyncio(
    redis_url: str, prefix: str, api: str
) -> None:
    """An ``async def`` handler (a function, a partial of one, a class with an async
    ``__call__``) would never be awaited by the sync worker's threads: Worker.run refuses it
    with a clear error and takes no job. The asyncio worker awaits it: the job completes."""
    jn = make_janus(redis_url, prefix, BODY)  # real time
    for i, h in enumerate(_async_handlers()):
        jn.submit("pay", scope="t1", job_id=f"kept{i}")
        w = jn.worker("pay", group="billing", consumer=f"w{i}")
        if api == "sync":
            with pytest.raises(InvalidInput, match="async def function"):
                w.run(h, install_signals=False)
            info = jn.job("pay", f"kept{i}")
            assert info is not None and (info.status, info.attempt) == ("scheduled", 0)
            continue
        thread = _run_in_thread(w, h)
        wait_until(lambda w=w: w.stats.completed == 1, 10, "the async handler's completion")
        w.stop()
        thread.join(10)
        info = jn.job("pay", f"kept{i}")
        assert info is not None and info.status == "completed"


def test_a_handler_returning_an_awaitable_is_failed_by_threads_and_awaited_by_asyncio(
    redis_url: str, prefix: str, api: str
) -> None:
    """A sync-looking handler that returns a coroutine: the sync worker cannot await it, so
    the attempt is failed with a clear error (never marked completed) and no RuntimeWarning
    leaks; the asyncio worker awaits what it returns, and the job completes."""
    import warnings

    jn = make_janus(redis_url, prefix, BODY)  # real time
    ran: list[str] = []

    async def work(job: LeasedJob) -> None:
        ran.append(job.id)

    w = jn.worker("pay", group="billing", consumer="w1")
    jn.submit("pay", scope="t1", job_id="sneaky")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        thread = _run_in_thread(w, lambda job: work(job))
        wait_until(lambda: w.stats.failed + w.stats.completed == 1, 10)
        w.stop()
        thread.join(10)
    info = jn.job("pay", "sneaky")
    assert info is not None
    if api == "sync":
        assert info.status == "failed" and info.last_error == "TypeError" and ran == []
        assert "returned an awaitable" in str(info.history[-1]["detail"])
    else:
        assert info.status == "completed" and ran == ["sneaky"]


def test_worker_rejects_bad_group_names(redis_url: str, prefix: str) -> None:
    """group/consumer must be non-empty strings."""
    jn, _ = _setup(redis_url, prefix)
    with pytest.raises(InvalidInput, match="group must be a non-empty string"):
        jn.worker("pay", group="")


def test_function_flush_does_not_reach_workers(redis_url: str, prefix: str) -> None:
    """After FUNCTION FLUSH, fetch, heartbeat and complete still work (the library is
    loaded again by the call that finds it missing)."""
    jn, _ = _setup(redis_url, prefix)
    job = _one(jn)
    w = jn.worker("pay", group="billing", consumer="w1")
    flush_library(jn.store.client)
    job = w.heartbeat(job)
    flush_library(jn.store.client)
    w.complete(job)
    assert jn.job("pay", "order-1").status == "completed"  # type: ignore[union-attr]


SHORT_LEASE = """
pay:
  rate: 100
  burst: 10
  max_wait: 60s
  lease: 2s
  retention: 1h
  retry: {max_attempts: 3, backoff: {base: 1s, factor: 2, max: 60s, jitter: none}}
"""


def test_run_keeps_a_short_lease_alive_from_the_first_job(
    redis_url: str, prefix: str, api: str
) -> None:
    """Lease 2 s, handler 4 s, the very first job after start: heartbeats begin from the
    lease the job came with (they used to wait a default 10 s first), so the job runs once
    and completes; no lease is lost."""
    jn = make_janus(redis_url, prefix, SHORT_LEASE)  # real time
    jn.submit("pay", scope="t1", job_id="long")
    w = jn.worker("pay", group="billing", consumer="w1")
    runs: list[int] = []

    def slow(job: LeasedJob) -> None:
        runs.append(job.attempt)
        time.sleep(4)

    thread = _run_in_thread(w, slow)
    wait_until(lambda: w.stats.completed + w.stats.lease_lost >= 1, 30, "the long job's report")
    w.stop()
    thread.join(30)
    info = jn.job("pay", "long")
    assert info is not None and (info.status, info.attempt) == ("completed", 1)
    assert runs == [1] and w.stats.lease_lost == 0


def test_a_stop_before_run_is_not_lost(redis_url: str, prefix: str, api: str) -> None:
    """stop() called before run(): run() returns at once instead of running for ever."""
    jn = make_janus(redis_url, prefix, BODY)
    w = jn.worker("pay", group="billing", consumer="w1")
    w.stop()
    thread = _run_in_thread(w, lambda job: None)
    thread.join(15)
    assert not thread.is_alive()


@pytest.mark.parametrize(
    "bad", [Retry(""), Retry("http_503", retry_after_ms=-5), Retry("x" * 500)], ids=repr
)
def test_an_invalid_retry_still_fails_the_job(
    redis_url: str, prefix: str, api: str, bad: Retry
) -> None:
    """A handler that raises a Retry the client refuses (empty kind, negative Retry-After,
    a kind too long) still ends its attempt: failed as InvalidRetry with the reason in the
    detail. Without that the job would stay held, its lease renewed, and never run again."""
    jn = make_janus(redis_url, prefix, BODY)  # real time
    jn.submit("pay", scope="t1", job_id="j1")

    def handler(job: LeasedJob) -> None:
        raise bad

    w = jn.worker("pay", group="billing", consumer="w1")
    thread = _run_in_thread(w, handler)
    try:
        wait_until(lambda: w.stats.failed == 1, 30, "the attempt's failure")
    finally:
        w.stop()
        thread.join(30)
    info = jn.job("pay", "j1")
    assert info is not None and info.last_error == "InvalidRetry"
    assert "error must be" in str(info.history[-1]["detail"]) or "retry_after_ms" in str(
        info.history[-1]["detail"]
    )
    assert jn.store.stream_counts("pay") == {"billing": (0, 0)}
