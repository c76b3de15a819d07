"""`janus bench run`: every shipped scenario runs, its report renders (the PNGs open, the
JSON matches docs/bench-report.schema.json) and the guarantees hold; a violated threshold
exits 1 and says which; bad scenarios are refused; a given Redis (standalone or cluster) is
used with a fresh prefix and nothing else of it is touched.

The shipped scenarios run here at a quarter of their times (--scale 0.25) to keep CI short; each
runs in full in well under 60 s (see the README), which their durations bound statically
below. Latency thresholds depend on the machine, so the test checks the guarantees
(overshoot, lost, ran twice, everything done) rather than the exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from janus.loadtest.scenario import load_scenario

from tests.helpers import keys_under, raw_client

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((REPO / "bench" / "scenarios").glob("*.yaml"))
SCHEMA = json.loads((REPO / "docs" / "bench-report.schema.json").read_text())
GUARANTEES = {"overshoot", "lost", "double_runs", "min_completed_ratio"}
PLOTS = {"started_cost.png", "shares.png", "latency.png", "attempts.png", "queue.png", "redis.png"}


def _bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "janus", "bench", "run", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _check_report(out: Path) -> dict[str, object]:
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    import matplotlib.image

    for name in PLOTS:
        image = matplotlib.image.imread(out / name)  # a real PNG, decoded
        assert image.shape[0] > 100 and image.shape[1] > 100, name
    md = (out / "report.md").read_text()
    assert all(f"]({name})" in md for name in PLOTS)
    return report


def test_the_five_scenarios_are_shipped_and_bounded_to_a_minute() -> None:
    names = {p.stem for p in SCENARIOS}
    assert names == {"steady", "flash-sale", "noisy-tenant", "upstream-outage", "fleet-restart"}
    for path in SCENARIOS:
        scenario, _ = load_scenario(path)
        # The run stops at duration + drain; start-up (3 s) and reading the truth back add
        # a few seconds.
        assert scenario.duration + scenario.drain <= 50, path.name
        names = {n for n, v in scenario.thresholds.model_dump().items() if v is not None}
        assert {"overshoot", "lost", "double_runs"} <= names, path.name  # the README's


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_each_shipped_scenario_runs_and_its_report_renders(path: Path, tmp_path: Path) -> None:
    result = _bench(str(path), "--scale", "0.25", "--out", str(tmp_path), "--no-fail")
    assert result.returncode == 0, result.stdout + result.stderr
    report = _check_report(tmp_path)
    verdicts = {t["name"]: t for t in report["thresholds"]}  # type: ignore[attr-defined]
    for name in GUARANTEES & set(verdicts):
        assert verdicts[name]["ok"], (name, verdicts[name], result.stdout)
    totals = report["totals"]
    assert totals["accepted"] > 100 and totals["lost"] == 0  # type: ignore[index]
    assert "report: " in result.stdout


def test_a_violated_threshold_exits_1_and_says_which(tmp_path: Path) -> None:
    """Every call fails, with one attempt allowed: nothing completes, so a scenario that asks
    for everything done fails that threshold, and only that one."""
    scenario = tmp_path / "broken.yaml"
    scenario.write_text(
        """
name: broken-upstream
duration: 2s
drain: 2s
policy:
  dependencies:
    api: {rate: 100, burst: 10, max_wait: 10s, lease: 5s, retry: {max_attempts: 1}}
producers:
  arrivals: [{dependency: api, scope: t, rate: 30}]
workers:
  latency: {constant: 1ms}
  failures: [{kind: http_400, rate: 1.0}]
thresholds: {min_completed_ratio: 1.0}
"""
    )
    out = tmp_path / "out"
    result = _bench(str(scenario), "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  min_completed_ratio: 0.0 (bound >= 1)" in result.stdout
    assert "thresholds failed: min_completed_ratio" in result.stderr
    report = _check_report(out)
    assert report["passed"] is False
    failed = [t["name"] for t in report["thresholds"] if not t["ok"]]  # type: ignore[attr-defined]
    assert failed == ["min_completed_ratio"]
    dead = report["dependencies"]["api"]["dead"]  # type: ignore[index]
    assert dead == {"attempts_exhausted": report["totals"]["accepted"]}  # type: ignore[index]
    assert _bench(str(scenario), "--out", str(out), "--no-fail").returncode == 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("name: x\nduration: 1s\n", "producers: Field required"),
        ("name: x\nduration: 1s\nbogus: 1\n", "bogus: Extra inputs are not permitted"),
        ("- 1\n", "must be a mapping"),
        (
            "name: x\nduration: 2s\ndrain: 1s\npolicy: {dependencies: {api: {rate: 1, burst: 1}}}\n"
            "producers: {arrivals: [{dependency: nope, scope: t, rate: 1}]}\nworkers: {}\n",
            "dependencies ['nope'] have no policy",
        ),
        (
            "name: x\nduration: 2s\ndrain: 1s\npolicy: {dependencies: {api: {rate: 1, burst: 1}}}\n"
            "producers: {arrivals: [{dependency: api, scope: t, rate: 1}]}\nworkers: {}\n"
            "faults: [{kind: outage, at: 2s, for: 5s}]\n",
            "ends after the run",
        ),
        (
            "name: x\nduration: 2s\npolicy: {dependencies: {api: {rate: 1, burst: 1}}}\n"
            "producers: {arrivals: [{dependency: api, scope: t, rate: 1}]}\n"
            "workers: {latency: {median: 5ms, p99: 1ms}}\n",
            "p99 must be >= its median",
        ),
    ],
)
def test_a_bad_scenario_is_refused_before_anything_runs(
    body: str, error: str, tmp_path: Path
) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(body)
    result = _bench(str(scenario), "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert error in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_given_redis_gets_a_fresh_prefix_and_nothing_else_changes(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Against a Redis the SRE names (standalone and cluster): the run works under its own
    prefix; keys of another deployment are untouched."""
    client = raw_client(redis_url)
    client.set(f"{prefix}:{{other}}:k", "v")
    result = _bench(
        str(REPO / "bench" / "scenarios" / "steady.yaml"),
        "--redis", redis_url, "--scale", "0.3", "--out", str(tmp_path), "--no-fail",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = _check_report(tmp_path)
    assert report["redis"]["prefix"].startswith("bench-")  # type: ignore[index]
    assert report["totals"]["lost"] == 0  # type: ignore[index]
    assert keys_under(client, prefix) == [f"{prefix}:{{other}}:k".encode()]
    assert client.get(f"{prefix}:{{other}}:k") == b"v"


def test_compare_runs_the_same_arrivals_through_the_naive_peer(tmp_path: Path) -> None:
    """--compare: the same arrivals through limits + naive retries, side by side: the naive
    workers make more attempts per job inside the outage than Janus does."""
    path = REPO / "bench" / "scenarios" / "upstream-outage.yaml"
    result = _bench(str(path), "--scale", "0.25", "--compare", "--out", str(tmp_path), "--no-fail")
    assert result.returncode == 0, result.stdout + result.stderr
    report = _check_report(tmp_path)
    compare = report["compare"]
    assert compare["peer"] == "limits + naive retries"  # type: ignore[index]
    janus_amp = report["totals"]["fault_amplification"]  # type: ignore[index]
    peer_amp = compare["totals"]["fault_amplification"]  # type: ignore[index]
    assert peer_amp > janus_amp, (peer_amp, janus_amp)
    assert compare["totals"]["intended"] == report["totals"]["intended"]  # type: ignore[index]
    assert "## Compared with limits + naive retries" in (tmp_path / "report.md").read_text()
