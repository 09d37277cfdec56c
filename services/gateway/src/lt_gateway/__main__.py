"""`python -m lt_gateway`: serve the gateway with uvicorn."""

import uvicorn

from lt_gateway.main import create_app
from lt_gateway.settings import GatewaySettings


def main() -> None:
    """Build settings from the environment and serve."""
    settings = GatewaySettings()
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
