"""`python -m lt_notifier`: serve the notifier with uvicorn."""

import uvicorn

from lt_notifier.main import create_app
from lt_notifier.settings import NotifierSettings


def main() -> None:
    """Build settings from the environment and serve."""
    settings = NotifierSettings()
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
