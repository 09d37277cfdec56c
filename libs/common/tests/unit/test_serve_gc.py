"""`serve` moves what start-up made out of the collector's reach before serving (LT_GC_FREEZE, on by default)."""

import gc

import pytest
import uvicorn
from fastapi import FastAPI

from leaky_common import serve as serve_module
from leaky_common.settings import ServiceSettings


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
