"""The asyncio API against real Redis: the same calls as the sync API, auto-pipelining,
cancellation that leaves no half state, a cancelled worker's job reclaimed, SIGTERM.

(The admission, worker and retry contract tests also run through the asyncio API: see the
``api`` fixture in tests/conftest.py.)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from janus import worker as worker_module
from janus.aio import AsyncJanus, AsyncStore
from janus.calls import Call, Commands
from janus.client import Job
from janus.decisions import LeasedJob
from janus.errors import InvalidInput
from janus.policy import parse_policy_text
from janus.store import Store
from janus.testing import FakeClock, connect, connect_async

from tests.helpers import policy, wait_until

BODY = """
pay:
  rate: 1000
  burst: 100
  max_wait: 60s
  lease: 1s
  retention: 1h
  retry: {max_attempts: 3, backoff: {base: 10ms, factor: 2, max: 1s, jitter: none}}
"""
POLICIES = parse_policy_text(policy(BODY), "test-policy.yaml")


async def _janus(url: str, prefix: str, clock: FakeClock | None = None) -> AsyncJanus:
    jn = await connect_async(url, prefix=prefix, clock=clock)
    await jn.apply_policies(POLICIES)
    return jn


def _record(sent: list[tuple[str, Any]], prefix: str, request: Call[Any] | Commands[Any]) -> None:
    def plain(value: object) -> object:
        text = value.decode() if isinstance(value, bytes) else str(value)
        return text.replace(prefix, "PREFIX")

    if isinstance(request, Call):
        sent.append((request.script, [plain(k) for k in request.keys + request.args]))
    else:
        sent.append(("commands", [[plain(a) for a in c] for c in request.commands]))


def test_sync_and_async_stores_send_the_same_calls(
    standalone_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For one sequence of API calls (same clock, same ids), the sync and the asyncio front
    ends make the same script calls and plain commands, with the same keys and arguments:
    what to send is decided once, in janus.calls and the pure cores."""
    sent: dict[str, list[tuple[str, Any]]] = {"sync": [], "async": []}
    sync_run, sync_commands = Store.run, Store.commands
    async_run, async_commands = AsyncStore.run, AsyncStore.commands
    mode = {"now": "sync", "prefix": prefix}

    def s_run(self: Store, call: Call[Any]) -> Any:
        _record(sent["sync"], mode["prefix"], call)
        return sync_run(self, call)

    def s_commands(self: Store, c: Commands[Any]) -> Any:
        _record(sent["sync"], mode["prefix"], c)
        return sync_commands(self, c)

    async def a_run(self: AsyncStore, call: Call[Any]) -> Any:
        _record(sent["async"], mode["prefix"], call)
        return await async_run(self, call)

    async def a_commands(self: AsyncStore, c: Commands[Any]) -> Any:
        _record(sent["async"], mode["prefix"], c)
        return await async_commands(self, c)

    monkeypatch.setattr(Store, "run", s_run)
    monkeypatch.setattr(Store, "commands", s_commands)
    monkeypatch.setattr(AsyncStore, "run", a_run)
    monkeypatch.setattr(AsyncStore, "commands", a_commands)

    def fixed_ids() -> None:
        counter = itertools.count()
        fake = type("U", (), {})

        def uuid4() -> object:
            u = fake()
            u.hex = f"{next(counter):032x}"  # type: ignore[attr-defined]
            return u

        monkeypatch.setattr(worker_module.uuid, "uuid4", uuid4)

    jobs = [Job(scope="a", job_id=f"m{i}") for i in range(3)]
    fixed_ids()
    jn = connect(standalone_url, prefix=prefix, clock=FakeClock())
    jn.apply_policies(POLICIES)
    jn.submit("pay", scope="a", job_id="j1", payload=b"x")
    jn.submit_many("pay", jobs)
    w = jn.worker("pay", group="g", consumer="c1")
    got = w.fetch(count=3, block_ms=None)
    w.heartbeat_many(got)
    w.complete(got[0])
    w.fail(got[1], "http_503")
    w.return_unstarted(got[2])
    jn.job("pay", "j1")
    jn.status("pay")
    jn.scope_status("pay", "a")
    jn.dead_letters("pay")
    jn.close()

    async def same_in_async(other: str) -> None:
        jn = await connect_async(standalone_url, prefix=other, clock=FakeClock())
        await jn.apply_policies(POLICIES)
        await jn.submit("pay", scope="a", job_id="j1", payload=b"x")
        await jn.submit_many("pay", jobs)
        w = jn.worker("pay", group="g", consumer="c1")
        got = await w.fetch(count=3, block_ms=None)
        await w.heartbeat_many(got)
        await w.complete(got[0])
        await w.fail(got[1], "http_503")
        await w.return_unstarted(got[2])
        await jn.job("pay", "j1")
        await jn.status("pay")
        await jn.scope_status("pay", "a")
        await jn.dead_letters("pay")
        await jn.close()

    fixed_ids()
    mode.update(now="async", prefix=prefix + "b")
    asyncio.run(same_in_async(prefix + "b"))
    assert len(sent["sync"]) >= 12
    assert sent["async"] == sent["sync"]


def test_concurrent_submits_share_round_trips_and_each_decides_alone(
    redis_url: str, prefix: str
) -> None:
    """64 submits in flight at once: each gets its own decision (the burst of 100 admits
    them all as ready, in order of the calls), fewer round trips than calls were made, and a
    duplicate job id in the same batch is reported as not created."""

    async def main() -> tuple[list[Any], int]:
        jn = await _janus(redis_url, prefix)
        pipelines = 0
        real = jn.store._pipeline

        async def counting(calls: list[Call[Any]]) -> list[Any]:
            nonlocal pipelines
            pipelines += 1
            return await real(calls)

        jn.store._pipeline = counting  # type: ignore[method-assign]
        ids = [f"j{i}" for i in range(63)] + ["j0"]
        ds = await asyncio.gather(*(jn.submit("pay", scope="a", job_id=i) for i in ids))
        await jn.close()
        return ds, pipelines

    ds, pipelines = asyncio.run(main())
    assert [d.status for d in ds] == ["ready"] * 64
    assert [d.created for d in ds] == [True] * 63 + [False]
    assert pipelines < 64 / 4, pipelines


def test_a_cancelled_submit_leaves_the_decision_whole_or_absent(
    redis_url: str, prefix: str
) -> None:
    """Submits cancelled at every stage (before they were sent; while Redis was paused with
    them in flight): each job is either fully there (record, queue entry, counted in
    the status) or absent; submitting it again reports it once, never a second copy."""

    async def main() -> None:
        jn = await _janus(redis_url, prefix)
        pauser = await connect_async(redis_url, prefix=prefix)
        cancelled = 0
        for delay in (None, 0.0, 0.005, 0.02, 0.05):
            batch = [f"d{delay}-{i}" for i in range(20)]
            tasks = [asyncio.ensure_future(jn.submit("pay", scope="a", job_id=j)) for j in batch]
            if delay is not None:  # None: cancelled before the loop sent them (never sent)
                await _pause_writes(pauser, 1000)
                await asyncio.sleep(delay)
            for t in tasks:
                cancelled += t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(1.2)  # the pause is over: every call sent has run
        seen = 0
        for delay in (None, 0.0, 0.005, 0.02, 0.05):
            for i in range(20):
                job_id = f"d{delay}-{i}"
                info = await jn.job("pay", job_id)
                again = await jn.submit("pay", scope="a", job_id=job_id)
                if delay is None:
                    assert info is None, job_id  # never sent: absent
                if info is None:
                    assert again.created, job_id
                else:
                    seen += 1
                    assert info.status == "scheduled" and not again.created, job_id
        status = await jn.status("pay")
        assert status.scheduled == 100, status  # each job once: no copy, no half record
        # The unsent batch was always cancelled; at least the batch cancelled 50 ms into a
        # 1 s pause was in flight, so it ran although its callers had gone.
        assert cancelled >= 20 and seen >= 1, (cancelled, seen)
        await pauser.close()
        await jn.close()

    asyncio.run(main())


async def _pause_writes(jn: AsyncJanus, ms: int) -> None:
    client: Any = jn.store.client
    nodes = client.get_primaries() if hasattr(client, "get_primaries") else [None]
    for node in nodes:
        where = {"target_nodes": node} if node is not None else {}
        await client.execute_command("CLIENT", "PAUSE", ms, "WRITE", **where)


def test_a_cancelled_worker_task_loses_no_job(redis_url: str, prefix: str) -> None:
    """Cancelling the task that awaits AsyncWorker.run while a handler runs: the handler is
    cancelled, its job is never reported, its lease expires, and another worker runs it
    (attempt 2) and completes it. A job that had finished before the cancel is reported."""

    async def main() -> None:
        jn = await _janus(redis_url, prefix)
        await jn.submit("pay", scope="a", job_id="slow")
        await jn.submit("pay", scope="a", job_id="quick")
        started: list[str] = []
        hang = asyncio.Event()

        async def handler(job: LeasedJob) -> None:
            started.append(job.id)
            if job.id == "slow":
                await hang.wait()  # never set: only the cancel ends it

        w1 = jn.worker("pay", group="g", consumer="w1")
        task = asyncio.ensure_future(w1.run(handler, concurrency=2, install_signals=False))
        while len(started) < 2 or w1.stats.completed < 1:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        info = await jn.job("pay", "slow")
        assert info is not None and (info.status, info.attempt) == ("running", 1)
        assert (await jn.job("pay", "quick")).status == "completed"  # type: ignore[union-attr]

        w2 = jn.worker("pay", group="g", consumer="w2")
        done: list[tuple[str, int]] = []

        async def finish(job: LeasedJob) -> None:
            done.append((job.id, job.attempt))
            w2.stop()

        await asyncio.wait_for(w2.run(finish, install_signals=False, grace_s=5), 30)
        assert done == [("slow", 2)]
        info = await jn.job("pay", "slow")
        assert info is not None and info.status == "completed"
        assert [h["error"] for h in info.history if h.get("error")] == ["lease_expired"]
        await jn.close()

    asyncio.run(main())


def test_bad_input_through_the_async_api_changes_nothing(
    standalone_url: str, prefix: str, redis_client: Any
) -> None:
    """The asyncio API checks input with the same code and errors as the sync one."""
    from tests.helpers import unchanged

    async def main() -> None:
        jn = await _janus(standalone_url, prefix)
        with unchanged(redis_client, prefix):
            with pytest.raises(InvalidInput, match="cost must be an integer"):
                await jn.submit("pay", scope="a", cost=0)
            with pytest.raises(InvalidInput, match="count must be an integer >= 1"):
                await jn.worker("pay", group="g").fetch(count=0)
            with pytest.raises(InvalidInput, match="concurrency must be an integer >= 1"):
                await jn.worker("pay", group="g").run(lambda job: None, concurrency=0)
        with pytest.raises(InvalidInput, match=r"wait_replicas must be an integer 0\.\.100"):
            await AsyncJanus.from_url(standalone_url, prefix=prefix, wait_replicas=-1)
        await jn.close()

    asyncio.run(main())


HANDLER = """
import asyncio, os

async def handle(job):
    await asyncio.sleep(float(os.environ.get("JANUS_TEST_SLEEP", "0")))
    with open(os.environ["JANUS_TEST_OUT"], "a") as f:
        f.write(job.id + "\\n")
"""


def test_cli_worker_runs_an_async_handler_and_stops_gracefully_on_sigterm(
    standalone_url: str, prefix: str, tmp_path: Path
) -> None:
    """``janus worker --handler mod:async_fn`` runs it on an event loop; SIGTERM lets the
    running jobs finish and report before the process exits 0."""
    (tmp_path / "ahandler.py").write_text(textwrap.dedent(HANDLER))
    out = tmp_path / "done.txt"
    jn = connect(standalone_url, prefix=prefix)
    jn.apply_policies(POLICIES)
    env = {**os.environ, "JANUS_TEST_OUT": str(out), "JANUS_TEST_SLEEP": "0.5"}
    cmd = [sys.executable, "-m", "janus", "worker", "pay", "--handler", "ahandler:handle"]
    cmd += ["--group", "g", "--redis", standalone_url, "--prefix", prefix]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        for i in range(4):
            jn.submit("pay", scope="a", job_id=f"s{i}")
        wait_until(lambda: jn.status("pay").in_flight == 4, 30, "the worker taking all 4 jobs")
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "(asyncio)" in err and "stopped: 4 completed" in err, err
    assert sorted(out.read_text().split()) == ["s0", "s1", "s2", "s3"]
    assert all(jn.job("pay", f"s{i}").status == "completed" for i in range(4))  # type: ignore[union-attr]
    jn.close()


def test_cancelled_during_the_grace_the_worker_still_loses_no_job(
    redis_url: str, prefix: str
) -> None:
    """stop(), then the caller gives up waiting before the grace is over (wait_for): the
    cancel during the graceful shutdown cancels the handler, the heartbeats and the
    reporter too (no task left renewing the lease), so the job is retried elsewhere."""

    async def main() -> None:
        jn = await _janus(redis_url, prefix)
        await jn.submit("pay", scope="a", job_id="stuck")
        started = asyncio.Event()

        async def hang(job: LeasedJob) -> None:
            started.set()
            await asyncio.Event().wait()

        w1 = jn.worker("pay", group="g", consumer="w1")
        task = asyncio.ensure_future(w1.run(hang, install_signals=False, grace_s=30))
        await asyncio.wait_for(started.wait(), 20)
        w1.stop()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(task, 0.3)  # cancels run() in its 30 s grace
        assert task.cancelled()
        left = {t.get_coro().__qualname__ for t in asyncio.all_tasks()}  # type: ignore[union-attr]
        assert not {n for n in left if "_AsyncRunLoop" in n}, left
        w2 = jn.worker("pay", group="g", consumer="w2")
        got: list[tuple[str, int]] = []

        async def finish(job: LeasedJob) -> None:
            got.append((job.id, job.attempt))
            w2.stop()

        await asyncio.wait_for(w2.run(finish, install_signals=False, grace_s=5), 30)
        assert got == [("stuck", 2)]
        await jn.close()

    asyncio.run(main())


def test_a_handler_that_lets_out_its_own_cancelled_error_fails_its_job(
    standalone_url: str, prefix: str
) -> None:
    """A handler awaiting something another task cancelled raises CancelledError although
    nobody cancelled the handler: its job is failed (kind CancelledError), not held for
    ever, and the worker goes on to the next job."""

    async def main() -> None:
        jn = await _janus(standalone_url, prefix)
        await jn.submit_many("pay", [Job(scope="a", job_id="bad"), Job(scope="a", job_id="ok")])
        w = jn.worker("pay", group="g", consumer="w1")

        async def handler(job: LeasedJob) -> None:
            if job.id == "bad":
                other = asyncio.ensure_future(asyncio.sleep(10))
                other.cancel()
                await other  # raises CancelledError into the handler
            if w.stats.completed + w.stats.failed >= 1:
                w.stop()

        await asyncio.wait_for(w.run(handler, concurrency=1, install_signals=False), 30)
        bad, ok = await jn.job("pay", "bad"), await jn.job("pay", "ok")
        assert bad is not None and bad.last_error == "CancelledError"
        assert ok is not None and ok.status == "completed"
        await jn.close()

    asyncio.run(main())
