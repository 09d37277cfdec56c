"""Bad usage exits 2 with a message, before any request is made (no gateway is configured here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from leaky_cli.app import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    return {
        "LT_GATEWAY_URL": None,
        "LT_API_KEY": None,
        "LT_PROFILE": None,
        "LT_CONFIG": str(tmp_path / "c.toml"),
    }


@pytest.mark.parametrize(
    "args",
    [
        ["usage", "--days", "0"],
        ["usage", "--by", "week"],
        ["nope"],
        ["buy", "0"],
        ["freeze", "team", "t1", "--reason", "x"],
        ["admin", "thresholds", "set", "loop_consecutive=many"],
        ["keys", "update", "k1"],
    ],
)
def test_bad_usage_exits_2(args: list[str], env: dict[str, str | None]) -> None:
    result = runner.invoke(app, args, env={**env, "LT_GATEWAY_URL": "http://127.0.0.1:9", "LT_API_KEY": "x"})
    assert result.exit_code == 2, result.output


def test_no_gateway_configured_exits_2_and_says_how_to_configure(env: dict[str, str | None]) -> None:
    result = runner.invoke(app, ["quota"], env=env)
    assert result.exit_code == 2
    assert "lt login" in result.output


def test_an_unreachable_gateway_exits_1_without_showing_the_key(env: dict[str, str | None]) -> None:
    # Port 9 (discard) on loopback: nothing listens there on these machines.
    result = runner.invoke(
        app, ["quota"], env={**env, "LT_GATEWAY_URL": "http://127.0.0.1:9", "LT_API_KEY": "lt-sekret"}
    )
    assert result.exit_code == 1
    assert "cannot reach the gateway" in result.output and "lt-sekret" not in result.output
