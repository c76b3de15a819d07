"""The ``janus`` command line: policies, the coordinator, status, doctor, the demo."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import BinaryIO
from wsgiref.simple_server import WSGIServer

import click

from janus import __version__, doctor
from janus.aio import AsyncJanus, AsyncWorker
from janus.client import Janus
from janus.coordinator import Coordinator
from janus.decisions import DeadLetter, Event
from janus.errors import JanusError, PolicyError
from janus.keys import check_dependency
from janus.policy import PolicySet, describe, load_policies, parse_duration_ms
from janus.urls import redact
from janus.worker import Handler, Worker, WorkerStats, is_async_handler, load_handler
from janus.worker_metrics import WorkerMetrics

DEFAULT_URL = "redis://127.0.0.1:6379/0"

redis_option = click.option(
    "--redis",
    "url",
    envvar="JANUS_REDIS_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Redis or Redis Cluster URL (env: JANUS_REDIS_URL).",
)
prefix_option = click.option(
    "--prefix",
    envvar="JANUS_PREFIX",
    default="janus",
    show_default=True,
    help="Key prefix, to run several independent Janus deployments in one Redis.",
)


def _load(paths: tuple[str, ...]) -> PolicySet:
    try:
        return load_policies(list(paths))
    except PolicyError as exc:
        for issue in exc.issues:
            click.echo(f"error: {issue}", err=True)
        click.echo(f"{len(exc.issues)} error(s); nothing applied.", err=True)
        sys.exit(1)


_PASSWORD_IN_URL = re.compile(r"(rediss?://[^:/@\s]*:)[^@\s]+@")


def _scrub(text: str) -> str:
    """A password in a Redis URL never reaches a log line."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return _scrub(super().format(record))


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, message[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=timezone.utc)
        line: dict[str, object] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _scrub(record.getMessage()),
        }
        if record.exc_info:
            line["exc"] = _scrub(self.formatException(record.exc_info))
        event = getattr(record, "janus_event", None)  # a coordinator's event (its fields)
        if isinstance(event, dict):
            line["event"] = event
        return json.dumps(line, ensure_ascii=False)


class _Group(click.Group):
    """Turns Janus errors (Redis down mid-command, bad input) into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except JanusError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, "--version", prog_name="janus", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="JANUS_LOG_FORMAT",
    help="Log lines as text or as one JSON object per line (ts, level, logger, message).",
)
def main(verbose: int, log_format: str) -> None:
    """Janus: a Redis-native distributed rate limiter and retry coordinator.

    Exit codes: 0 success; 1 a check found problems (policy check, doctor) or a job was not
    found; 2 bad usage, bad input, or Redis refused/unreachable; 3 a submit was rejected.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    # No force: a host that configured logging already (an embedding app, pytest) keeps it.
    logging.basicConfig(level=level, handlers=[handler])


@main.group()
def policy() -> None:
    """Validate and apply policy files."""


@policy.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def policy_check(paths: tuple[str, ...]) -> None:
    """Validate policy files (or directories of *.yaml); print every error; exit 1 on any."""
    policies = _load(paths)
    for name in sorted(policies.dependencies):
        click.echo(f"ok: {name} ({policies.sources[name]})")


@policy.command("apply")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@redis_option
@prefix_option
def policy_apply(paths: tuple[str, ...], url: str, prefix: str) -> None:
    """Validate, then write each dependency's policy into Redis atomically, with a version."""
    policies = _load(paths)
    with _client(url, prefix) as jn:
        for name, (version, changed) in jn.apply_policies(policies).items():
            note = "applied" if changed else "unchanged"
            click.echo(f"{name}: version {version} ({note})")


@policy.command("diff")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@redis_option
@prefix_option
def policy_diff(paths: tuple[str, ...], url: str, prefix: str) -> None:
    """Show what `policy apply` would change in Redis, field by field (writes nothing).
    Exits 0 when nothing would change, 1 when something would."""
    policies = _load(paths)
    with _client(url, prefix) as jn:
        diffs = jn.policy_diff(policies)
        applied = set(jn.store.dependencies())
    changed = False
    for name, lines in diffs.items():
        if not lines:
            click.echo(f"{name}: unchanged")
            continue
        changed = True
        click.echo(f"{name}:")
        for line in lines:
            click.echo(f"  {line}")
    for name in sorted(applied - set(diffs)):
        click.echo(f"{name}: applied, not in these files (apply leaves it as it is)")
    sys.exit(1 if changed else 0)


@policy.command("delete")
@click.argument("dependency")
@click.option(
    "--drop",
    is_flag=True,
    help="Move the waiting work to the dead letters (reason dependency_deleted) instead of "
    "letting it drain.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until nothing waits and nothing runs, then remove the policy.",
)
@click.option(
    "--timeout",
    default="10m",
    show_default=True,
    help="With --wait: give up after this long (10m, 1h); the deletion stays marked.",
)
@redis_option
@prefix_option
def policy_delete(
    dependency: str, drop: bool, wait: bool, timeout: str, url: str, prefix: str
) -> None:
    """Delete a dependency's policy safely: new submits are refused at once
    (dependency_deleted); the work already admitted drains under the same limits (workers
    and a coordinator must run), or --drop dead-letters what waits; the policy goes when
    nothing waits and nothing runs. Exit 0 when deleted, 1 when still draining. Applying the
    policy again cancels the deletion."""
    check_dependency(dependency)
    try:
        timeout_s = parse_duration_ms(timeout) / 1000
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from None
    deadline = time.monotonic() + timeout_s
    with _client(url, prefix) as jn:
        if jn.status(dependency).policy_version is None:
            click.echo(f"error: {dependency!r} has no applied policy", err=True)
            sys.exit(1)
        dropped, shown, warned = 0, None, False
        while True:
            progress = jn.delete_policy(dependency, drop=drop)
            dropped += progress.dropped
            if progress.deleted:
                extra = f"; {dropped} waiting job(s) dead-lettered" if dropped else ""
                click.echo(f"{dependency}: policy deleted{extra}")
                return
            now = (progress.waiting, progress.running)
            if now != shown:
                click.echo(
                    f"{dependency}: deleting: {progress.waiting} waiting, {progress.running} "
                    f"running; new submits are refused"
                    + (f"; {dropped} dead-lettered" if dropped else "")
                )
                shown = now
            if not warned and jn.status(dependency).held_until_ms is not None:
                warned = True
                click.echo(
                    f"{dependency}: paused by hand: nothing is released, so nothing drains "
                    f"(`janus resume {dependency}`, or --drop)",
                    err=True,
                )
            if not wait or time.monotonic() >= deadline:
                click.echo(
                    f"{dependency}: still draining; run `janus policy delete {dependency}` "
                    "again to finish (applying the policy cancels the deletion)",
                    err=True,
                )
                sys.exit(1)
            time.sleep(0.5)


@policy.command("show")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def policy_show(paths: tuple[str, ...]) -> None:
    """Print the effective (resolved) policy of each dependency as JSON."""
    policies = _load(paths)
    out = {name: describe(p) for name, p in sorted(policies.dependencies.items())}
    click.echo(json.dumps(out, indent=2, sort_keys=True))


@main.command()
@redis_option
@prefix_option
@click.option(
    "--dependency",
    "-d",
    "dependencies",
    multiple=True,
    help="Only these dependencies (default: every applied one).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Also serve Prometheus metrics (as `janus exporter`) on this port.",
)
@click.option("--metrics-addr", default="0.0.0.0", show_default=True, help="Metrics address.")
def coordinator(
    url: str,
    prefix: str,
    dependencies: tuple[str, ...],
    metrics_port: int | None,
    metrics_addr: str,
) -> None:
    """Step every dependency on time (due work, expired leases, waking idle workers) until
    SIGINT/SIGTERM."""
    for dep in dependencies:
        check_dependency(dep)  # refuse a bad name now, not in a loop of errors later
    logging.getLogger("janus").setLevel(logging.INFO)
    with _client(url, prefix) as jn:
        coord = Coordinator(jn.store, dependencies=list(dependencies) or None)
        if metrics_port is not None:
            _serve_metrics(url, prefix, metrics_port, metrics_addr, list(dependencies) or None)

        def _stop(signum: int, frame: FrameType | None) -> None:
            coord.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        click.echo(f"janus coordinator: {redact(url)} prefix={prefix}", err=True)
        coord.run()
        click.echo(
            f"stopped after {coord.steps} steps ({coord.moved} jobs came due, "
            f"{coord.reclaimed} leases reclaimed)",
            err=True,
        )


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=9108, show_default=True)
@click.option("--addr", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--dependency",
    "-d",
    "dependencies",
    multiple=True,
    help="Only these dependencies (default: every applied one).",
)
@click.option(
    "--top-scopes",
    type=click.IntRange(0, 100),
    default=0,
    show_default=True,
    help="Also export janus_scope_waiting_jobs/_cost{scope} for each dependency's N scopes "
    "with the most waiting work (opt-in: at most N series per dependency).",
)
@redis_option
@prefix_option
def exporter(
    port: int, addr: str, dependencies: tuple[str, ...], top_scopes: int, url: str, prefix: str
) -> None:
    """Serve Prometheus metrics on /metrics until SIGINT/SIGTERM: fleet-wide counters kept
    in Redis (submits, rejections, starts, outcomes, retries, dead letters, lease expiries,
    circuit transitions) and every dependency's status (see janus.metrics)."""
    for dep in dependencies:
        check_dependency(dep)
    logging.getLogger("janus").setLevel(logging.INFO)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = _serve_metrics(url, prefix, port, addr, list(dependencies) or None, top_scopes)
    click.echo(
        f"janus exporter: http://{_hostport(addr, server.server_port)}/metrics for {redact(url)} "
        f"prefix={prefix}",
        err=True,
    )
    while not stop.wait(1.0):
        pass
    server.shutdown()
    click.echo("stopped", err=True)


@main.command()
@redis_option
@prefix_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback needs --auth-token.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--read-only", is_flag=True, help="Show everything, refuse every action.")
@click.option(
    "--auth-token",
    envvar="JANUS_DASHBOARD_TOKEN",
    default=None,
    help="Require this token (>= 16 characters; env: JANUS_DASHBOARD_TOKEN): a bearer "
    "header, or the sign-in page's cookie.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Also answer to this Host name (a reverse proxy's; on loopback the default is "
    "127.0.0.1, localhost, ::1 only, against DNS rebinding).",
)
def dashboard(
    url: str,
    prefix: str,
    host: str,
    port: int,
    read_only: bool,
    auth_token: str | None,
    allowed_hosts: tuple[str, ...],
) -> None:
    """Serve the web dashboard until SIGINT/SIGTERM: every dependency, its scopes, chart,
    events and dead letters, jobs by id; pause/resume and replay/purge, each confirmed,
    CSRF-protected, and refused with --read-only."""
    try:
        from janus.dashboard import security
        from janus.dashboard.app import DashboardConfig, create_app, serve
    except ImportError as exc:
        click.echo(
            f"error: {exc.name} is missing; install the dashboard extra: "
            "pip install 'janus-limiter[dashboard]'",
            err=True,
        )
        sys.exit(2)
    problem = security.bind_problem(host, auth_token or None)
    if problem is not None:
        click.echo(f"error: {problem}", err=True)
        sys.exit(2)
    if security.is_loopback(host):
        # (the address it listens on too: --host 127.0.0.2 answers to http://127.0.0.2/)
        hosts: tuple[str, ...] | None = security.loopback_hosts((host, *allowed_hosts))
    else:
        hosts = allowed_hosts or None
    logging.getLogger("janus").setLevel(logging.INFO)
    with _client(url, prefix) as jn:
        jn.store.time_us()  # Redis answers (else one line and exit 2), before listening
        config = DashboardConfig(
            redis_url=url,
            prefix=prefix,
            read_only=read_only,
            auth_token=auth_token or None,
            allowed_hosts=hosts,
        )
        mode = " (read-only)" if read_only else ""
        shown = f"[{host}]" if ":" in host else host
        click.echo(
            f"janus dashboard{mode}: http://{_hostport(shown, port)}/ for {redact(url)} "
            f"prefix={prefix}",
            err=True,
        )
        serve(create_app(jn, config), host, port)


def _hostport(addr: str, port: int) -> str:
    return ":".join((addr, str(port)))


def _serve_metrics(
    url: str,
    prefix: str,
    port: int,
    addr: str,
    dependencies: list[str] | None,
    top_scopes: int = 0,
) -> WSGIServer:
    """Start the metrics endpoint on its own client (scrapes never share the caller's)."""
    from janus import metrics

    jn = _client(url, prefix)
    try:
        server, _ = metrics.serve(
            jn, port, addr=addr, dependencies=dependencies, top_scopes=top_scopes
        )
    except OSError as exc:
        jn.close()
        click.echo(f"error: cannot listen on {_hostport(addr, port)}: {exc}", err=True)
        sys.exit(2)
    return server


@main.command()
@click.argument("dependency")
@click.option(
    "--handler",
    "handler_path",
    required=True,
    help="The function to run per job: 'package.module:function'.",
)
@click.option("--group", required=True, help="Consumer group (one per dependency per deployment).")
@click.option("--consumer", default=None, help="Consumer name (default: <hostname>-<pid>).")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 1024))
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve this worker's own Prometheus metrics on this port (0: any free port).",
)
@click.option(
    "--metrics-host",
    "--metrics-addr",
    "metrics_host",
    default="127.0.0.1",
    show_default=True,
    help="Address the worker's metrics endpoint listens on.",
)
@redis_option
@prefix_option
def worker(
    dependency: str,
    handler_path: str,
    group: str,
    consumer: str | None,
    concurrency: int,
    metrics_port: int | None,
    metrics_host: str,
    url: str,
    prefix: str,
) -> None:
    """Run a handler on released jobs until SIGTERM/SIGINT (running jobs finish first).

    The handler gets a LeasedJob (id, scope, payload, attempt, ...). Returning completes the
    job; raising janus.worker.Retry("kind", retry_after_ms=...) or any exception fails it.
    An ``async def`` handler runs as asyncio tasks on an event loop (janus.aio.AsyncWorker);
    a plain function runs in a pool of threads. ``--metrics-port`` serves what this worker
    measures itself (handler and fetch durations, reports, lost leases: janus.worker_metrics).
    """
    logging.getLogger("janus").setLevel(logging.INFO)
    handler = load_handler(handler_path)
    meter, server = _worker_metrics(metrics_port, metrics_host)
    if is_async_handler(handler):
        stats = asyncio.run(
            _async_worker(url, prefix, dependency, handler, group, consumer, concurrency, meter)
        )
    else:
        with _client(url, prefix) as jn:
            w = Worker(jn.store, dependency, group=group, consumer=consumer, metrics=meter)
            _started(w.consumer, dependency, group, concurrency, "threads")
            stats = w.run(handler, concurrency=concurrency)
    if server is not None:
        server.shutdown()
    click.echo(
        f"stopped: {stats.completed} completed, {stats.failed} failed, "
        f"{stats.returned} returned unstarted, {stats.lease_lost} lost leases",
        err=True,
    )


def _worker_metrics(
    port: int | None, host: str
) -> tuple[WorkerMetrics, WSGIServer] | tuple[None, None]:
    """This worker's own metrics, served from a daemon thread (no port: none)."""
    if port is None:
        return None, None
    meter = WorkerMetrics()
    try:
        server, _ = meter.serve(port, addr=host)
    except OSError as exc:
        click.echo(f"error: cannot listen on {_hostport(host, port)}: {exc}", err=True)
        sys.exit(2)
    where = _hostport(host, server.server_port)
    click.echo(f"janus worker metrics: http://{where}/metrics", err=True)
    return meter, server


def _started(consumer: str, dependency: str, group: str, concurrency: int, how: str) -> None:
    click.echo(
        f"janus worker {consumer}: {dependency} group={group} x{concurrency} ({how})", err=True
    )


async def _async_worker(
    url: str,
    prefix: str,
    dependency: str,
    handler: Handler,
    group: str,
    consumer: str | None,
    concurrency: int,
    meter: WorkerMetrics | None,
) -> WorkerStats:
    try:
        jn = await AsyncJanus.from_url(url, prefix=prefix)
    except JanusError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    async with jn:
        w = AsyncWorker(jn.store, dependency, group=group, consumer=consumer, metrics=meter)
        _started(w.consumer, dependency, group, concurrency, "asyncio")
        return await w.run(handler, concurrency=concurrency)


@main.command()
@click.argument("dependency")
@click.argument("scope")
@redis_option
@prefix_option
def scope(dependency: str, scope: str, url: str, prefix: str) -> None:
    """Show one scope's share, waiting work and quota as JSON."""
    with _client(url, prefix) as jn:
        st = jn.scope_status(dependency, scope)
    from janus.statusview import with_iso

    click.echo(json.dumps(with_iso(dict(st.__dict__)), indent=2, sort_keys=True))


@main.command()
@click.argument("dependency")
@click.argument("job_id")
@redis_option
@prefix_option
def job(dependency: str, job_id: str, url: str, prefix: str) -> None:
    """Show one job's state, attempts and history as JSON."""
    with _client(url, prefix) as jn:
        info = jn.job(dependency, job_id)
    if info is None:
        click.echo(
            f"error: no job {job_id!r} in {dependency!r} (never submitted, or expired)", err=True
        )
        sys.exit(1)
    from janus.statusview import with_iso

    data = dict(info.__dict__)
    data["payload"] = info.payload.decode("utf-8", "replace")
    click.echo(json.dumps(with_iso(data), indent=2, sort_keys=True))


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay through admission, purge."""


def _dlq_filters(f: Callable[..., None]) -> Callable[..., None]:
    f = click.option("--scope", default=None, help="Only this scope (tenant).")(f)
    f = click.option("--job-id", default=None, help="Only this job id.")(f)
    f = click.option(
        "--since",
        default=None,
        help="Only dead letters newer than this: a duration ago (10m, 2h, 1d) or an ISO time.",
    )(f)
    return f


def _since_ms(jn: Janus, since: str | None) -> int | None:
    if since is None:
        return None
    try:
        return jn.store.time_us() // 1000 - parse_duration_ms(since)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        raise click.BadParameter(
            f"{since!r} is neither a duration (10m) nor an ISO time", param_hint="--since"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _select(
    jn: Janus, dependency: str, scope: str | None, job_id: str | None, since: str | None
) -> list[DeadLetter]:
    return jn.dead_letters(dependency, scope=scope, job_id=job_id, since_ms=_since_ms(jn, since))


@dlq.command("list")
@click.argument("dependency")
@_dlq_filters
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1))
@redis_option
@prefix_option
def dlq_list(
    dependency: str,
    scope: str | None,
    job_id: str | None,
    since: str | None,
    limit: int,
    url: str,
    prefix: str,
) -> None:
    """List dead letters, oldest first."""
    from janus.statusview import grid, iso

    with _client(url, prefix) as jn:
        letters = _select(jn, dependency, scope, job_id, since)
    header = ["entry", "job id", "scope", "reason", "attempts", "last error", "dead at"]
    rows = [
        [d.entry_id, d.job_id, d.scope, d.reason, str(d.attempts), d.error, iso(d.dead_ms)]
        for d in letters[:limit]
    ]
    click.echo(grid(header, rows))
    click.echo(
        f"{len(letters)} dead letter(s)"
        + (f", first {limit} shown" if len(letters) > limit else "")
    )


@dlq.command("show")
@click.argument("dependency")
@_dlq_filters
@redis_option
@prefix_option
def dlq_show(
    dependency: str, scope: str | None, job_id: str | None, since: str | None, url: str, prefix: str
) -> None:
    """Print the selected dead letters in full (payload, every attempt) as JSON lines."""
    with _client(url, prefix) as jn:
        letters = _select(jn, dependency, scope, job_id, since)
    for d in letters:
        data = dict(d.__dict__)
        data["payload"] = d.payload.decode("utf-8", "replace")
        click.echo(json.dumps(data, sort_keys=True))


def _require_selection(
    scope: str | None, job_id: str | None, since: str | None, all_: bool
) -> None:
    if not (scope or job_id or since or all_):
        raise click.UsageError(
            "select dead letters with --scope, --job-id or --since, or pass --all"
        )


@dlq.command("replay")
@click.argument("dependency")
@_dlq_filters
@click.option("--all", "all_", is_flag=True, help="Every dead letter of the dependency.")
@redis_option
@prefix_option
def dlq_replay(
    dependency: str,
    scope: str | None,
    job_id: str | None,
    since: str | None,
    all_: bool,
    url: str,
    prefix: str,
) -> None:
    """Send dead-lettered jobs back through admission (attempts reset, history kept).
    The dead letters stay until purged; replaying one twice does nothing."""
    _require_selection(scope, job_id, since, all_)
    with _client(url, prefix) as jn:
        result = jn.replay(dependency, _select(jn, dependency, scope, job_id, since))
    counts = Counter(result.values())
    click.echo(
        ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing selected"
    )
    if counts.get("unknown_dependency"):
        sys.exit(1)


@dlq.command("purge")
@click.argument("dependency")
@_dlq_filters
@click.option("--all", "all_", is_flag=True, help="Every dead letter of the dependency.")
@click.option("--yes", is_flag=True, help="Do it (purging cannot be undone).")
@redis_option
@prefix_option
def dlq_purge(
    dependency: str,
    scope: str | None,
    job_id: str | None,
    since: str | None,
    all_: bool,
    yes: bool,
    url: str,
    prefix: str,
) -> None:
    """Delete the selected dead letters for good."""
    _require_selection(scope, job_id, since, all_)
    with _client(url, prefix) as jn:
        letters = _select(jn, dependency, scope, job_id, since)
        if not yes:
            click.echo(f"{len(letters)} dead letter(s) selected; add --yes to delete them")
            sys.exit(1)
        click.echo(f"purged {jn.purge(dependency, letters)} dead letter(s)")


@main.group()
def library() -> None:
    """The Redis Functions library Janus runs (janus_p<protocol>): print, load, status."""


@library.command("show")
def library_show() -> None:
    """Print the library's source (for FUNCTION LOAD by hand: docs/protocol.md)."""
    from janus import scripts

    code, _ = scripts.library()
    click.echo(code, nl=False)


@library.command("load")
@redis_option
@prefix_option
def library_load(url: str, prefix: str) -> None:
    """Load the library on every primary (replacing an older revision, keeping a newer)."""
    with _client(url, prefix) as jn:
        done = jn.store.load_library()
    for name, what in sorted(done.items()):
        click.echo(f"{name}: {what}")


@library.command("status")
@redis_option
@prefix_option
def library_status(url: str, prefix: str) -> None:
    """The library loaded on every primary (protocol, revision, digest)."""
    from janus import scripts

    with _client(url, prefix) as jn:
        versions = jn.store.library_versions()
    for name, version in sorted(versions.items()):
        if version is None:
            click.echo(f"{name}: {scripts.LIBRARY} not loaded (the first client loads it)")
        else:
            protocol, revision, digest = version
            click.echo(f"{name}: {scripts.LIBRARY} protocol {protocol} revision {revision} "
                       f"digest {digest[:12]}")  # fmt: skip


@main.command("doctor")
@redis_option
@prefix_option
@click.option("--warn-only", is_flag=True, help="Exit 0 on warnings (errors still exit 1).")
def doctor_cmd(url: str, prefix: str, warn_only: bool) -> None:
    """Check the Redis configuration for settings that would break limits or lose jobs.
    Exits 1 on any warning or error (0 with --warn-only when there are only warnings)."""
    with _client(url, prefix) as jn:
        findings = doctor.evaluate(jn.store.server_configs())
        findings += doctor.test_mode(jn.store.test_mode_dependencies())
        findings += doctor.library(jn.store.library_versions())
    for finding in findings:
        click.echo(str(finding))
    worst = doctor.worst(findings)
    if worst == "error" or (worst == "warning" and not warn_only):
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/status.schema.json).")
@click.option(
    "--watch",
    type=click.FloatRange(0.2, 3600),
    default=None,
    metavar="SECONDS",
    help="Show it again every SECONDS until Ctrl-C.",
)
@click.option(
    "--count",
    type=click.IntRange(1),
    default=None,
    help="With --watch: stop after this many refreshes.",
)
@click.option(
    "--top",
    default=3,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Show each dependency's N scopes with the most waiting work (0: none).",
)
@redis_option
@prefix_option
def status(
    as_json: bool, watch: float | None, count: int | None, top: int, url: str, prefix: str
) -> None:
    """Every dependency: waiting work, in flight, circuit and pause (with times), retry
    budget, dead letters, policy version. Plain aligned text (also when piped) or --json."""
    from janus import statusview

    shown = 0
    with _client(url, prefix) as jn:
        while True:
            now_ms = jn.store.time_us() // 1000
            statuses = [jn.status(dep, top=top) for dep in jn.store.dependencies()]
            if watch and sys.stdout.isatty() and not as_json:
                click.clear()
            if as_json:
                click.echo(json.dumps(statusview.document(statuses, now_ms), sort_keys=True))
            else:
                click.echo(statusview.table(statuses, now_ms))
            shown += 1
            if not watch or (count is not None and shown >= count):
                return
            try:
                time.sleep(watch)
            except KeyboardInterrupt:
                return


@main.command()
@click.argument("dependency")
@click.option(
    "--for",
    "for_",
    default=None,
    help="How long (30s, 10m, 2h); the default is until `janus resume`.",
)
@click.option("--scope", default=None, help="Pause only this scope (tenant).")
@redis_option
@prefix_option
def pause(dependency: str, for_: str | None, scope: str | None, url: str, prefix: str) -> None:
    """Hold a dependency's releases (or one scope's) by hand. Waiting work stays, running
    attempts run on; new submits are refused with dependency_paused when the pause is longer
    than max_wait. Pausing again sets the new end."""
    for_s = None
    if for_ is not None:
        try:
            for_s = parse_duration_ms(for_) / 1000
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--for") from None
    with _client(url, prefix) as jn:
        r = jn.pause(dependency, for_s=for_s, scope=scope)
        now_ms = jn.store.time_us() // 1000
    from janus.statusview import relative

    target = dependency if scope is None else f"{dependency} scope {scope!r}"
    until = "until resumed" if r.until_ms is None else f"until {relative(r.until_ms, now_ms)}"
    click.echo(f"{target}: paused {until}")


@main.command()
@click.argument("dependency")
@click.option("--scope", default=None, help="Resume only this scope (tenant).")
@redis_option
@prefix_option
def resume(dependency: str, scope: str | None, url: str, prefix: str) -> None:
    """End a pause by hand (a Retry-After pause still ends when the dependency said)."""
    with _client(url, prefix) as jn:
        r = jn.resume(dependency, scope=scope)
    target = dependency if scope is None else f"{dependency} scope {scope!r}"
    click.echo(f"{target}: {'resumed' if r.status == 'resumed' else 'was not paused by hand'}")


@main.command()
@click.argument("dependency")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--last", "-n", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--poll", default=0.5, show_default=True, type=click.FloatRange(0.05, 60))
@redis_option
@prefix_option
def events(
    dependency: str, follow: bool, last: int, as_json: bool, poll: float, url: str, prefix: str
) -> None:
    """A dependency's events in order: circuit transitions, pauses and resumes, dead
    letters, reclaimed leases, policy applied or deleted (about 10,000 kept)."""
    from janus import statusview

    def show(batch: list[Event]) -> None:
        for ev in batch:
            if as_json:
                click.echo(json.dumps(statusview.event_document(ev), sort_keys=True))
            else:
                click.echo(statusview.event_line(ev))

    with _client(url, prefix) as jn:
        batch = jn.events(dependency, last=last)
        show(batch)
        after = batch[-1].event_id if batch else "0-0"
        while follow:
            try:
                time.sleep(poll)
                batch = jn.events(dependency, after=after)
            except KeyboardInterrupt:
                return
            while True:  # (a burst: every page of it, before sleeping again)
                show(batch)
                if batch:
                    after = batch[-1].event_id
                if len(batch) < 1000:
                    break
                batch = jn.events(dependency, after=after)


@main.command()
@click.argument("dependency")
@click.option("--scope", default="default", show_default=True)
@click.option("--payload", default=None, help="Payload (UTF-8 text).")
@click.option(
    "--payload-file",
    type=click.File("rb"),
    default=None,
    help="Read the payload (bytes) from a file, or - for standard input.",
)
@click.option("--job-id", default=None, help="Idempotency key (default: generated).")
@click.option("--cost", default=1, show_default=True, type=click.IntRange(1))
@redis_option
@prefix_option
def submit(
    dependency: str,
    scope: str,
    payload: str | None,
    payload_file: BinaryIO | None,
    job_id: str | None,
    cost: int,
    url: str,
    prefix: str,
) -> None:
    """Submit one job and print the decision as JSON.

    Exit code: 0 when accepted (ready or scheduled), 3 when rejected (the JSON says why).
    """
    if payload is not None and payload_file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    data: bytes | str = payload_file.read() if payload_file is not None else (payload or "")
    check_dependency(dependency)
    with _client(url, prefix) as jn:
        d = jn.submit(dependency, scope=scope, payload=data, job_id=job_id, cost=cost)
    click.echo(json.dumps(d.__dict__, sort_keys=True))
    if d.status == "rejected":
        sys.exit(3)


@main.group()
def bench() -> None:
    """The SRE load benchmark: open-loop scenarios against any Redis, with a report."""


@bench.command("run")
@click.argument("scenario_path", metavar="SCENARIO.yaml", type=click.Path(dir_okay=False))
@click.option(
    "--redis",
    "url",
    default=None,
    help="Run against this Redis or Redis Cluster (a fresh key prefix per run); default: "
    "a throwaway redis-server started and stopped for the run.",
)
@click.option("--cluster", is_flag=True, help="The throwaway Redis is a 3-master cluster.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Report directory (default: bench-results/<scenario>-<time>).",
)
@click.option(
    "--scale",
    type=click.FloatRange(0.05, 10),
    default=1.0,
    show_default=True,
    help="Multiply every time in the scenario (duration, ramp, faults, drain) by this.",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Then run the same arrivals through limits (moving window) + naive per-worker "
    "retries on the same Redis, and report both side by side.",
)
@click.option("--no-fail", is_flag=True, help="Exit 0 even when a threshold failed.")
def bench_run(
    scenario_path: str,
    url: str | None,
    cluster: bool,
    out: str | None,
    scale: float,
    compare: bool,
    no_fail: bool,
) -> None:
    """Run a load scenario (bench/scenarios/*.yaml) and write report.json, report.md and
    PNG plots. Exit 0 when every threshold held, 1 when one failed (the report says which),
    2 when the run could not be made."""
    try:
        from janus.loadtest import report as reporting
        from janus.loadtest.progress import Progress
        from janus.loadtest.run import run_scenario
        from janus.loadtest.scenario import load_scenario
    except ImportError as exc:
        click.echo(
            f"error: {exc.name} is missing; install the bench extra: "
            "pip install 'janus-limiter[bench]'",
            err=True,
        )
        sys.exit(2)
    scenario, policies = load_scenario(scenario_path)
    if scale != 1.0:
        scenario = scenario.scaled(scale)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(out) if out else Path("bench-results") / f"{scenario.name}-{stamp}"
    where = redact(url) if url else "a throwaway redis-server" + (" cluster" if cluster else "")
    click.echo(f"janus bench: {scenario.name}: {scenario.duration:g} s of load on {where}")
    try:
        with Progress(sys.stdout.isatty()) as progress:
            raw, peer = run_scenario(
                scenario,
                policies,
                url=url,
                cluster=cluster,
                compare=compare,
                progress=progress.update,
                log=progress.log,
            )
    except (RuntimeError, OSError) as exc:  # (JanusError: the group's one-line handler)
        click.echo(f"error: the run could not be made: {exc}", err=True)
        sys.exit(2)
    report = reporting.build(raw, peer)
    files = reporting.write(report, raw, out_dir)
    for t in report["thresholds"]:
        op = "<=" if t["kind"] == "max" else ">="
        mark = "PASS" if t["ok"] else "FAIL"
        click.echo(f"  {mark}  {t['name']}: {t['value']} (bound {op} {t['bound']:g})")
    tot = report["totals"]
    click.echo(
        f"accepted {tot['accepted']}, completed {tot['completed']}, lost {tot['lost']}, "
        f"ran twice {tot['double_runs']}, overshoot {tot['overshoot']:g}"
    )
    click.echo(f"report: {files[1]} ({len(files)} files in {out_dir})")
    if not report["passed"]:
        failed = ", ".join(t["name"] for t in report["thresholds"] if not t["ok"])
        click.echo(f"thresholds failed: {failed}", err=True)
        if not no_fail:
            sys.exit(1)


@main.command()
@click.option("--seconds", default=12.0, show_default=True, help="How long producers run.")
@click.option("--cluster", is_flag=True, help="Run against a throwaway 3-master cluster.")
def demo(seconds: float, cluster: bool) -> None:
    """Live demo against a throwaway redis-server that Janus starts and stops itself."""
    from janus.demo import run_demo

    sys.exit(run_demo(seconds=seconds, cluster=cluster))


def _client(url: str, prefix: str) -> Janus:
    try:
        return Janus.from_url(url, prefix=prefix)
    except JanusError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
