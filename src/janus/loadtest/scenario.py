"""A load scenario, as an SRE writes it (``bench/scenarios/*.yaml``), validated. Pure.

A scenario says what runs, for how long, what goes wrong when, and what must hold::

    name: upstream-outage
    duration: 20s            # producers run this long; then the work drains (drain: 15s)
    policy:                  # the policy document, inline (or `policy_file: path`)
      dependencies:
        api: {rate: 100, burst: 20, max_wait: 30s, lease: 5s, ...}
    producers:
      processes: 2           # open-loop: arrivals follow the schedule whatever the replies
      ramp: 2s
      arrivals:
        - {dependency: api, scope: tenant-a, rate: 60, cost: 1, payload: 200}
        - {dependency: api, scope: tenant-b, rate: 60, process: poisson}
    workers:
      processes: 2
      concurrency: 8
      latency: {median: 20ms, p99: 80ms}      # lognormal; or {constant: 5ms}
      failures: [{kind: http_500, rate: 0.01}]
    faults:
      - {kind: outage, at: 6s, for: 6s}                       # every call fails http_503
      - {kind: throttle, at: 14s, for: 2s, retry_after: 1s}   # 429 with Retry-After
      - {kind: kill_workers, at: 8s, count: 1, restart_after: 2s}
      - {kind: pause_coordinator, at: 10s, for: 3s}           # SIGSTOP / SIGCONT
    thresholds: {overshoot: 0, lost: 0, double_runs: 0, release_lag_p99: 2s, ...}

Every duration takes the policy's units (``200ms``, ``1.5s``, ``2m``). ``scaled(f)``
multiplies every time in it (duration, ramp, faults, drain and the time-valued thresholds)
by ``f``, for quick runs of the same story. Unknown keys are errors, as in policies.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from janus.errors import InvalidInput
from janus.policy import PolicySet, load_policies, parse_duration_ms, parse_policy_text

MAX_DURATION_S = 3600.0


def _seconds(value: object) -> float:
    """A duration in seconds (float) from the policy's duration syntax."""
    return parse_duration_ms(value) / 1000


Seconds = Annotated[float, Field(ge=0, le=MAX_DURATION_S)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Arrivals(_Model):
    """One open-loop stream of submits: ``rate`` per second for one scope of a dependency."""

    dependency: str
    scope: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]
    rate: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
    process: Literal["poisson", "constant"] = "poisson"
    cost: Annotated[int, Field(ge=1, le=10**6)] | list[tuple[int, float]] = 1
    """A cost, or [[cost, weight], ...] to draw from."""
    payload: Annotated[int, Field(ge=0, le=1_048_576)] = 100
    start: Seconds = 0.0
    """When this stream begins (a late tenant); it runs to the end."""
    stop: Seconds | None = None

    @field_validator("start", "stop", mode="before")
    @classmethod
    def _durations(cls, v: object) -> object:
        return None if v is None else _seconds(v)

    @field_validator("cost")
    @classmethod
    def _costs(cls, v: int | list[tuple[int, float]]) -> int | list[tuple[int, float]]:
        if isinstance(v, list) and (not v or any(c < 1 or w <= 0 for c, w in v)):
            raise ValueError("cost choices must be [[cost >= 1, weight > 0], ...]")
        return v


class Producers(_Model):
    processes: Annotated[int, Field(ge=1, le=64)] = 1
    ramp: Seconds = 0.0
    """Arrival rates climb linearly from 0 over this long."""
    arrivals: list[Arrivals] = Field(min_length=1)
    max_outstanding: Annotated[int, Field(ge=1, le=100_000)] = 5_000
    """Submits in flight per process; beyond it arrivals wait (and their latency shows it)."""

    @field_validator("ramp", mode="before")
    @classmethod
    def _ramp(cls, v: object) -> object:
        return _seconds(v)


class Latency(_Model):
    """The handler's run time: lognormal through (median, p99), or constant."""

    median: Seconds | None = None
    p99: Seconds | None = None
    constant: Seconds | None = None

    @field_validator("median", "p99", "constant", mode="before")
    @classmethod
    def _durations(cls, v: object) -> object:
        return None if v is None else _seconds(v)

    @model_validator(mode="after")
    def _one_shape(self) -> Latency:
        if self.constant is None and self.median is None:
            raise ValueError("latency needs 'median' (and 'p99') or 'constant'")
        if self.constant is not None and self.median is not None:
            raise ValueError("latency takes 'median'/'p99' or 'constant', not both")
        if self.median is not None and self.p99 is not None and self.p99 < self.median:
            raise ValueError("latency p99 must be >= its median")
        return self

    def sigma(self) -> float:
        """The lognormal's sigma (0: constant)."""
        if self.constant is not None or self.median is None or not self.p99 or not self.median:
            return 0.0
        return math.log(self.p99 / self.median) / 2.3263  # z of the 99th percentile


class Failure(_Model):
    kind: Annotated[str, Field(min_length=1, max_length=64)]
    rate: Annotated[float, Field(gt=0, le=1)]
    retry_after: Seconds | None = None

    @field_validator("retry_after", mode="before")
    @classmethod
    def _durations(cls, v: object) -> object:
        return None if v is None else _seconds(v)


class Workers(_Model):
    processes: Annotated[int, Field(ge=1, le=64)] = 1
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 8
    latency: Latency = Latency(constant=0.005)
    failures: list[Failure] = Field(default_factory=list)
    asyncio: bool = False
    """Run AsyncWorker (handlers awaited) instead of the thread-pool Worker."""


class Fault(_Model):
    kind: Literal["outage", "throttle", "kill_workers", "pause_coordinator"]
    at: Seconds
    for_: Seconds = Field(0.0, alias="for")
    dependency: str | None = None
    """outage / throttle: only this dependency (default: every one)."""
    retry_after: Seconds = 1.0
    """throttle: the Retry-After each 429 carries."""
    count: Annotated[int, Field(ge=1, le=64)] = 1
    """kill_workers: how many worker processes get SIGKILL."""
    restart_after: Seconds | None = 1.0
    """kill_workers: start replacements after this long (null: never)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("at", "for_", "retry_after", "restart_after", mode="before")
    @classmethod
    def _durations(cls, v: object) -> object:
        return None if v is None else _seconds(v)

    @model_validator(mode="after")
    def _needs_length(self) -> Fault:
        if self.kind in ("outage", "throttle", "pause_coordinator") and self.for_ <= 0:
            raise ValueError(f"a {self.kind} fault needs 'for' (how long it lasts)")
        return self

    @property
    def until(self) -> float:
        return self.at + self.for_


class Thresholds(_Model):
    """Bounds the run must meet (k6-style); each one missed fails the run (exit 1)."""

    overshoot: Annotated[float, Field(ge=0)] | None = 0.0
    """Most cost started beyond rate * W + burst in any window W (1 s, 10 s, the run)."""
    lost: Annotated[int, Field(ge=0)] | None = 0
    double_runs: Annotated[int, Field(ge=0)] | None = 0
    release_lag_p99: Seconds | None = None
    decision_p99: Seconds | None = None
    e2e_p99: Seconds | None = None
    amplification: Annotated[float, Field(ge=1)] | None = None
    """Most attempts per job during the fault windows (the whole run when there are none)."""
    jain_min: Annotated[float, Field(gt=0, le=1)] | None = None
    """Least Jain's index of the backlogged scopes' started cost per weight."""
    min_completed_ratio: Annotated[float, Field(ge=0, le=1)] | None = None
    """Least share of the accepted jobs completed by the end of the drain."""

    @field_validator("release_lag_p99", "decision_p99", "e2e_p99", mode="before")
    @classmethod
    def _durations(cls, v: object) -> object:
        return None if v is None else _seconds(v)


class Scenario(_Model):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    duration: Annotated[float, Field(gt=0, le=MAX_DURATION_S)]
    drain: Seconds = 15.0
    """After the producers stop, how long the work may take to finish."""
    seed: int = 1
    policy: dict[str, Any] | None = None
    policy_file: str | None = None
    coordinators: Annotated[int, Field(ge=0, le=8)] = 1
    producers: Producers
    workers: Workers
    faults: list[Fault] = Field(default_factory=list)
    thresholds: Thresholds = Thresholds()

    @field_validator("duration", "drain", mode="before")
    @classmethod
    def _durations(cls, v: object) -> object:
        return _seconds(v)

    @model_validator(mode="after")
    def _one_policy(self) -> Scenario:
        if (self.policy is None) == (self.policy_file is None):
            raise ValueError("give the policy inline ('policy:') or as 'policy_file:', once")
        return self

    def scaled(self, factor: float) -> Scenario:
        """The same scenario with every time multiplied by ``factor`` (rates unchanged)."""
        if not 0 < factor <= 10:
            raise InvalidInput(f"a time scale must be in (0, 10], got {factor!r}")

        def s(x: float | None) -> float | None:
            return None if x is None else x * factor

        faults = [
            f.model_copy(
                update={
                    "at": f.at * factor,
                    "for_": f.for_ * factor,
                    "restart_after": s(f.restart_after),
                }
            )
            for f in self.faults
        ]
        arrivals = [
            a.model_copy(update={"start": a.start * factor, "stop": s(a.stop)})
            for a in self.producers.arrivals
        ]
        t = self.thresholds
        return self.model_copy(
            update={
                "duration": self.duration * factor,
                "drain": self.drain * factor,
                "faults": faults,
                "producers": self.producers.model_copy(
                    update={"ramp": self.producers.ramp * factor, "arrivals": arrivals}
                ),
                "thresholds": t.model_copy(update={"e2e_p99": s(t.e2e_p99)}),
            }
        )


def load_scenario(path: str | Path) -> tuple[Scenario, PolicySet]:
    """Read and validate a scenario file and its policy; a clear InvalidInput otherwise."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read scenario {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"scenario {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"scenario {str(path)!r} must be a mapping")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  - {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        ]
        raise InvalidInput(f"scenario {str(path)!r}:\n" + "\n".join(lines)) from None
    if scenario.policy_file is not None:
        policies = load_policies([path.parent / scenario.policy_file])
    else:
        policies = parse_policy_text(yaml.safe_dump(scenario.policy), f"{path} (policy)")
    _check_references(scenario, policies, str(path))
    return scenario, policies


def _check_references(scenario: Scenario, policies: PolicySet, where: str) -> None:
    known = set(policies.dependencies)
    named = {a.dependency for a in scenario.producers.arrivals}
    named |= {f.dependency for f in scenario.faults if f.dependency is not None}
    unknown = sorted(named - known)
    if unknown:
        raise InvalidInput(
            f"scenario {where!r}: dependencies {unknown} have no policy (the policy has "
            f"{sorted(known)})"
        )
    for f in scenario.faults:
        if f.until > scenario.duration + scenario.drain:
            raise InvalidInput(
                f"scenario {where!r}: the {f.kind} fault at {f.at:g}s ends after the run "
                f"({scenario.duration:g}s + {scenario.drain:g}s drain)"
            )
