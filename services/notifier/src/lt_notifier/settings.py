"""Notifier settings (env prefix LT_)."""

from __future__ import annotations

from pydantic import Field

from leaky_common.events import Topics
from leaky_common.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    """Where events come from and how hard webhook deliveries are retried."""

    service_name: str = "notifier"
    port: int = 8085

    consumer_group: str = "notifier"
    topics: list[str] = Field(
        default_factory=lambda: [Topics.PURCHASE_EVENTS, Topics.ALERTS, Topics.QUOTA_EVENTS]
    )

    # A webhook every event goes to (LT_NOTIFIER_WEBHOOK_URL), kept as the subscription with id "default".
    notifier_webhook_url: str | None = None
    notifier_webhook_secret: str | None = None

    delivery_max_attempts: int = Field(default=6, ge=1)
    # Retry n waits min(base * 2**(n-1), max) seconds.
    delivery_backoff_base_s: float = Field(default=2.0, gt=0)
    delivery_backoff_max_s: float = Field(default=600.0, gt=0)
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    delivery_poll_interval_s: float = Field(default=1.0, gt=0)
    delivery_batch: int = Field(default=50, ge=1)
    delivery_concurrency: int = Field(default=10, ge=1)
    db_pool_max: int = 5
