"""Settings of the purchase-saga service (env prefix `LT_`)."""

from __future__ import annotations

from pydantic import Field

from leaky_common.events import Topics
from leaky_common.settings import ServiceSettings

__all__ = ["SagaSettings"]


class SagaSettings(ServiceSettings):
    """Purchase-saga settings; topic names and the consumer group are settings so tests can isolate them."""

    service_name: str = "purchase-saga"
    port: int = 8084
    database_url: str = "postgresql://postgres@127.0.0.1:5432/lt_saga"

    payment_provider_url: str = "http://127.0.0.1:8086"
    payment_api_key: str = "sk_test_leaky"
    payment_timeout_s: float = Field(default=10.0, gt=0)
    payment_currency: str = "usd"

    # $0.15 per 1k tokens, in micro-dollars.
    price_usd_micros_per_1k_tokens: int = Field(default=150_000, gt=0)
    # How long to wait for a participant's reply before compensating.
    step_deadline_s: float = Field(default=30.0, gt=0)
    # Backoff between retries of a payment call whose outcome is unknown (compensations retry until done).
    retry_backoff_s: float = Field(default=1.0, gt=0)
    capture_attempts: int = Field(default=3, ge=1)

    consumer_group: str = "saga"
    quota_commands_topic: str = Topics.QUOTA_COMMANDS
    saga_replies_topic: str = Topics.SAGA_REPLIES
    purchase_events_topic: str = Topics.PURCHASE_EVENTS
