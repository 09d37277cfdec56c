"""`python -m lt_gateway`: serve the gateway with settings from the environment."""

from leaky_common.serve import serve
from lt_gateway.main import create_app
from lt_gateway.settings import GatewaySettings


def main() -> None:
    """Build settings from the environment and serve."""
    serve(GatewaySettings(), create_app)


if __name__ == "__main__":
    main()
