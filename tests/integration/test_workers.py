"""Workers and leases against real Redis (standalone and cluster), with explicit time."""

from __future__ import annotations

import threading
import time

import pytest

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import LeasedJob
from janus.errors import InvalidInput, LeaseLost
from janus.keys import Keys
from janus.worker import Retry, load_handler

from tests.helpers import FakeClock, make_janus, unchanged

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
    assert jn.submit("pay", scope="t1", job_id=job_id, payload=payload).status == "released"
    jobs = jn.worker("pay", group="billing", consumer="w1").fetch(count=10, block_ms=None)
    assert [j.id for j in jobs] == [job_id]
    return jobs[0]


def test_fetch_then_complete_finishes_the_job_and_cleans_the_stream(
    redis_url: str, prefix: str
) -> None:
    """A released job is fetched once, completed once; its stream entry and lease are gone."""
    jn, clock = _setup(redis_url, prefix)
    w = jn.worker("pay", group="billing", consumer="w1")
    jn.submit("pay", scope="t1", job_id="order-1", payload=b'{"n": 1}')
    (job,) = w.fetch(count=10, block_ms=None)
    assert (job.id, job.scope, job.payload, job.attempt) == ("order-1", "t1", b'{"n": 1}', 1)
    assert job.lease_deadline_ms == clock.now_ms + 10_000
    assert jn.job("pay", "order-1").status == "running"  # type: ignore[union-attr]
    w.complete(job)
    info = jn.job("pay", "order-1")
    assert info is not None and info.status == "completed" and info.attempt == 1
    assert [h["outcome"] for h in info.history] == ["completed"]
    assert info.history[0]["consumer"] == "w1"
    k = Keys(prefix, "pay")
    client = jn.store.client
    assert client.xlen(k.stream) == 0
    assert client.xpending(k.stream, "billing")["pending"] == 0
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
    coord.step("pay", clock.advance_ms(1_000))
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
    coord.step("pay", clock.advance_ms(1_000))
    (job,) = w.fetch(block_ms=None)
    out = w.fail(job, "http_429", retry_after_ms=5_000)
    assert (out.decision, out.retry_at_ms) == ("retry", clock.now_ms + 5_000)  # > 2 s backoff
    coord.step("pay", clock.advance_ms(5_000))
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
    """max_in_flight counts released, unreported jobs; a report frees the slot and wakes the
    coordinator, which releases the next job."""
    body = BODY.replace("burst: 10", "burst: 10\n  max_in_flight: 1")
    jn, clock = _setup(redis_url, prefix, body)
    ds = jn.submit_many("pay", [Job(scope="t1", job_id=f"j{i}") for i in range(3)])
    assert [d.status for d in ds] == ["released", "scheduled", "scheduled"]
    w = jn.worker("pay", group="billing", consumer="w1")
    (first,) = w.fetch(block_ms=None)
    coord = Coordinator(jn.store)
    assert coord.step("pay", clock.advance_ms(100)).released == 0
    client = jn.store.client
    client.delete(Keys(prefix, "pay").wake)
    w.complete(first)
    assert client.llen(Keys(prefix, "pay").wake) == 1  # the coordinator is told at once
    assert coord.step("pay", clock()).released == 1
    (second,) = w.fetch(block_ms=None)
    w.fail(second, "http_500")
    assert coord.step("pay", clock()).released == 1


def test_stale_entry_read_after_its_lease_expired_is_not_run(redis_url: str, prefix: str) -> None:
    """An entry fetched after its lease expired (coordinator lagging) is not handed out; the
    reclaim then retries the job normally."""
    jn, clock = _setup(redis_url, prefix)
    jn.submit("pay", scope="t1", job_id="late")
    clock.advance_ms(10_001)
    w = jn.worker("pay", group="billing", consumer="w1")
    assert w.fetch(block_ms=None) == [] and w.stats.skipped == 1
    Coordinator(jn.store).step("pay", clock())
    assert jn.job("pay", "late").status == "failed"  # type: ignore[union-attr]
    assert jn.store.client.xlen(Keys(prefix, "pay").stream) == 0


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
        with pytest.raises(InvalidInput, match="retry_after_ms must be an integer >= 0"):
            w.fail(job, "http_429", retry_after_ms=-5)
        forged = LeasedJob("pay", job.id, "t1", b"", job.attempt, 1, 0, "0-1")
        with pytest.raises(LeaseLost) as err:
            w.complete(forged)
        assert err.value.reason == "superseded"
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
            raise Retry("http_503", retry_after_ms=60_000)
        if n % 3 == 2:
            raise ValueError(f"bad payload {job.payload!r}")

    w = jn.worker("pay", group="billing", consumer="loop")
    thread = threading.Thread(
        target=w.run, args=(handler,), kwargs={"concurrency": 3, "install_signals": False}
    )
    thread.start()
    deadline = time.monotonic() + 10
    while w.stats.completed + w.stats.failed < 9 and time.monotonic() < deadline:
        time.sleep(0.02)
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


def test_worker_rejects_bad_group_names(redis_url: str, prefix: str) -> None:
    """group/consumer must be non-empty strings."""
    jn, _ = _setup(redis_url, prefix)
    with pytest.raises(InvalidInput, match="group must be a non-empty string"):
        jn.worker("pay", group="")


def test_script_flush_does_not_reach_workers(redis_url: str, prefix: str) -> None:
    """After SCRIPT FLUSH, fetch, heartbeat and complete still work (scripts reload)."""
    jn, _ = _setup(redis_url, prefix)
    job = _one(jn)
    w = jn.worker("pay", group="billing", consumer="w1")
    jn.store.client.script_flush()
    job = w.heartbeat(job)
    jn.store.client.script_flush()
    w.complete(job)
    assert jn.job("pay", "order-1").status == "completed"  # type: ignore[union-attr]
