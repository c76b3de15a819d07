"""The README's first command: `janus demo` runs against its own throwaway Redis, checks
the limits from the recorded start times and says so."""

from __future__ import annotations

import subprocess
import sys


def test_the_demo_runs_and_finds_the_limits_held() -> None:
    cmd = [sys.executable, "-m", "janus", "demo", "--seconds", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "limits held, nothing lost" in done.stdout, done.stdout[-2000:]
