"""Settings of the purchase-saga service (env prefix `LT_`)."""

from __future__ import annotations

import socket

from pydantic import Field, model_validator

from leaky_common.events import Topics
from leaky_common.settings import ServiceSettings

__all__ = ["DEV_PAYMENT_API_KEY", "SagaSettings"]

DEV_PAYMENT_API_KEY = "sk_test_leaky"


class SagaSettings(ServiceSettings):
    """Purchase-saga settings; topic names and the consumer group are settings so tests can isolate them."""

    service_name: str = "purchase-saga"
    port: int = 8084
    database_url: str = "postgresql://postgres@127.0.0.1:5432/lt_saga"

    payment_provider_url: str = "http://127.0.0.1:8086"
    # The fake provider's well-known key: refused in production (the compose stack generates one).
    payment_api_key: str = DEV_PAYMENT_API_KEY
    payment_timeout_s: float = Field(default=10.0, gt=0)
    payment_currency: str = "usd"

    # $0.15 per 1k tokens, in micro-dollars.
    price_usd_micros_per_1k_tokens: int = Field(default=150_000, gt=0)
    # Feature flag (F46): when off, new purchases are refused with a 503; running sagas still finish.
    purchases_enabled: bool = True
    # How long to wait for a participant's reply before compensating (a compensation's command is re-sent
    # until it is answered, however long that takes).
    step_deadline_s: float = Field(default=30.0, gt=0)
    # While a reply is awaited, the same command (same event id) is sent again this often.
    command_resend_s: float = Field(default=5.0, gt=0)
    # Backoff between retries of a payment call whose outcome is unknown (compensations retry until done).
    retry_backoff_s: float = Field(default=1.0, gt=0)
    # Tries of authorize and capture while the provider's answer is unknown (timeout, 409, 5xx).
    payment_attempts: int = Field(default=3, ge=1)

    # Several instances may run against one database: each drives the sagas it holds a lease on. A lease is
    # renewed every lease_s / 3 while its saga runs; an instance that dies loses its leases after lease_s
    # and any live instance resumes those sagas. The id defaults to host:port, so a restarted instance
    # takes its own sagas back at once.
    instance_id: str | None = Field(default=None, min_length=1, max_length=200)
    lease_s: float = Field(default=15.0, gt=0)
    # How often each instance looks for sagas nobody drives (expired leases) and refreshes the gauges.
    recovery_interval_s: float = Field(default=5.0, gt=0)
    claim_batch: int = Field(default=200, ge=1)
    db_pool_size: int = Field(default=20, ge=4)

    consumer_group: str = "saga"
    quota_commands_topic: str = Topics.QUOTA_COMMANDS
    saga_replies_topic: str = Topics.SAGA_REPLIES
    purchase_events_topic: str = Topics.PURCHASE_EVENTS

    @property
    def owner_id(self) -> str:
        """This instance's lease owner id."""
        return self.instance_id or f"{socket.gethostname()}:{self.port}"

    @model_validator(mode="after")
    def _refuse_the_dev_payment_key_in_production(self) -> SagaSettings:
        if self.environment == "production" and self.payment_api_key == DEV_PAYMENT_API_KEY:
            raise ValueError("LT_PAYMENT_API_KEY must be set to a real key in production")
        return self
