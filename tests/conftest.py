"""Shared fixtures: one private redis-server per test session (never the shared :6379), and
real servers on port 0 over either store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from curacache.client import Client
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisProcess, RedisUnavailableError, start_redis_server
from tests.server_harness import ThreadServer, make_config


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A redis-server child with AOF (fsync always) in a temp dir, stopped at session end.

    Fails (does not skip) when redis-server is missing: Redis is a required test dependency.
    """
    try:
        proc = start_redis_server(tmp_path_factory.mktemp("redis"))
    except RedisUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """URL of the session's private Redis, emptied (FLUSHALL) before each test."""
    redis_server.start()  # no-op unless a test stopped it
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master + 3-replica Redis Cluster on free loopback ports, stopped at session end."""
    try:
        cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    except RedisUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """Seed URL of the session's cluster, emptied before each test."""
    redis_cluster.wait_ok()
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(params=["sqlite", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def start_server(
    storage: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ThreadServer]]:
    """Start (and later stop) servers on the parametrised store; same data across restarts."""
    redis_url = request.getfixturevalue("redis_url") if storage == "redis" else None
    servers: list[ThreadServer] = []

    def start(**overrides: Any) -> ThreadServer:
        server = ThreadServer(make_config(storage, tmp_path / "data", redis_url, **overrides))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., ThreadServer]) -> ThreadServer:
    return start_server()


@pytest.fixture
def client(server: ThreadServer) -> Iterator[Client]:
    with Client(server.target) as c:
        yield c
