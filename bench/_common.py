"""What the benchmarks in this folder share: the server under test, INFO figures, the report.

Not a benchmark itself. Each ``bench/<name>.py`` is run as a script
(``.venv/bin/python bench/<name>.py``), so Python puts ``bench/`` first on ``sys.path`` and
``import _common`` finds this file; worker processes started with ``spawn`` inherit that path.

* :func:`redis_under_test`: ONE throwaway ``redis-server`` (or a 3-master cluster) through
  :mod:`janus.testing`, never a Redis someone else runs;
* :class:`Admin`: plain connections to every server for INFO / MEMORY, so that they never
  share Janus's pools; :data:`Stats` and the helpers :func:`delta`, :func:`add_delta`,
  :func:`stats_delta`, :func:`add_stats` turn ``INFO commandstats`` readings into deltas;
* :func:`parser_name`: which reply parser (hiredis or not) a client really uses;
* the environment lines every run starts with (:func:`redis_line`, :func:`python_text`,
  :func:`machine_text`, :func:`load_text`);
* :func:`pct` (nearest-rank percentile), :func:`log`, :func:`job_inputs`;
* the result: :class:`Report` (a ``figure value target result`` table, each figure PASS, MISS
  or informational, then ``note:`` lines), :func:`print_grid` for plain tables,
  :func:`finish` (print it all, decide the exit status with :func:`exit_status`),
  :func:`write_json`, :func:`conclude` (finish, then the JSON document of
  :func:`result_doc`) and :func:`bench_main` (the command line).

Every benchmark takes ``[--quick] [--json PATH] [--no-fail]`` (some also ``--cluster``).

Exit status of a benchmark: 0 when every target was met (or ``--no-fail`` was given), 1 when
a target was missed (:data:`EXIT_MISS`; goals and bars are shown PASS/MISS in brackets but
never fail a run, and informational figures have no verdict), 2 when the run itself failed
(:data:`EXIT_FAILED`: an exception, or a problem such as a job that was never started, with
or without ``--no-fail``). Every figure is printed first either way.

JSON beside the text: every run writes its figures to ``--json PATH`` or, without it, to
``bench-results/<benchmark>-<UTC time>.json`` under the current directory
(:func:`default_json_path`; the directory is created) and prints the path. The document
(:func:`result_doc`): ``benchmark``, ``quick``, ``cluster``, ``environment``, ``figures``
(the benchmark's own numbers), ``table`` (every row of the result table: ``section``,
``figure``, ``value``, ``target``, ``result`` PASS / MISS / info, ``binding``; and the
``notes``), ``misses`` (the targets missed), ``problems``, ``no_fail`` and ``exit_status``.
A run that raised writes ``benchmark``, ``error`` and ``exit_status`` 2 to the same path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.cluster import RedisCluster as ClusterClient

from janus.store import AnyRedis
from janus.testing import RedisCluster, RedisServer

#: The 100-byte payload of every benchmark job.
PAYLOAD = bytes(range(100))

#: Exit status when a target was missed (see the module docstring).
EXIT_MISS = 1
#: Exit status when the run itself failed.
EXIT_FAILED = 2
#: Where the JSON goes without ``--json`` (relative to the current directory).
RESULTS_DIR = "bench-results"

# --------------------------------------------------------------------------- small helpers


def pct(values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def log(msg: str) -> None:
    """A progress line, time-stamped, flushed at once."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def job_inputs(n: int) -> tuple[list[str], list[bytes]]:
    """``n`` fresh job ids (uuid4 hex) and ``n`` distinct 100-byte payloads."""
    ids = [uuid.uuid4().hex for _ in range(n)]
    payloads = [i.to_bytes(4, "big") + PAYLOAD[4:] for i in range(n)]
    return ids, payloads


# --------------------------------------------------------------------------- the report


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: informational
    binding: bool = True  # False: a goal or a bar, shown but never failing the run

    @property
    def verdict(self) -> str:
        if self.ok is None:
            return ""
        word = "PASS" if self.ok else "MISS"
        return word if self.binding else f"({word})"

    @property
    def result(self) -> str:
        """``PASS`` / ``MISS`` (a target, or a goal when not ``binding``) or ``info``."""
        if self.ok is None:
            return "info"
        return "PASS" if self.ok else "MISS"

    @property
    def missed(self) -> bool:
        return self.binding and self.ok is False


@dataclass
class Report:
    """The result table: figure, value, target, PASS / MISS (or blank), then the notes."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        figure: str,
        value: str,
        target: str = "",
        ok: bool | None = None,
        *,
        binding: bool = True,
    ) -> None:
        self.rows.append(Row(figure, value, target, ok, binding))

    def misses(self) -> list[Row]:
        """The targets missed (goals and bars excluded)."""
        return [r for r in self.rows if r.missed]

    def as_dict(self) -> dict[str, Any]:
        """The table (every figure, with the section it is in) and the notes, for the JSON."""
        rows: list[dict[str, Any]] = []
        section = ""
        for r in self.rows:
            if r.figure.startswith("-- "):
                section = r.figure.removeprefix("-- ")
                continue
            rows.append(
                {
                    "section": section,
                    "figure": r.figure,
                    "value": r.value,
                    "target": r.target,
                    "result": r.result,
                    "binding": r.binding,
                }
            )
        return {"rows": rows, "notes": list(self.notes)}

    def section(self, title: str) -> None:
        self.rows.append(Row(f"-- {title}", ""))

    def print(self) -> None:
        w1 = max(len(r.figure) for r in self.rows if not r.figure.startswith("-- "))
        w2 = max(len(r.value) for r in self.rows)
        w3 = max([len("target")] + [len(r.target) for r in self.rows])
        head = f"{'figure':<{w1}}  {'value':>{w2}}  {'target':<{w3}}  result"
        print(head)
        print("-" * len(head))
        for r in self.rows:
            if r.figure.startswith("-- "):
                print(r.figure)
                continue
            print(f"{r.figure:<{w1}}  {r.value:>{w2}}  {r.target:<{w3}}  {r.verdict}")
        for note in self.notes:
            print(f"note: {note}")


def print_grid(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A plain table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        return "  ".join(
            [first] + [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
        )

    print(title)
    print(line(header))
    print("-" * len(line(header)))
    for r in rows:
        print(line(r))


def print_environment(environment: list[str]) -> None:
    """The environment lines again, between blank lines, ahead of the results."""
    print()
    for line in environment:
        print(line)
    print()


def exit_status(report: Report, problems: list[str], *, fail_on_miss: bool = True) -> int:
    """The exit status (see the module docstring): :data:`EXIT_FAILED` when the run had a
    problem, else :data:`EXIT_MISS` when a target was missed and ``fail_on_miss`` (False:
    ``--no-fail``), else 0."""
    if problems:
        return EXIT_FAILED
    if report.misses() and fail_on_miss:
        return EXIT_MISS
    return 0


def finish(report: Report, problems: list[str], *, fail_on_miss: bool = True) -> int:
    """Print the result table, then any failure of the run and every target missed; returns
    the exit status of :func:`exit_status` (``fail_on_miss`` False: ``--no-fail``)."""
    report.print()
    misses = report.misses()
    if problems or misses:
        print()
    for problem in problems:
        print(f"RUN FAILED: {problem}")
    for row in misses:
        print(f"TARGET MISSED: {row.figure}: {row.value} (target {row.target})")
    status = exit_status(report, problems, fail_on_miss=fail_on_miss)
    if status == EXIT_MISS:
        print("(exit status 1: a target was missed; --no-fail exits 0)")
    elif misses and not problems:
        print("(--no-fail: exit status 0 although a target was missed)")
    return status


def default_json_path(name: str, when: float | None = None) -> str:
    """``bench-results/<name>-<UTC time>.json`` (``when``: epoch seconds, default now): where
    a benchmark writes its figures when ``--json`` is not given."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    return os.path.join(RESULTS_DIR, f"{name}-{stamp}.json")


def write_json(path: str, doc: dict[str, Any]) -> None:
    """Write ``doc`` as indented JSON to ``path`` (creating its directory) and say so."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, default=str)
        f.write("\n")
    print(f"figures written to {path}")


def result_doc(
    name: str,
    report: Report,
    problems: list[str],
    status: int,
    *,
    no_fail: bool,
    quick: bool,
    environment: list[str],
    figures: dict[str, Any] | None = None,
    cluster: bool = False,
) -> dict[str, Any]:
    """The JSON document of a run (its keys: see the module docstring)."""
    return {
        "benchmark": name,
        "quick": quick,
        "cluster": cluster,
        "environment": list(environment),
        "figures": figures or {},
        "table": report.as_dict(),
        "misses": [
            {"figure": r.figure, "value": r.value, "target": r.target} for r in report.misses()
        ],
        "problems": list(problems),
        "no_fail": no_fail,
        "exit_status": status,
    }


def conclude(
    name: str,
    report: Report,
    problems: list[str],
    *,
    json_path: str | None,
    no_fail: bool,
    quick: bool,
    environment: list[str],
    figures: dict[str, Any] | None = None,
    cluster: bool = False,
) -> int:
    """The end of every benchmark: :func:`finish` (table, failures, misses, exit status),
    then the JSON document of :func:`result_doc` to ``json_path`` (None:
    :func:`default_json_path`); returns the exit status."""
    status = finish(report, problems, fail_on_miss=not no_fail)
    doc = result_doc(
        name,
        report,
        problems,
        status,
        no_fail=no_fail,
        quick=quick,
        environment=environment,
        figures=figures,
        cluster=cluster,
    )
    write_json(json_path or default_json_path(name), doc)
    return status


def bench_main(
    name: str,
    doc: str | None,
    argv: list[str] | None,
    run: Callable[[argparse.Namespace], int],
    *,
    quick_help: str,
    cluster: bool = False,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The command line of benchmark ``name``: ``[--cluster] [--quick] [--json PATH]
    [--no-fail]`` (and whatever ``add_arguments`` adds), then ``run(args)``.

    The description is the first paragraph of ``doc``. ``args.json`` is never None: without
    ``--json`` it is :func:`default_json_path` (the time the run started). An exception from
    the run is printed, written to that path as ``{"benchmark", "error", "exit_status": 2}``
    and exits :data:`EXIT_FAILED`.
    """
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n", 1)[0])
    if cluster:
        parser.add_argument("--cluster", action="store_true", help="3-master Redis Cluster")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--json",
        metavar="PATH",
        help=f"write the figures as JSON here (default: {RESULTS_DIR}/{name}-<UTC time>.json)",
    )
    parser.add_argument(
        "--no-fail",
        action="store_true",
        help="exit 0 even when a target is missed (a failed run still exits 2)",
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if args.json is None:
        args.json = default_json_path(name)
    try:
        return run(args)
    except Exception:
        error = traceback.format_exc()
        print(error, end="", file=sys.stderr, flush=True)
        try:
            write_json(args.json, {"benchmark": name, "error": error, "exit_status": EXIT_FAILED})
        except OSError as exc:
            print(f"could not write {args.json}: {exc}", file=sys.stderr)
        return EXIT_FAILED


# --------------------------------------------------------------------------- Redis plumbing


@contextmanager
def redis_under_test(cluster: bool = False) -> Iterator[tuple[str, dict[int, int]]]:
    """Start a throwaway server (or 3-master cluster): the URL, and port -> pid of each."""
    if cluster:
        with RedisCluster.start(masters=3) as rc:
            yield rc.url, {node.port: node.pid for node in rc.nodes}
    else:
        with RedisServer.start() as srv:
            yield srv.url, {srv.port: srv.pid}


#: INFO commandstats: command -> (calls, usec).
Stats = dict[str, tuple[int, int]]


class Admin:
    """Plain connections to every server (INFO / MEMORY only), so they never share Janus's
    pools."""

    def __init__(self, ports: list[int]) -> None:
        self.conns = [redis.Redis(host="127.0.0.1", port=p) for p in ports]

    def commandstats(self) -> Stats:
        """command -> (calls, usec), summed over every server."""
        total: Stats = {}
        for conn in self.conns:
            stats: dict[str, Any] = conn.info("commandstats")  # type: ignore[assignment]
            for key, value in stats.items():
                name = key.removeprefix("cmdstat_")
                calls, usec = total.get(name, (0, 0))
                total[name] = (calls + int(value["calls"]), usec + int(value["usec"]))
        return total

    def errors(self) -> dict[str, int]:
        """command -> failed_calls + rejected_calls (INFO commandstats), summed over every
        server: a load generator that ignores replies is checked with this."""
        total: dict[str, int] = {}
        for conn in self.conns:
            stats: dict[str, Any] = conn.info("commandstats")  # type: ignore[assignment]
            for key, value in stats.items():
                name = key.removeprefix("cmdstat_")
                bad = int(value.get("failed_calls", 0)) + int(value.get("rejected_calls", 0))
                total[name] = total.get(name, 0) + bad
        return total

    def cpu_s(self) -> float:
        """used_cpu_user + used_cpu_sys (whole process) of every server, summed, in seconds."""
        total = 0.0
        for conn in self.conns:
            info: dict[str, Any] = conn.info("cpu")  # type: ignore[assignment]
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return total

    def versions(self) -> list[str]:
        """The distinct redis-server versions, sorted."""
        return sorted({str(conn.info("server")["redis_version"]) for conn in self.conns})

    def used_memory(self) -> int:
        """INFO memory used_memory of the first (in practice: the only) server."""
        return int(self.conns[0].info("memory")["used_memory"])  # type: ignore[index]

    def memory_usage(self, key: str) -> int:
        """MEMORY USAGE of ``key`` (every element counted) on the first server."""
        return int(self.conns[0].memory_usage(key, samples=0) or 0)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


def delta(after: Stats, before: Stats, name: str) -> tuple[int, int]:
    """(calls, usec) of command ``name`` between two readings."""
    a, b = after.get(name, (0, 0)), before.get(name, (0, 0))
    return a[0] - b[0], a[1] - b[1]


def add_delta(into: Stats, after: Stats, before: Stats) -> None:
    """Add every command's delta between two readings to ``into`` (zeros included)."""
    for name in set(after) | set(before):
        calls, usec = delta(after, before, name)
        c0, u0 = into.get(name, (0, 0))
        into[name] = (c0 + calls, u0 + usec)


def stats_delta(after: Stats, before: Stats) -> Stats:
    """The commands called between two readings, with their deltas; INFO itself left out."""
    out: Stats = {}
    for name in set(after) | set(before):
        calls, usec = delta(after, before, name)
        if calls:
            out[name] = (calls, usec)
    out.pop("info", None)
    return out


def add_stats(into: Stats, more: Stats) -> None:
    """Add the deltas ``more`` to ``into``."""
    for name, (calls, usec) in more.items():
        c0, u0 = into.get(name, (0, 0))
        into[name] = (c0 + calls, u0 + usec)


def parser_name(client: AnyRedis) -> str:
    """Class name of the reply parser on a live connection of ``client``."""
    if isinstance(client, ClusterClient):
        node = client.get_default_node()
        assert node is not None and node.redis_connection is not None
        pool = node.redis_connection.connection_pool
    else:
        pool = client.connection_pool
    conn = pool.get_connection()
    try:
        inner = getattr(conn, "_conn", conn)
        return type(inner._parser).__name__
    finally:
        pool.release(conn)


# --------------------------------------------------------------------------- environment


def redis_line(admin: Admin, url: str, cluster: bool = False) -> str:
    """``redis-server <versions>, <standalone | 3-master cluster> (janus.testing, ...)``."""
    kind = "3-master cluster" if cluster else "standalone"
    return (
        f"redis-server {', '.join(admin.versions())}, {kind} (janus.testing, persistence off) "
        f"at {url}"
    )


def python_text() -> str:
    """``python <version>, redis-py <version>``."""
    return f"python {platform.python_version()}, redis-py {redis.__version__}"


def machine_text(usable: bool = True) -> str:
    """``nproc N (usable U), <arch> <os> <release>``; ``usable``: CPUs this process may use."""
    cpus = f"nproc {os.cpu_count()}"
    if usable:
        cpus += f" (usable {len(os.sched_getaffinity(0))})"
    return f"{cpus}, {platform.machine()} {platform.system()} {platform.release()}"


def load_text() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
