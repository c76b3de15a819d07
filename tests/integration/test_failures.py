"""Infrastructure faults: Redis down, Redis restarted, script cache flushed."""

from __future__ import annotations

import pytest
import redis

from janus.client import Janus, Job
from janus.coordinator import Coordinator
from janus.embedded import RedisServer, free_port
from janus.errors import RedisUnavailable

from tests.helpers import FakeClock, make_janus, snapshot

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
    """Redis stops: submit raises RedisUnavailable (nothing admitted); after a restart with
    AOF every accepted job and bucket is exactly as it was, and work resumes."""
    with RedisServer.start(appendonly=True, extra_args=("--appendfsync", "always")) as server:
        clock = FakeClock()
        jn = make_janus(server.url, prefix, BODY, clock)
        accepted = jn.submit_many("pay", [Job(scope="a", job_id=f"j{i}") for i in range(6)])
        assert [d.status for d in accepted].count("scheduled") == 4
        raw = redis.Redis.from_url(server.url)
        before = snapshot(raw, prefix)
        server.stop()
        with pytest.raises(RedisUnavailable) as err:
            jn.submit("pay", scope="a", job_id="during-outage")
        assert "submitting to 'pay': Redis is unavailable" in str(err.value)
        assert "nothing was admitted" in str(err.value)
        with pytest.raises(RedisUnavailable):
            Coordinator(jn.store).step("pay", clock())
        server.restart()
        assert snapshot(raw, prefix) == before
        step = Coordinator(jn.store).step("pay", clock.advance_ms(1000))
        assert step.released == 2  # the burst; the rest follows at the rate
        assert Coordinator(jn.store).step("pay", clock.advance_ms(200)).released == 2
        assert jn.submit("pay", scope="a", job_id="during-outage").created is True
        raw.close()


def test_script_flush_mid_run_is_invisible_to_users(redis_url: str, prefix: str) -> None:
    """After SCRIPT FLUSH (e.g. a failover or an operator), calls reload the scripts."""
    clock = FakeClock()
    jn = make_janus(redis_url, prefix, BODY, clock)
    assert jn.submit("pay", scope="a").status == "released"
    client = jn.store.client
    client.script_flush()  # redis-py sends it to every primary of a cluster
    assert client.script_exists(jn.store._scripts["submit"].sha) in ([False], [[False]], False)
    assert jn.submit("pay", scope="a").status == "released"
    assert jn.submit_many("pay", [Job(scope="b")])[0].accepted
    client.script_flush()
    assert Coordinator(jn.store).step("pay", clock.advance_ms(500)).released == 1


def test_coordinator_loop_survives_a_redis_outage(prefix: str) -> None:
    """The coordinator keeps running through an outage and releases work afterwards."""
    import time

    with RedisServer.start(appendonly=True) as server:
        jn = make_janus(server.url, prefix, BODY)
        coord = Coordinator(jn.store, dependencies=["pay"], idle_s=0.2)
        thread = coord.run_in_thread()
        server.stop()
        time.sleep(0.5)
        assert thread.is_alive()
        server.restart()
        ds = jn.submit_many("pay", [Job(scope="a") for _ in range(4)])
        assert [d.status for d in ds].count("scheduled") == 2
        deadline = time.monotonic() + 5
        while jn.status("pay").scheduled and time.monotonic() < deadline:
            time.sleep(0.05)
        coord.stop()
        thread.join(5)
        assert jn.status("pay").scheduled == 0


def test_scripts_flushed_faster_than_they_reload_is_a_clear_error(
    standalone_url: str, prefix: str
) -> None:
    """NOSCRIPT is retried (a few times, nothing ran); if the scripts keep vanishing the
    caller gets RedisUnavailable, not a raw redis-py error, and nothing was admitted."""
    jn = make_janus(standalone_url, prefix, BODY, FakeClock())
    other = redis.Redis.from_url(standalone_url)
    load = jn.store.client.script_load

    def load_then_flush(script: str) -> str:
        sha = load(script)
        other.script_flush()  # a flush lands right after every reload
        return sha

    jn.store.client.script_load = load_then_flush  # type: ignore[method-assign]
    other.script_flush()
    before = snapshot(other, prefix)
    with pytest.raises(RedisUnavailable) as err:
        jn.submit("pay", scope="a", job_id="x")
    assert "scripts keep disappearing" in str(err.value)
    assert snapshot(other, prefix) == before
    jn.store.client.script_load = load  # type: ignore[method-assign]
    assert jn.submit("pay", scope="a", job_id="x").created
    other.close()
