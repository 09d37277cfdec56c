"""`python -m lt_notifier`: serve the notifier with settings from the environment."""

from leaky_common.serve import serve
from lt_notifier.main import create_app
from lt_notifier.settings import NotifierSettings


def main() -> None:
    """Build settings from the environment and serve."""
    serve(NotifierSettings(), create_app)


if __name__ == "__main__":
    main()
