"""Request and response bodies of the admin API. Secrets (bot tokens, access tokens, signing secrets) go in
and never come back out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from leaky_common.webhook_signing import check_secret
from lt_notifier.domain.channels import ChannelName
from lt_notifier.domain.notification import NOTIFIABLE_TYPES, Severity
from lt_notifier.domain.subscriptions import (
    NewSubscription,
    check_channel_fields,
    check_event_types,
    reject_nul,
    shown_url,
)
from lt_notifier.domain.webhook import check_webhook_url

__all__ = [
    "AlertmanagerAlert",
    "AlertmanagerReceipt",
    "AlertmanagerWebhook",
    "Channel",
    "ChannelCreate",
    "ChannelList",
    "ChannelTest",
    "Delivery",
    "DeliveryList",
    "DeliveryStatus",
    "Webhook",
    "WebhookCreate",
    "WebhookList",
]

DeliveryStatus = Literal["pending", "delivered", "dead"]


class WebhookCreate(BaseModel):
    """A URL to POST some (or all) event types to, signed the Standard Webhooks way (`webhook-id`,
    `webhook-timestamp`, `webhook-signature`) with `secret`, or with a fresh secret returned once."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return reject_nul(data)

    url: str = Field(min_length=1, max_length=2048)
    # Contract type names such as "PurchaseCompleted.v1"; omitted or null = every type.
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=len(NOTIFIABLE_TYPES))
    # `whsec_` + base64 of 24-64 random bytes; omitted: one is generated and returned once.
    secret: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_webhook_url(value)

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: str | None) -> str | None:
        return None if value is None else check_secret(value)

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        return check_event_types(value)

    def to_new(self) -> NewSubscription:
        """The webhook subscription to create (scoped to the caller's org by the use case)."""
        secrets = {"secret": self.secret} if self.secret else {}
        return NewSubscription(self.url, self.event_types, secrets)


class Webhook(BaseModel):
    """A webhook subscription; whether it signs, never its secret."""

    id: str
    url: str
    event_types: list[str] | None
    # The org whose events it receives; None = every org (platform admins only).
    org_id: str | None
    has_secret: bool
    active: bool
    created_at: datetime
    # The generated signing secret, in the answer that created the webhook only (never again).
    signing_secret: str | None = None


class WebhookList(BaseModel):
    """Webhook subscriptions, oldest first."""

    data: list[Webhook]


class Delivery(BaseModel):
    """One event sent (or to be sent) to one subscription, with its attempts and the body it carries."""

    id: str
    event_id: str
    event_type: str
    channel: str
    severity: str
    subscription_id: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    delivered_at: datetime | None
    created_at: datetime
    payload: dict[str, Any]


class DeliveryList(BaseModel):
    """Deliveries, newest first."""

    data: list[Delivery]


class ChannelCreate(BaseModel):
    """A subscription of one channel to some events, filtered by severity and scope."""

    model_config = ConfigDict(extra="forbid")

    channel: ChannelName
    name: str | None = Field(default=None, min_length=1, max_length=200)
    # Slack / Teams incoming-webhook URL, or the generic webhook's URL.
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    # telegram: chat_id; whatsapp: phone_number_id, to, template (default leaky_tokens_alert), language
    # (default en_US); email: to (list of addresses).
    config: dict[str, str | list[str]] = Field(default_factory=dict)
    # telegram: bot_token; whatsapp: access_token; webhook: secret (`whsec_...`, Standard Webhooks signing;
    # omitted: generated and returned once). Stored encrypted, never returned.
    secrets: dict[str, str] = Field(default_factory=dict)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=len(NOTIFIABLE_TYPES))
    min_severity: Severity = "info"
    org_id: str | None = Field(default=None, min_length=1, max_length=200)
    team_id: str | None = Field(default=None, min_length=1, max_length=200)
    user_id: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        return check_event_types(value)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return reject_nul(data)

    @model_validator(mode="after")
    def _complete_for_channel(self) -> ChannelCreate:
        check_channel_fields(self.channel, self.url, self.config, self.secrets)
        return self

    def to_new(self) -> NewSubscription:
        """The subscription to create; `org_id` is what was asked for (the use case decides the scope)."""
        return NewSubscription(
            self.url,
            self.event_types,
            self.secrets,
            channel=self.channel,
            name=self.name,
            config=dict(self.config),
            min_severity=self.min_severity,
            org_id=self.org_id,
            team_id=self.team_id,
            user_id=self.user_id,
        )


class Channel(BaseModel):
    """A channel subscription: its filters and the names of its secrets, never their values."""

    id: str
    channel: str
    name: str | None
    # Slack and Teams webhook URLs are credentials: only their origin is shown.
    url: str | None
    config: dict[str, Any]
    secret_names: list[str]
    event_types: list[str] | None
    min_severity: str
    org_id: str | None
    team_id: str | None
    user_id: str | None
    active: bool
    created_at: datetime
    # A webhook's generated signing secret, in the answer that created it only (never again).
    signing_secret: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Channel:
        """The API view of a subscription row."""
        return cls.model_validate({**row, "url": shown_url(row["channel"], row["url"])})


class ChannelList(BaseModel):
    """Channel subscriptions, oldest first."""

    data: list[Channel]


class ChannelTest(BaseModel):
    """Result of a test send: `ok`, or what the platform answered (secrets redacted)."""

    ok: bool
    error: str | None


_LABELS = 64


def _bounded(value: dict[str, str]) -> dict[str, str]:
    if len(value) > _LABELS or any(len(k) > 200 or len(v) > 4000 for k, v in value.items()):
        raise ValueError(f"at most {_LABELS} entries, names of 200 and values of 4000 characters")
    return value


class AlertmanagerAlert(BaseModel):
    """One alert of Alertmanager's webhook (payload version 4); other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None  # Alertmanager's field names
    endsAt: datetime | None = None
    fingerprint: str = Field(default="", max_length=64, pattern=r"^[0-9a-fA-F]*$")

    @field_validator("labels", "annotations")
    @classmethod
    def _small(cls, value: dict[str, str]) -> dict[str, str]:
        return _bounded(value)


class AlertmanagerWebhook(BaseModel):
    """The body Alertmanager's `webhook_config` posts (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(max_length=10)
    status: Literal["firing", "resolved"]
    alerts: list[AlertmanagerAlert] = Field(max_length=200)


class AlertmanagerReceipt(BaseModel):
    """How many alerts were received and how many notifications were queued for the first time."""

    received: int
    new: int
