"""Admin HTTP routes: webhook subscriptions and the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from leaky_common.auth import INTERNAL_TOKEN_HEADER, PRINCIPAL_HEADER, Principal, principal_from_headers
from leaky_common.errors import NotFound
from lt_notifier import repository
from lt_notifier.domain import NOTIFIABLE_TYPES, check_webhook_url
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

router = APIRouter(prefix="/v1/admin/notifications", tags=["notifications"])


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
        if value is None:
            return None
        unknown = sorted(set(value) - NOTIFIABLE_TYPES)
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {sorted(NOTIFIABLE_TYPES)}")
        return sorted(set(value))


class Webhook(BaseModel):
    id: str
    url: str
    event_types: list[str] | None
    has_secret: bool
    active: bool
    created_at: datetime


class WebhookList(BaseModel):
    data: list[Webhook]


class Delivery(BaseModel):
    id: str
    event_id: str
    event_type: str
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
async def create_webhook(body: WebhookCreate, _: Admin, pool: Pool) -> Webhook:
    """Subscribe a URL to some (or all) event types; a secret makes every delivery HMAC-signed."""
    row = await repository.create_subscription(pool, body.url, body.event_types, body.secret)
    return Webhook.model_validate(row)


@router.get("/webhooks", response_model=WebhookList)
async def list_webhooks(_: Admin, pool: Pool) -> WebhookList:
    """Active subscriptions (secrets are never returned)."""
    return WebhookList(data=[Webhook.model_validate(r) for r in await repository.list_subscriptions(pool)])


@router.delete("/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: str, _: Admin, pool: Pool) -> Response:
    """Unsubscribe; its pending deliveries are given up."""
    if not await repository.deactivate_subscription(pool, webhook_id):
        raise NotFound(f"no webhook {webhook_id!r}", param="webhook_id", code="webhook_not_found")
    return Response(status_code=204)


@router.get("/deliveries", response_model=DeliveryList)
async def list_deliveries(
    _: Admin,
    pool: Pool,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[Literal["pending", "delivered", "dead"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    """Newest deliveries first, filtered by event type and status."""
    rows = await repository.list_deliveries(pool, event_type, status, limit)
    return DeliveryList(
        data=[Delivery.model_validate({**r, "payload": orjson.loads(r["payload"])}) for r in rows]
    )
