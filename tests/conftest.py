"""Shared fixtures: throwaway real Redis servers, started once per test session.

The servers are children of this pytest process (see :mod:`janus.testing`): nothing here
depends on a Redis someone else started, and nothing outlives the run. If ``redis-server``
is not installed, every test that needs Redis fails (never skips) with the install command.

Opt-in: with ``JANUS_TEST_DOCKER=1`` the standalone server is a Redis container started by
testcontainers instead of the binary (the cluster stays binary-only). If no Docker engine
answers, every test that needs it FAILS with the reason: a run that asked for containers
and silently got the binary would report a container run it never made.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import pytest
import redis

from janus.errors import EmbeddedRedisError
from janus.testing import RedisCluster, RedisServer, find_redis_server

RedisClient = redis.Redis | redis.RedisCluster

#: ``JANUS_TEST_DOCKER=1``: the standalone server runs in a testcontainers Redis container.
DOCKER_ENV = "JANUS_TEST_DOCKER"
#: The image of that container (the one compose.yaml runs); ``JANUS_TEST_DOCKER_IMAGE``.
DOCKER_IMAGE = os.environ.get("JANUS_TEST_DOCKER_IMAGE", "redis:7")


def docker_requested() -> bool:
    return os.environ.get(DOCKER_ENV) == "1"


def pytest_report_header(config: pytest.Config) -> str:
    if docker_requested():
        return f"redis: {DOCKER_ENV}=1, standalone in a {DOCKER_IMAGE} container (testcontainers)"
    try:
        return f"redis-server: {find_redis_server()} (throwaway servers on random ports)"
    except EmbeddedRedisError as exc:
        return f"redis-server: MISSING: {exc}"


T = TypeVar("T")


def _start_or_fail(start: Callable[[], T]) -> T:
    """Start a throwaway server; a missing/broken redis-server FAILS the test (never skips)."""
    try:
        return start()
    except EmbeddedRedisError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)


def docker_engine_problem() -> str | None:
    """None when testcontainers' own Docker client reaches an engine (``ping``), else why
    not. testcontainers is imported here only: a run without the opt-in never needs it."""
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError as exc:
        return f"testcontainers is not installed ({exc}); pip install -e '.[dev]'"
    try:
        DockerClient().client.ping()
    except Exception as exc:  # docker.errors.DockerException, requests errors: any reason
        return f"no Docker engine answers ({type(exc).__name__}: {exc})"
    return None


class ContainerServer:
    """A Redis container, with the ``host`` / ``port`` / ``url`` of the :class:`RedisServer`
    that the tests read from the ``standalone_server`` fixture."""

    def __init__(self, container: Any) -> None:
        self._container = container
        self.host: str = container.get_container_host_ip()
        self.port = int(container.get_exposed_port(6379))

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def __enter__(self) -> ContainerServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._container.stop()


def start_container() -> ContainerServer:
    """The opt-in standalone server; refuses (EmbeddedRedisError) when no engine answers."""
    problem = docker_engine_problem()
    if problem is not None:
        raise EmbeddedRedisError(
            f"{DOCKER_ENV}=1 asks for a Redis container, but {problem}. Start a Docker engine, "
            f"or unset {DOCKER_ENV} to run against the redis-server binary."
        )
    from testcontainers.community.redis import RedisContainer

    container = RedisContainer(DOCKER_IMAGE).with_command("redis-server --save '' --appendonly no")
    container.start()
    return ContainerServer(container)


def standalone_start() -> Callable[[], RedisServer | ContainerServer]:
    """How the standalone fixture starts its server: a container only on the opt-in."""
    return start_container if docker_requested() else RedisServer.start


@pytest.fixture(scope="session")
def standalone_server() -> Iterator[RedisServer | ContainerServer]:
    """One standalone Redis for the whole session (no persistence): the redis-server binary,
    or with JANUS_TEST_DOCKER=1 a testcontainers container."""
    server = _start_or_fail(standalone_start())
    with server:
        yield server


@pytest.fixture(scope="session")
def cluster_server() -> Iterator[RedisCluster]:
    """One 3-master Redis Cluster (no replicas) for the whole session. Always binaries, even
    with JANUS_TEST_DOCKER=1: testcontainers has no multi-master cluster module, and a
    cluster in containers would announce container addresses the client cannot reach."""
    cluster = _start_or_fail(lambda: RedisCluster.start(masters=3))
    with cluster:
        yield cluster


@pytest.fixture(params=["standalone", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """URL of the standalone server, then of the cluster: such tests run against both."""
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("cluster_server")
        return cluster.url
    server: RedisServer | ContainerServer = request.getfixturevalue("standalone_server")
    return server.url


@pytest.fixture
def standalone_url(standalone_server: RedisServer | ContainerServer) -> str:
    """URL of the standalone server only."""
    return standalone_server.url


@pytest.fixture(scope="session")
def _aio_loop() -> Iterator[object]:
    from tests.async_bridge import Loop

    loop = Loop()
    yield loop
    loop.stop()


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a contract test through janus.Janus, then through janus.aio.AsyncJanus (what
    tests.helpers.make_janus builds while this fixture is active)."""
    from tests import helpers

    loop = request.getfixturevalue("_aio_loop") if request.param == "async" else None
    helpers.API.update(mode=request.param, loop=loop)
    try:
        yield request.param
    finally:
        helpers.API.update(mode="sync", loop=None)
        if loop is not None:
            loop.close_opened()  # type: ignore[attr-defined]


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test (a valid Janus name: no braces, <= 64 chars)."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def redis_client(redis_url: str, request: pytest.FixtureRequest) -> Iterator[RedisClient]:
    """A raw redis-py client (bytes replies) on the same server as ``redis_url``."""
    client: RedisClient
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("redis_url") == "cluster":
        client = redis.RedisCluster.from_url(redis_url, decode_responses=False)
    else:
        client = redis.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        client.close()
