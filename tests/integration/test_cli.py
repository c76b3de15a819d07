"""The `janus` command line against a real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from janus.cli import main
from janus.embedded import free_port

REPO = Path(__file__).resolve().parents[2]
GOOD = """
dependencies:
  pay:
    rate: 5
    burst: 5
    max_wait: 10s
"""
BAD = """
dependencies:
  pay:
    rate: -1
    burst: 0
    colour: blue
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_policy_check_accepts_the_shipped_examples(runner: CliRunner) -> None:
    """The policies/ directory of the repository validates."""
    result = runner.invoke(main, ["policy", "check", str(REPO / "policies")])
    assert result.exit_code == 0, result.output
    assert "ok: payments" in result.output


def test_policy_check_prints_every_error_and_exits_non_zero(
    runner: CliRunner, tmp_path: Path
) -> None:
    """All problems are listed with file, dependency and field; exit code 1."""
    (tmp_path / "bad.yaml").write_text(BAD)
    result = runner.invoke(main, ["policy", "check", str(tmp_path)])
    assert result.exit_code == 1
    out = result.output
    assert "bad.yaml: pay.rate:" in out
    assert "bad.yaml: pay.burst:" in out
    assert "bad.yaml: pay.colour: Extra inputs are not permitted" in out
    assert "3 error(s); nothing applied." in out


def test_policy_apply_writes_nothing_when_any_file_is_invalid(
    runner: CliRunner, tmp_path: Path, standalone_url: str, prefix: str
) -> None:
    """One bad file: nothing is applied, even for the good files."""
    import redis

    (tmp_path / "good.yaml").write_text(GOOD.replace("pay:", "other:"))
    (tmp_path / "bad.yaml").write_text(BAD)
    result = runner.invoke(
        main, ["policy", "apply", str(tmp_path), "--redis", standalone_url, "--prefix", prefix]
    )
    assert result.exit_code == 1
    client = redis.Redis.from_url(standalone_url)
    assert list(client.scan_iter(match=f"{prefix}:*")) == []


def test_apply_then_submit_then_status(
    runner: CliRunner, tmp_path: Path, standalone_url: str, prefix: str
) -> None:
    """apply gives version 1, again "unchanged"; submit prints the decision; status shows it."""
    (tmp_path / "p.yaml").write_text(GOOD)
    args = ["--redis", standalone_url, "--prefix", prefix]
    first = runner.invoke(main, ["policy", "apply", str(tmp_path), *args])
    assert first.exit_code == 0 and "pay: version 1 (applied)" in first.output
    again = runner.invoke(main, ["policy", "apply", str(tmp_path / "p.yaml"), *args])
    assert "pay: version 1 (unchanged)" in again.output
    sub = runner.invoke(main, ["submit", "pay", "--scope", "t1", "--job-id", "order-1", *args])
    assert sub.exit_code == 0, sub.output
    decision = json.loads(sub.output)
    assert decision["status"] == "released" and decision["job_id"] == "order-1"
    status = runner.invoke(main, ["status", *args])
    assert status.exit_code == 0 and "pay" in status.output and "v1" in status.output


def test_doctor_reports_missing_persistence(runner: CliRunner, standalone_url: str) -> None:
    """The test server keeps nothing on disk: doctor says so (a warning, exit 0)."""
    result = runner.invoke(main, ["doctor", "--redis", standalone_url])
    assert result.exit_code == 0
    assert "[WARNING]" in result.output and "no persistence" in result.output


def test_commands_fail_cleanly_when_redis_is_down(runner: CliRunner, tmp_path: Path) -> None:
    """No traceback: one error line and exit code 2."""
    (tmp_path / "p.yaml").write_text(GOOD)
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(main, ["policy", "apply", str(tmp_path), "--redis", url])
    assert result.exit_code == 2
    assert "error:" in result.output and "Redis is unavailable" in result.output
