"""`python -m lt_gateway.pricing refresh [--litellm-version 1.106.2 | --source model_prices.json]`.

Rebuilds the shipped pricing table (`data/pricing.json`) from LiteLLM's model map; see
`lt_gateway.adapters.pricing_table`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lt_gateway.adapters.pricing_table import DEFAULT_LITELLM_VERSION, PRICING_FILE, refresh


def main(argv: list[str] | None = None) -> None:
    """`python -m lt_gateway.pricing refresh`."""
    parser = argparse.ArgumentParser(prog="python -m lt_gateway.pricing")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("refresh", help="rebuild data/pricing.json from LiteLLM's model map")
    cmd.add_argument("--source", type=Path, help="a model_prices_and_context_window.json to read")
    cmd.add_argument("--litellm-version", default=DEFAULT_LITELLM_VERSION)
    cmd.add_argument("--out", type=Path, default=PRICING_FILE)
    args = parser.parse_args(argv)
    count = refresh(args.source, args.litellm_version, args.out)
    print(f"wrote {count} models to {args.out}")


if __name__ == "__main__":
    main()
