"""The config file: 0600, profiles, precedence of the environment, no credential in a repr."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from leaky_cli import config as cfg


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LT_GATEWAY_URL", "LT_API_KEY", "LT_PROFILE", "LT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def _two_profiles() -> cfg.ConfigFile:
    return cfg.ConfigFile(
        default_profile="work",
        profiles={
            "work": {"gateway_url": "https://gw.example", "api_key": "lt-work"},
            "home": {"gateway_url": "http://127.0.0.1:9", "api_key": 'lt-"quoted"\\key'},
        },
    )


def test_the_file_is_written_0600_in_a_0700_directory_under_xdg_config_home(tmp_path: Path) -> None:
    path = cfg.save(_two_profiles())
    assert path == tmp_path / "xdg" / "leaky-tokens" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_rewriting_a_file_left_readable_by_others_makes_it_0600_again(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('default_profile = "x"\n')
    path.chmod(0o644)
    cfg.save(_two_profiles(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_profiles_round_trip_through_valid_toml_even_with_quotes_and_backslashes(tmp_path: Path) -> None:
    path = cfg.save(_two_profiles(), tmp_path / "c.toml")
    assert tomllib.loads(path.read_text())["profiles"]["home"]["api_key"] == 'lt-"quoted"\\key'
    assert cfg.load(path) == _two_profiles()


def test_the_default_profile_is_used_and_another_is_chosen_by_name(tmp_path: Path) -> None:
    path = cfg.save(_two_profiles(), tmp_path / "c.toml")
    assert cfg.resolve(path=path).api_key == "lt-work"
    home = cfg.resolve("home", path=path)
    assert (home.name, home.gateway_url) == ("home", "http://127.0.0.1:9")


def test_the_environment_wins_over_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = cfg.save(_two_profiles(), tmp_path / "c.toml")
    monkeypatch.setenv("LT_GATEWAY_URL", "http://10.0.0.1:8080/")
    monkeypatch.setenv("LT_API_KEY", "lt-env")
    profile = cfg.resolve(path=path)
    assert (profile.gateway_url, profile.credential) == ("http://10.0.0.1:8080", "lt-env")


def test_lt_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LT_CONFIG", str(tmp_path / "elsewhere.toml"))
    assert cfg.config_path() == tmp_path / "elsewhere.toml"


def test_an_unknown_profile_or_no_gateway_at_all_says_what_to_do(tmp_path: Path) -> None:
    path = cfg.save(_two_profiles(), tmp_path / "c.toml")
    with pytest.raises(cfg.ConfigError, match="lt login --profile nope"):
        cfg.resolve("nope", path=path)
    with pytest.raises(cfg.ConfigError, match="LT_GATEWAY_URL"):
        cfg.resolve(path=tmp_path / "missing.toml")


@pytest.mark.parametrize("url", ["ftp://x", "127.0.0.1:8080", "http://", "javascript:alert(1)"])
def test_a_gateway_url_must_be_http_or_https_with_a_host(url: str) -> None:
    with pytest.raises(cfg.ConfigError, match="invalid gateway URL"):
        cfg.check_gateway_url(url)


@pytest.mark.parametrize("name", ["", "a b", "../x", "x]\n[y", "é"])
def test_profile_names_cannot_break_the_file(name: str) -> None:
    with pytest.raises(cfg.ConfigError, match="invalid profile name"):
        cfg.check_profile_name(name)


def test_a_sign_in_token_takes_precedence_and_no_credential_shows_in_a_repr() -> None:
    profile = cfg.Profile("p", "http://gw", api_key="lt-secret", access_token="eyJ.secret.jwt")
    assert profile.credential == "eyJ.secret.jwt"
    assert "secret" not in repr(profile)
    assert cfg.Profile("p", "http://gw", api_key="lt-secret").credential == "lt-secret"
