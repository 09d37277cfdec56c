"""Notifier settings (env prefix LT_), including the channels enabled by environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from leaky_common.events import Topics
from leaky_common.outbound import OutboundPolicy
from leaky_common.sealing import SecretBox
from leaky_common.settings import ServiceSettings
from lt_notifier.domain.channels import Endpoints
from lt_notifier.domain.subscriptions import DEFAULT_SUBSCRIPTION_ID, DefaultChannel


class NotifierSettings(ServiceSettings):
    """Where events come from, which channels the environment enables and how hard deliveries are retried."""

    service_name: str = "notifier"
    port: int = 8085

    consumer_group: str = "notifier"
    topics: list[str] = Field(
        default_factory=lambda: [Topics.PURCHASE_EVENTS, Topics.ALERTS, Topics.QUOTA_EVENTS]
    )

    # Bearer token Alertmanager posts alerts with (POST /v1/alertmanager/alerts); unset: the route answers 401
    # to everyone. In compose secrets-init generates it (docs/observability.md#alertmanager).
    alertmanager_token: SecretStr | None = None

    # A webhook every event goes to (LT_NOTIFIER_WEBHOOK_URL), kept as the subscription with id "default".
    notifier_webhook_url: str | None = None
    notifier_webhook_secret: str | None = None

    # Channels enabled by their env vars (each kept as a subscription with a fixed id; all events unless
    # noted). Subscriptions with filters (event types, severity, org/team/user) come from the admin API.
    slack_webhook_url: str | None = None
    slack_min_severity: Literal["info", "warning", "error", "critical"] = "info"
    # The alerts channel: error and critical notifications only.
    slack_alerts_webhook_url: str | None = None
    teams_webhook_url: str | None = None
    telegram_bot_token: str | None = None
    telegram_chat_id: str | None = None
    telegram_api_base: str = "https://api.telegram.org"
    whatsapp_access_token: str | None = None
    whatsapp_phone_number_id: str | None = None
    whatsapp_to: str | None = None
    whatsapp_template: str = "leaky_tokens_alert"
    whatsapp_language: str = "en_US"
    whatsapp_api_base: str = "https://graph.facebook.com"
    whatsapp_api_version: str = "v21.0"
    email_to: list[str] = Field(default_factory=list)
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    email_from: str = "Leaky Tokens <alerts@leaky-tokens.local>"

    # Non-public destinations channel requests may reach (JSON list): networks ("10.1.0.0/16") or one address
    # and port ("127.0.0.1:8090", "[::1]:8090"); empty = public addresses only. Local fake receivers and tests
    # name exactly their address and port, never the services' own.
    outbound_allow_networks: list[str] = Field(default_factory=list)
    # Keys sealing channel URLs and secrets at rest: "<id>:<base64 of 32 bytes>[,<id>:<key>...]", the first
    # seals, all open (rotation: docs/security.md). Unset: channels with a URL or secret are refused (400) and
    # env-configured ones stop the start.
    channel_secret_keys: str = ""

    delivery_max_attempts: int = Field(default=6, ge=1)
    # Retry n waits min(base * 2**(n-1), max) seconds.
    delivery_backoff_base_s: float = Field(default=2.0, gt=0)
    delivery_backoff_max_s: float = Field(default=600.0, gt=0)
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    delivery_poll_interval_s: float = Field(default=1.0, gt=0)
    delivery_batch: int = Field(default=50, ge=1)
    delivery_concurrency: int = Field(default=10, ge=1)
    db_pool_max: int = 5

    @field_validator("outbound_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        OutboundPolicy.from_strings(value)  # raises ValueError on a bad network
        return value

    @field_validator("channel_secret_keys")
    @classmethod
    def _keys(cls, value: str) -> str:
        SecretBox(value)  # raises ValueError on a bad key
        return value

    @property
    def endpoints(self) -> Endpoints:
        """Platform API locations for the channel renderers."""
        return Endpoints(
            telegram_base=self.telegram_api_base,
            whatsapp_base=self.whatsapp_api_base,
            whatsapp_version=self.whatsapp_api_version,
            email_sender=self.email_from,
        )

    def default_channels(self) -> list[DefaultChannel]:
        """The env-enabled channels (see `DEFAULT_CHANNEL_IDS`); unset ones are switched off at start-up."""
        out: list[DefaultChannel] = []
        if self.notifier_webhook_url:
            secrets = {"secret": self.notifier_webhook_secret} if self.notifier_webhook_secret else {}
            out.append(
                DefaultChannel(DEFAULT_SUBSCRIPTION_ID, "webhook", self.notifier_webhook_url, {}, secrets)
            )
        if self.slack_webhook_url:
            out.append(
                DefaultChannel("slack", "slack", self.slack_webhook_url, {}, {}, self.slack_min_severity)
            )
        if self.slack_alerts_webhook_url:
            out.append(
                DefaultChannel("slack-alerts", "slack", self.slack_alerts_webhook_url, {}, {}, "error")
            )
        if self.teams_webhook_url:
            out.append(DefaultChannel("teams", "teams", self.teams_webhook_url, {}, {}))
        if self.telegram_bot_token and self.telegram_chat_id:
            config = {"chat_id": self.telegram_chat_id}
            out.append(
                DefaultChannel("telegram", "telegram", None, config, {"bot_token": self.telegram_bot_token})
            )
        if self.whatsapp_access_token and self.whatsapp_phone_number_id and self.whatsapp_to:
            config = {
                "phone_number_id": self.whatsapp_phone_number_id,
                "to": self.whatsapp_to,
                "template": self.whatsapp_template,
                "language": self.whatsapp_language,
            }
            out.append(
                DefaultChannel(
                    "whatsapp", "whatsapp", None, config, {"access_token": self.whatsapp_access_token}
                )
            )
        if self.email_to and self.smtp_host:
            out.append(DefaultChannel("email", "email", None, {"to": self.email_to}, {}))
        return out


DEFAULT_CHANNEL_IDS = [
    DEFAULT_SUBSCRIPTION_ID,
    "slack",
    "slack-alerts",
    "teams",
    "telegram",
    "whatsapp",
    "email",
]
