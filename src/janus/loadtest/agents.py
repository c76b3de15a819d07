"""The processes of a load run: open-loop producers and fault-injecting workers.

Each is started by :mod:`janus.loadtest.run` (``spawn``), says it is ready (connected) with
a file in the run's work directory, waits for the shared start time ``t0`` (wall clock, one
machine; the runner writes it once every process is ready, so a slow start-up never eats
into the schedule) and writes what it saw into the work directory.

**Producers are open-loop.** Each arrival stream has its own schedule (Poisson or constant
gaps at ``rate / processes``, ramped), fixed in advance by a seeded generator: a submit is
*intended* at its time whether or not earlier ones have answered, and its decision latency
is measured from that intended time, so a slow Redis shows as latency instead of as fewer
requests (no coordinated omission). Submits go through :class:`janus.aio.AsyncJanus`
(auto-pipelined); at most ``max_outstanding`` are in flight, and an arrival that waits for
a slot has that wait in its latency too. Written at the end: ``producer-<i>.json`` with the
per-second decision counts, the HDR histogram of decision latency, and every accepted job
``(id, dependency, scope, cost, not_before_ms, intended_ms)``.

**Workers** run the product's :meth:`janus.Worker.run` (or ``AsyncWorker.run``) with a
handler that sleeps the scenario's latency, fails at its failure rates, and obeys the fault
schedule: during an ``outage`` every call fails ``http_503``, during a ``throttle`` it fails
``http_429`` with the fault's Retry-After. Each attempt the handler begins and each success
it returns is appended to ``worker-<i>.log`` with an unbuffered write, so a worker killed
with SIGKILL loses no record it made (``S`` start: job, attempt, release ms, cost, scope,
dependency; ``C`` completion: job, attempt, end-to-end ms from the intended send).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from janus.decisions import LeasedJob
from janus.worker import Retry

#: Decision latency is recorded in microseconds, 1 us .. 1 h, 3 significant digits.
HDR_MAX_US = 3_600_000_000


@dataclass(frozen=True)
class RunInfo:
    """What every process of a run is told."""

    url: str
    prefix: str
    work_dir: str
    scenario: dict[str, Any]
    """Scenario.model_dump(by_alias=True) of the (scaled) scenario."""


START_FILE = "start"
#: How long a process waits for the start time before it gives up.
START_TIMEOUT_S = 120.0


def ready(info: RunInfo, name: str) -> None:
    """Tell the runner this process is up and connected."""
    Path(info.work_dir, f"ready-{name}").touch()


def start_time(info: RunInfo) -> float:
    """The shared start (time.time()), once the runner wrote it."""
    path = Path(info.work_dir, START_FILE)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            return float(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.02)
    raise TimeoutError("the run never started (no start time written)")


def _wait_for(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


# -- producers ---------------------------------------------------------------------------


def arrival_times(
    rate: float, process: str, ramp: float, start: float, stop: float, rng: random.Random
) -> list[float]:
    """The intended send times (seconds from t0) of one stream: rate per second from
    ``start`` to ``stop``, climbing linearly over ``ramp``; Poisson or evenly spaced."""
    out: list[float] = []
    t = start
    while True:
        ramp_share = min(1.0, (t + 1e-9) / ramp) if ramp > 0 else 1.0
        r = max(rate * ramp_share, rate * 0.02)  # (a 2% floor: the ramp starts moving)
        gap = rng.expovariate(r) if process == "poisson" else 1.0 / r
        t += gap
        if t >= stop:
            return out
        out.append(t)


def _cost_picker(cost: int | list[list[float]], rng: random.Random) -> Any:
    if isinstance(cost, int):
        return lambda: cost
    values = [int(c) for c, _ in cost]
    weights = [float(w) for _, w in cost]
    return lambda: rng.choices(values, weights)[0]


def producer_main(info: RunInfo, index: int) -> None:
    asyncio.run(_produce(info, index))


async def _produce(info: RunInfo, index: int) -> None:
    from hdrh.histogram import HdrHistogram

    from janus.aio import AsyncJanus

    sc = info.scenario
    prod = sc["producers"]
    n_proc = prod["processes"]
    rng = random.Random(f"{sc['seed']}-producer-{index}")
    schedule: list[tuple[float, int, int]] = []  # (t, stream, seq)
    pickers = []
    for s_i, a in enumerate(prod["arrivals"]):
        stop = min(a["stop"] if a["stop"] is not None else sc["duration"], sc["duration"])
        times = arrival_times(a["rate"] / n_proc, a["process"], prod["ramp"], a["start"], stop, rng)
        schedule += [(t, s_i, n) for n, t in enumerate(times)]
        pickers.append(_cost_picker(a["cost"], rng))
    schedule.sort()
    jn = await AsyncJanus.from_url(info.url, prefix=info.prefix)
    await jn.store.ensure_library()  # connected, the library loaded
    ready(info, f"producer-{index}")
    t0 = start_time(info)
    hist = HdrHistogram(1, HDR_MAX_US, 3)
    counts: Counter[tuple[int, str, str, str]] = Counter()  # (second, dep, scope, outcome)
    accepted: list[tuple[str, str, str, int, int, int]] = []
    slots = asyncio.Semaphore(prod["max_outstanding"])
    tasks: set[asyncio.Task[None]] = set()

    async def one(t: float, s_i: int, seq: int) -> None:
        a = prod["arrivals"][s_i]
        intended = t0 + t
        job_id = f"p{index}-{s_i}-{seq}"
        cost = pickers[s_i]()
        pad = max(a["payload"] - 16, 0)
        payload = f"{int(intended * 1000):016d}".encode() + b"x" * pad
        try:
            d = await jn.submit(
                a["dependency"], scope=a["scope"], payload=payload, job_id=job_id, cost=cost
            )
            outcome = d.status if d.accepted else f"rejected:{d.reason}"
            if d.accepted:
                nb = d.not_before_ms
                accepted.append(
                    (job_id, a["dependency"], a["scope"], cost, nb, int(intended * 1000))
                )
        except Exception as exc:  # an error is a figure of the run, not its end
            outcome = f"error:{type(exc).__name__}"
        finally:
            slots.release()
        hist.record_value(min(max(int((time.time() - intended) * 1e6), 1), HDR_MAX_US))
        counts[(int(t), a["dependency"], a["scope"], outcome)] += 1

    _wait_for(t0)
    try:
        for t, s_i, seq in schedule:
            delay = t0 + t - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            task = asyncio.create_task(one(t, s_i, seq))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=60)
    finally:
        await jn.close()
    doc = {
        "index": index,
        "intended": len(schedule),
        "counts": [
            [sec, dep, scope, outcome, n] for (sec, dep, scope, outcome), n in counts.items()
        ],
        "latency_hdr": hist.encode().decode(),
        "accepted": accepted,
    }
    Path(info.work_dir, f"producer-{index}.json").write_text(json.dumps(doc))


# -- workers -----------------------------------------------------------------------------


class _Behaviour:
    """What the fake upstream does to one call: latency, failures, the fault schedule."""

    def __init__(self, info: RunInfo, index: int) -> None:
        sc = info.scenario
        w = sc["workers"]
        self.info = info
        self.t0: float | None = None  # read from the start file at the first call
        self.rng = random.Random(f"{sc['seed']}-worker-{index}-{os.getpid()}")
        lat = w["latency"]
        self.constant = lat["constant"]
        self.median = lat["median"]
        self.sigma = 0.0
        if self.median and lat["p99"]:
            self.sigma = math.log(lat["p99"] / self.median) / 2.3263
        self.failures = w["failures"]
        self.faults = [f for f in sc["faults"] if f["kind"] in ("outage", "throttle")]
        self.lock = threading.Lock()

    def latency(self) -> float:
        if self.constant is not None:
            return float(self.constant)
        with self.lock:
            z = self.rng.gauss(0.0, 1.0)
        return float(self.median * math.exp(self.sigma * z))

    def verdict(self, dependency: str) -> Retry | None:
        """The failure this call ends in, or None (success)."""
        if self.t0 is None:
            self.t0 = start_time(self.info)
        now = time.time() - self.t0
        for f in self.faults:
            if f["at"] <= now < f["at"] + f["for"] and f["dependency"] in (None, dependency):
                if f["kind"] == "outage":
                    return Retry("http_503", detail="scenario outage")
                return Retry("http_429", retry_after_ms=int(f["retry_after"] * 1000))
        with self.lock:
            roll = self.rng.random()
        edge = 0.0
        for fail in self.failures:
            edge += fail["rate"]
            if roll < edge:
                ra = fail["retry_after"]
                return Retry(fail["kind"], retry_after_ms=None if ra is None else int(ra * 1000))
        return None


class _Log:
    """Append-only records, one unbuffered write each (a SIGKILL loses none written)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, line: str) -> None:
        os.write(self.fd, line.encode())


def worker_main(info: RunInfo, index: int) -> None:
    from janus.aio import AsyncJanus
    from janus.client import Janus

    sc = info.scenario
    w = sc["workers"]
    deps = sorted({a["dependency"] for a in sc["producers"]["arrivals"]})
    behaviour = _Behaviour(info, index)
    log = _Log(Path(info.work_dir, f"worker-{index}-{os.getpid()}.log"))

    def begin(job: LeasedJob) -> float:
        log.write(
            f"S {job.id} {job.attempt} {job.started_ms} {job.cost} {job.scope} {job.dependency}\n"
        )
        return behaviour.latency()

    def end(job: LeasedJob) -> None:
        intended_ms = int(job.payload[:16])
        log.write(f"C {job.id} {job.attempt} {int(time.time() * 1000) - intended_ms}\n")

    if w["asyncio"]:

        async def run_async() -> None:
            jn = await AsyncJanus.from_url(info.url, prefix=info.prefix)

            async def handle(job: LeasedJob) -> None:
                await asyncio.sleep(begin(job))
                failure = behaviour.verdict(job.dependency)
                if failure is not None:
                    raise failure
                end(job)

            workers = [jn.worker(dep, group="bench") for dep in deps]
            await jn.store.ensure_library()
            ready(info, f"worker-{index}")
            loop = asyncio.get_running_loop()

            def stop_all() -> None:
                for x in workers:
                    x.stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop_all)
            runs = [
                x.run(handle, concurrency=w["concurrency"], install_signals=False) for x in workers
            ]
            try:
                await asyncio.gather(*runs)
            finally:
                await jn.close()

        asyncio.run(run_async())
        return

    jn = Janus.from_url(info.url, prefix=info.prefix)

    def handle_sync(job: LeasedJob) -> None:
        time.sleep(begin(job))
        failure = behaviour.verdict(job.dependency)
        if failure is not None:
            raise failure
        end(job)

    workers = [jn.worker(dep, group="bench") for dep in deps]
    jn.store.time_us()
    ready(info, f"worker-{index}")

    def stop(signum: int, frame: object) -> None:
        for x in workers:
            x.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [
        threading.Thread(
            target=x.run,
            args=(handle_sync,),
            kwargs={"concurrency": w["concurrency"], "install_signals": False},
            daemon=True,
        )
        for x in workers
    ]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    jn.close()


def read_worker_logs(
    work_dir: str,
) -> tuple[list[tuple[str, int, int, int, str, str]], list[tuple[str, int, int]]]:
    """Every worker's records: starts (job, attempt, release_ms, cost, scope, dependency)
    and completions (job, attempt, e2e_ms). A line cut short by a SIGKILL is skipped."""
    starts, completions = [], []
    for path in sorted(Path(work_dir).glob("worker-*.log")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split(" ")
            try:
                if parts[0] == "S" and len(parts) == 7:
                    starts.append(
                        (parts[1], int(parts[2]), int(parts[3]), int(parts[4]), parts[5], parts[6])
                    )
                elif parts[0] == "C" and len(parts) == 4:
                    completions.append((parts[1], int(parts[2]), int(parts[3])))
            except ValueError:
                continue
    return starts, completions
