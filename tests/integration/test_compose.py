"""compose.yaml, the Dockerfile and the shipped examples, checked without Docker.

Every janus service's ``command`` is parsed by the real click command tree (an unknown
option, a bad value or a missing argument fails), handler paths are imported, the producer
and the policy directory are run, and the Prometheus targets are matched to the ports the
services are told to listen on. The last test runs the compose pipeline's pieces (policy
apply, producer, the example handler) against a throwaway Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from janus.cli import main
from janus.client import Janus
from janus.decisions import LeasedJob
from janus.worker import Retry, is_async_handler, load_handler

REPO = Path(__file__).resolve().parents[2]
APP = PurePosixPath("/app")  # WORKDIR of the image
#: Services that run the image's ENTRYPOINT (janus) with their ``command`` as arguments.
JANUS_SERVICES = ["policy", "coordinator", "worker", "exporter"]
ALL_SERVICES = {*JANUS_SERVICES, "redis", "producer", "prometheus"}
REDIS_URL = "redis://redis:6379/0"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]  # type: ignore[no-any-return]


def _argv(value: object) -> list[str]:
    """A compose command/entrypoint (exec list or shell-style string) as a list of words."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    assert isinstance(value, list), value
    assert all(isinstance(v, str) for v in value), f"quote every word: {value!r}"
    return list(value)


def _option(args: list[str], name: str) -> str:
    """The value of ``--name VALUE`` (or ``--name=VALUE``) in an argument list."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {args!r}")


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """depends_on as name -> condition (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _remaining(ctx: click.Context) -> list[str]:
    """The arguments a group left for its subcommand (click 8.2+ keeps them private)."""
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:  # click < 8.2
        protected = ctx.protected_args
    return [*protected, *ctx.args]


def _parse_janus(args: list[str]) -> click.Context:
    """Parse ``janus ARGS`` down to the leaf command with click's own parser; raises
    click.UsageError (NoSuchOption, MissingParameter, BadParameter, ...) on a bad command."""
    ctx = main.make_context("janus", list(args), resilient_parsing=False)
    while isinstance(ctx.command, click.Group):
        rest = _remaining(ctx)
        if not rest:
            raise click.UsageError("no subcommand", ctx=ctx)
        cmd_name, cmd, rest = ctx.command.resolve_command(ctx, rest)
        assert cmd is not None and cmd_name is not None
        ctx = cmd.make_context(cmd_name, rest, parent=ctx)
    return ctx


def _janus_command(service: dict[str, Any]) -> list[str]:
    entrypoint = _argv(service.get("entrypoint"))
    assert entrypoint in ([], ["janus"]), f"entrypoint {entrypoint!r} is not janus"
    return _argv(service.get("command"))


def _host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from: a bind mount, else the image (the
    Dockerfile copies the repository's directories under /app)."""
    target = PurePosixPath(container_path)
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            mount = rest.split(":", 1)[0]
        else:
            source, mount = volume.get("source", ""), volume.get("target", "")
        mount_path = PurePosixPath(mount)
        if source.startswith(".") and (target == mount_path or mount_path in target.parents):
            return (REPO / source / target.relative_to(mount_path)).resolve()
    assert APP in target.parents, f"{container_path} is neither mounted nor under {APP}"
    return REPO / target.relative_to(APP)


def _janus_executable() -> str:
    beside = Path(sys.executable).with_name("janus")
    found = str(beside) if beside.exists() else shutil.which("janus")
    assert found, "the janus console script is not installed (pip install -e .)"
    return found


# -- compose.yaml: the services and their wiring ---------------------------------------------


def test_every_service_is_declared(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= ALL_SERVICES


def test_janus_services_run_the_image_built_here(services: dict[str, dict[str, Any]]) -> None:
    """Every service built from the Dockerfile is either a janus invocation listed in
    JANUS_SERVICES (so its command is parsed below) or the producer."""
    built = {name for name, svc in services.items() if "build" in svc}
    assert built == {*JANUS_SERVICES, "producer"}
    for name in built:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (REPO / context / "Dockerfile").is_file(), name
        assert services[name]["environment"]["JANUS_REDIS_URL"] == REDIS_URL, name


def test_redis_is_durable_never_evicts_and_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    args = _argv(redis["command"])
    assert args[0] == "redis-server"
    assert _option(args, "--appendonly") == "yes"
    assert _option(args, "--appendfsync") == "everysec"
    assert _option(args, "--maxmemory-policy") == "noeviction"
    test = _argv(redis["healthcheck"]["test"])
    assert test[0] in ("CMD", "CMD-SHELL")
    assert "redis-cli" in " ".join(test) and "ping" in " ".join(test)
    # The host's own Redis owns 6379: compose must not try to publish it.
    assert not any("6379" in str(p).split(":")[0] for p in redis.get("ports") or [])


def test_policy_is_one_shot_and_gates_the_rest(services: dict[str, dict[str, Any]]) -> None:
    policy = services["policy"]
    assert policy.get("restart") == "no"  # the string: YAML's bare no would be False
    assert _janus_command(policy)[:2] == ["policy", "apply"]
    assert _depends_on(policy) == {"redis": "service_healthy"}
    for name in ["coordinator", "worker", "exporter", "producer"]:
        deps = _depends_on(services[name])
        assert deps.get("policy") == "service_completed_successfully", name


def test_two_workers_of_one_group(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert "container_name" not in worker  # replicas need distinct names
    ctx = _parse_janus(_janus_command(worker))
    assert ctx.command.name == "worker"
    assert ctx.params["dependency"] == "payments"
    assert ctx.params["group"] == "billing"
    assert ctx.params["concurrency"] == 8


@pytest.mark.parametrize("name", JANUS_SERVICES)
def test_command_is_a_valid_janus_invocation(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """click parses the command: no unknown option, no missing argument, valid values."""
    args = _janus_command(services[name])
    _parse_janus(args)
    assert _option(args, "--redis") == REDIS_URL, f"{name} should name its Redis: {args!r}"


def test_handler_paths_import(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--handler mod:fn`` imports from the working directory, as in the image (/app)."""
    monkeypatch.chdir(REPO)
    paths = [
        _parse_janus(_janus_command(svc)).params["handler_path"]
        for svc in services.values()
        if "--handler" in _argv(svc.get("command"))
        or any(a.startswith("--handler=") for a in _argv(svc.get("command")))
    ]
    assert paths, "no service runs a handler"
    for path in paths:
        handler = load_handler(path)
        assert callable(handler)
        assert (REPO / (path.split(":")[0].replace(".", "/") + ".py")).is_file()


def test_policy_directory_exists_and_checks(services: dict[str, dict[str, Any]]) -> None:
    policy = services["policy"]
    ctx = _parse_janus(_janus_command(policy))
    paths = [_host_path(policy, p) for p in ctx.params["paths"]]
    for path in paths:
        assert path.exists(), path
        assert path.is_file() or list(path.glob("*.yaml")), f"no *.yaml in {path}"
    rel = [os.path.relpath(p, REPO) for p in paths]
    result = subprocess.run(
        [_janus_executable(), "policy", "check", *rel],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    applied = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("ok:")}
    # The dependencies that the worker and the producer use are among the applied ones.
    worker = _parse_janus(_janus_command(services["worker"])).params["dependency"]
    producer = _option(_argv(services["producer"]["command"]), "--dependency")
    assert {worker, producer} <= applied, (applied, result.stdout)


def test_prometheus_scrapes_the_ports_the_services_listen_on(
    services: dict[str, dict[str, Any]],
) -> None:
    prom = services["prometheus"]
    assert str(prom["image"]).startswith("prom/prometheus")
    assert any(
        isinstance(v, str)
        and v.split(":")[0] in ("./deploy/prometheus.yml", "deploy/prometheus.yml")
        and v.split(":")[1] == "/etc/prometheus/prometheus.yml"
        for v in prom["volumes"]
    ), prom["volumes"]
    exporter_port = _option(_janus_command(services["exporter"]), "--port")
    coordinator_port = _option(_janus_command(services["coordinator"]), "--metrics-port")
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert targets == {f"exporter:{exporter_port}", f"coordinator:{coordinator_port}"}
    assert set(_depends_on(prom)) >= {"exporter", "coordinator"}
    # Every worker replica, found by DNS, on the port it serves (on all interfaces: another
    # container scrapes it).
    worker = _janus_command(services["worker"])
    (dns,) = [d for job in config["scrape_configs"] for d in job.get("dns_sd_configs", [])]
    assert dns["names"] == ["worker"] and dns["type"] == "A"
    assert str(dns["port"]) == _option(worker, "--metrics-port")
    assert _option(worker, "--metrics-host") == "0.0.0.0"


# -- the producer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["examples/producer.py", "--help"], ["-m", "examples.producer", "--help"]],
    ids=["script", "module"],
)
def test_producer_help_runs(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for option in ("--redis", "--rate", "--dependency", "--count"):
        assert option in result.stdout


def test_producer_command_parses(services: dict[str, dict[str, Any]]) -> None:
    from examples import producer

    service = services["producer"]
    assert _argv(service["entrypoint"]) == ["python", "-m", "examples.producer"]
    args = producer.parse_args(_argv(service["command"]))
    assert args.redis == REDIS_URL
    assert args.dependency == "payments"
    assert args.rate > 0
    assert args.count == 0  # runs until stopped


# -- the Dockerfile --------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def _copied(instructions: list[tuple[str, str]], before: int) -> set[str]:
    """Source paths COPY'd into the image before instruction ``before``, normalised."""
    sources: set[str] = set()
    for word, rest in instructions[:before]:
        if word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            sources.update(p.rstrip("/").removeprefix("./") for p in parts[:-1])
    return sources


def test_dockerfile_installs_the_package_with_its_lua() -> None:
    instructions = _dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    installs = [
        i
        for i, (word, rest) in enumerate(instructions)
        if word == "RUN" and "pip install" in rest and "--no-cache-dir" in rest
    ]
    assert installs, "no `RUN pip install --no-cache-dir .`"
    install = installs[0]
    assert " . " in f" {instructions[install][1]} ".replace("&&", " ")
    # Whatever the wheel build reads is in the image before pip runs.
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs 3.11+")
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    project, hatch = wheel["project"], wheel["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", "src", "lua"}
    needed |= {p.split("/")[0] for p in hatch.get("packages", [])}
    needed |= set(hatch.get("force-include", {}))  # lua -> janus/lua
    if isinstance(project.get("readme"), str):
        needed.add(project["readme"])  # hatchling refuses to build without it
    copied = _copied(instructions, install)
    assert needed <= copied, f"copied before pip install: {sorted(copied)}"
    assert {"policies", "examples"} <= _copied(instructions, len(instructions))


def test_dockerfile_runs_janus_as_a_non_root_user() -> None:
    instructions = _dockerfile()
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    entrypoints = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["janus"]


def test_dockerignore_keeps_local_state_out_but_not_the_sources() -> None:
    patterns = {
        line.strip().rstrip("/").removeprefix("**/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "tests", "__pycache__", ".pytest_cache"} <= patterns
    assert not patterns & {"src", "lua", "policies", "examples", "pyproject.toml", "README.md"}


# -- the example handlers --------------------------------------------------------------------


def _job(job_id: str, attempt: int = 1) -> LeasedJob:
    return LeasedJob(
        dependency="payments",
        id=job_id,
        scope="tenant-a",
        payload=b'{"amount_cents": 100}',
        attempt=attempt,
        cost=1,
        lease_deadline_ms=1_700_000_030_000,
        token="1700000000000-0",
    )


def _ids(fails: bool) -> list[str]:
    from examples.handlers import outcome

    return [f"job-{i}" for i in range(2000) if outcome(_job(f"job-{i}"))[1] is fails]


def test_example_handlers_fail_about_five_percent_deterministically() -> None:
    from examples import handlers

    failing = _ids(True)
    assert 40 <= len(failing) <= 160  # ~5% of 2000
    assert failing == _ids(True)  # stable across calls (no salted hash())
    latencies = [handlers.outcome(_job(f"job-{i}"))[0] for i in range(200)]
    assert all(handlers.MIN_LATENCY_S <= s <= handlers.MAX_LATENCY_S for s in latencies)
    # A retry is a new roll: most failed jobs succeed on their next attempt.
    retried = [handlers.outcome(_job(i, attempt=2))[1] for i in failing]
    assert sum(retried) < len(retried) / 2


def test_charge_completes_or_raises_retry() -> None:
    from examples.handlers import charge

    assert not is_async_handler(charge)
    charge(_job(_ids(False)[0]))  # returns: the job completes
    with pytest.raises(Retry) as caught:
        charge(_job(_ids(True)[0]))
    assert caught.value.error == "http_503"


def test_charge_async_completes_or_raises_retry() -> None:
    from examples.handlers import charge_async

    assert is_async_handler(charge_async)
    asyncio.run(charge_async(_job(_ids(False)[0])))  # returns: the job completes
    with pytest.raises(Retry) as caught:
        asyncio.run(charge_async(_job(_ids(True)[0])))
    assert caught.value.error == "http_503"


# -- the pipeline against a throwaway Redis --------------------------------------------------


def _local(args: list[str], url: str, prefix: str) -> list[str]:
    """A compose command pointed at the test's Redis and prefix instead of redis:6379."""
    out = list(args)
    out[out.index("--redis") + 1] = url
    return [*out, "--prefix", prefix]


def test_policy_producer_and_handler_work_together(
    services: dict[str, dict[str, Any]], standalone_url: str, prefix: str
) -> None:
    """What compose runs, in order: apply the policies, produce jobs, handle them."""
    policy_args = _janus_command(services["policy"])
    policy_args = [
        str(_host_path(services["policy"], a)) if a.startswith("/") else a for a in policy_args
    ]
    applied = CliRunner().invoke(main, _local(policy_args, standalone_url, prefix))
    assert applied.exit_code == 0, applied.output
    assert "payments: version" in applied.output

    producer = _local(_argv(services["producer"]["command"]), standalone_url, prefix)
    produced = subprocess.run(
        [sys.executable, "-m", "examples.producer", *producer, "--count", "6", "--rate", "200"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stdout + produced.stderr
    assert "done: 6 submitted: ready=6" in produced.stdout, produced.stdout

    worker_args = _parse_janus(_janus_command(services["worker"])).params
    handler = load_handler(worker_args["handler_path"])
    with Janus.from_url(standalone_url, prefix=prefix) as jn:
        worker = jn.worker(worker_args["dependency"], group=worker_args["group"])
        jobs: list[LeasedJob] = []
        for _ in range(20):
            jobs += worker.fetch(count=10, block_ms=200)
            if len(jobs) >= 6:
                break
        assert len(jobs) == 6
        assert {j.scope for j in jobs} == {"tenant-a", "tenant-b", "tenant-vip"}
        for job in jobs:
            try:
                handler(job)
            except Retry as exc:
                worker.fail(job, exc.error)
            else:
                worker.complete(job)
        assert jn.status("payments").in_flight == 0
