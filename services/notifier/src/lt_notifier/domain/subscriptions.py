"""Channel subscriptions (no I/O): their records, what each channel needs, which event types exist, and how
a subscription is shown (secrets never; Slack and Teams URLs only by origin)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from leaky_common.webhook_signing import check_secret
from lt_notifier.domain.channels import ChannelName
from lt_notifier.domain.notification import NOTIFIABLE_TYPES
from lt_notifier.domain.webhook import check_webhook_url

__all__ = [
    "DEFAULT_SUBSCRIPTION_ID",
    "DefaultChannel",
    "NewSubscription",
    "Subscription",
    "check_channel_fields",
    "check_event_types",
    "reject_nul",
    "shown_url",
]

DEFAULT_SUBSCRIPTION_ID = "default"


@dataclass(frozen=True, slots=True)
class Subscription:
    """What it takes to send to one active subscription."""

    id: str
    channel: str
    url: str | None
    config: dict[str, Any]
    secrets: dict[str, str]


@dataclass(frozen=True, slots=True)
class DefaultChannel:
    """A subscription configured by environment variables (kept in sync at start-up under a fixed id)."""

    id: str
    channel: str
    url: str | None
    config: dict[str, Any]
    secrets: dict[str, str]
    min_severity: str = "info"


@dataclass(frozen=True, slots=True)
class NewSubscription:
    """A subscription to create: a channel, its filters (event types, severity, scope) and its secrets."""

    url: str | None
    event_types: list[str] | None
    secrets: dict[str, str]
    channel: str = "webhook"
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    min_severity: str = "info"
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None


def reject_nul(data: Any) -> Any:
    """PostgreSQL cannot store a NUL character in text or JSON: refuse it up front (400, not 500). Walks the
    strings (keys and values) without serialising: an integer beyond 64 bits or a deep nesting is left to the
    model's own validation (400), never an exception here (500)."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("values must not contain NUL characters")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return data


def check_event_types(value: list[str] | None) -> list[str] | None:
    """Known contract type names, sorted and deduplicated; None (every type) stays None."""
    if value is None:
        return None
    unknown = sorted(set(value) - NOTIFIABLE_TYPES)
    if unknown:
        raise ValueError(f"unknown event types {unknown}; known: {sorted(NOTIFIABLE_TYPES)}")
    return sorted(set(value))


_REQUIRED: dict[str, tuple[bool, tuple[str, ...], tuple[str, ...]]] = {
    # channel: (needs url, required config keys, required secret keys)
    "webhook": (True, (), ()),
    "slack": (True, (), ()),
    "teams": (True, (), ()),
    "telegram": (False, ("chat_id",), ("bot_token",)),
    "whatsapp": (False, ("phone_number_id", "to"), ("access_token",)),
    "email": (False, ("to",), ()),
}
_ALLOWED_CONFIG: dict[str, set[str]] = {
    "webhook": set(),
    "slack": set(),
    "teams": set(),
    "telegram": {"chat_id"},
    "whatsapp": {"phone_number_id", "to", "template", "language"},
    "email": {"to"},
}
_ALLOWED_SECRETS = {"webhook": {"secret"}, "telegram": {"bot_token"}, "whatsapp": {"access_token"}}


def _check_url(channel: ChannelName, url: str | None, needs_url: bool) -> None:
    if needs_url:
        if url is None:
            raise ValueError(f"a {channel} channel needs a url")
        check_webhook_url(url)
    elif url is not None:
        raise ValueError(f"a {channel} channel takes no url")


_TELEGRAM_TOKEN = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{1,100}$")
_DIGITS = re.compile(r"^[0-9]{1,30}$")


def _check_path_parts(
    channel: ChannelName, config: dict[str, str | list[str]], secrets: dict[str, str]
) -> None:
    # These become parts of the platform API's URL path: nothing but their documented shapes.
    if channel == "telegram" and not _TELEGRAM_TOKEN.match(secrets.get("bot_token", "")):
        raise ValueError("telegram bot_token must look like '<digits>:<letters, digits, _ or ->'")
    if channel == "whatsapp" and not _DIGITS.match(str(config.get("phone_number_id", ""))):
        raise ValueError("whatsapp phone_number_id must be digits")
    if channel == "webhook" and "secret" in secrets:
        check_secret(secrets["secret"])


def check_channel_fields(
    channel: ChannelName, url: str | None, config: dict[str, str | list[str]], secrets: dict[str, str]
) -> None:
    """Raise ValueError unless the url, config and secrets are exactly what `channel` needs."""
    needs_url, config_keys, secret_keys = _REQUIRED[channel]
    _check_url(channel, url, needs_url)
    for kind, given, required, allowed in (
        ("config", config, config_keys, _ALLOWED_CONFIG[channel]),
        ("secrets", secrets, secret_keys, _ALLOWED_SECRETS.get(channel, set())),
    ):
        missing = [k for k in required if not given.get(k)]
        if missing:
            raise ValueError(f"a {channel} channel needs {kind} {missing}")
        extra = sorted(set(given) - allowed)
        if extra:
            raise ValueError(f"unknown {kind} for {channel}: {extra}")
    _check_path_parts(channel, config, secrets)
    if channel == "email":
        to = config["to"]
        if not isinstance(to, list) or not to or not all("@" in a for a in to):
            raise ValueError("email config 'to' must be a list of addresses")
    elif any(not isinstance(v, str) for v in config.values()):
        raise ValueError("config values must be strings")


def shown_url(channel: str, url: str | None) -> str | None:
    """The URL as the API shows it: Slack and Teams webhook URLs are credentials, so only their origin."""
    if url and channel in ("slack", "teams"):
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}/***"
    return url
