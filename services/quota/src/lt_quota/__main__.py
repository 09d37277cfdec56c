"""`python -m lt_quota`: run the quota service with settings from the environment."""

from __future__ import annotations

import uvicorn

from leaky_common.observability import setup_logging, setup_tracing
from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings


def main() -> None:
    """Build settings, set up logs and tracing, serve."""
    settings = QuotaSettings()
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
