"""`python -m lt_analytics`: serve the analytics API with settings from the environment."""

from leaky_common.serve import serve
from lt_analytics.main import create_app
from lt_analytics.settings import AnalyticsSettings


def main() -> None:
    """Build settings from the environment and serve."""
    serve(AnalyticsSettings(), create_app)


if __name__ == "__main__":
    main()
