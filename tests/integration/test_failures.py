"""Infrastructure faults: Redis down, Redis restarted, script cache flushed.

Every call that cannot reach Redis raises :class:`janus.errors.RedisUnavailable` and changes
nothing; accepted work (waiting or running) survives a restart with AOF; the coordinator loop
and :meth:`Worker.run` ride out an outage and carry on."""

from __future__ import annotations

import logging
import threading

import pytest
import redis

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.decisions import LeasedJob
from janus.errors import RedisUnavailable
from janus.testing import RedisServer, free_port

from tests.helpers import FakeClock, flush_library, library_loaded, make_janus, snapshot, wait_until

BODY = """
pay:
  rate: 10
  burst: 2
  max_wait: 60s
"""


def test_connecting_to_a_dead_redis_is_a_clear_error() -> None:
    """No server: from_url raises RedisUnavailable naming the URL (fail safe, no admit)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as err:
        Janus.from_url(url)
    assert url in str(err.value) and "Redis is unavailable" in str(err.value)


def test_redis_down_mid_run_raises_and_loses_nothing(prefix: str) -> None:
    """Redis stops with jobs waiting and jobs running: submit, fetch, report, heartbeat and
    step raise RedisUnavailable (nothing changed); after a restart with AOF every job,
    lease, stream entry and bucket is exactly as it was, the running jobs complete, the
    waiting ones are released at the rate (no catch-up burst), and nothing was lost."""
    with RedisServer.start(appendonly=True, extra_args=("--appendfsync", "always")) as server:
        clock = FakeClock()
        jn = make_janus(server.url, prefix, BODY, clock)
        accepted = jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(6)])
        assert [d.status for d in accepted] == ["ready"] * 2 + ["scheduled"] * 4
        w = jn.worker("pay", group="billing", consumer="w1")
        running = w.fetch(count=10, block_ms=None)
        assert [j.id for j in running] == ["j0", "j1"]
        raw = redis.Redis.from_url(server.url)
        before = snapshot(raw, prefix)
        server.stop()
        with pytest.raises(RedisUnavailable) as err:
            jn.submit("pay", scope="a", job_id="during-outage")
        assert "submitting to 'pay': Redis is unavailable" in str(err.value)
        assert "nothing was changed" in str(err.value)
        with pytest.raises(RedisUnavailable):
            w.fetch(count=10, block_ms=None)
        with pytest.raises(RedisUnavailable):
            w.complete(running[0])
        with pytest.raises(RedisUnavailable):
            w.heartbeat(running[1])
        with pytest.raises(RedisUnavailable):
            Coordinator(jn.store).step("pay", clock())
        server.restart()
        assert snapshot(raw, prefix) == before

        clock.advance_ms(1000)
        w.report([w.completed(j) for j in running])
        assert jn.status("pay").in_flight == 0
        assert [j.id for j in w.fetch(count=10, block_ms=None)] == ["j2", "j3"]  # the burst
        clock.advance_ms(200)  # the rest follows at the rate
        assert [j.id for j in w.fetch(count=10, block_ms=None)] == ["j4", "j5"]
        assert jn.submit("pay", scope="a", job_id="during-outage").created is True
        clock.advance_ms(200)
        assert [j.id for j in w.fetch(count=10, block_ms=None)] == ["during-outage"]
        for info in (jn.job("pay", f"j{i}") for i in range(2)):
            assert info is not None and (info.status, info.attempt) == ("completed", 1)
        st = jn.status("pay")
        assert (st.scheduled, st.in_flight, st.dead_letters) == (0, 5, 0)
        raw.close()


def test_function_flush_mid_run_is_invisible_to_users(redis_url: str, prefix: str) -> None:
    """After FUNCTION FLUSH on every primary (an operator, a node that lost its functions),
    the first call that finds the library missing loads it again: submit, fetch, report,
    heartbeat and the coordinator's step all work as before."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    assert jn.submit("pay", scope="a", job_id="a1").status == "ready"
    client = jn.store.client
    flush_library(client)
    assert not any(library_loaded(client))
    assert jn.submit("pay", scope="a", job_id="a2").status == "ready"
    assert [d.status for d in jn.submit_many("pay", [Job(scope="b", job_id="b1")])] == ["ready"]
    flush_library(client)
    w = jn.worker("pay", group="billing", consumer="w1")
    first = w.fetch(count=10, block_ms=None)
    assert [j.id for j in first] == ["a1", "b1"]  # the dependency's burst, fair between scopes
    flush_library(client)
    renewed = w.heartbeat(first[0])
    flush_library(client)
    results = w.report([w.completed(renewed), w.failed(first[1], "http_500")])
    assert [(r.ok, r.decision) for r in results] == [(True, "completed"), (True, "retry")]
    flush_library(client)
    step = Coordinator(jn.store).step("pay", clock.advance_ms(500))
    assert step.ready
    flush_library(client)
    assert [j.id for j in w.fetch(count=1, block_ms=None)] == ["a2"]


def test_a_library_flushed_faster_than_it_loads_is_a_clear_error(
    standalone_url: str, prefix: str
) -> None:
    """A missing library is loaded and the call sent again (a few times: nothing ran); if it
    keeps vanishing, the caller (a producer or a worker) gets RedisUnavailable, not a raw
    redis-py error, and nothing was changed."""
    jn = make_janus(standalone_url, prefix, BODY, FakeClock())
    assert jn.submit("pay", scope="a", job_id="first").status == "ready"
    other = redis.Redis.from_url(standalone_url)
    ensure = jn.store.ensure_library

    def ensure_then_flush(node: redis.Redis) -> str:
        done = ensure(node)
        other.function_flush()  # a flush lands right after every load
        return done

    jn.store.ensure_library = ensure_then_flush  # type: ignore[method-assign]
    other.function_flush()
    before = snapshot(other, prefix)
    with pytest.raises(RedisUnavailable) as err:
        jn.submit("pay", scope="a", job_id="x")
    assert "function library keeps disappearing" in str(err.value)
    w = jn.worker("pay", group="billing", consumer="w1")
    with pytest.raises(RedisUnavailable) as err:
        w.fetch(count=10, block_ms=None)
    assert "function library keeps disappearing" in str(err.value)
    assert snapshot(other, prefix) == before
    jn.store.ensure_library = ensure  # type: ignore[method-assign]
    assert jn.submit("pay", scope="a", job_id="x").created
    assert [j.id for j in w.fetch(count=10, block_ms=None)] == ["first", "x"]
    other.close()


OUTAGE_BODY = """
pay:
  rate: 10
  burst: 2
  max_wait: 60s
  lease: 120s
"""


def test_coordinator_loop_and_worker_run_survive_a_redis_outage(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Real time: a coordinator loop and a Worker.run loop keep running while Redis is down
    (their calls fail with RedisUnavailable and are retried); a job that finished during
    the outage is reported once Redis is back (its lease, far longer than the test, is
    still live, so it is not run again); work submitted afterwards is released and run.
    Every job runs exactly once and ends completed: nothing lost."""
    caplog.set_level(logging.WARNING)
    with RedisServer.start(appendonly=True, extra_args=("--appendfsync", "always")) as server:
        jn = make_janus(server.url, prefix, OUTAGE_BODY)
        gate = threading.Event()
        ran: list[tuple[str, int]] = []
        lock = threading.Lock()

        def handler(job: LeasedJob) -> None:
            with lock:
                ran.append((job.id, job.attempt))
            if job.id == "held":
                gate.wait(30)

        coord = Coordinator(jn.store, dependencies=["pay"], idle_s=0.2)
        worker = jn.worker("pay", group="billing", consumer="w1")
        coord_thread = coord.run_in_thread(check=False)
        work_thread = threading.Thread(
            target=worker.run,
            args=(handler,),
            kwargs={"concurrency": 2, "install_signals": False, "grace_s": 5.0},
            daemon=True,
        )
        work_thread.start()
        try:
            assert jn.submit("pay", scope="a", job_id="held").accepted
            wait_until(lambda: ("held", 1) in ran, 30, "the worker to start 'held'")
            server.stop()
            gate.set()  # 'held' finishes while Redis is down: its report must wait
            wait_until(
                lambda: "fetch failed" in caplog.text and "Redis unavailable" in caplog.text,
                30,
                "the worker's and the coordinator's calls to fail",
            )
            assert coord_thread.is_alive() and work_thread.is_alive()
            fetch_errors = [r.getMessage() for r in caplog.records if "fetch failed" in r.msg]
            assert all("Redis is unavailable" in m for m in fetch_errors), fetch_errors
            server.restart()
            later = [f"j{i}" for i in range(6)]
            ds = jn.submit_many("pay", [Job(scope="a", job_id=j) for j in later])
            assert all(d.accepted for d in ds)
            done = ["held", *later]

            def all_completed() -> bool:
                infos = [jn.job("pay", j) for j in done]
                return all(i is not None and i.status == "completed" for i in infos)

            wait_until(all_completed, 30, "every job to complete after the outage")
        finally:
            gate.set()
            worker.stop()
            coord.stop()
            work_thread.join(15)
            coord_thread.join(15)
        assert not work_thread.is_alive() and not coord_thread.is_alive()
        assert "release step failed" not in caplog.text  # only RedisUnavailable, handled
        assert sorted(ran) == sorted((j, 1) for j in done), "a job ran twice or not at all"
        for j in done:
            info = jn.job("pay", j)
            assert info is not None and [h["outcome"] for h in info.history] == ["completed"]
        st = jn.status("pay")
        assert (st.scheduled, st.in_flight, st.dead_letters, st.stream_length) == (0, 0, 0, 0)
        jn.close()
