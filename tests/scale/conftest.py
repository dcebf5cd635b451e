"""One PostgreSQL and one Redis per test session (started on free ports in temporary
directories); each test gets a fresh database and an empty Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from nbtunnel.edge.server import Edge
from tests.e2e.conftest import origin  # noqa: F401 - fixture reused here
from tests.scale.services import PostgresServer, RedisServer, ServiceUnavailable


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except ServiceUnavailable as exc:
        pytest.skip(f"no PostgreSQL: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
    except ServiceUnavailable as exc:
        pytest.skip(f"no Redis: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    return postgres_server.database()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


@pytest.fixture
async def edge_c(tmp_path: Path, pg_url: str, redis_url: str) -> AsyncIterator[Edge]:
    """An in-process edge "c" of the deployment (the visitors' entry in failover tests)."""
    from tests.scale.cluster import edge_config

    async with Edge(edge_config(tmp_path / "edge-c", pg_url, redis_url, "c")) as c:
        yield c
