"""`python -m lt_saga`: run the purchase-saga service with uvicorn."""

from __future__ import annotations

import uvicorn

from leaky_common.observability import setup_logging, setup_tracing
from lt_saga.main import create_app
from lt_saga.settings import SagaSettings


def main() -> None:
    """Build settings from the environment and serve."""
    settings = SagaSettings()
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
    )


if __name__ == "__main__":
    main()
