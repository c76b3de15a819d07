"""Shared fixtures: throwaway real Redis servers, started once per test session.

The servers are children of this pytest process (see :mod:`janus.embedded`): nothing here
depends on a Redis someone else started, and nothing outlives the run. If ``redis-server``
is not installed, every test that needs Redis fails (never skips) with the install command.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import redis

from janus.embedded import RedisCluster, RedisServer, find_redis_server
from janus.errors import EmbeddedRedisError

RedisClient = redis.Redis | redis.RedisCluster


def pytest_report_header(config: pytest.Config) -> str:
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


@pytest.fixture(scope="session")
def standalone_server() -> Iterator[RedisServer]:
    """One standalone redis-server for the whole session (no persistence)."""
    server = _start_or_fail(lambda: RedisServer.start())
    with server:
        yield server


@pytest.fixture(scope="session")
def cluster_server() -> Iterator[RedisCluster]:
    """One 3-master Redis Cluster (no replicas) for the whole session."""
    cluster = _start_or_fail(lambda: RedisCluster.start(masters=3))
    with cluster:
        yield cluster


@pytest.fixture(params=["standalone", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """URL of the standalone server, then of the cluster: such tests run against both."""
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("cluster_server")
        return cluster.url
    server: RedisServer = request.getfixturevalue("standalone_server")
    return server.url


@pytest.fixture
def standalone_url(standalone_server: RedisServer) -> str:
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
