"""docs/protocol.md is the interface for workers in other languages: its redis-cli
walkthrough runs verbatim against a real server, and every function, key count and argument
of the library is on the page."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from janus import scripts
from janus.cli import main
from janus.testing import RedisServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
POLICY = """\
dependencies:
  pay:
    rate: 10
    burst: 5
    lease: 30s
"""
# The batched items (6 per job, 3 per lease, ...) are described one by one on the page.
BATCHES = {"jobs", "leases", "outcomes", "entries", "pairs"}


def _walkthrough() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "protocol.md has exactly one sh walkthrough"
    return blocks[0]


def _section(name: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {scripts.function_name(name)}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_the_redis_cli_walkthrough_runs_one_job_through(tmp_path: Path) -> None:
    assert shutil.which("redis-cli"), "redis-cli comes with Debian's redis-server (redis-tools)"
    with RedisServer.start() as server:
        runner = CliRunner()
        policy_file = tmp_path / "pay.yaml"
        policy_file.write_text(POLICY)
        applied = runner.invoke(main, ["policy", "apply", str(policy_file), "--redis", server.url])
        assert applied.exit_code == 0, applied.output
        loaded = runner.invoke(main, ["library", "load", "--redis", server.url])
        assert loaded.exit_code == 0, loaded.output
        assert re.search(r": (present|loaded)$", loaded.output.strip())

        script = "set -euo pipefail\n" + _walkthrough()
        done = subprocess.run(
            ["bash", "-c", script],
            env={"PORT": str(server.port), "PATH": "/usr/bin:/bin:/usr/local/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        # submit: 7 lines, ready; fetch: 6 header + 7 job lines; heartbeat 3; report 4; HGET 1
        assert lines[0] == "ready"
        fetch = lines[7:20]
        assert fetch[0] == "ok" and fetch[5] == "1"
        assert fetch[6:10] == ["order-1", "t1", "1", "1"] and fetch[12] == "hello"
        token = fetch[10]
        assert re.fullmatch(r"\d+-\d+", token)
        assert lines[20:23][0] == "1"
        assert lines[23:27][:3] == ["1", "", "completed"]
        assert lines[-1] == "completed"
        record = redis.Redis(port=server.port).hgetall("janus:{pay}:j:order-1")
        assert record[b"status"] == b"completed" and record[b"attempt"] == b"1"


def test_every_function_of_the_library_is_on_the_page() -> None:
    text = DOC.read_text()
    assert f"`{scripts.LIBRARY}`" in text
    for name in [*scripts.SPECS, "info"]:
        assert f"`{scripts.function_name(name)}`" in text, name


@pytest.mark.parametrize("name", ["submit", "fetch", "heartbeat", "report", "step"])
def test_each_call_lists_its_keys_and_arguments_as_the_library_reads_them(name: str) -> None:
    spec = scripts.SPECS[name]
    section = _section(name)
    assert f"KEYS ({len(spec.keys)})" in section
    keys_line = section[section.index("KEYS (") : section.index("- ARGV")]
    named = re.findall(r"`P:\{D\}:([a-z]+)", keys_line)
    expected = [{"fetch_log": "f"}.get(k, k) for k in spec.keys]
    assert named == expected
    for arg in spec.argv:
        if arg not in BATCHES:
            assert f"`{arg}`" in section, f"{name}: ARGV {arg}"


def test_the_walkthrough_calls_match_the_key_counts() -> None:
    for name, numkeys in re.findall(r"FCALL (janus_p\d+_\w+) (\d+)", _walkthrough()):
        spec = scripts.SPECS[name.removeprefix(f"{scripts.LIBRARY}_")]
        assert int(numkeys) == len(spec.keys), name
