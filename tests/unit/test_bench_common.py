"""bench/_common.py: the exit status of a benchmark (0 met, 1 target missed, 2 run failed;
``--no-fail``) and the JSON written beside its text (default path, contents). Pure: no Redis."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load_common() -> ModuleType:
    """``import _common`` the way the benchmarks do (``bench/`` on ``sys.path``)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("_common")
    finally:
        sys.path.remove(str(BENCH))


common = _load_common()


def _report(*rows: tuple[str, bool | None, bool]) -> Any:
    """A Report with one row per (figure, ok, binding), in a section, and one note."""
    report = common.Report()
    report.section("phase")
    for figure, ok, binding in rows:
        report.add(figure, "1.0", "<= 2" if ok is not None else "", ok, binding=binding)
    report.notes.append("a note")
    return report


def test_exit_status_follows_targets_goals_and_problems() -> None:
    met = _report(("a", True, True), ("b", None, True))
    missed = _report(("a", True, True), ("b", False, True))
    goal_missed = _report(("a", True, True), ("g", False, False))
    info_only = _report(("i", None, True))
    status = common.exit_status
    assert status(met, []) == 0
    assert status(missed, []) == common.EXIT_MISS == 1
    assert status(missed, [], fail_on_miss=False) == 0  # --no-fail
    assert status(goal_missed, []) == 0  # a goal or bar never fails the run
    assert status(info_only, []) == 0
    assert status(met, ["a job was never started"]) == common.EXIT_FAILED == 2
    assert status(missed, ["boom"], fail_on_miss=False) == 2  # --no-fail keeps 2


def test_finish_prints_the_miss_and_returns_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    missed = _report(("a", False, True))
    assert common.finish(missed, []) == 1
    out = capsys.readouterr().out
    assert "TARGET MISSED: a: 1.0 (target <= 2)" in out
    assert "exit status 1" in out
    assert common.finish(missed, [], fail_on_miss=False) == 0
    assert "--no-fail: exit status 0" in capsys.readouterr().out


def test_default_json_path_is_bench_results_name_utc_time() -> None:
    assert common.default_json_path("fairness", when=0) == str(
        Path("bench-results") / "fairness-19700101T000000Z.json"
    )
    assert common.default_json_path("worker", when=86_400 + 3_661) == str(
        Path("bench-results") / "worker-19700102T010101Z.json"
    )


@pytest.mark.parametrize(("no_fail", "status"), [(False, 1), (True, 0)])
def test_conclude_writes_every_row_notes_and_status_to_the_default_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_fail: bool, status: int
) -> None:
    monkeypatch.chdir(tmp_path)
    report = _report(("t", False, True), ("g", True, False), ("i", None, True))
    got = common.conclude(
        "demo",
        report,
        [],
        json_path=None,
        no_fail=no_fail,
        quick=True,
        environment=["env line"],
        figures={"x": 1.5},
    )
    assert got == status
    (path,) = (tmp_path / "bench-results").glob("demo-*.json")
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "demo"
    assert doc["exit_status"] == status
    assert doc["no_fail"] is no_fail
    assert doc["quick"] is True and doc["cluster"] is False
    assert doc["environment"] == ["env line"]
    assert doc["figures"] == {"x": 1.5}
    rows = {r["figure"]: r for r in doc["table"]["rows"]}
    assert set(rows) == {"t", "g", "i"}  # the section header is not a figure
    assert (rows["t"]["result"], rows["t"]["binding"]) == ("MISS", True)
    assert (rows["g"]["result"], rows["g"]["binding"]) == ("PASS", False)
    assert rows["i"]["result"] == "info"
    assert all(r["section"] == "phase" for r in rows.values())
    assert doc["table"]["notes"] == ["a note"]
    assert doc["misses"] == [{"figure": "t", "value": "1.0", "target": "<= 2"}]


def test_bench_main_fills_the_default_path_and_records_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    seen: list[argparse.Namespace] = []

    def ok(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    assert common.bench_main("demo", "Doc.", [], ok, quick_help="q") == 0
    assert seen[0].json.startswith(str(Path("bench-results") / "demo-"))
    assert seen[0].no_fail is False
    given = str(tmp_path / "out" / "x.json")
    argv = ["--json", given, "--no-fail"]
    assert common.bench_main("demo", "Doc.", argv, ok, quick_help="q") == 0
    assert seen[1].json == given and seen[1].no_fail is True

    def boom(args: argparse.Namespace) -> int:
        raise RuntimeError("the server went away")

    assert common.bench_main("demo", "Doc.", ["--json", given], boom, quick_help="q") == 2
    doc = json.loads(Path(given).read_text())
    assert doc["exit_status"] == 2 and "the server went away" in doc["error"]
