"""The `janus` command line against a real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from janus.cli import main
from janus.testing import free_port

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
    assert "bad.yaml: pay.colour: unknown key 'colour'" in out
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
    """apply gives version 1, again "unchanged"; submit prints the decision as JSON (a new
    job its scope allows now is "ready", waiting in Janus for a worker: record "scheduled",
    attempt 0; the same id again is not created twice); status shows the waiting job."""
    (tmp_path / "p.yaml").write_text(GOOD)
    args = ["--redis", standalone_url, "--prefix", prefix]
    first = runner.invoke(main, ["policy", "apply", str(tmp_path), *args])
    assert first.exit_code == 0 and "pay: version 1 (applied)" in first.output
    again = runner.invoke(main, ["policy", "apply", str(tmp_path / "p.yaml"), *args])
    assert "pay: version 1 (unchanged)" in again.output
    sub = runner.invoke(main, ["submit", "pay", "--scope", "t1", "--job-id", "order-1", *args])
    assert sub.exit_code == 0, sub.output
    decision = json.loads(sub.output)
    assert decision == {
        "dependency": "pay",
        "job_id": "order-1",
        "status": "ready",
        "reason": None,
        "not_before_ms": decision["not_before_ms"],
        "retry_after_ms": None,
        "created": True,
        "attempt": 0,
        "state": "scheduled",
    }
    again = runner.invoke(main, ["submit", "pay", "--scope", "t1", "--job-id", "order-1", *args])
    assert again.exit_code == 0, again.output
    repeat = json.loads(again.output)
    assert (repeat["status"], repeat["created"], repeat["state"]) == ("ready", False, "scheduled")
    status = runner.invoke(main, ["status", *args])
    assert status.exit_code == 0, status.output
    header, row = status.output.strip().splitlines()[:2]
    assert header.split()[:2] == ["dependency", "policy"]
    assert row.split()[:5] == ["pay", "v1", "1", "1", "0"]  # one job waiting (cost 1), none running


def test_doctor_reports_missing_persistence(runner: CliRunner, standalone_url: str) -> None:
    """The test server keeps nothing on disk: doctor says so (a warning: exit 1)."""
    result = runner.invoke(main, ["doctor", "--redis", standalone_url])
    assert result.exit_code == 1
    assert "[WARNING]" in result.output and "no persistence" in result.output


def test_commands_fail_cleanly_when_redis_is_down(runner: CliRunner, tmp_path: Path) -> None:
    """No traceback: one error line and exit code 2."""
    (tmp_path / "p.yaml").write_text(GOOD)
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(main, ["policy", "apply", str(tmp_path), "--redis", url])
    assert result.exit_code == 2
    assert "error:" in result.output and "Redis is unavailable" in result.output


# -- a CLI a script can rely on (hard edges) --------------------------------------------


def _applied(runner: CliRunner, tmp_path: Path, url: str, prefix: str) -> None:
    (tmp_path / "p.yaml").write_text(GOOD)
    done = runner.invoke(
        main, ["policy", "apply", str(tmp_path), "--redis", url, "--prefix", prefix]
    )
    assert done.exit_code == 0, done.output


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("redis:/host", "'redis:/host' is not a URL: write redis://host"),
        ("http://host:6379/0", "the scheme must be redis://, rediss:// (TLS) or unix://"),
        ("127.0.0.1:6379", "is not a URL: write redis://127.0.0.1:6379"),
        ("redis://127.0.0.1:6379/42", "the database index must be a number 0..15, got '42'"),
    ],
)
def test_bad_urls_are_one_line_and_exit_2(runner: CliRunner, url: str, text: str) -> None:
    """A bad URL or database index used to print a 40-line traceback."""
    result = runner.invoke(main, ["status", "--redis", url])
    assert result.exit_code == 2
    assert text in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_submit_exit_codes_tell_accepted_from_rejected(
    runner: CliRunner, tmp_path: Path, standalone_url: str, prefix: str
) -> None:
    """`janus submit` exits 0 when the job is ready or scheduled and 3 when rejected (it
    used to exit 0 on a rejection)."""
    (tmp_path / "p.yaml").write_text(GOOD.replace("rate: 5", "rate: 0.1"))
    assert (
        runner.invoke(
            main, ["policy", "apply", str(tmp_path), "--redis", standalone_url, "--prefix", prefix]
        ).exit_code
        == 0
    )
    args = ["--redis", standalone_url, "--prefix", prefix]
    codes = []
    for i in range(12):  # one job per 10 s, burst 5, max_wait 10 s: 6 fit, however slow this is
        result = runner.invoke(main, ["submit", "pay", "--job-id", f"j{i}", *args])
        codes.append((json.loads(result.output)["status"], result.exit_code))
    assert ("ready", 0) in codes and ("scheduled", 0) in codes and ("rejected", 3) in codes
    assert {code for status, code in codes if status == "rejected"} == {3}
    unknown = runner.invoke(main, ["submit", "nope", *args])
    assert unknown.exit_code == 3 and '"unknown_dependency"' in unknown.output


def test_submit_reads_the_payload_from_a_file_or_stdin(
    runner: CliRunner, tmp_path: Path, standalone_url: str, prefix: str
) -> None:
    """--payload-file PATH and --payload-file - (stdin) send the bytes as they are."""
    from janus.client import Janus

    _applied(runner, tmp_path, standalone_url, prefix)
    args = ["--redis", standalone_url, "--prefix", prefix]
    blob = bytes(range(256))
    (tmp_path / "blob.bin").write_bytes(blob)
    a = runner.invoke(main, ["submit", "pay", "--job-id", "f", "--payload-file",
                             str(tmp_path / "blob.bin"), *args])  # fmt: skip
    b = runner.invoke(main, ["submit", "pay", "--job-id", "s", "--payload-file", "-", *args],
                      input=b"from stdin")  # fmt: skip
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    jn = Janus.from_url(standalone_url, prefix=prefix)
    assert jn.job("pay", "f").payload == blob  # type: ignore[union-attr]
    assert jn.job("pay", "s").payload == b"from stdin"  # type: ignore[union-attr]
    both = runner.invoke(main, ["submit", "pay", "--payload", "x", "--payload-file", "-", *args])
    assert both.exit_code == 2 and "not both" in both.output


def test_doctor_exits_1_on_warnings_unless_told_otherwise(
    runner: CliRunner, standalone_url: str
) -> None:
    """The test server keeps nothing on disk: a warning, so exit 1; --warn-only exits 0."""
    strict = runner.invoke(main, ["doctor", "--redis", standalone_url])
    assert strict.exit_code == 1 and "[WARNING]" in strict.output
    lenient = runner.invoke(main, ["doctor", "--redis", standalone_url, "--warn-only"])
    assert lenient.exit_code == 0


def test_version_and_up_front_name_checks(runner: CliRunner, standalone_url: str) -> None:
    """`janus --version` prints the version; `janus coordinator -d 'bad name'` is refused at
    once (it used to log tracebacks in a loop)."""
    from janus import __version__

    version = runner.invoke(main, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"janus {__version__}"
    bad = runner.invoke(main, ["coordinator", "-d", "bad name", "--redis", standalone_url])
    assert bad.exit_code == 2 and "invalid dependency name 'bad name'" in bad.output


def test_worker_handler_in_the_current_directory_is_importable(tmp_path: Path) -> None:
    """`janus worker --handler mymod:fn` finds mymod.py in the current directory."""
    import subprocess
    import sys

    (tmp_path / "mymod.py").write_text("def fn(job):\n    return None\n")
    code = "from janus.worker import load_handler; print(load_handler('mymod:fn').__name__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "fn", done.stderr


def test_policy_diff_shows_what_apply_would_change_and_writes_nothing(
    runner: CliRunner, tmp_path: Path, standalone_url: str, prefix: str
) -> None:
    """`janus policy diff`: new -> "new", unchanged -> exit 0, a changed rate -> the field
    with old and new value and exit 1; nothing is written either way."""
    from janus.store import connect

    from tests.helpers import unchanged

    args = ["--redis", standalone_url, "--prefix", prefix]
    (tmp_path / "p.yaml").write_text(GOOD)
    client = connect(standalone_url)
    with unchanged(client, prefix):
        new = runner.invoke(main, ["policy", "diff", str(tmp_path), *args])
    assert new.exit_code == 1 and "new: no policy applied yet" in new.output
    assert runner.invoke(main, ["policy", "apply", str(tmp_path), *args]).exit_code == 0
    same = runner.invoke(main, ["policy", "diff", str(tmp_path), *args])
    assert same.exit_code == 0 and same.output.strip() == "pay: unchanged"
    (tmp_path / "p.yaml").write_text(GOOD.replace("rate: 5", "rate: 20"))
    with unchanged(client, prefix):
        diff = runner.invoke(main, ["policy", "diff", str(tmp_path), *args])
    assert diff.exit_code == 1, diff.output
    assert "interval_us: 200000 -> 50000" in diff.output, diff.output
    client.close()


def test_log_format_json_gives_one_object_per_line_without_passwords(
    standalone_url: str, prefix: str, tmp_path: Path
) -> None:
    """`janus --log-format json worker ...`: each log line is a JSON object (ts, level,
    logger, message); a password in a Redis URL is scrubbed from any message."""
    import logging
    import signal
    import subprocess
    import sys
    import time

    from janus.cli import _JsonFormatter, _TextFormatter

    record = logging.LogRecord(
        "janus.x", logging.WARNING, __file__, 1, "lost redis://app:s3cret@db:6379/0", (), None
    )
    for formatter in (_JsonFormatter(), _TextFormatter()):
        text = formatter.format(record)
        assert "s3cret" not in text and "redis://app:***@db:6379/0" in text
    cmd = [sys.executable, "-m", "janus", "--log-format", "json", "worker", "nope"]
    cmd += ["--handler", "examples.handlers:charge", "--group", "g"]
    cmd += ["--redis", standalone_url, "--prefix", prefix]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if line.startswith("{"):
                lines.append(json.loads(line))
                if any("no applied policy" in x["message"] for x in lines):
                    break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    warning = next(x for x in lines if "no applied policy" in x["message"])
    assert warning["level"] == "warning" and warning["logger"] == "janus.worker"
    assert warning["ts"].endswith("Z") and set(warning) == {"ts", "level", "logger", "message"}
