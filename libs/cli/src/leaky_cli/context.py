"""What every command shares: the chosen profile, one API client per run and the common options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from leaky_cli.client import ApiClient
from leaky_cli.config import remember_tokens, resolve

__all__ = ["JsonOpt", "State", "api"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON body instead of a table.")]


@dataclass
class State:
    profile: str | None = None
    timeout: float = 30.0
    client: ApiClient | None = None


def _state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def api(ctx: typer.Context) -> ApiClient:
    """The client of this run (made on first use, closed when the command ends)."""
    state = _state(ctx)
    if state.client is None:
        profile = resolve(state.profile)
        client = ApiClient(
            profile,
            timeout=state.timeout,
            on_refresh=lambda access, refresh: remember_tokens(profile.name, access, refresh),
        )
        state.client = client
        ctx.find_root().call_on_close(client.close)
    return state.client
