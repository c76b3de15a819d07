"""The coordinator: the timer of every dependency. It does the work that comes due with
time (reclaims expired leases: each a failed attempt that the retry decision sends back to
the delay queue or to the dead letters; moves jobs whose time has come to the fair queue;
brings back throttled scopes and parked retries) and wakes one idle worker when work may be
released. It releases nothing itself: only a worker's fetch does, so nothing is ever
released to nobody.

It is thin on purpose: every decision is a script, atomic in Redis, so any number of
coordinators may run at once, and since every fetch does the same due work, no job's fate
depends on a coordinator being up (without one, workers time the dependency themselves).

Waiting without polling, yet on time:

* each ``step.lua`` returns when the next step is worth running (the next job or throttled
  scope coming due, a lease deadline, a retry token, the time a shared limit frees up); the
  coordinator sleeps *locally* until then (``threading.Event.wait``: millisecond precision;
  Redis's own blocking timeouts only fire every 100 ms);
* a script that creates an earlier event (a submit of work due sooner, a retry, a pause)
  pushes one element onto the dependency's ``wake`` list; one watcher thread per dependency
  waits on it with BLPOP (one command every ``watch_s`` while idle) and cuts the sleep short.

An idle coordinator therefore costs one BLPOP per dependency every ``watch_s`` seconds and
one step every ``idle_s``; a busy one one step per event, never a loop.

**Events to the logs.** Each watcher also reads its dependency's events stream (one XRANGE
per ``watch_s``) and logs every new event (circuit transitions, pauses, dead letters,
reclaimed leases, policy changes), whoever caused it: a worker's report, a fetch, an admin
command. Warnings for what needs a look (circuit open, dead letter, reclaimed lease, pause),
info for the rest; with ``--log-format json`` the event's fields are in ``event``.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time

from janus import calls, doctor
from janus.decisions import Event, StepResult
from janus.errors import AccessDenied, AuthenticationFailed, RedisUnavailable
from janus.store import Store

log = logging.getLogger("janus.coordinator")

#: Errors that waiting cannot fix: the loop stops and raises them.
FATAL = (AuthenticationFailed, AccessDenied)
#: Events logged as warnings (the rest at info).
WARN_EVENTS = frozenset({"circuit_open", "dead_letter", "lease_reclaimed", "paused"})


def _shown(value: str) -> str:
    """A field value for a text log line: quoted when it has spaces or control characters
    (scope names and error kinds are the callers' strings: no forged log lines)."""
    return value if value.isprintable() and " " not in value else repr(value)


def log_event(ev: Event) -> None:
    """One event as one log line (and its fields as ``janus_event`` for a JSON log)."""
    fields = " ".join(f"{k}={_shown(v)}" for k, v in ev.fields.items() if v != "")
    level = logging.WARNING if ev.kind in WARN_EVENTS else logging.INFO
    doc = {"dependency": ev.dependency, "kind": ev.kind, "at_ms": ev.at_ms, **ev.fields}
    log.log(level, "event %s %s %s", ev.dependency, ev.kind, fields, extra={"janus_event": doc})


class Coordinator:
    """Steps every dependency with an applied policy (or the ones given) on time."""

    def __init__(
        self,
        store: Store,
        *,
        dependencies: list[str] | None = None,
        max_steps: int = 500,
        idle_s: float = 5.0,
        watch_s: float = 2.0,
        refresh_s: float = 5.0,
        log_events: bool = True,
    ) -> None:
        self.store = store
        self.fixed = list(dependencies) if dependencies else None
        self.max_steps = max_steps
        self.idle_s = idle_s
        self.watch_s = watch_s
        self.refresh_s = refresh_s
        self.log_events = log_events
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._woken: set[str] = set()
        self._lock = threading.Lock()
        self._watchers: dict[str, threading.Thread] = {}
        self.steps = 0
        self.moved = 0
        self.reclaimed = 0

    # -- one step ----------------------------------------------------------------------

    def step(self, dependency: str, now_us: int | None = None) -> StepResult:
        """One step for ``dependency`` (see the module docstring); ``next_us`` says when the
        next one is worth running. (``now_us`` only in tests.)"""
        result = self.store.run(
            calls.step(
                self.store.keys(dependency),
                max_steps=self.max_steps,
                timer_ms=int(self.idle_s * 2000) + 1000,
                now_us=now_us,
            )
        )
        self.steps += 1
        self.reclaimed += result.reclaimed
        self.moved += result.moved
        return result

    # -- the loop ----------------------------------------------------------------------

    def check_server(self) -> list[doctor.Finding]:
        """Log the doctor's findings loudly; returns them."""
        findings = doctor.evaluate(self.store.server_configs())
        findings += doctor.test_mode(self.store.test_mode_dependencies())
        for finding in findings:
            if finding.level == "error":
                log.error("%s", finding)
            elif finding.level == "warning":
                log.warning("%s", finding)
        return findings

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self, *, check: bool = True) -> None:
        """Step every dependency on time until :meth:`stop` is called. Survives Redis
        outages (and OOM, read-only replicas); stops and raises on AuthenticationFailed or
        AccessDenied, which waiting cannot fix."""
        if check:
            try:
                self.check_server()
            except RedisUnavailable as exc:
                log.error("start-up check failed: %s", exc)
        due: list[tuple[float, str]] = []  # (monotonic time, dependency)
        known: set[str] = set()
        next_refresh = 0.0
        backoff = 0.0
        while not self._stop.is_set():
            mono = time.monotonic()
            with self._lock:
                woken, self._woken = self._woken, set()
                self._wake.clear()
            ready = {dep for at, dep in due if at <= mono} | (woken & known)
            due = [(at, dep) for at, dep in due if dep not in ready]
            try:
                if mono >= next_refresh:
                    for dep in self._dependencies():
                        if dep not in known:
                            known.add(dep)
                            ready.add(dep)
                            self._watch(dep)
                    next_refresh = mono + self.refresh_s
                while ready:
                    dep = min(ready)
                    result = self.step(dep)
                    ready.discard(dep)
                    after = time.monotonic()
                    if result.next_us is None:
                        at = after + self.idle_s
                    else:
                        at = after + max(result.next_us - result.now_us, 0) / 1e6
                    due.append((min(at, after + self.idle_s), dep))
                backoff = 0.0
            except FATAL:
                log.error("stopping: %s", "Redis refused this coordinator's credentials or ACL")
                self.stop()
                raise
            except Exception as exc:  # the loop must outlive any single failure
                # Every dependency not stepped yet stays due: it is retried after the pause.
                backoff = min(max(backoff * 2, 0.1), 5.0)
                due += [(mono + backoff, dep) for dep in ready]
                if isinstance(exc, RedisUnavailable):
                    log.warning("Redis unavailable, retrying in %.1fs: %s", backoff, exc)
                else:
                    log.exception("step failed; retrying in %.1fs", backoff)
                self._stop.wait(backoff)
                continue
            finally:
                heapq.heapify(due)
            timeout = min([self.refresh_s] + [at - time.monotonic() for at, _ in due[:1]])
            if timeout > 0:
                self._wake.wait(timeout)

    def _dependencies(self) -> list[str]:
        return self.fixed if self.fixed is not None else self.store.dependencies()

    def _watch(self, dependency: str) -> None:
        if dependency in self._watchers:
            return
        thread = threading.Thread(
            target=self._watch_loop,
            args=(dependency,),
            name=f"janus-watch-{dependency}",
            daemon=True,
        )
        self._watchers[dependency] = thread
        thread.start()

    def _watch_loop(self, dependency: str) -> None:
        after: str | None = None  # the last event logged; None: not read yet
        log_events = self.log_events
        while not self._stop.is_set():
            if log_events:
                try:
                    after = self._log_events(dependency, after)
                except FATAL as exc:  # (an ACL without +xrevrange: the wake-ups go on)
                    log.error("not logging the events of %s: %s", dependency, exc)
                    log_events = False
                except Exception as exc:  # the next pass reads them
                    log.debug("events of %s: %s", dependency, exc)
            try:
                signalled = self.store.wait_wake(dependency, self.watch_s)
            except Exception as exc:  # a watcher must outlive any client error; it only wakes
                if self._stop.is_set():
                    return
                if isinstance(exc, FATAL):
                    log.error("the wake-up watcher of %s stops: %s", dependency, exc)
                    return
                log.debug("watcher for %s: %s", dependency, exc)
                self._stop.wait(1.0)
                continue
            if signalled:
                with self._lock:
                    self._woken.add(dependency)
                    self._wake.set()

    def _log_events(self, dependency: str, after: str | None) -> str:
        """Log the events after ``after`` (at start: none; the history is `janus events`),
        all of them: pages of 1,000 until one comes back short."""
        keys = self.store.keys(dependency)
        if after is None:
            newest = self.store.commands(calls.events(keys, last=1))
            return newest[-1].event_id if newest else "0-0"
        while True:
            batch = self.store.commands(calls.events(keys, after=after, count=1000))
            for ev in batch:
                log_event(ev)
            if batch:
                after = batch[-1].event_id
            if len(batch) < 1000 or self._stop.is_set():
                return after

    def run_in_thread(self, *, check: bool = True) -> threading.Thread:
        """Start :meth:`run` in a daemon thread (demo, tests); stop it with :meth:`stop`."""
        thread = threading.Thread(
            target=self.run, kwargs={"check": check}, name="janus-coordinator", daemon=True
        )
        thread.start()
        return thread
