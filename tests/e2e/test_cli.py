"""`lt` against the live stack: `--json` is the API's body, exit codes 0/1/2, a user refused an admin command,
a purchase waited for to COMPLETED, keys created, rotated and revoked, `lt login` writing a 0600 profile."""

from __future__ import annotations

import json
import stat
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from leaky_cli.app import app

pytestmark = pytest.mark.e2e

runner = CliRunner()


class Lt:
    """Runs `lt` in-process with a gateway URL and a key from the environment, as a user would."""

    def __init__(self, stack: Any, key: str, config: Path) -> None:
        self.env = {
            "LT_GATEWAY_URL": stack.gateway_url,
            "LT_API_KEY": key,
            "LT_CONFIG": str(config),
            "LT_PROFILE": None,
            "COLUMNS": "200",
        }

    def __call__(self, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
        return runner.invoke(app, list(args), env={**self.env, **(env or {})})

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


def http(stack: Any, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture
def admin_http(stack: Any) -> Iterator[httpx.Client]:
    with http(stack, stack.admin_key) as client:
        yield client


@pytest.fixture
def person(admin_http: httpx.Client) -> dict[str, Any]:
    """A user of a new team, with a personal pool."""
    team = admin_http.post("/v1/admin/teams", json={"name": f"cli-{uuid.uuid4().hex[:8]}"})
    assert team.status_code == 201, team.text
    r = admin_http.post(
        "/v1/admin/users",
        json={
            "email": f"cli-{uuid.uuid4().hex[:8]}@example.com",
            "name": "Cli User",
            "personal_quota": 100_000,
            "team_id": team.json()["id"],
        },
    )
    assert r.status_code == 201, r.text
    return {**r.json(), "team_id": team.json()["id"]}


@pytest.fixture
def lt_user(stack: Any, person: dict[str, Any], tmp_path: Path) -> Lt:
    return Lt(stack, person["api_key"], tmp_path / "config.toml")


@pytest.fixture
def lt_admin(stack: Any, tmp_path: Path) -> Lt:
    return Lt(stack, stack.admin_key, tmp_path / "config.toml")


def test_json_is_exactly_the_apis_body(
    stack: Any, person: dict[str, Any], lt_user: Lt, lt_admin: Lt, admin_http: httpx.Client
) -> None:
    with http(stack, person["api_key"]) as api:
        for args, path in [
            (["quota"], "/v1/users/me/quota"),
            (["whoami"], "/v1/users/me"),
            (["keys", "list"], "/v1/users/me/keys"),
            (["usage", "--days", "3"], "/v1/analytics/usage?days=3"),
            (["leaderboard", "--period", "daily"], "/v1/analytics/leaderboard?period=daily&limit=10"),
            (["approvals", "list"], "/v1/approvals"),
            (["teams"], "/v1/users/me/teams"),
        ]:
            assert lt_user.json(*args) == api.get(path).json(), args
    for args, path in [
        (["admin", "users", "list"], "/v1/admin/users"),
        (["admin", "teams", "list"], "/v1/admin/teams"),
        (["admin", "pools", "list", "--owner-type", "team"], "/v1/admin/pools?owner_type=team"),
        (["admin", "orgs", "show"], "/v1/admin/org"),
        (["admin", "users", "quota", person["id"]], f"/v1/admin/users/{person['id']}/quota"),
    ]:
        assert lt_admin.json(*args) == admin_http.get(path).json(), args


def test_tables_by_default_exit_0(lt_user: Lt, person: dict[str, Any]) -> None:
    result = lt_user("quota")
    assert result.exit_code == 0, result.output
    assert "100,000" in result.stdout and "status active" in result.stdout
    top = lt_user("top", "--once")
    assert top.exit_code == 0, top.output
    assert "lt top" in top.stdout and "Pools" in top.stdout and "freezes: not shown" in top.stdout


def test_a_user_running_an_admin_command_gets_the_apis_message_and_exit_1(
    stack: Any, person: dict[str, Any], lt_user: Lt
) -> None:
    with http(stack, person["api_key"]) as api:
        answer = api.get("/v1/admin/users")
    assert answer.status_code == 403
    result = lt_user("admin", "users", "list")
    assert result.exit_code == 1
    assert answer.json()["error"]["message"] in result.stderr and "403" in result.stderr
    assert result.stdout == ""


def test_a_bad_key_exits_1_and_bad_usage_2(lt_user: Lt) -> None:
    bad = lt_user("quota", env={"LT_API_KEY": "lt-not-a-key"})
    assert bad.exit_code == 1 and "401" in bad.stderr and "lt-not-a-key" not in bad.output
    assert lt_user("usage", "--by", "week").exit_code == 2
    assert lt_user("sessions", "show", "..").exit_code == 2


def test_buy_wait_ends_completed_and_a_declined_card_exits_1(
    lt_user: Lt, stack: Any, person: dict[str, Any]
) -> None:
    final = lt_user.json("buy", "5000", "--wait", "--timeout", "60")
    assert final["status"] == "COMPLETED" and final["amount"] == 5000
    with http(stack, person["api_key"]) as api:
        assert final == api.get(f"/v1/purchases/{final['id']}").json()
    assert lt_user.json("purchases", final["id"]) == final
    assert lt_user.json("quota")["personal_quota"] == 105_000
    declined = lt_user(
        "buy", "100", "--wait", "--payment-method", "pm_card_chargeDeclined", "--timeout", "60"
    )
    assert declined.exit_code == 1, declined.output
    assert "FAILED" in declined.stdout or "COMPENSATED" in declined.stdout


def test_keys_create_rotate_revoke_round_trip(lt_user: Lt, stack: Any) -> None:
    made = lt_user.json("keys", "create", "--name", "cli-test", "--model", "mock-gpt")
    assert made["name"] == "cli-test" and made["allowed_models"] == ["mock-gpt"]
    with http(stack, made["api_key"]) as api:
        assert api.get("/v1/users/me").status_code == 200
    rotated = lt_user.json("keys", "rotate", made["id"])
    assert rotated["rotated_from"] == made["id"] and rotated["api_key"] != made["api_key"]
    with http(stack, made["api_key"]) as old, http(stack, rotated["api_key"]) as new:
        assert old.get("/v1/users/me").status_code == 401
        assert new.get("/v1/users/me").status_code == 200
    table = lt_user("keys", "list")
    assert rotated["key_prefix"] in table.stdout and rotated["api_key"] not in table.stdout
    assert lt_user.json("keys", "revoke", rotated["id"]) == {"id": rotated["id"], "revoked": True}
    with http(stack, rotated["api_key"]) as new:
        assert new.get("/v1/users/me").status_code == 401
    assert lt_user("keys", "revoke", "no-such-key").exit_code == 1


def test_approvals_freezes_and_sessions(lt_user: Lt, lt_admin: Lt, person: dict[str, Any]) -> None:
    asked = lt_user.json("approvals", "request", "500", "--reason", "cli test")
    assert asked["status"] == "pending"
    assert lt_user("approvals", "approve", asked["id"]).exit_code == 1
    assert asked["id"] in [a["id"] for a in lt_admin.json("approvals", "list", "--pending")["data"]]
    approved = lt_admin.json("approvals", "approve", asked["id"], "--credits", "300")
    assert (approved["status"], approved["approved_credits"]) == ("approved", 300)
    frozen = lt_admin.json("freeze", "user", person["id"], "--reason", "cli test", "--duration", "600")
    assert frozen["target_id"] == person["id"]
    assert person["id"] in [f["target_id"] for f in lt_admin.json("freezes")["data"]]
    assert lt_admin.json("unfreeze", "user", person["id"])["lifted"] >= 1
    sessions = lt_admin.json("sessions", "list")
    assert sessions["object"] == "list"


def test_login_writes_a_0600_profile_used_without_environment(
    stack: Any, person: dict[str, Any], tmp_path: Path
) -> None:
    config = tmp_path / "cfg" / "config.toml"
    lt = Lt(stack, person["api_key"], config)
    login = lt("login", "--profile", "e2e", "--gateway-url", stack.gateway_url, env={"LT_GATEWAY_URL": None})
    assert login.exit_code == 0, login.output
    assert person["api_key"] not in login.output and person["email"] in login.output
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    bare = {"LT_GATEWAY_URL": None, "LT_API_KEY": None}
    assert json.loads(lt("--profile", "e2e", "whoami", "--json", env=bare).stdout)["id"] == person["id"]
    assert json.loads(lt("whoami", "--json", env=bare).stdout)["id"] == person["id"]
    listed = lt("profiles", env=bare)
    assert "e2e" in listed.stdout and person["api_key"] not in listed.stdout
    wrong = lt("login", "--profile", "bad", env={"LT_API_KEY": "lt-wrong"})
    assert wrong.exit_code == 1 and "bad" not in config.read_text()


def test_login_with_email_and_password_keeps_a_refreshing_session(
    stack: Any, person: dict[str, Any], tmp_path: Path
) -> None:
    password = "cli sign-in password"
    with http(stack, person["api_key"]) as client:
        assert client.put("/v1/users/me/password", json={"password": password}).status_code == 204
    config = tmp_path / "cfg" / "config.toml"
    lt = Lt(stack, person["api_key"], config)
    bare = {"LT_GATEWAY_URL": None, "LT_API_KEY": None}
    wrong = lt(
        "login",
        "--email",
        person["email"],
        "--gateway-url",
        stack.gateway_url,
        env={**bare, "LT_PASSWORD": "nope"},
    )
    assert wrong.exit_code == 1 and "invalid email or password" in wrong.stderr
    login = lt(
        "login",
        "--email",
        person["email"],
        "--gateway-url",
        stack.gateway_url,
        env={**bare, "LT_PASSWORD": password},
    )
    assert login.exit_code == 0, login.output
    assert password not in login.output and person["email"] in login.output
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    stored = tomllib.loads(config.read_text())["profiles"]["default"]
    assert set(stored) == {"gateway_url", "access_token", "refresh_token"}
    me = json.loads(lt("whoami", "--json", env=bare).stdout)
    assert me["id"] == person["id"]
    # A refused access token (here: its signature spoiled) is refreshed once and the new pair stored.
    spoiled = stored["access_token"][:-6] + (
        "AAAAAA" if not stored["access_token"].endswith("AAAAAA") else "BBBBBB"
    )
    config.write_text(config.read_text().replace(stored["access_token"], spoiled))
    assert json.loads(lt("whoami", "--json", env=bare).stdout)["id"] == person["id"]
    refreshed = tomllib.loads(config.read_text())["profiles"]["default"]
    assert refreshed["access_token"] not in (stored["access_token"], spoiled)
    assert refreshed["refresh_token"] != stored["refresh_token"]
    # Logging out ends the session at the gateway: the stored refresh token no longer works.
    assert lt("logout", env=bare).exit_code == 0
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        r = client.post("/v1/auth/refresh", json={"refresh_token": refreshed["refresh_token"]})
        assert r.status_code == 401


def test_reports_for_admins_and_managers_only(lt_user: Lt, lt_admin: Lt, admin_http: httpx.Client) -> None:
    org_id = admin_http.get("/v1/users/me").json()["org_id"]
    expected = admin_http.get("/v1/analytics/report", params={"scope": "org", "id": org_id, "days": 2}).json()
    assert lt_admin.json("report", "--scope", "org", "--days", "2") == expected
    refused = lt_user("report")  # a plain member of their team
    assert refused.exit_code == 1 and "403" in refused.stderr
