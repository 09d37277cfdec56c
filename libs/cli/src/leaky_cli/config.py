"""Where `lt` finds the gateway and the caller's credential.

Precedence: `LT_GATEWAY_URL` / `LT_API_KEY` in the environment, then the chosen profile of the config file
(`--profile`, else `LT_PROFILE`, else the file's `default_profile`, else `default`). The file is
`$LT_CONFIG`, else `$XDG_CONFIG_HOME/leaky-tokens/config.toml` (`~/.config/...`); it is written with mode
0600 in a 0700 directory because it holds credentials.

A profile carries one credential sent as `Authorization: Bearer ...`: an API key (`api_key`), or after
`lt login --email` an `access_token` (a short-lived JWT) with its `refresh_token`; the access token takes
precedence when present, and the client refreshes it (and stores the new pair) when it has expired.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_PROFILE",
    "ConfigError",
    "ConfigFile",
    "Profile",
    "config_path",
    "load",
    "remember_tokens",
    "resolve",
    "save",
]

DEFAULT_PROFILE = "default"
_FIELDS = ("gateway_url", "api_key", "access_token", "refresh_token")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class ConfigError(Exception):
    """The configuration is missing or unusable; the message says what to do."""


@dataclass(frozen=True)
class Profile:
    """One gateway and the credential used there. `repr` never shows a credential."""

    name: str
    gateway_url: str
    api_key: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)

    @property
    def credential(self) -> str | None:
        """What goes after `Bearer`: a sign-in token if there is one, else the API key."""
        return self.access_token or self.api_key


@dataclass
class ConfigFile:
    default_profile: str = DEFAULT_PROFILE
    profiles: dict[str, dict[str, str]] = field(default_factory=dict)


def config_path() -> Path:
    explicit = os.environ.get("LT_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "leaky-tokens" / "config.toml"


def check_profile_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS:
        raise ConfigError(f"invalid profile name {name!r}: use letters, digits, '-' and '_' (at most 64)")
    return name


def check_gateway_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"invalid gateway URL {url!r}: expected http(s)://host[:port]")
    return url.strip().rstrip("/")


def load(path: Path | None = None) -> ConfigFile:
    path = path or config_path()
    if not path.exists():
        return ConfigFile()
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    profiles: dict[str, dict[str, str]] = {}
    for name, table in (raw.get("profiles") or {}).items():
        if isinstance(table, dict):
            profiles[str(name)] = {k: str(v) for k, v in table.items() if k in _FIELDS}
    return ConfigFile(str(raw.get("default_profile") or DEFAULT_PROFILE), profiles)


def _toml_string(value: str) -> str:
    # A JSON string (ASCII, escaped) is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=True)


def dumps(config: ConfigFile) -> str:
    lines = [f"default_profile = {_toml_string(config.default_profile)}"]
    for name in sorted(config.profiles):
        lines += ["", f"[profiles.{check_profile_name(name)}]"]
        table = config.profiles[name]
        lines += [f"{key} = {_toml_string(table[key])}" for key in _FIELDS if table.get(key)]
    return "\n".join(lines) + "\n"


def save(config: ConfigFile, path: Path | None = None) -> Path:
    """Write the file with mode 0600 (its directory 0700), replacing it atomically."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, dumps(config).encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def resolve(profile: str | None = None, path: Path | None = None) -> Profile:
    """The profile to use, with the environment's `LT_GATEWAY_URL` and `LT_API_KEY` taking precedence."""
    config = load(path)
    name = check_profile_name(profile or os.environ.get("LT_PROFILE") or config.default_profile)
    stored = config.profiles.get(name, {})
    if profile and not stored:
        raise ConfigError(f"no profile {name!r} in {path or config_path()}: run `lt login --profile {name}`")
    url = os.environ.get("LT_GATEWAY_URL") or stored.get("gateway_url")
    if not url:
        raise ConfigError("no gateway configured: set LT_GATEWAY_URL and LT_API_KEY, or run `lt login`")
    env_key = os.environ.get("LT_API_KEY")
    return Profile(
        name=name,
        gateway_url=check_gateway_url(url),
        api_key=env_key or stored.get("api_key"),
        access_token=None if env_key else stored.get("access_token"),
        refresh_token=None if env_key else stored.get("refresh_token"),
    )


def remember_tokens(profile: str, access_token: str, refresh_token: str, path: Path | None = None) -> None:
    """Store a refreshed pair in the profile it came from (the old refresh token no longer works)."""
    config = load(path)
    stored = config.profiles.get(profile)
    if stored is None:
        return
    stored.update({"access_token": access_token, "refresh_token": refresh_token})
    save(config, path)
