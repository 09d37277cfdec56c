"""`python -m lt_analytics`: serve the analytics API with uvicorn."""

import uvicorn

from lt_analytics.main import create_app
from lt_analytics.settings import AnalyticsSettings


def main() -> None:
    """Build settings from the environment and serve."""
    settings = AnalyticsSettings()
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


if __name__ == "__main__":
    main()
