"""`python -m leaky_devinfra.fakes.chat [--host H] [--port P]`: the fake chat platforms until interrupted."""

from __future__ import annotations

import argparse

from aiohttp import web

from leaky_devinfra.fakes.chat.server import FakeChannels


def main() -> None:
    """Run the fakes until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m leaky_devinfra.fakes.chat",
        description="Local fake Slack/Teams/Telegram/WhatsApp receivers.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    web.run_app(FakeChannels().app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
