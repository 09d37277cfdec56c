"""Alertmanager's webhook: Prometheus' alerts about the platform (deploy/prometheus/rules.yml) delivered to the
platform's channels like every other alert.

Not behind the gateway and not for users: Alertmanager calls it directly with its own bearer token
(`LT_ALERTMANAGER_TOKEN`; unset, every call is a 401), checked before the body is read. Each alert becomes a
`PlatformAlert` event queued like a consumed one, for platform-wide subscriptions only (no org's channel).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from leaky_common.api import error_responses
from leaky_common.errors import Unauthorized
from leaky_common.observability import metrics_allowed
from lt_notifier.api.schemas import AlertmanagerReceipt, AlertmanagerWebhook
from lt_notifier.domain.alertmanager import platform_alert
from lt_notifier.usecases.queueing import NotificationQueue

__all__ = ["router"]


def _alertmanager(request: Request) -> NotificationQueue:
    """The queue, for Alertmanager's bearer token only."""
    token = request.app.state.settings.alertmanager_token
    if not metrics_allowed(request.headers.get("authorization"), token.get_secret_value() if token else None):
        raise Unauthorized(
            "Alertmanager's bearer token (LT_ALERTMANAGER_TOKEN) is required",
            code="invalid_alertmanager_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    queue: NotificationQueue = request.app.state.queue
    return queue


Queue = Annotated[NotificationQueue, Depends(_alertmanager)]

router = APIRouter(prefix="/v1/alertmanager", tags=["alertmanager"], responses=error_responses(401))


@router.post("/alerts", response_model=AlertmanagerReceipt)
async def receive_alerts(body: AlertmanagerWebhook, queue: Queue) -> AlertmanagerReceipt:
    """Queue a notification per alert (one per firing and one per resolution of an alert, however often
    Alertmanager repeats it) to the platform-wide subscriptions."""
    new = 0
    for alert in body.alerts:
        message = platform_alert(
            alert.status, alert.labels, alert.annotations, alert.startsAt, alert.endsAt, alert.fingerprint
        )
        new += await queue.notify(message)
    return AlertmanagerReceipt(received=len(body.alerts), new=new)
