"""Admin HTTP routes: channel subscriptions (Slack, Teams, Telegram, WhatsApp, email, webhooks) and the
delivery log. Secrets (bot tokens, access tokens, signing secrets) go in and never come back out.

Org isolation: an admin's subscriptions are scoped to their own org (they hear only its events) and they see,
delete, test and retry only those and their deliveries. Platform admins (`Principal.platform_admin`) run the
whole gateway: they may create unscoped (all-org) subscriptions or scope one to any org, and see everything,
including the channels configured by environment variables."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from leaky_common.auth import INTERNAL_TOKEN_HEADER, PRINCIPAL_HEADER, Principal, principal_from_headers
from leaky_common.errors import Forbidden, InvalidRequest, NotFound
from lt_notifier import repository
from lt_notifier.channels import ChannelName
from lt_notifier.domain import NOTIFIABLE_TYPES, check_webhook_url
from lt_notifier.notification import Severity
from lt_notifier.settings import NotifierSettings

__all__ = ["router"]


async def _admin(request: Request) -> Principal:
    settings: NotifierSettings = request.app.state.settings
    return principal_from_headers(
        request.headers.get(PRINCIPAL_HEADER),
        request.headers.get(INTERNAL_TOKEN_HEADER),
        settings.internal_token,
        admin=True,
    )


async def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


Admin = Annotated[Principal, Depends(_admin)]
Pool = Annotated[asyncpg.Pool, Depends(_pool)]


def _visible_org(admin: Principal) -> str | None:
    """The org whose subscriptions and deliveries `admin` may see and manage; None (every one) for platform
    admins."""
    return None if admin.platform_admin else admin.org_id


def _scope_for_new(admin: Principal, org_id: str | None) -> str | None:
    """The org scope stored for a new subscription: the admin's own org (naming another is a 403 `other_org`);
    platform admins keep what they asked for, None meaning every org."""
    if admin.platform_admin:
        return org_id
    if org_id is not None and org_id != admin.org_id:
        raise Forbidden("you may only subscribe to your own org's events", param="org_id", code="other_org")
    return admin.org_id


router = APIRouter(prefix="/v1/admin/notifications", tags=["notifications"])


def _reject_nul(data: Any) -> Any:
    """PostgreSQL cannot store a NUL character in text or JSON: refuse it up front (400, not 500)."""
    if b"\\u0000" in orjson.dumps(data, default=str):  # JSON escapes NUL as \u0000
        raise ValueError("values must not contain NUL characters")
    return data


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return _reject_nul(data)

    url: str = Field(min_length=1, max_length=2048)
    # Contract type names such as "PurchaseCompleted.v1"; omitted or null = every type.
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=len(NOTIFIABLE_TYPES))
    secret: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_webhook_url(value)

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        return _check_event_types(value)


class Webhook(BaseModel):
    id: str
    url: str
    event_types: list[str] | None
    # The org whose events it receives; None = every org (platform admins only).
    org_id: str | None
    has_secret: bool
    active: bool
    created_at: datetime


class WebhookList(BaseModel):
    data: list[Webhook]


class Delivery(BaseModel):
    id: str
    event_id: str
    event_type: str
    channel: str
    severity: str
    subscription_id: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    delivered_at: datetime | None
    created_at: datetime
    payload: dict[str, Any]


class DeliveryList(BaseModel):
    data: list[Delivery]


@router.post("/webhooks", status_code=201, response_model=Webhook)
async def create_webhook(body: WebhookCreate, admin: Admin, pool: Pool) -> Webhook:
    """Subscribe a URL to some (or all) event types of the admin's org (platform admins: of every org); a
    secret makes every delivery HMAC-signed."""
    secrets = {"secret": body.secret} if body.secret else {}
    row = await repository.create_subscription(
        pool, body.url, body.event_types, secrets, org_id=_scope_for_new(admin, None)
    )
    return Webhook.model_validate(row)


@router.get("/webhooks", response_model=WebhookList)
async def list_webhooks(admin: Admin, pool: Pool) -> WebhookList:
    """Active webhook subscriptions of the admin's org (platform admins: all); secrets are never returned."""
    rows = await repository.list_subscriptions(pool, "webhook", _visible_org(admin))
    return WebhookList(data=[Webhook.model_validate(r) for r in rows])


@router.delete("/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: str, admin: Admin, pool: Pool) -> Response:
    """Unsubscribe; its pending deliveries are given up. Another org's webhook is a 404."""
    if not await repository.deactivate_subscription(pool, webhook_id, _visible_org(admin)):
        raise NotFound(f"no webhook {webhook_id!r}", param="webhook_id", code="webhook_not_found")
    return Response(status_code=204)


@router.get("/deliveries", response_model=DeliveryList)
async def list_deliveries(
    admin: Admin,
    pool: Pool,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[Literal["pending", "delivered", "dead"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    channel: Annotated[ChannelName | None, Query()] = None,
) -> DeliveryList:
    """Newest deliveries of the admin's org's subscriptions (platform admins: all) first, filtered by event
    type, status and channel."""
    rows = await repository.list_deliveries(pool, event_type, status, limit, channel, _visible_org(admin))
    return DeliveryList(
        data=[Delivery.model_validate({**r, "payload": orjson.loads(r["payload"])}) for r in rows]
    )


@router.post("/deliveries/{delivery_id}/retry", response_model=Delivery)
async def retry_delivery(request: Request, delivery_id: str, admin: Admin, pool: Pool) -> Delivery:
    """Send a dead delivery again (with a fresh attempt budget), e.g. after fixing the receiver. Another
    org's delivery is a 404."""
    row = await repository.retry_delivery(pool, delivery_id, _visible_org(admin))
    if row is None:
        raise NotFound(
            f"no dead delivery {delivery_id!r} of an active channel",
            param="delivery_id",
            code="delivery_not_found",
        )
    request.app.state.deliverer.wake()
    return Delivery.model_validate({**row, "payload": orjson.loads(row["payload"])})


def _check_event_types(value: list[str] | None) -> list[str] | None:
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
_ALLOWED_CONFIG = {
    "webhook": set(),
    "slack": set(),
    "teams": set(),
    "telegram": {"chat_id"},
    "whatsapp": {"phone_number_id", "to", "template", "language"},
    "email": {"to"},
}
_ALLOWED_SECRETS = {"webhook": {"secret"}, "telegram": {"bot_token"}, "whatsapp": {"access_token"}}


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
    # telegram: bot_token; whatsapp: access_token; webhook: secret (HMAC signing). Never returned.
    secrets: dict[str, str] = Field(default_factory=dict)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=len(NOTIFIABLE_TYPES))
    min_severity: Severity = "info"
    org_id: str | None = Field(default=None, min_length=1, max_length=200)
    team_id: str | None = Field(default=None, min_length=1, max_length=200)
    user_id: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str] | None) -> list[str] | None:
        return _check_event_types(value)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return _reject_nul(data)

    @model_validator(mode="after")
    def _complete_for_channel(self) -> ChannelCreate:
        needs_url, config_keys, secret_keys = _REQUIRED[self.channel]
        if needs_url:
            if self.url is None:
                raise ValueError(f"a {self.channel} channel needs a url")
            check_webhook_url(self.url)
        elif self.url is not None:
            raise ValueError(f"a {self.channel} channel takes no url")
        for kind, given, required, allowed in (
            ("config", self.config, config_keys, _ALLOWED_CONFIG[self.channel]),
            ("secrets", self.secrets, secret_keys, _ALLOWED_SECRETS.get(self.channel, set())),
        ):
            missing = [k for k in required if not given.get(k)]
            if missing:
                raise ValueError(f"a {self.channel} channel needs {kind} {missing}")
            extra = sorted(set(given) - allowed)
            if extra:
                raise ValueError(f"unknown {kind} for {self.channel}: {extra}")
        if self.channel == "email":
            to = self.config["to"]
            if not isinstance(to, list) or not to or not all("@" in a for a in to):
                raise ValueError("email config 'to' must be a list of addresses")
        elif any(not isinstance(v, str) for v in self.config.values()):
            raise ValueError("config values must be strings")
        return self


class Channel(BaseModel):
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


class ChannelList(BaseModel):
    data: list[Channel]


def _channel_view(row: dict[str, Any]) -> Channel:
    url = row["url"]
    if url and row["channel"] in ("slack", "teams"):
        scheme, _, rest = url.partition("://")
        url = f"{scheme}://{rest.split('/', 1)[0]}/***"
    return Channel.model_validate({**row, "url": url})


@router.post("/channels", status_code=201, response_model=Channel)
async def create_channel(request: Request, body: ChannelCreate, admin: Admin, pool: Pool) -> Channel:
    """Subscribe a channel to events (all, or `event_types`) at or above `min_severity` of the admin's org,
    optionally only those of one team or user. Platform admins may leave `org_id` out (every org) or name any
    org; other admins' subscriptions are always scoped to their own org (another org: 403 `other_org`)."""
    org_id = _scope_for_new(admin, body.org_id)
    settings: NotifierSettings = request.app.state.settings
    if body.channel == "email" and not settings.smtp_host:
        raise InvalidRequest(
            "email needs an SMTP server (LT_SMTP_HOST)", param="channel", code="smtp_not_configured"
        )
    row = await repository.create_subscription(
        pool,
        body.url,
        body.event_types,
        body.secrets,
        channel=body.channel,
        name=body.name,
        config=body.config,
        min_severity=body.min_severity,
        org_id=org_id,
        team_id=body.team_id,
        user_id=body.user_id,
    )
    return _channel_view(row)


@router.get("/channels", response_model=ChannelList)
async def list_channels(
    admin: Admin, pool: Pool, channel: Annotated[ChannelName | None, Query()] = None
) -> ChannelList:
    """Active channel subscriptions of the admin's org; platform admins see all, including those enabled by
    environment variables. Secrets are never shown."""
    rows = await repository.list_subscriptions(pool, channel, _visible_org(admin))
    return ChannelList(data=[_channel_view(r) for r in rows])


@router.delete("/channels/{channel_id}", status_code=204)
async def delete_channel(channel_id: str, admin: Admin, pool: Pool) -> Response:
    """Unsubscribe; its pending deliveries are given up. Another org's channel is a 404."""
    if not await repository.deactivate_subscription(pool, channel_id, _visible_org(admin)):
        raise NotFound(f"no channel {channel_id!r}", param="channel_id", code="channel_not_found")
    return Response(status_code=204)


class ChannelTest(BaseModel):
    """Result of a test send: `ok`, or what the platform answered (secrets redacted)."""

    ok: bool
    error: str | None


@router.post("/channels/{channel_id}/test", response_model=ChannelTest)
async def test_channel(request: Request, channel_id: str, admin: Admin, pool: Pool) -> ChannelTest:
    """Send a test notification to a channel now and report the outcome (not queued, not retried). Another
    org's channel is a 404."""
    subscription = await repository.get_subscription(pool, channel_id, _visible_org(admin))
    if subscription is None:
        raise NotFound(f"no channel {channel_id!r}", param="channel_id", code="channel_not_found")
    error = await request.app.state.deliverer.send_test(subscription)
    return ChannelTest(ok=error is None, error=error)
