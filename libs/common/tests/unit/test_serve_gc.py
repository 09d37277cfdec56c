"""`serve` moves what start-up made out of the collector's reach before serving (LT_GC_FREEZE, on by default);
a service gives the heap pages its start-up freed back to the system once start-up is over; the server keeps
idle connections longer than our clients do."""

import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from leaky_common import api as api_module
from leaky_common import serve as serve_module
from leaky_common.api import service_app
from leaky_common.settings import CLIENT_KEEPALIVE_S, ServiceSettings


def test_start_up_objects_are_frozen_before_the_server_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen_when_run: list[int] = []
    monkeypatch.setattr(serve_module, "setup_logging", lambda _s: None)
    monkeypatch.setattr(serve_module, "setup_tracing", lambda _s: None)
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda _self, sockets=None: frozen_when_run.append(gc.get_freeze_count())
    )
    gc.unfreeze()
    try:
        serve_module.serve(ServiceSettings(gc_freeze=False), lambda _s: FastAPI())
        serve_module.serve(ServiceSettings(), lambda _s: FastAPI())
    finally:
        gc.unfreeze()
    # Off: nothing frozen. On (the default): the modules, classes and app built so far, tens of thousands.
    assert frozen_when_run[0] == 0
    assert frozen_when_run[1] > 10_000


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim and /proc are glibc/Linux")
def test_trim_heap_gives_the_pages_start_up_freed_back_to_the_system() -> None:
    # 60 MB in 1 KB blocks (glibc's heap, below the mmap threshold), all freed but the last: glibc cannot shrink
    # the heap past a block still in use, so the freed pages stay resident until trimmed.
    blocks = [bytearray(1000) for _ in range(60_000)]
    last = blocks.pop()
    del blocks
    before = _rss_kb()
    assert serve_module.trim_heap() is True
    assert before - _rss_kb() > 20_000
    assert len(last) == 1000


def test_a_service_trims_its_heap_once_start_up_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    def trim() -> bool:
        events.append("trim")
        return True

    monkeypatch.setattr(api_module, "trim_heap", trim)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        events.append("start-up")
        yield
        events.append("shut-down")

    async def ready(_app: FastAPI) -> dict[str, bool]:
        return {}

    app = service_app(ServiceSettings(heap_trim_interval_s=0), title="t", lifespan=lifespan, ready=ready)
    with TestClient(app):
        events.append("serving")
    assert events == ["start-up", "trim", "serving", "shut-down"]


async def test_the_heap_is_trimmed_after_each_quiet_interval_and_never_while_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims: list[int] = []
    # CPU seconds read at the start and after each 1 s interval: busy, busy, quiet, quiet, busy, quiet, quiet.
    readings = iter([0.0, 0.5, 1.0, 1.01, 1.02, 1.5, 1.5, 1.5])
    ticks = 0

    async def sleep(_s: float) -> None:
        nonlocal ticks
        ticks += 1
        if ticks > 7:
            raise asyncio.CancelledError

    def trim() -> bool:
        trims.append(ticks)
        return True

    monkeypatch.setattr(serve_module, "trim_heap", trim)
    with pytest.raises(asyncio.CancelledError):
        await serve_module.trim_when_quiet(1.0, cpu=lambda: next(readings), sleep=sleep)
    # After the quiet intervals (3rd, 4th, 6th, 7th: under 50 ms of CPU a second), never after a busy one.
    assert trims == [3, 4, 6, 7]


def test_the_server_keeps_idle_connections_longer_than_our_clients_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn's own keep-alive (5 s) is shorter than our clients keep an idle connection (the gateway's to
    quota and the other owners): a request sent just as the server closed that connection failed with "server
    disconnected". The server now keeps one `keep_alive_s` (75 s), above `CLIENT_KEEPALIVE_S`."""
    configs: list[uvicorn.Config] = []
    monkeypatch.setattr(serve_module, "setup_logging", lambda _s: None)
    monkeypatch.setattr(serve_module, "setup_tracing", lambda _s: None)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: configs.append(self.config))
    try:
        serve_module.serve(ServiceSettings(gc_freeze=False), lambda _s: FastAPI())
        serve_module.serve(ServiceSettings(gc_freeze=False, keep_alive_s=120), lambda _s: FastAPI())
    finally:
        gc.unfreeze()
    assert [c.timeout_keep_alive for c in configs] == [75, 120]
    assert CLIENT_KEEPALIVE_S < 75
    with pytest.raises(ValidationError):  # not at or below what our clients keep
        ServiceSettings(keep_alive_s=CLIENT_KEEPALIVE_S)
