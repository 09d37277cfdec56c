"""Process entrypoint glue: configure logs and tracing, then serve an app with uvicorn."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from leaky_common.observability import setup_logging, setup_tracing
from leaky_common.settings import ServiceSettings

__all__ = ["serve"]

S = TypeVar("S", bound=ServiceSettings)


def serve(settings: S, create_app: Callable[[S], FastAPI]) -> None:
    """Set up JSON logs and tracing for `settings`, build the app and serve it (uvloop, httptools)."""
    setup_logging(settings)
    setup_tracing(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
