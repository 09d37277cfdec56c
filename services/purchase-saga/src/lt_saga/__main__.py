"""`python -m lt_saga`: serve the purchase-saga service with settings from the environment."""

from leaky_common.serve import serve
from lt_saga.main import create_app
from lt_saga.settings import SagaSettings


def main() -> None:
    """Build settings from the environment and serve."""
    serve(SagaSettings(), create_app)


if __name__ == "__main__":
    main()
