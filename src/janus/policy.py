"""Policies: parse, validate and compile the limits of each dependency.

This module is pure: it reads YAML text (or files), validates it, and turns each dependency's
policy into the integers the Lua scripts read from ``P:{D}:policy`` and ``P:{D}:scopes``. It
never talks to Redis and never reads the clock.

A policy file looks like::

    dependencies:
      payments:
        rate: 50/s            # cost units per second: 50, 2.5, '50/s', '600/m', '1/h', '100/d'
        burst: 100            # most cost released at once (int >= 1)
        max_in_flight: 20     # optional; omitted = unlimited
        max_wait: 30s         # longest reservation a submit may get (default 60s)
        lease: 30s            # visibility timeout for workers (default 30s, >= 100ms)
        retention: 1d         # how long finished job records are kept (default 1d, >= 1s)
        max_payload: 1MiB     # largest payload (default 1MiB, 1 byte .. 512MiB)
        max_dead_letters: 100000  # dead letters kept (oldest trimmed past it; default 100000)
        max_cost: 10          # optional; default = smallest burst of the dependency and scopes
        scopes:
          default: {rate: 10, burst: 20, weight: 1}
          tenant-42: {rate: 25, burst: 50, weight: 2}
        retry:
          budget: {ratio: 0.1, min_per_second: 1, window: 10s}   # or: budget: false

Rates are exact: ``'1/h'`` is ``Fraction(1, 3600)`` units per second, never a rounded float.
Durations are a bare number of seconds or a string of units largest first, each at most once:
``'500ms'``, ``'1.5s'``, ``'1m30s'``, ``'1h 30m'``, ``'2d12h'``. A bare ``lease`` or
``max_wait`` above 3600 (an hour, in seconds) is refused: it is nearly always milliseconds
written without the unit. :func:`describe` prints rates and durations in forms that parse
back to the same policy.

The retry budget has no ``max_wait``: a retry that finds the budget empty stays queued until
a token comes, and waiting never dead-letters it (the key is refused with that reason).

Validation is strict (unknown keys, wrong types and out-of-range values are errors, with a
"did you mean" for a misspelt key) and exhaustive: every problem in every file is collected
and reported in one :class:`~janus.errors.PolicyError`. Messages speak of the policy file,
never of the models that check it. YAML nested deeper than :data:`MAX_NESTING` levels is
refused before it is walked, so no input can exhaust the interpreter's stack. Limits that
would make the scripts compute times or tags they cannot represent are refused too (see
:data:`MAX_SPAN_US`, :data:`MAX_TAG_STEP`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from janus.errors import InvalidName, PolicyError, PolicyIssue
from janus.keys import DEPENDENCY_NAME, check_user_name, encode_part

__all__ = [
    "DEFAULT_LEASE_MS",
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_MAX_WAIT_MS",
    "DEFAULT_RETENTION_MS",
    "DEFAULT_SCOPE",
    "MAX_BURST",
    "MAX_DURATION_MS",
    "MAX_IN_FLIGHT",
    "MAX_NESTING",
    "MAX_PAYLOAD",
    "MAX_RATE",
    "MAX_SPAN_US",
    "MAX_TAG_STEP",
    "MAX_WEIGHT",
    "MIN_LEASE_MS",
    "MIN_RETENTION_MS",
    "MIN_WEIGHT",
    "CompiledPolicy",
    "DependencyPolicy",
    "PolicySet",
    "ScopeLimits",
    "compile_policy",
    "describe",
    "format_duration_ms",
    "format_rate",
    "format_size",
    "interval_us",
    "load_policies",
    "parse_duration_ms",
    "parse_policy_text",
    "parse_rate",
    "parse_size",
    "weight_milli",
]

# --------------------------------------------------------------------------- limits

#: Highest rate accepted, in cost units per second.
MAX_RATE = 1_000_000.0
#: Highest burst accepted.
MAX_BURST = 10**9
#: Highest max_in_flight accepted (keeps every counter exact in Lua's doubles).
MAX_IN_FLIGHT = 10**9
#: Scope weights: at least 0.001 (weight_milli >= 1), at most 10**6.
MIN_WEIGHT = 0.001
MAX_WEIGHT = 1_000_000.0
#: Longest duration accepted anywhere (100 years, in ms). Timestamps in the scripts are
#: microseconds held in doubles; this keeps ``now + max_wait`` far below 2**53.
MAX_DURATION_MS = 100 * 365 * 86_400_000
#: Longest time a bucket may take to refill from empty (``burst * interval_us``), in µs.
MAX_SPAN_US = MAX_DURATION_MS * 1000
#: Largest step one job may move a scope's fair-queue tag (``max_cost * 1e6 / weight_milli``):
#: the virtual time is a double that grows by such steps, and must stay exact far below 2**53.
MAX_TAG_STEP = 10**12
#: Deepest YAML nesting accepted (a policy needs about 8 levels); deeper input is refused
#: before anything recursive walks it.
MAX_NESTING = 64
#: Dead letters kept per dependency by default (the oldest are trimmed past it).
DEFAULT_MAX_DEAD_LETTERS = 100_000
MAX_DEAD_LETTERS = 100_000_000
#: Largest max_payload accepted (512 MiB, Redis' own limit for one string).
MAX_PAYLOAD = 512 * 1024 * 1024

DEFAULT_MAX_WAIT_MS = 60_000
DEFAULT_LEASE_MS = 30_000
DEFAULT_RETENTION_MS = 86_400_000
DEFAULT_MAX_PAYLOAD = 1024 * 1024
MIN_LEASE_MS = 100
MIN_RETENTION_MS = 1_000
#: A bare number for ``lease`` or ``max_wait`` is seconds; above this many it is refused as
#: most likely milliseconds written without the unit (``lease: 30000``).
MAX_BARE_SECONDS = 3600
#: Retries: attempts per job (first attempt included) and the backoff curve.
MAX_ATTEMPTS = 1000
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_BASE_MS = 1_000
DEFAULT_BACKOFF_MAX_MS = 60_000
DEFAULT_MAX_RETRY_AFTER_MS = 3_600_000
#: Error kinds in ``retry_on``: a kind, a pattern ending in ``xx`` (``http_5xx`` matches
#: ``http_503``), or ``*`` for every kind.
ERROR_KIND = re.compile(r"\*|[A-Za-z0-9_.:\-]{1,64}")
JITTER_CODES = {"none": 0, "full": 1, "equal": 2, "decorrelated": 3}
PAUSE_CODES = {"dependency": 0, "scope": 1, "none": 2}

#: Name of the scopes section that holds the limits every scope gets by default.
DEFAULT_SCOPE = "default"

_COMPILE_VERSION = 1

# --------------------------------------------------------------------------- durations and sizes

_DURATION_UNITS_MS: dict[str, Fraction] = {
    "d": Fraction(86_400_000),
    "h": Fraction(3_600_000),
    "m": Fraction(60_000),
    "s": Fraction(1000),
    "ms": Fraction(1),
}
#: Ranks of the duration units, largest first: a compound duration must go down this list.
_DURATION_RANK = {unit: rank for rank, unit in enumerate(_DURATION_UNITS_MS)}
#: One ``<number><unit>`` part of a duration (the unit may be missing: reported, not guessed).
_DURATION_PART = re.compile(r"\s*(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]*)\s*")

_RATE_UNITS_S: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_RATE_RE = re.compile(
    r"(?P<num>[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*(?:/\s*(?P<unit>[A-Za-z]+))?"
)

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
_SIZE_RE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]*)")


def _number(value: int | float | Fraction) -> Fraction:
    """The exact value a user wrote: ``Fraction(str(x))`` undoes binary float error."""
    return Fraction(str(value)) if isinstance(value, float) else Fraction(value)


def _shown(value: object) -> str:
    """A value as a message shows it: YAML words for scalars, a kind for containers (which
    may be large or recursive), a short repr for text (repr escapes what a terminal cannot
    print, such as a lone surrogate)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Fraction):
        return str(value) if isinstance(value, Fraction) else repr(value)
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 66 else text[:63] + "..."
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def parse_duration_ms(value: object) -> int:
    """Parse a duration into whole milliseconds, rounding up.

    Accepts a number of seconds (``30``, ``1.5``) or a string of ``<number><unit>`` parts,
    units largest first and each at most once: ``"200ms"``, ``"1.5s"``, ``"30s"``, ``"10m"``,
    ``"1h"``, ``"1d"``, ``"1m30s"``, ``"1h 30m"``, ``"2d12h"``. Raises :class:`ValueError` for
    booleans, negative or non-finite numbers, unknown or repeated units and anything else.
    """
    if isinstance(value, bool):
        raise ValueError(
            f"a duration must be a number of seconds or a string like '30s', got {value!r}"
        )
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"a duration must be finite, got {value!r}")
        if value < 0:
            raise ValueError(f"a duration must not be negative, got {value!r}")
        ms = _number(value) * 1000
    elif isinstance(value, str):
        ms = _parse_duration_text(value)
    else:
        raise ValueError(
            "a duration must be a number of seconds or a string like '30s', "
            f"got {type(value).__name__}"
        )
    result = math.ceil(ms)
    if result > MAX_DURATION_MS:
        raise ValueError(f"duration {value!r} is longer than the maximum of 100 years")
    return result


def _parse_duration_text(value: str) -> Fraction:
    """Milliseconds (exact) of a duration string; see :func:`parse_duration_ms`."""
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"a duration must not be negative, got {value!r}")
    parts: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            parts = []
            break
        parts.append((match.group("num"), match.group("unit")))
        pos = match.end()
    if not parts:
        raise ValueError(
            f"invalid duration {value!r}: write a number and a unit, like '200ms', "
            "'30s', '10m', '1h', '1d' or '1h30m'"
        )
    if len(parts) == 1 and not parts[0][1]:
        raise ValueError(
            f"duration {value!r} has no unit: write e.g. '{text}s', or a bare number "
            "(not a string) for seconds"
        )
    ms = Fraction(0)
    rank = -1
    for num, unit in parts:
        if not unit:
            raise ValueError(
                f"invalid duration {value!r}: {num} has no unit; every number needs one "
                "(ms, s, m, h or d)"
            )
        if unit not in _DURATION_UNITS_MS:
            raise ValueError(f"unknown duration unit {unit!r} in {value!r}: use ms, s, m, h or d")
        if _DURATION_RANK[unit] <= rank:
            raise ValueError(
                f"invalid duration {value!r}: write each unit at most once, largest first "
                "(d, h, m, s, ms), like '1h30m'"
            )
        rank = _DURATION_RANK[unit]
        ms += Fraction(num) * _DURATION_UNITS_MS[unit]
    return ms


def parse_rate(value: object) -> Fraction:
    """Parse a rate into cost units per second, exactly.

    Accepts a number (``10``, ``2.5``: units per second) or a string ``"<number>/<unit>"``
    with unit ``s``, ``m``, ``h`` or ``d``: ``"10/s"``, ``"600/m"``, ``"1/h"``, ``"100/d"``
    (``"1/h"`` is ``Fraction(1, 3600)``). The rate must be > 0 and at most
    :data:`MAX_RATE` per second. Raises :class:`ValueError` for anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction | str):
        raise ValueError(
            "a rate must be a number of cost units per second or a string like '10/s', "
            f"got {_shown(value)}"
        )
    if isinstance(value, str):
        match = _RATE_RE.fullmatch(value.strip())
        if match is None:
            raise ValueError(
                f"invalid rate {value!r}: write a number of cost units per second, "
                "or '10/s', '600/m', '1/h', '1/d'"
            )
        unit = match.group("unit")
        if unit is None:
            raise ValueError(
                f"rate {value!r} has no unit: write e.g. '{value.strip()}/s', or a bare number "
                "(not a string) for units per second"
            )
        if unit not in _RATE_UNITS_S:
            raise ValueError(f"unknown rate unit {unit!r} in {value!r}: use s, m, h or d")
        rate = Fraction(match.group("num")) / _RATE_UNITS_S[unit]
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a rate must be a finite number, got {_shown(value)}")
    else:
        rate = _number(value)
    if rate <= 0:
        raise ValueError(f"a rate must be greater than 0, got {_shown(value)}")
    if rate > MAX_RATE:
        raise ValueError(f"a rate must be at most {MAX_RATE:.0f}/s, got {_shown(value)}")
    return rate


def _decimal(value: Fraction) -> str | None:
    """``value`` as an exact decimal (``"2.5"``), or None if its expansion never ends."""
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return None
    places = max(twos, fives)
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    whole, frac = digits[: len(digits) - places], digits[len(digits) - places :].rstrip("0")
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"


def format_rate(rate: Fraction | float) -> str:
    """Render a rate so that :func:`parse_rate` reads back exactly the same value.

    Per second when that is a short decimal (``"10/s"``, ``"2.5/s"``), else the shortest
    exact form over minutes, hours and days (``"1/h"``, ``"100/d"``). A rate no unit
    expresses as a finite decimal (only a hand-built ``Fraction(1, 7)``) falls back to the
    nearest float per second.
    """
    exact = _number(rate)
    per_second = _decimal(exact)
    if per_second is not None and (exact * 1000).denominator == 1:
        return f"{per_second}/s"
    forms = []
    for unit, seconds in _RATE_UNITS_S.items():
        text = _decimal(exact * seconds)
        if text is not None:
            forms.append(f"{text}/{unit}")
    if forms:
        return min(forms, key=len)  # min keeps the first (smallest unit) among equals
    return f"{float(exact)!r}/s"


def parse_size(value: object) -> int:
    """Parse a size into bytes, rounding a fractional byte up.

    Accepts an integer number of bytes or a string: ``"512"``, ``"512B"``, ``"64KB"``,
    ``"64KiB"``, ``"1MB"``, ``"1MiB"``, ``"1GB"``, ``"1GiB"`` (KB = 1000, KiB = 1024).
    Raises :class:`ValueError` for booleans, floats, negative numbers and unknown units.
    """
    if isinstance(value, bool):
        raise ValueError(f"a size must be a number of bytes or a string like '1MiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size must not be negative, got {value!r}")
        return value
    if isinstance(value, float):
        raise ValueError(
            f"a size must be a whole number of bytes or a string like '1.5MiB', got {value!r}"
        )
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"a size must not be negative, got {value!r}")
        match = _SIZE_RE.fullmatch(text)
        if match is None:
            raise ValueError(
                f"invalid size {value!r}: write a number and a unit, like '512', '64KiB' or '1MiB'"
            )
        unit = match.group("unit")
        if unit not in _SIZE_UNITS:
            raise ValueError(
                f"unknown size unit {unit!r} in {value!r}: use B, KB, KiB, MB, MiB, GB or GiB"
            )
        return math.ceil(Fraction(match.group("num")) * _SIZE_UNITS[unit])
    raise ValueError(
        f"a size must be a number of bytes or a string like '1MiB', got {type(value).__name__}"
    )


def format_duration_ms(ms: int) -> str:
    """Render milliseconds as units largest first (``90000`` → ``1m30s``, ``0`` → ``0ms``);
    :func:`parse_duration_ms` reads the result back to the same value."""
    parts = []
    rest = ms
    for unit, size in _DURATION_UNITS_MS.items():
        count, rest = divmod(rest, int(size))
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0ms"


def format_size(size: int) -> str:
    """Render bytes with the largest unit that divides them exactly (``1048576`` → ``1MiB``)."""
    for unit in ("GiB", "GB", "MiB", "MB", "KiB", "KB"):
        factor = _SIZE_UNITS[unit]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def interval_us(rate: Fraction | float) -> int:
    """Microseconds between two cost units at ``rate`` per second, rounded UP.

    Rounding up means the enforced rate (``1e6 / interval_us``) never exceeds the declared
    one. Exact arithmetic on the decimal the user wrote: rate 3 → 333334, 0.5 → 2000000,
    ``Fraction(1, 3600)`` ('1/h') → 3600000000.
    """
    if not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate!r}")
    return math.ceil(Fraction(1_000_000) / _number(rate))


def weight_milli(weight: float) -> int:
    """A scope weight in thousandths, as the scripts read it (``round(weight * 1000)``)."""
    return round(_number(weight) * 1000)


# --------------------------------------------------------------------------- resolved models


def _rate_field(value: object) -> Fraction:
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise PydanticCustomError("rate", "{reason}", {"reason": str(exc)}) from None


#: A rate in cost units per second, held exactly (``'1/h'`` is ``Fraction(1, 3600)``).
_Rate = Annotated[Fraction, PlainValidator(_rate_field)]
_Burst = Annotated[int, Field(ge=1, le=MAX_BURST)]
_Weight = Annotated[float, Field(ge=MIN_WEIGHT, le=MAX_WEIGHT, allow_inf_nan=False)]
_InFlight = Annotated[int, Field(ge=1, le=MAX_IN_FLIGHT)]


class Quota(BaseModel):
    """A hard cost budget of one scope: at most ``limit`` cost released per ``period_ms``.

    ``fixed`` windows reset at multiples of the period (Redis time); ``rolling`` counts the
    last ``period_ms``. At release a job reserves its declared cost; the worker's report
    settles the actual cost; a failed or dead-lettered attempt gives its reservation back.
    When the quota is spent, ``on_exhausted`` says whether a submit is rejected
    (``quota_exhausted``, with the reset time) or waits for the reset.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit: Annotated[int, Field(ge=1, le=10**15)]
    period_ms: Annotated[int, Field(ge=1000, le=MAX_DURATION_MS)]
    window: Literal["fixed", "rolling"] = "fixed"
    on_exhausted: Literal["reject", "wait"] = "reject"


class ScopeLimits(BaseModel):
    """Effective limits of one scope (tenant), inheritance already applied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate: _Rate
    burst: _Burst
    weight: _Weight = 1.0
    max_queued: Annotated[int, Field(ge=1, le=10**12)] | None = None
    """Most jobs this scope may have waiting (scheduled, retrying); more are rejected."""
    max_queued_cost: Annotated[int, Field(ge=1, le=10**15)] | None = None
    """Most cost this scope may have waiting."""
    quota: Quota | None = None


Jitter = Literal["full", "equal", "decorrelated", "none"]
PauseScope = Literal["dependency", "scope", "none"]


class AttemptPolicy(BaseModel):
    """Which failures are retried, how often and after how long (per dependency, and
    optionally per scope). Durations in milliseconds.

    A failed attempt whose error kind matches ``retry_on`` (a lease that expired always
    does) is retried while ``attempt < max_attempts`` after :func:`janus.retry.backoff_ms`;
    otherwise the job is dead-lettered.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] = DEFAULT_MAX_ATTEMPTS
    backoff_base_ms: Annotated[int, Field(ge=0, le=MAX_DURATION_MS)] = DEFAULT_BACKOFF_BASE_MS
    backoff_factor: Annotated[float, Field(ge=1, le=100, allow_inf_nan=False)] = 2.0
    backoff_max_ms: Annotated[int, Field(ge=0, le=MAX_DURATION_MS)] = DEFAULT_BACKOFF_MAX_MS
    jitter: Jitter = "full"
    retry_on: tuple[str, ...] = ("*",)


class RetryBudget(BaseModel):
    """Retries may not exceed ``ratio`` x first attempts + ``min_per_second`` x seconds.

    A token bucket: each first attempt released deposits ``ratio`` tokens, time deposits
    ``min_per_second``, each retry released withdraws one; it holds at most ``window`` worth
    of deposits. A retry that finds it empty stays queued (parked) until a token comes:
    waiting is free, so it is never dropped or dead-lettered for waiting. (There is no
    ``max_wait``; the compiled field ``budget_max_wait_ms`` stays, always 0, because the
    scripts read a fixed list of fields.)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ratio: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)] = 0.1
    min_per_second: Annotated[float, Field(ge=0, le=MAX_RATE, allow_inf_nan=False)] = 1.0
    window_ms: Annotated[int, Field(ge=1000, le=MAX_DURATION_MS)] = 10_000


class RetryPolicy(AttemptPolicy):
    """The dependency-wide retry rules: :class:`AttemptPolicy` plus the budget and how a
    worker's Retry-After is applied (capped at ``max_retry_after_ms``; it pauses releases
    for the whole dependency, only the job's scope, or nothing but that job)."""

    budget: RetryBudget | None = Field(default_factory=RetryBudget)
    max_retry_after_ms: Annotated[int, Field(ge=0, le=MAX_DURATION_MS)] = DEFAULT_MAX_RETRY_AFTER_MS
    pause_on_retry_after: PauseScope = "dependency"


class CircuitPolicy(BaseModel):
    """A circuit breaker per dependency. Durations in milliseconds.

    Closed -> open when, over the last ``window_ms``, at least ``min_requests`` outcomes were
    seen and the share of failures exceeds ``failure_ratio``. Open: nothing is released
    for ``open_for_ms`` (doubling on each consecutive open, up to ``open_for_max_ms``).
    Then half-open: ``half_open_probes`` jobs are released; if they all succeed it closes,
    any failure opens it again. Failures are reports whose error kind is retryable and
    expired leases; other error kinds are the job's fault, not the dependency's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_ratio: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    min_requests: Annotated[int, Field(ge=1, le=10**9)] = 20
    window_ms: Annotated[int, Field(ge=100, le=MAX_DURATION_MS)] = 10_000
    open_for_ms: Annotated[int, Field(ge=1, le=MAX_DURATION_MS)] = 5_000
    open_for_max_ms: Annotated[int, Field(ge=1, le=MAX_DURATION_MS)] = 60_000
    half_open_probes: Annotated[int, Field(ge=1, le=10_000)] = 3


class DependencyPolicy(BaseModel):
    """The validated, fully resolved policy of one dependency. Durations in milliseconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate: _Rate
    burst: _Burst
    max_in_flight: _InFlight | None = None
    max_wait_ms: Annotated[int, Field(ge=0, le=MAX_DURATION_MS)] = DEFAULT_MAX_WAIT_MS
    lease_ms: Annotated[int, Field(ge=MIN_LEASE_MS, le=MAX_DURATION_MS)] = DEFAULT_LEASE_MS
    retention_ms: Annotated[int, Field(ge=MIN_RETENTION_MS, le=MAX_DURATION_MS)] = (
        DEFAULT_RETENTION_MS
    )
    max_payload: Annotated[int, Field(ge=1, le=MAX_PAYLOAD)] = DEFAULT_MAX_PAYLOAD
    max_dead_letters: Annotated[int, Field(ge=1, le=MAX_DEAD_LETTERS)] = DEFAULT_MAX_DEAD_LETTERS
    max_cost: Annotated[int, Field(ge=1, le=MAX_BURST)]
    default_scope: ScopeLimits
    scope_overrides: dict[str, ScopeLimits] = Field(default_factory=dict)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    scope_retry: dict[str, AttemptPolicy] = Field(default_factory=dict)
    circuit: CircuitPolicy | None = None

    @model_validator(mode="after")
    def _max_cost_fits(self) -> DependencyPolicy:
        where, limit = _tightest_burst(self.burst, self.default_scope, self.scope_overrides)
        if self.max_cost > limit:
            raise ValueError(_cannot_fit(self.max_cost, where, limit))
        for scope in [self.default_scope, *self.scope_overrides.values()]:
            problem = _tag_step_problem(self.max_cost, scope.weight)
            if problem is not None:
                raise ValueError(problem)
        return self


@dataclass(frozen=True)
class PolicySet:
    """Every dependency policy loaded, and the file each one came from."""

    dependencies: dict[str, DependencyPolicy]
    sources: dict[str, str]


def _tightest_burst(
    burst: int, default: ScopeLimits, overrides: dict[str, ScopeLimits]
) -> tuple[str, int]:
    """The smallest burst a job must fit into, and where it is declared (first wins ties)."""
    bounds = [("burst", burst), (f"scopes.{DEFAULT_SCOPE}.burst", default.burst)]
    bounds += [(f"scopes.{_label(n)}.burst", s.burst) for n, s in overrides.items()]
    for name, scope in [(DEFAULT_SCOPE, default), *overrides.items()]:
        if scope.quota is not None:
            bounds.append((f"scopes.{_label(name)}.quota.limit", scope.quota.limit))
        if scope.max_queued_cost is not None:
            bounds.append((f"scopes.{_label(name)}.max_queued_cost", scope.max_queued_cost))
    return min(bounds, key=lambda bound: bound[1])


def _cannot_fit(max_cost: int, where: str, limit: int) -> str:
    return f"max_cost {max_cost} can never fit: {where} is {limit}"


def _tag_step_problem(max_cost: int, weight: float) -> str | None:
    """Why a job of ``max_cost`` would move a scope's fair-queue tag too far, or None."""
    step = Fraction(max_cost * 1_000_000, weight_milli(weight))
    if step <= MAX_TAG_STEP:
        return None
    return (
        f"weight {_shown(weight)} with max_cost {max_cost} moves the fair queue's virtual "
        f"time by {_magnitude(step)} per job; the limit is {_magnitude(MAX_TAG_STEP)}: "
        "raise the weight or lower max_cost"
    )


def _magnitude(value: Fraction | int) -> str:
    """A large number at a glance: ``1e15``, ``2.5e13`` (three significant digits)."""
    mantissa, _, exponent = f"{float(value):.3g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def _label(name: str) -> str:
    """A scope name as shown inside a field path: verbatim if plain, else a short repr."""
    if name and name.isprintable() and "." not in name and len(name) <= 64:
        return name
    text = repr(name)
    return text if len(text) <= 66 else text[:63] + "..."


# --------------------------------------------------------------------------- raw file shape


def _duration(minimum_ms: int, bare_max_s: int | None = None) -> Callable[[object], int]:
    """A duration field: at least ``minimum_ms``; a bare number above ``bare_max_s``
    (seconds) is refused as most likely milliseconds written without the unit."""

    def validate(value: object) -> int:
        if (
            bare_max_s is not None
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > bare_max_s
        ):
            raise PydanticCustomError("bare_duration", "{reason}", {"reason": _bare(value)})
        try:
            ms = parse_duration_ms(value)
        except ValueError as exc:
            raise PydanticCustomError("duration", "{reason}", {"reason": str(exc)}) from None
        if ms < minimum_ms:
            raise PydanticCustomError(
                "duration_too_short",
                "must be at least {minimum}, got {value}",
                {"minimum": format_duration_ms(minimum_ms), "value": format_duration_ms(ms)},
            )
        return ms

    return validate


def _size(minimum: int, maximum: int) -> Callable[[object], int]:
    def validate(value: object) -> int:
        try:
            size = parse_size(value)
        except ValueError as exc:
            raise PydanticCustomError("size", "{reason}", {"reason": str(exc)}) from None
        if not minimum <= size <= maximum:
            raise PydanticCustomError(
                "size_range",
                "must be between {minimum} and {maximum}, got {value}",
                {"minimum": format_size(minimum), "maximum": format_size(maximum), "value": value},
            )
        return size

    return validate


def _bare(value: int | float) -> str:
    """Why a large bare number is refused for a duration, reading it also as milliseconds."""
    as_seconds = format_duration_ms(math.ceil(_number(value) * 1000))
    as_ms = math.ceil(_number(value))
    advice = "write the unit ('30s', '500ms')"
    if as_ms <= MAX_DURATION_MS:
        advice = f"did you mean '{format_duration_ms(as_ms)}'? Write the unit ('30s', '500ms')"
    return f"{value!r} is a bare number, i.e. seconds ({as_seconds}); {advice}"


_RAW = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

#: Tags of a ``<section> | false`` field: a mapping is validated as the section's settings,
#: anything else must be ``false``. A callable discriminator picks one branch, so errors
#: come from that branch only (an untagged union reports every branch, in pydantic's words).
_SETTINGS, _OFF = "settings", "off"


def _settings_or_off(value: object) -> str:
    return _SETTINGS if isinstance(value, dict) else _OFF


class _RawQuota(BaseModel):
    model_config = _RAW

    limit: Annotated[int, Field(ge=1, le=10**15)]
    period: Annotated[int, BeforeValidator(_duration(1000))]
    window: Literal["fixed", "rolling"] = "fixed"
    on_exhausted: Literal["reject", "wait"] = "reject"


def _error_kinds(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise PydanticCustomError(
            "kinds", "must be a non-empty list of error kinds, got {got}", {"got": _shown(value)}
        )
    for kind in value:
        if not isinstance(kind, str) or not ERROR_KIND.fullmatch(kind):
            # _shown, not the raw value: a container may be large, and repr escapes text a
            # terminal cannot print
            raise PydanticCustomError(
                "kind",
                "invalid error kind {kind}: use 1-64 characters from [A-Za-z0-9_.:-], "
                "a pattern ending in xx (http_5xx), or *",
                {"kind": _shown(kind)},
            )
    return tuple(value)


class _RawBackoff(BaseModel):
    """``retry.backoff`` as written; omitted fields inherit (scope overrides) or default."""

    model_config = _RAW

    base: Annotated[int, BeforeValidator(_duration(0))] | None = None
    factor: Annotated[float, Field(ge=1, le=100, allow_inf_nan=False)] | None = None
    max: Annotated[int, BeforeValidator(_duration(0))] | None = None
    jitter: Jitter | None = None


class _RawAttempts(BaseModel):
    """The part of ``retry:`` a scope override may set."""

    model_config = _RAW

    max_attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] | None = None
    backoff: _RawBackoff | None = None
    retry_on: Annotated[tuple[str, ...], BeforeValidator(_error_kinds)] | None = None


class _RawScope(BaseModel):
    """One entry under ``scopes:`` as written; omitted fields inherit."""

    model_config = _RAW

    rate: _Rate | None = None
    burst: _Burst | None = None
    weight: _Weight | None = None
    retry: _RawAttempts | None = None
    max_queued: Annotated[int, Field(ge=1, le=10**12)] | None = None
    max_queued_cost: Annotated[int, Field(ge=1, le=10**15)] | None = None
    quota: (
        Annotated[
            Annotated[_RawQuota, Tag(_SETTINGS)] | Annotated[Literal[False], Tag(_OFF)],
            Discriminator(_settings_or_off),
        ]
        | None
    ) = None


class _RawBudget(BaseModel):
    """``retry.budget`` as written (``max_wait`` was removed: see :data:`_REMOVED`)."""

    model_config = _RAW

    ratio: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)] = 0.1
    min_per_second: Annotated[float, Field(ge=0, le=MAX_RATE, allow_inf_nan=False)] = 1.0
    window: Annotated[int, BeforeValidator(_duration(1000))] = 10_000


class _RawRetry(_RawAttempts):
    """``retry:`` as written."""

    budget: (
        Annotated[
            Annotated[_RawBudget, Tag(_SETTINGS)] | Annotated[Literal[False], Tag(_OFF)],
            Discriminator(_settings_or_off),
        ]
        | None
    ) = None
    max_retry_after: Annotated[int, BeforeValidator(_duration(0))] = DEFAULT_MAX_RETRY_AFTER_MS
    pause_on_retry_after: PauseScope = "dependency"


class _RawCircuit(BaseModel):
    """``circuit:`` as written."""

    model_config = _RAW

    failure_ratio: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    min_requests: Annotated[int, Field(ge=1, le=10**9)] = 20
    window: Annotated[int, BeforeValidator(_duration(100))] = 10_000
    open_for: Annotated[int, BeforeValidator(_duration(1))] = 5_000
    open_for_max: Annotated[int, BeforeValidator(_duration(1))] | None = None
    half_open_probes: Annotated[int, Field(ge=1, le=10_000)] = 3


class _RawDependency(BaseModel):
    """One dependency as written in a file (durations and sizes already parsed)."""

    model_config = _RAW

    rate: _Rate
    burst: _Burst
    max_in_flight: _InFlight | None = None
    max_wait: Annotated[int, BeforeValidator(_duration(0, MAX_BARE_SECONDS))] = DEFAULT_MAX_WAIT_MS
    lease: Annotated[int, BeforeValidator(_duration(MIN_LEASE_MS, MAX_BARE_SECONDS))] = (
        DEFAULT_LEASE_MS
    )
    retention: Annotated[int, BeforeValidator(_duration(MIN_RETENTION_MS))] = DEFAULT_RETENTION_MS
    max_payload: Annotated[int, BeforeValidator(_size(1, MAX_PAYLOAD))] = DEFAULT_MAX_PAYLOAD
    max_dead_letters: Annotated[int, Field(ge=1, le=MAX_DEAD_LETTERS)] = DEFAULT_MAX_DEAD_LETTERS
    max_cost: Annotated[int, Field(ge=1, le=MAX_BURST)] | None = None
    scopes: dict[str, _RawScope] | None = None
    retry: _RawRetry | None = None
    circuit: _RawCircuit | None = None


# --------------------------------------------------------------------------- YAML loading


def _attempts(
    raw: _RawAttempts,
    parent: AttemptPolicy,
    field: str,
    file: str,
    name: str,
    found: list[PolicyIssue],
) -> AttemptPolicy:
    """Resolve a retry section (or a scope's) over ``parent``: omitted fields inherit."""
    b = raw.backoff or _RawBackoff()
    resolved = AttemptPolicy(
        max_attempts=parent.max_attempts if raw.max_attempts is None else raw.max_attempts,
        backoff_base_ms=parent.backoff_base_ms if b.base is None else b.base,
        backoff_factor=parent.backoff_factor if b.factor is None else b.factor,
        backoff_max_ms=parent.backoff_max_ms if b.max is None else b.max,
        jitter=parent.jitter if b.jitter is None else b.jitter,
        retry_on=parent.retry_on if raw.retry_on is None else raw.retry_on,
    )
    if resolved.backoff_max_ms < resolved.backoff_base_ms:
        found.append(
            PolicyIssue(
                file,
                name,
                f"{field}.backoff.max",
                f"max {format_duration_ms(resolved.backoff_max_ms)} is below base "
                f"{format_duration_ms(resolved.backoff_base_ms)}",
            )
        )
    curve = (resolved.backoff_base_ms, resolved.backoff_factor, resolved.max_attempts)
    inherited = curve == (parent.backoff_base_ms, parent.backoff_factor, parent.max_attempts)
    if not inherited and resolved.backoff_base_ms == 0 and _growth_overflows(resolved):
        factor, attempts = _plain(resolved.backoff_factor), resolved.max_attempts
        found.append(
            PolicyIssue(
                file,
                name,
                f"{field}.backoff.factor",
                f"with base 0, factor {factor} over {attempts} attempts makes the scripts "
                f"compute 0 x infinity ({factor}^{attempts - 1} is beyond a double): every "
                "delay is 0 anyway, so set factor: 1, or give a base above 0",
            )
        )
    return resolved


def _growth_overflows(a: AttemptPolicy) -> bool:
    """Does ``factor ** (max_attempts - 1)``, as the scripts compute it, overflow a double?

    ``base * factor ** n`` is capped by ``max`` (at most MAX_DURATION_MS), which tames an
    infinite growth when base > 0; with base 0 it would be 0 x infinity, not a number.
    """
    try:
        (round(a.backoff_factor * 1000) / 1000) ** (a.max_attempts - 1)
    except OverflowError:
        return True
    return False


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping declares the same key twice."""


class _TooDeepError(yaml.composer.ComposerError):
    """The document nests deeper than MAX_NESTING levels (or an alias contains itself)."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_alias_depth(root: yaml.Node) -> None:
    """Refuse a node graph deeper than MAX_NESTING, counting what aliases bring in.

    Composing bounds the written nesting, but ``b: &b [*a]``, ``c: &c [*b]``, ... nests one
    level per line through aliases, and a recursive alias nests without end: construction
    and validation would recurse through that. The walk is iterative (the graph may be deep
    before it is refused); a node shared by several aliases is measured once.
    """
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            below = max((depth[id(child)] for child in _children(node)), default=0)
            if below + 1 > MAX_NESTING:
                raise _TooDeepError(
                    None,
                    None,
                    f"nesting deeper than {MAX_NESTING} levels (through aliases)",
                    node.start_mark,
                )
            depth[key] = below + 1
        elif key in on_path:
            raise _TooDeepError(
                None,
                None,
                "an alias refers to a node that contains it (a structure nested in itself)",
                node.start_mark,
            )
        elif key not in depth:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys, nesting deeper than MAX_NESTING
    levels (PyYAML composes and constructs recursively), and reads ``1e3`` as a float."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise _TooDeepError(
                    None,
                    None,
                    f"nesting deeper than {MAX_NESTING} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _check_alias_depth(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Hashable, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' merges are allowed to be overridden
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # SafeLoader reports unhashable keys itself
            first = seen.get(key)
            if first is not None:
                raise _DuplicateKeyError(
                    None,
                    first.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads "1e3" and "2.5e-1" as strings; YAML 1.2 and every SRE read floats.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_issue(file: str, exc: yaml.YAMLError) -> PolicyIssue:
    """One issue for a file that is not valid YAML, located by line and column."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return PolicyIssue(file, None, "", f"invalid YAML: {exc}")
    mark = exc.problem_mark or exc.context_mark
    where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(exc, _DuplicateKeyError):
        first = "" if exc.context_mark is None else f" (first on line {exc.context_mark.line + 1})"
        return PolicyIssue(file, None, "", f"{exc.problem}{where}{first}")
    if isinstance(exc, _TooDeepError):
        return PolicyIssue(file, None, "", f"{exc.problem}{where}")
    problem = exc.problem or exc.context or "syntax error"
    if exc.context and exc.problem:
        problem = f"{problem} ({exc.context})"
    return PolicyIssue(file, None, "", f"invalid YAML{where}: {problem}")


# --------------------------------------------------------------------------- validation

#: Keys that were part of the format and are refused with the reason (section, key) -> why.
_REMOVED: dict[tuple[type[BaseModel], str], str] = {
    (_RawBudget, "max_wait"): (
        "retry.budget.max_wait was removed: a retry waiting for the retry budget is never "
        "dead-lettered for waiting; remove the key"
    ),
}


@dataclass(frozen=True)
class _Place:
    """Where a pydantic error points, in the terms of the policy file."""

    path: str
    """The field path, scope names shown by :func:`_label` (``scopes.t.quota.limit``)."""
    section: type[BaseModel] | None
    """The settings section whose key the path ends at (for unknown keys)."""
    value: type[BaseModel] | None
    """The settings section expected at the place itself (for "must be a mapping")."""
    names: bool = False
    """The place is a mapping of names to settings (``scopes``)."""
    off: bool = False
    """The place is the ``false`` branch of a ``<section> | false`` field."""
    key: bool = False
    """The place is a name (a mapping key), not a value."""


def _type_args(annotation: object) -> Iterator[object]:
    """An annotation and everything nested in it (type arguments, Annotated metadata)."""
    yield annotation
    for arg in get_args(annotation):
        yield from _type_args(arg)


def _place(loc: tuple[int | str, ...]) -> _Place:
    """Follow ``loc`` through the raw models: a tag of a ``<section> | false`` field is
    dropped, and a scope name is always a name, even if it looks like a tag or a field."""
    model: type[BaseModel] | None = _RawDependency
    section: type[BaseModel] | None = None
    value: type[BaseModel] | None = _RawDependency
    names = off = key = False
    parts: list[str] = []
    i = 0
    while i < len(loc):
        part, i = loc[i], i + 1
        parts.append(str(part))
        section, value, names, off = model, None, False, False
        info = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        if info is None:
            model = None
            continue
        inner = list(_type_args(info.annotation))
        model = value = next(
            (a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if any(isinstance(a, Discriminator) for a in inner) and i < len(loc):
            off, i = loc[i] == _OFF, i + 1
            if off:
                model = None  # ``false`` has no keys; value stays, for the message
        elif any(get_origin(a) is dict for a in inner):
            if i == len(loc):
                names, value = True, None
                continue
            name, i = loc[i], i + 1
            parts.append(_label(name) if isinstance(name, str) else str(name))
            if i < len(loc) and loc[i] == "[key]":
                key, i = True, i + 1
    return _Place(".".join(parts), section, value, names, off, key)


def _plain(bound: object) -> str:
    """A bound from pydantic's context as written: ``1`` rather than ``1.0``."""
    if isinstance(bound, float) and bound.is_integer():
        return str(int(bound))
    return str(bound)


def _unknown_key(section: type[BaseModel] | None, key: object) -> str:
    if section is not None and isinstance(key, str) and (section, key) in _REMOVED:
        return _REMOVED[(section, key)]
    allowed = [] if section is None else list(section.model_fields)
    if isinstance(key, str):
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            return f"unknown key {_shown(key)}; did you mean {close[0]!r}?"
    return f"unknown key {_shown(key)}; the keys here are {', '.join(allowed)}"


#: Messages of errors whose words are only a bound or a type: "must be <this>, got <input>".
_MUST_BE: dict[str, Callable[[dict[str, Any]], str]] = {
    "int_type": lambda ctx: "a whole number",
    "float_type": lambda ctx: "a number",
    "finite_number": lambda ctx: "a finite number",
    "greater_than": lambda ctx: f"greater than {_plain(ctx['gt'])}",
    "greater_than_equal": lambda ctx: f"at least {_plain(ctx['ge'])}",
    "less_than": lambda ctx: f"less than {_plain(ctx['lt'])}",
    "less_than_equal": lambda ctx: f"at most {_plain(ctx['le'])}",
    "literal_error": lambda ctx: str(ctx["expected"]),
    "string_type": lambda ctx: "text",
    "list_type": lambda ctx: "a list",
    "tuple_type": lambda ctx: "a list",
    "bool_type": lambda ctx: "true or false",
}

#: Words pydantic uses that mean nothing to someone writing a policy file.
_INTERNALS = ("_Raw", "literal[", "instance of", "pydantic", "Input should", "[key]")


def _message(error: ErrorDetails, place: _Place) -> str:
    """One pydantic error in plain words about the policy file."""
    kind, given = error["type"], error["input"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if place.key:
        return (
            f"scope names must be strings, got {type(given).__name__} {given!r} (quote it in YAML)"
        )
    if kind in ("extra_forbidden", "invalid_key"):
        return _unknown_key(place.section, error["loc"][-1] if error["loc"] else given)
    if kind == "string_unicode" and isinstance(given, str) and place.value is not None:
        return _unknown_key(place.value, given)  # a key that is not valid Unicode text
    if kind == "missing":
        return "this setting is required"
    if place.off:
        fields = ", ".join(place.value.model_fields) if place.value else "settings"
        return f"must be a mapping ({fields}) or false to turn it off, got {_shown(given)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if place.names:
            return f"must be a mapping of names to settings, got {_shown(given)}"
        fields = f" ({', '.join(place.value.model_fields)})" if place.value else ""
        return f"must be a mapping of settings{fields}, got {_shown(given)}"
    if kind in _MUST_BE:
        return f"must be {_MUST_BE[kind](ctx)}, got {_shown(given)}"
    text = error["msg"].removeprefix("Value error, ")
    if any(word in text for word in _INTERNALS):
        return f"invalid value {_shown(given)}"
    return text


def _validation_issues(file: str, dependency: str, exc: ValidationError) -> list[PolicyIssue]:
    issues = []
    for error in exc.errors(include_url=False):
        place = _place(error["loc"])
        path = place.path
        if error["type"] == "string_unicode" and isinstance(error["input"], str):
            # pydantic points at the mapping whose key is not valid Unicode: name the key
            path = ".".join(part for part in (path, _label(error["input"])) if part)
        issues.append(PolicyIssue(file, dependency, path, _message(error, place)))
    return issues


def _check_scope_names(
    file: str, dependency: str, scopes: object, issues: list[PolicyIssue]
) -> None:
    """Name rules for scope overrides (checked even if the settings are invalid)."""
    if not isinstance(scopes, dict):
        return
    encoded: dict[str, str] = {}
    for name in scopes:
        if not isinstance(name, str):
            continue  # reported by pydantic
        if name == DEFAULT_SCOPE:
            continue
        field = f"scopes.{_label(name)}"
        try:
            check_user_name("scope", name)
        except InvalidName as exc:
            issues.append(PolicyIssue(file, dependency, field, str(exc)))
            continue
        key = encode_part(name)
        other = encoded.setdefault(key, name)
        if other != name:
            issues.append(
                PolicyIssue(
                    file,
                    dependency,
                    field,
                    f"encodes to the same key {key!r} as scopes.{_label(other)}; rename one",
                )
            )


def _resolve(
    file: str, name: str, raw: _RawDependency, issues: list[PolicyIssue]
) -> DependencyPolicy | None:
    """Apply inheritance and the cross-field checks; report problems into ``issues``."""
    found: list[PolicyIssue] = []
    scopes = dict(raw.scopes or {})
    section = scopes.pop(DEFAULT_SCOPE, None) or _RawScope()

    def quota(raw_quota: _RawQuota | Literal[False] | None, parent: Quota | None) -> Quota | None:
        if raw_quota is None:
            return parent
        if raw_quota is False:
            return None
        return Quota(
            limit=raw_quota.limit,
            period_ms=raw_quota.period,
            window=raw_quota.window,
            on_exhausted=raw_quota.on_exhausted,
        )

    default = ScopeLimits(
        rate=raw.rate if section.rate is None else section.rate,
        burst=raw.burst if section.burst is None else section.burst,
        weight=1.0 if section.weight is None else section.weight,
        max_queued=section.max_queued,
        max_queued_cost=section.max_queued_cost,
        quota=quota(section.quota, None),
    )
    overrides = {
        scope: ScopeLimits(
            rate=default.rate if raw_scope.rate is None else raw_scope.rate,
            burst=default.burst if raw_scope.burst is None else raw_scope.burst,
            weight=default.weight if raw_scope.weight is None else raw_scope.weight,
            max_queued=default.max_queued if raw_scope.max_queued is None else raw_scope.max_queued,
            max_queued_cost=(
                default.max_queued_cost
                if raw_scope.max_queued_cost is None
                else raw_scope.max_queued_cost
            ),
            quota=quota(raw_scope.quota, default.quota),
        )
        for scope, raw_scope in scopes.items()
    }

    def span(field: str, limits: ScopeLimits | _RawDependency) -> None:
        refill_us = interval_us(limits.rate) * limits.burst
        if refill_us > MAX_SPAN_US:
            found.append(
                PolicyIssue(
                    file,
                    name,
                    field,
                    f"rate {format_rate(limits.rate)} with burst {limits.burst} takes "
                    f"{refill_us / 1e6 / 86_400 / 365:.0f} years to refill; the limit is "
                    "100 years: raise the rate or lower the burst",
                )
            )

    span("rate", raw)
    if section.rate is not None or section.burst is not None:
        span(f"scopes.{DEFAULT_SCOPE}.rate", default)
    for scope, raw_scope in scopes.items():
        if raw_scope.rate is not None or raw_scope.burst is not None:
            span(f"scopes.{_label(scope)}.rate", overrides[scope])

    where, limit = _tightest_burst(raw.burst, default, overrides)
    if raw.max_cost is not None and raw.max_cost > limit:
        found.append(PolicyIssue(file, name, "max_cost", _cannot_fit(raw.max_cost, where, limit)))
    max_cost = limit if raw.max_cost is None else raw.max_cost
    weighted = [(DEFAULT_SCOPE, default)]
    weighted += [(scope, overrides[scope]) for scope, r in scopes.items() if r.weight is not None]
    for scope, limits in weighted:
        problem = _tag_step_problem(max_cost, limits.weight)
        if problem is not None:
            found.append(PolicyIssue(file, name, f"scopes.{_label(scope)}.weight", problem))

    raw_retry = raw.retry or _RawRetry()
    retry = _attempts(raw_retry, AttemptPolicy(), "retry", file, name, found)
    scope_retry: dict[str, AttemptPolicy] = {}
    for scope, raw_scope in scopes.items():
        if raw_scope.retry is not None:
            field = f"scopes.{_label(scope)}.retry"
            scope_retry[scope] = _attempts(raw_scope.retry, retry, field, file, name, found)
    if section.retry is not None:
        found.append(
            PolicyIssue(
                file,
                name,
                f"scopes.{DEFAULT_SCOPE}.retry",
                "set the default retry rules under the dependency's own retry: section",
            )
        )
    budget = raw_retry.budget
    circuit = None
    if raw.circuit is not None:
        c = raw.circuit
        open_max = c.open_for_max if c.open_for_max is not None else max(c.open_for * 12, 60_000)
        if open_max < c.open_for:
            found.append(
                PolicyIssue(
                    file,
                    name,
                    "circuit.open_for_max",
                    f"open_for_max {format_duration_ms(open_max)} is below open_for "
                    f"{format_duration_ms(c.open_for)}",
                )
            )
        circuit = CircuitPolicy(
            failure_ratio=c.failure_ratio,
            min_requests=c.min_requests,
            window_ms=c.window,
            open_for_ms=c.open_for,
            open_for_max_ms=max(open_max, c.open_for),
            half_open_probes=c.half_open_probes,
        )

    if found:
        issues.extend(found)
        return None
    return DependencyPolicy(
        retry=RetryPolicy(
            **retry.model_dump(),
            budget=(
                None
                if budget is False
                else RetryBudget(
                    ratio=budget.ratio,
                    min_per_second=budget.min_per_second,
                    window_ms=budget.window,
                )
                if budget is not None
                else RetryBudget()
            ),
            max_retry_after_ms=raw_retry.max_retry_after,
            pause_on_retry_after=raw_retry.pause_on_retry_after,
        ),
        scope_retry=scope_retry,
        circuit=circuit,
        rate=raw.rate,
        burst=raw.burst,
        max_in_flight=raw.max_in_flight,
        max_wait_ms=raw.max_wait,
        lease_ms=raw.lease,
        retention_ms=raw.retention,
        max_payload=raw.max_payload,
        max_dead_letters=raw.max_dead_letters,
        max_cost=max_cost,
        default_scope=default,
        scope_overrides=overrides,
    )


def _check_dependency(
    file: str, name: object, body: object, issues: list[PolicyIssue]
) -> DependencyPolicy | None:
    """Validate one dependency; its policy, or None after adding its issues."""
    label = name if isinstance(name, str) else repr(name)
    ok = True
    if not isinstance(name, str):
        issues.append(
            PolicyIssue(
                file,
                label,
                "",
                f"dependency names must be strings, got {type(name).__name__} {name!r} "
                "(quote it in YAML)",
            )
        )
        ok = False
    elif not DEPENDENCY_NAME.fullmatch(name):
        issues.append(
            PolicyIssue(
                file,
                label,
                "",
                f"invalid dependency name {name!r}: use 1-64 characters from "
                "[A-Za-z0-9_.-], starting with a letter or digit",
            )
        )
        ok = False
    if not isinstance(body, dict):
        got = "nothing" if body is None else type(body).__name__
        issues.append(
            PolicyIssue(
                file,
                label,
                "",
                f"a dependency must be a mapping of settings (rate, burst, ...), got {got}",
            )
        )
        return None
    before = len(issues)
    _check_scope_names(file, label, body.get("scopes"), issues)
    ok = ok and len(issues) == before
    try:
        raw = _RawDependency.model_validate(body)
    except ValidationError as exc:
        issues.extend(_validation_issues(file, label, exc))
        return None
    policy = _resolve(file, label, raw, issues)
    return policy if ok else None


@dataclass
class _Collector:
    """What has been loaded so far, across files."""

    issues: list[PolicyIssue] = dataclasses.field(default_factory=list)
    dependencies: dict[str, DependencyPolicy] = dataclasses.field(default_factory=dict)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    #: every dependency name seen, valid or not -> the file that declared it first
    declared: dict[str, str] = dataclasses.field(default_factory=dict)

    def result(self) -> PolicySet:
        if self.issues:
            raise PolicyError(self.issues)
        return PolicySet(dependencies=self.dependencies, sources=self.sources)


def _parse_into(text: str, file: str, out: _Collector) -> None:
    """Validate one file's text, adding its policies and its issues to ``out``."""
    issues = out.issues
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        issues.append(_yaml_issue(file, exc))
        return
    if document is None:
        issues.append(PolicyIssue(file, None, "", "the file is empty: expected 'dependencies:'"))
        return
    if not isinstance(document, dict):
        issues.append(
            PolicyIssue(
                file,
                None,
                "",
                "the file must be a mapping with a 'dependencies' key, "
                f"got {type(document).__name__}",
            )
        )
        return
    for key in document:
        if key != "dependencies":
            issues.append(
                PolicyIssue(
                    file,
                    None,
                    str(key),
                    f"unknown top-level key {key!r}: only 'dependencies' is allowed",
                )
            )
    declared = document.get("dependencies")
    if declared is None or declared == {}:
        issues.append(
            PolicyIssue(file, None, "dependencies", "no dependencies declared in this file")
        )
        return
    if not isinstance(declared, dict):
        issues.append(
            PolicyIssue(
                file,
                None,
                "dependencies",
                f"must be a mapping of dependency name -> settings, got {type(declared).__name__}",
            )
        )
        return
    for name, body in declared.items():
        checked = _check_dependency(file, name, body, issues)
        if not isinstance(name, str):
            continue
        first = out.declared.setdefault(name, file)
        if first != file:
            issues.append(
                PolicyIssue(
                    file,
                    name,
                    "",
                    f"dependency {name!r} is declared in both {first} and {file}; "
                    "declare each dependency once",
                )
            )
        elif checked is not None:
            out.dependencies[name] = checked
            out.sources[name] = file


def parse_policy_text(text: str, file: str) -> PolicySet:
    """Parse one policy document from a string; ``file`` names it in issues.

    Raises :class:`~janus.errors.PolicyError` listing every problem.
    """
    out = _Collector()
    _parse_into(text, file, out)
    return out.result()


def _policy_files(paths: Sequence[str | os.PathLike[str]], issues: list[PolicyIssue]) -> list[Path]:
    files: list[Path] = []
    seen: set[Path] = set()
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
            )
            if not found:
                issues.append(
                    PolicyIssue(str(path), None, "", "no *.yaml or *.yml files in this directory")
                )
        elif path.is_file():
            found = [path]
        else:
            issues.append(PolicyIssue(str(path), None, "", "no such file or directory"))
            continue
        for file in found:
            real = file.resolve()
            if real not in seen:
                seen.add(real)
                files.append(file)
    return files


def load_policies(paths: Sequence[str | os.PathLike[str]]) -> PolicySet:
    """Load and validate policy files.

    Each path is a file, or a directory whose ``*.yaml`` / ``*.yml`` files are read (sorted,
    not recursive). A file reached twice is read once. Raises
    :class:`~janus.errors.PolicyError` listing every problem in every file.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out = _Collector()
    files = _policy_files(paths, out.issues)
    if not files and not out.issues:
        out.issues.append(PolicyIssue("<arguments>", None, "", "no policy files given"))
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            out.issues.append(PolicyIssue(str(file), None, "", f"cannot read the file: {exc}"))
            continue
        _parse_into(text, str(file), out)
    return out.result()


# --------------------------------------------------------------------------- compile


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy as stored in Redis.

    ``fields`` is the hash ``P:{D}:policy``; ``scopes`` is the hash ``P:{D}:scopes``
    (encoded scope name -> ``"interval_us burst weight_milli"``); ``digest`` identifies the
    policy (sha256 of a canonical JSON form), so an unchanged policy need not be rewritten.
    """

    dependency: str
    fields: dict[str, int]
    scopes: dict[str, str]
    digest: str
    texts: dict[str, str] = dataclasses.field(default_factory=dict)
    """Text fields of the policy hash: ``retry_on`` and per-scope ``retry:<scope>`` rules."""


def compile_policy(name: str, policy: DependencyPolicy) -> CompiledPolicy:
    """Turn a validated policy into the integers the Lua scripts read.

    Raises :class:`~janus.errors.PolicyError` if two scope overrides encode to the same key.
    """
    if not isinstance(name, str) or not DEPENDENCY_NAME.fullmatch(name):
        raise PolicyError(
            [PolicyIssue("<compile>", str(name), "", f"invalid dependency name {name!r}")]
        )
    default = policy.default_scope
    fields = {
        "interval_us": interval_us(policy.rate),
        "burst": policy.burst,
        "max_in_flight": policy.max_in_flight or 0,
        "max_wait_ms": policy.max_wait_ms,
        "lease_ms": policy.lease_ms,
        "retention_ms": policy.retention_ms,
        "max_payload": policy.max_payload,
        "max_dead_letters": policy.max_dead_letters,
        "max_cost": policy.max_cost,
        "scope_interval_us": interval_us(default.rate),
        "scope_burst": default.burst,
        "scope_weight_milli": weight_milli(default.weight),
        **dict(zip(SCOPE_FIELDS[3:], scope_numbers(default)[3:], strict=True)),
    }
    scopes: dict[str, str] = {}
    names: dict[str, str] = {}
    issues: list[PolicyIssue] = []
    for scope in sorted(policy.scope_overrides):
        limits = policy.scope_overrides[scope]
        key = encode_part(scope)
        if key in names:
            issues.append(
                PolicyIssue(
                    "<compile>",
                    name,
                    f"scopes.{_label(scope)}",
                    f"encodes to the same key {key!r} as scopes.{_label(names[key])}",
                )
            )
            continue
        names[key] = scope
        scopes[key] = " ".join(map(str, scope_numbers(limits)))
    if issues:
        raise PolicyError(issues)
    fields["scope_overrides"] = len(scopes)  # lets the scripts skip the lookup when zero
    r = policy.retry
    fields["retry_max_attempts"] = r.max_attempts
    fields["backoff_base_ms"] = r.backoff_base_ms
    fields["backoff_factor_milli"] = round(r.backoff_factor * 1000)
    fields["backoff_max_ms"] = r.backoff_max_ms
    fields["backoff_jitter"] = JITTER_CODES[r.jitter]
    fields["max_retry_after_ms"] = r.max_retry_after_ms
    fields["pause_on_retry_after"] = PAUSE_CODES[r.pause_on_retry_after]
    fields["budget_enabled"] = int(r.budget is not None)
    if r.budget is not None:
        fields["budget_ratio_milli"] = round(r.budget.ratio * 1000)
        fields["budget_mps_milli"] = round(r.budget.min_per_second * 1000)
        fields["budget_max_wait_ms"] = 0  # removed from the format; the scripts read the field
        fields["budget_window_ms"] = r.budget.window_ms
    fields["circuit_enabled"] = int(policy.circuit is not None)
    if policy.circuit is not None:
        c = policy.circuit
        fields["circuit_failure_milli"] = round(c.failure_ratio * 1000)
        fields["circuit_min_requests"] = c.min_requests
        fields["circuit_window_ms"] = c.window_ms
        fields["circuit_open_ms"] = c.open_for_ms
        fields["circuit_open_max_ms"] = c.open_for_max_ms
        fields["circuit_probes"] = c.half_open_probes
    texts = {"retry_on": ",".join(r.retry_on)}
    for scope, attempts in sorted(policy.scope_retry.items()):
        texts[f"retry:{encode_part(scope)}"] = attempt_text(attempts)
    canonical = json.dumps(
        {
            "version": _COMPILE_VERSION,
            "dependency": name,
            "fields": fields,
            "texts": texts,
            "scopes": scopes,
            "names": names,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    digest = hashlib.sha256(canonical.encode("ascii")).hexdigest()
    return CompiledPolicy(dependency=name, fields=fields, scopes=scopes, digest=digest, texts=texts)


#: What the scripts know of a scope, in the order of a ``scopes`` hash value (the default
#: scope's are policy fields with a ``scope_`` prefix). 0 means "none" for the optional ones.
SCOPE_FIELDS = (
    "scope_interval_us",
    "scope_burst",
    "scope_weight_milli",
    "scope_max_queued",
    "scope_max_queued_cost",
    "scope_quota_limit",
    "scope_quota_period_ms",
    "scope_quota_rolling",
    "scope_quota_wait",
)


def scope_numbers(limits: ScopeLimits) -> tuple[int, ...]:
    """A scope's limits as the integers of :data:`SCOPE_FIELDS`."""
    q = limits.quota
    return (
        interval_us(limits.rate),
        limits.burst,
        weight_milli(limits.weight),
        limits.max_queued or 0,
        limits.max_queued_cost or 0,
        0 if q is None else q.limit,
        0 if q is None else q.period_ms,
        int(q is not None and q.window == "rolling"),
        int(q is not None and q.on_exhausted == "wait"),
    )


def attempt_text(a: AttemptPolicy) -> str:
    """A scope's retry rules as the scripts read them (the policy hash field
    ``retry:<scope>``): max_attempts base_ms factor_milli max_ms jitter_code retry_on."""
    return " ".join(
        str(v)
        for v in (
            a.max_attempts,
            a.backoff_base_ms,
            round(a.backoff_factor * 1000),
            a.backoff_max_ms,
            JITTER_CODES[a.jitter],
            ",".join(a.retry_on),
        )
    )


# --------------------------------------------------------------------------- describe


def _describe_scope(limits: ScopeLimits, default: ScopeLimits | None = None) -> dict[str, object]:
    """One scope's limits; ``default`` is given for an override (it may drop the quota)."""
    out: dict[str, object] = {
        "rate": format_rate(limits.rate),
        "burst": limits.burst,
        "weight": limits.weight,
    }
    if limits.max_queued is not None:
        out["max_queued"] = limits.max_queued
    if limits.max_queued_cost is not None:
        out["max_queued_cost"] = limits.max_queued_cost
    if limits.quota is not None:
        q = limits.quota
        out["quota"] = {
            "limit": q.limit,
            "period": format_duration_ms(q.period_ms),
            "window": q.window,
            "on_exhausted": q.on_exhausted,
        }
    elif default is not None and default.quota is not None:
        out["quota"] = "off"  # else it would read as inheriting the default's quota
    return out


def describe(policy: DependencyPolicy) -> dict[str, object]:
    """A human-facing, JSON-serialisable summary (for ``janus policy show``).

    Durations and sizes are rendered with units (``"1m30s"``, ``"1MiB"``), rates as
    ``"50/s"`` or ``"1/h"``; ``scopes`` holds ``default`` first, then the overrides, resolved.
    Every value reads back through the policy format to the same compiled policy, but for
    three display words: ``max_in_flight: "unlimited"`` (omit the key), ``"off"`` for the
    retry budget or an override's quota (write ``false``), and ``enforced_rate`` (the rate
    after rounding to whole microseconds; informational, not a key).
    """
    enforced = Fraction(1_000_000, interval_us(policy.rate))
    summary: dict[str, object] = {
        "rate": format_rate(policy.rate),
        "burst": policy.burst,
        "max_in_flight": "unlimited" if policy.max_in_flight is None else policy.max_in_flight,
        "max_wait": format_duration_ms(policy.max_wait_ms),
        "lease": format_duration_ms(policy.lease_ms),
        "retention": format_duration_ms(policy.retention_ms),
        "max_payload": format_size(policy.max_payload),
        "max_dead_letters": policy.max_dead_letters,
        "max_cost": policy.max_cost,
    }
    if enforced != policy.rate:
        summary["enforced_rate"] = f"{float(enforced):.6g}/s"
    scopes: dict[str, object] = {DEFAULT_SCOPE: _describe_scope(policy.default_scope)}
    for scope in sorted(policy.scope_overrides):
        scopes[scope] = _describe_scope(policy.scope_overrides[scope], policy.default_scope)
    summary["scopes"] = scopes
    r = policy.retry
    retry: dict[str, object] = _describe_attempts(r)
    retry["budget"] = (
        "off"
        if r.budget is None
        else {
            "ratio": r.budget.ratio,
            "min_per_second": r.budget.min_per_second,
            "window": format_duration_ms(r.budget.window_ms),
        }
    )
    retry["max_retry_after"] = format_duration_ms(r.max_retry_after_ms)
    retry["pause_on_retry_after"] = r.pause_on_retry_after
    summary["retry"] = retry
    for scope, attempts in sorted(policy.scope_retry.items()):
        entry = scopes[scope]
        if isinstance(entry, dict):
            entry["retry"] = _describe_attempts(attempts)
    if policy.circuit is not None:
        c = policy.circuit
        summary["circuit"] = {
            "failure_ratio": c.failure_ratio,
            "min_requests": c.min_requests,
            "window": format_duration_ms(c.window_ms),
            "open_for": format_duration_ms(c.open_for_ms),
            "open_for_max": format_duration_ms(c.open_for_max_ms),
            "half_open_probes": c.half_open_probes,
        }
    return summary


def _describe_attempts(a: AttemptPolicy) -> dict[str, object]:
    return {
        "max_attempts": a.max_attempts,
        "backoff": {
            "base": format_duration_ms(a.backoff_base_ms),
            "factor": a.backoff_factor,
            "max": format_duration_ms(a.backoff_max_ms),
            "jitter": a.jitter,
        },
        "retry_on": list(a.retry_on),
    }


#: Fields of the policy hash that describe the applied copy, not the policy itself.
BOOKKEEPING_FIELDS = frozenset({"digest", "version", "packed"})


def policy_diff(
    compiled: CompiledPolicy, applied: dict[str, str] | None, applied_scopes: dict[str, str]
) -> list[str]:
    """What applying ``compiled`` would change in the applied copy (``applied``: the
    dependency's policy hash, None when none is applied; ``applied_scopes``: its scopes
    hash): one line per field, ``name: old -> new``; empty when nothing would change."""
    if applied is None:
        return ["new: no policy applied yet"]
    if applied.get("digest") == compiled.digest:
        return []
    new: dict[str, str] = {k: str(v) for k, v in compiled.fields.items()}
    new.update(compiled.texts)
    lines = []
    for name in sorted((set(new) | set(applied)) - BOOKKEEPING_FIELDS):
        old_v, new_v = applied.get(name), new.get(name)
        if old_v != new_v:
            lines.append(f"{name}: {old_v if old_v is not None else '(none)'} -> "
                         f"{new_v if new_v is not None else '(none)'}")  # fmt: skip
    for scope in sorted(set(compiled.scopes) | set(applied_scopes)):
        old_s, new_s = applied_scopes.get(scope), compiled.scopes.get(scope)
        if old_s != new_s:
            lines.append(f"scope {scope}: {old_s or '(none)'} -> {new_s or '(none)'}")
    return lines or ["changed (same fields; a new digest): applying writes a new version"]
