"""`python -m lt_quota`: serve the quota service with settings from the environment."""

from leaky_common.serve import serve
from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings


def main() -> None:
    """Build settings from the environment and serve."""
    serve(QuotaSettings(), create_app)


if __name__ == "__main__":
    main()
