"""The alternative ``janus bench run --compare`` runs the same arrivals through: what a team
builds without Janus, on the same Redis.

**limits + naive retries.** Producers ask the `limits` library's moving-window limiter
(``N per 1 second`` at the policy's rate, one window per dependency, like Janus's
dependency limit) before enqueueing; a refused submit is dropped at once (a plain
limiter has no queue). Accepted jobs go on a plain Redis list; workers ``BRPOP`` it, run the
same handler (same latency, failures and fault schedule) and retry a failure themselves,
Celery-autoretry style: exponential backoff from the policy's base (no jitter), up to the
policy's ``max_attempts``, with no circuit breaker, no retry budget and no shared limit on
retries. A worker killed mid-job loses what it popped (there is no lease).

Same records as the Janus run (``S`` per attempt with its start time, ``C`` per success),
so :mod:`janus.loadtest.report` computes the same figures for both. This module talks to
Redis with redis-py directly (it simulates software that is not Janus); it builds no Janus
call and imports nothing of Janus's Redis layer.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from janus.loadtest.agents import (
    HDR_MAX_US,
    RunInfo,
    _Behaviour,
    _cost_picker,
    _Log,
    _wait_for,
    arrival_times,
    ready,
    start_time,
)


def _queue(prefix: str, dependency: str) -> str:
    return f"{prefix}:{{{dependency}}}:queue"


def producer_main(info: RunInfo, index: int) -> None:
    import redis
    from hdrh.histogram import HdrHistogram
    from limits import RateLimitItemPerSecond, storage, strategies

    sc = info.scenario
    prod = sc["producers"]
    n_proc = prod["processes"]
    rng = random.Random(f"{sc['seed']}-producer-{index}")  # the Janus run's arrivals
    schedule: list[tuple[float, int, int]] = []
    pickers = []
    for s_i, a in enumerate(prod["arrivals"]):
        stop = min(a["stop"] if a["stop"] is not None else sc["duration"], sc["duration"])
        times = arrival_times(a["rate"] / n_proc, a["process"], prod["ramp"], a["start"], stop, rng)
        schedule += [(t, s_i, n) for n, t in enumerate(times)]
        pickers.append(_cost_picker(a["cost"], rng))
    schedule.sort()
    uri = info.url.replace("redis://", "redis+cluster://", 1) if sc["_cluster"] else info.url
    limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(uri))
    rates = sc["_rates"]
    items = {dep: RateLimitItemPerSecond(max(int(rate), 1)) for dep, rate in rates.items()}
    client = (
        redis.RedisCluster.from_url(info.url) if sc["_cluster"] else redis.Redis.from_url(info.url)
    )
    hist = HdrHistogram(1, HDR_MAX_US, 3)
    counts: Counter[tuple[int, str, str, str]] = Counter()
    accepted: list[tuple[str, str, str, int, int, int]] = []
    pool = ThreadPoolExecutor(max_workers=16)  # the limiter is blocking: a few in flight

    def one(t: float, s_i: int, seq: int) -> None:
        a = prod["arrivals"][s_i]
        intended = t0 + t
        job_id = f"p{index}-{s_i}-{seq}"
        cost = pickers[s_i]()
        try:
            ok = limiter.hit(items[a["dependency"]], info.prefix, a["dependency"], cost=cost)
            if ok:
                body = json.dumps([job_id, a["scope"], cost, int(intended * 1000)])
                client.lpush(_queue(info.prefix, a["dependency"]), body)
                accepted.append(
                    (job_id, a["dependency"], a["scope"], cost, int(time.time() * 1000),
                     int(intended * 1000))
                )  # fmt: skip
            outcome = "ready" if ok else "rejected:rate_limited"
        except Exception as exc:
            outcome = f"error:{type(exc).__name__}"
        hist.record_value(min(max(int((time.time() - intended) * 1e6), 1), HDR_MAX_US))
        counts[(int(t), a["dependency"], a["scope"], outcome)] += 1

    client.ping()
    ready(info, f"producer-{index}")
    t0 = start_time(info)
    _wait_for(t0)
    futures = []
    for t, s_i, seq in schedule:
        delay = t0 + t - time.time()
        if delay > 0:
            time.sleep(delay)
        futures.append(pool.submit(one, t, s_i, seq))
    for f in futures:
        f.result(timeout=60)
    pool.shutdown()
    doc = {
        "index": index,
        "intended": len(schedule),
        "counts": [[sec, d, s, o, n] for (sec, d, s, o), n in counts.items()],
        "latency_hdr": hist.encode().decode(),
        "accepted": accepted,
    }
    Path(info.work_dir, f"producer-{index}.json").write_text(json.dumps(doc))


def worker_main(info: RunInfo, index: int) -> None:
    import redis

    sc = info.scenario
    w = sc["workers"]
    deps = sorted({a["dependency"] for a in sc["producers"]["arrivals"]})
    behaviour = _Behaviour(info, index)
    log = _Log(Path(info.work_dir, f"worker-{index}-{os.getpid()}.log"))
    client = (
        redis.RedisCluster.from_url(info.url) if sc["_cluster"] else redis.Redis.from_url(info.url)
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    retry = sc["_retry"]
    client.ping()
    ready(info, f"worker-{index}")

    def run_one(dep: str, body: bytes) -> None:
        job_id, scope, cost, intended_ms = json.loads(body)
        for attempt in range(1, retry[dep]["max_attempts"] + 1):
            log.write(f"S {job_id} {attempt} {int(time.time() * 1000)} {cost} {scope} {dep}\n")
            time.sleep(behaviour.latency())
            failure = behaviour.verdict(dep)
            if failure is None:
                log.write(f"C {job_id} {attempt} {int(time.time() * 1000) - intended_ms}\n")
                return
            if attempt == retry[dep]["max_attempts"]:
                return  # given up: counted as dead
            base = retry[dep]["base_s"] * retry[dep]["factor"] ** (attempt - 1)
            wait = min(base, retry[dep]["max_s"])
            if failure.retry_after_ms:
                wait = max(wait, failure.retry_after_ms / 1000)
            time.sleep(wait)

    def loop(dep: str) -> None:
        key = _queue(info.prefix, dep)
        with ThreadPoolExecutor(max_workers=w["concurrency"]) as pool:
            slots = threading.Semaphore(w["concurrency"])
            while not stop.is_set():
                slots.acquire()
                got = client.brpop([key], timeout=1)
                if got is None:
                    slots.release()
                    continue
                body = got[1]
                fut = pool.submit(run_one, dep, body.encode() if isinstance(body, str) else body)
                fut.add_done_callback(lambda _: slots.release())

    threads = [threading.Thread(target=loop, args=(d,), daemon=True) for d in deps]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)


def drained(url: str, prefix: str, deps: list[str], cluster: bool) -> bool:
    import redis

    client = redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
    try:
        return all(client.llen(_queue(prefix, d)) == 0 for d in deps)
    finally:
        client.close()
