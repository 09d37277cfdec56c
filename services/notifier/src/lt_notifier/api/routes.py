"""AdminPrincipal HTTP routes: channel subscriptions (Slack, Teams, Telegram, WhatsApp, email, webhooks) and the
delivery log, each org-isolated (see `lt_notifier.usecases.admin`)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response

from leaky_common.api import AdminPrincipal, error_responses
from leaky_common.errors import NotFound
from lt_notifier.api.deps import Subscriptions
from lt_notifier.api.schemas import (
    Channel,
    ChannelCreate,
    ChannelList,
    ChannelTest,
    Delivery,
    DeliveryList,
    DeliveryStatus,
    Webhook,
    WebhookCreate,
    WebhookList,
)
from lt_notifier.domain.channels import ChannelName

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin/notifications", tags=["notifications"], responses=error_responses(403))


def _delivery(row: dict[str, Any]) -> Delivery:
    return Delivery.model_validate({**row, "payload": orjson.loads(row["payload"])})


@router.post("/webhooks", status_code=201, response_model=Webhook)
async def create_webhook(body: WebhookCreate, admin: AdminPrincipal, subscriptions: Subscriptions) -> Webhook:
    """Subscribe a URL to some (or all) event types of the admin's org (platform admins: of every org); a
    secret makes every delivery HMAC-signed."""
    return Webhook.model_validate(await subscriptions.subscribe(admin, body.to_new()))


@router.get("/webhooks", response_model=WebhookList)
async def list_webhooks(admin: AdminPrincipal, subscriptions: Subscriptions) -> WebhookList:
    """Active webhook subscriptions of the admin's org (platform admins: all); secrets are never returned."""
    rows = await subscriptions.subscriptions(admin, "webhook")
    return WebhookList(data=[Webhook.model_validate(r) for r in rows])


@router.delete("/webhooks/{webhook_id}", status_code=204, responses=error_responses(404))
async def delete_webhook(webhook_id: str, admin: AdminPrincipal, subscriptions: Subscriptions) -> Response:
    """Unsubscribe; its pending deliveries are given up. Another org's webhook is a 404."""
    if not await subscriptions.unsubscribe(admin, webhook_id):
        raise NotFound(f"no webhook {webhook_id!r}", param="webhook_id", code="webhook_not_found")
    return Response(status_code=204)


@router.get("/deliveries", response_model=DeliveryList)
async def list_deliveries(
    admin: AdminPrincipal,
    subscriptions: Subscriptions,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    channel: Annotated[ChannelName | None, Query()] = None,
) -> DeliveryList:
    """Newest deliveries of the admin's org's subscriptions (platform admins: all) first, filtered by event
    type, status and channel."""
    rows = await subscriptions.deliveries(admin, event_type, status, limit, channel)
    return DeliveryList(data=[_delivery(r) for r in rows])


@router.post("/deliveries/{delivery_id}/retry", response_model=Delivery, responses=error_responses(404))
async def retry_delivery(delivery_id: str, admin: AdminPrincipal, subscriptions: Subscriptions) -> Delivery:
    """Send a dead delivery again (with a fresh attempt budget), e.g. after fixing the receiver. Another
    org's delivery is a 404."""
    return _delivery(await subscriptions.retry(admin, delivery_id))


@router.post("/channels", status_code=201, response_model=Channel)
async def create_channel(body: ChannelCreate, admin: AdminPrincipal, subscriptions: Subscriptions) -> Channel:
    """Subscribe a channel to events (all, or `event_types`) at or above `min_severity` of the admin's org,
    optionally only those of one team or user. Platform admins may leave `org_id` out (every org) or name any
    org; other admins' subscriptions are always scoped to their own org (another org: 403 `other_org`)."""
    return Channel.from_row(await subscriptions.subscribe(admin, body.to_new()))


@router.get("/channels", response_model=ChannelList)
async def list_channels(
    admin: AdminPrincipal,
    subscriptions: Subscriptions,
    channel: Annotated[ChannelName | None, Query()] = None,
) -> ChannelList:
    """Active channel subscriptions of the admin's org; platform admins see all, including those enabled by
    environment variables. Secrets are never shown."""
    rows = await subscriptions.subscriptions(admin, channel)
    return ChannelList(data=[Channel.from_row(r) for r in rows])


@router.delete("/channels/{channel_id}", status_code=204, responses=error_responses(404))
async def delete_channel(channel_id: str, admin: AdminPrincipal, subscriptions: Subscriptions) -> Response:
    """Unsubscribe; its pending deliveries are given up. Another org's channel is a 404."""
    if not await subscriptions.unsubscribe(admin, channel_id):
        raise NotFound(f"no channel {channel_id!r}", param="channel_id", code="channel_not_found")
    return Response(status_code=204)


@router.post("/channels/{channel_id}/test", response_model=ChannelTest, responses=error_responses(404))
async def test_channel(channel_id: str, admin: AdminPrincipal, subscriptions: Subscriptions) -> ChannelTest:
    """Send a test notification to a channel now and report the outcome (not queued, not retried). Another
    org's channel is a 404."""
    error = await subscriptions.send_test(admin, channel_id)
    return ChannelTest(ok=error is None, error=error)
