"""`python -m lt_console`: serve the console with settings from the environment."""

import uvicorn

from lt_console.main import create_app
from lt_console.settings import ConsoleSettings


def main() -> None:
    """Build settings from the environment and serve."""
    settings = ConsoleSettings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="info",
        timeout_keep_alive=settings.keep_alive_s,
    )


if __name__ == "__main__":
    main()
