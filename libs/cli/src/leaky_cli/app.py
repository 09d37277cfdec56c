"""The `lt` command: the root app, error handling (API errors exit 1, bad usage 2) and sign-in commands."""

from __future__ import annotations

import contextlib
import os
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from leaky_cli import config as cfg
from leaky_cli.client import ApiClient, ApiError, BadInput
from leaky_cli.commands import admin, approvals, keys, me, purchases, sessions, team, top
from leaky_cli.context import JsonOpt, State, api
from leaky_cli.output import console, err_console, follow_terminal_width, list_table, record_table, show

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """Turns our errors into a message on stderr and an exit code, for every command below the root."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            err_console.print(
                f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None
        except (cfg.ConfigError, BadInput) as exc:
            err_console.print(
                f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Group,
    name="lt",
    help="Leaky Tokens from the command line: quota, usage, keys, sessions, purchases, approvals, admin.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    ctx: typer.Context,
    profile: Annotated[
        str | None, typer.Option("--profile", "-p", help="Profile of the config file (else LT_PROFILE).")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, max=600, help="HTTP timeout in seconds.")] = 30.0,
) -> None:
    follow_terminal_width()
    ctx.obj = State(profile=profile, timeout=timeout)


@app.command()
def login(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile to write.")] = cfg.DEFAULT_PROFILE,
    gateway_url: Annotated[
        str | None, typer.Option(help="Gateway URL (else LT_GATEWAY_URL or asked).")
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="Sign in with this email and a password instead of an API key.")
    ] = None,
    default: Annotated[bool, typer.Option(help="Make this the default profile.")] = True,
) -> None:
    """Store a credential in a profile (file mode 0600) after checking it against the gateway. With --email,
    sign in with a password (read from LT_PASSWORD or asked for without echo) and keep the access and refresh
    tokens; else an API key (from LT_API_KEY or asked for without echo). Nothing secret is ever printed."""
    name = cfg.check_profile_name(profile)
    url = gateway_url or os.environ.get("LT_GATEWAY_URL") or typer.prompt("Gateway URL")
    url = cfg.check_gateway_url(url)
    entry: dict[str, str]
    if email is not None:
        password = os.environ.get("LT_PASSWORD") or typer.prompt("Password", hide_input=True)
        with ApiClient(cfg.Profile(name, url)) as anonymous:
            pair = anonymous.post("/v1/auth/login", {"email": email.strip(), "password": password})
        entry = {
            "gateway_url": url,
            "access_token": pair["access_token"],
            "refresh_token": pair["refresh_token"],
        }
        checking = cfg.Profile(name, url, access_token=pair["access_token"])
    else:
        key = (os.environ.get("LT_API_KEY") or typer.prompt("API key", hide_input=True)).strip()
        entry = {"gateway_url": url, "api_key": key}
        checking = cfg.Profile(name, url, api_key=key)
    with ApiClient(checking) as client:
        me_ = client.get("/v1/users/me")
    stored = cfg.load()
    stored.profiles[name] = entry
    if default or len(stored.profiles) == 1:
        stored.default_profile = name
    path = cfg.save(stored)
    console.print(f"Signed in to {url} as {me_.get('email')} ({me_.get('role')}); profile {name!r} in {path}")


@app.command()
def logout(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile to forget.")] = cfg.DEFAULT_PROFILE,
) -> None:
    """Forget a profile's credential (removes the profile from the config file); a signed-in profile's
    session is ended at the gateway first (best effort)."""
    stored = cfg.load()
    removed = stored.profiles.pop(cfg.check_profile_name(profile), None)
    if removed is None:
        raise cfg.ConfigError(f"no profile {profile!r}")
    if removed.get("refresh_token") and removed.get("gateway_url"):
        with contextlib.suppress(ApiError), ApiClient(cfg.Profile(profile, removed["gateway_url"])) as client:
            client.post("/v1/auth/logout", {"refresh_token": removed["refresh_token"]})
    cfg.save(stored)
    console.print(f"Profile {profile!r} removed.")


@app.command()
def profiles() -> None:
    """List the profiles of the config file (gateway URLs only, never credentials)."""
    stored = cfg.load()
    rows = [
        {"profile": n, "gateway_url": p.get("gateway_url"), "default": n == stored.default_profile}
        for n, p in sorted(stored.profiles.items())
    ]
    console.print(
        list_table(rows, [("profile", "profile"), ("gateway", "gateway_url"), ("default", "default")])
    )


@app.command()
def whoami(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Who the credential belongs to (`GET /v1/users/me`)."""
    show(api(ctx).get("/v1/users/me"), as_json, record_table)


me.register(app)
team.register(app)
keys.register(app)
sessions.register(app)
purchases.register(app)
approvals.register(app)
top.register(app)
app.add_typer(admin.app, name="admin")


def main() -> None:
    app()
