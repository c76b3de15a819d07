"""Backoff math: bounds, determinism, spread (hypothesis), and retry_on matching."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from janus.policy import AttemptPolicy
from janus.retry import backoff_ms, jitter_unit, retryable, schedule_ms

rules = st.builds(
    AttemptPolicy,
    max_attempts=st.integers(1, 30),
    backoff_base_ms=st.integers(0, 10_000),
    backoff_factor=st.floats(1, 10, allow_nan=False),
    backoff_max_ms=st.integers(10_000, 3_600_000),
    jitter=st.sampled_from(["none", "full", "equal", "decorrelated"]),
)
job_ids = st.text(min_size=1, max_size=40)


@given(rules, job_ids, st.integers(1, 1000))
def test_backoff_stays_within_zero_and_max(r: AttemptPolicy, job_id: str, attempt: int) -> None:
    """Property: 0 <= delay <= max for every jitter mode and attempt (no overflow)."""
    assert 0 <= backoff_ms(r, job_id, attempt) <= r.backoff_max_ms


@given(rules, job_ids, st.integers(1, 50))
def test_backoff_is_deterministic(r: AttemptPolicy, job_id: str, attempt: int) -> None:
    """Property: the same (policy, job, attempt, history) gives the same delay."""
    assert backoff_ms(r, job_id, attempt, 500) == backoff_ms(r, job_id, attempt, 500)
    assert schedule_ms(r, job_id) == schedule_ms(r, job_id)


@given(rules, job_ids, st.integers(1, 50))
def test_jitter_modes_respect_their_envelopes(r: AttemptPolicy, job_id: str, attempt: int) -> None:
    """Property: none = e; full in [0, e]; equal in [e/2, e]; decorrelated in [base, max]."""
    factor = round(r.backoff_factor * 1000) / 1000
    try:
        e = min(r.backoff_base_ms * factor ** (attempt - 1), r.backoff_max_ms)
    except OverflowError:
        e = r.backoff_max_ms
    d = backoff_ms(r, job_id, attempt)
    if r.jitter == "none":
        assert d == int(e)
    elif r.jitter == "full":
        assert 0 <= d <= e
    elif r.jitter == "equal":
        assert e / 2 - 1 <= d <= e
    else:
        assert min(r.backoff_base_ms, r.backoff_max_ms) <= d <= r.backoff_max_ms


def test_full_jitter_spreads_different_jobs() -> None:
    """1,000 jobs failing at once get delays spread over [0, e): no herd."""
    r = AttemptPolicy(backoff_base_ms=1000, jitter="full")
    delays = [backoff_ms(r, f"job-{i}", 3) for i in range(1000)]
    assert len(set(delays)) > 850  # 1,000 uniform draws over 4,000 values: ~885 distinct
    assert min(delays) < 400 and max(delays) > 3600  # e = 4000 ms


def test_jitter_unit_is_uniform_enough() -> None:
    """Means of u over many (job, attempt) pairs sit near 1/2."""
    us = [jitter_unit(f"j{i}", a) for i in range(2000) for a in (1, 2)]
    assert 0.48 < sum(us) / len(us) < 0.52 and all(0 <= u < 1 for u in us)


def test_retry_on_patterns() -> None:
    """Exact kinds, 'xx' patterns over two digits, '*', and lease_expired always."""
    on = ("timeout", "http_5xx", "http_429")
    assert retryable(on, "timeout") and retryable(on, "http_503") and retryable(on, "http_429")
    assert (
        not retryable(on, "http_404")
        and not retryable(on, "http_5")
        and not retryable(on, "http_50x")
    )
    assert not retryable(on, "ValueError") and retryable(on, "lease_expired")
    assert retryable(("*",), "anything")
