"""Versioned event and command contracts carried over Kafka.

Rules: every message is a frozen pydantic model discriminated on `type`, whose value carries the major
version (`UsageRecorded.v1`). Within a version, only optional fields may be added; consumers ignore unknown
fields. Money is integer micro-dollars (`*_usd_micros`), tokens are integers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "ALL_TOPICS",
    "AnomalyDetected",
    "AnyMessage",
    "ApprovalDecided",
    "ApprovalRequested",
    "CreditTokens",
    "DebitTokens",
    "FreezeChanged",
    "Message",
    "PlatformAlert",
    "PurchaseCompensated",
    "PurchaseCompleted",
    "PurchaseFailed",
    "QuotaThresholdReached",
    "RequestFreeze",
    "TokensCredited",
    "TokensDebited",
    "Topics",
    "UsageRecorded",
    "VacationChanged",
    "parse_message",
]


class Topics:
    """Kafka topic names; a topic's dead-letter queue is `<topic>.dlq`."""

    USAGE = "usage.recorded"
    # CreditTokens/DebitTokens, produced only by the purchase saga (the broker's ACLs allow no one else).
    QUOTA_COMMANDS = "quota.commands"
    # RequestFreeze, produced only by the analytics worker.
    FREEZE_REQUESTS = "quota.freeze-requests"
    SAGA_REPLIES = "saga.replies"
    PURCHASE_EVENTS = "purchase.events"
    QUOTA_EVENTS = "quota.events"
    ALERTS = "alerts"

    @staticmethod
    def dlq(topic: str) -> str:
        """The dead-letter topic for `topic`."""
        return f"{topic}.dlq"


ALL_TOPICS = (
    Topics.USAGE,
    Topics.QUOTA_COMMANDS,
    Topics.FREEZE_REQUESTS,
    Topics.SAGA_REPLIES,
    Topics.PURCHASE_EVENTS,
    Topics.QUOTA_EVENTS,
    Topics.ALERTS,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid4().hex


class Message(BaseModel):
    """Envelope fields shared by every event and command."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(default_factory=_new_id)
    occurred_at: datetime = Field(default_factory=_now)
    producer: str = ""
    correlation_id: str | None = None
    causation_id: str | None = None


class UsageRecorded(Message):
    """A request passed through the gateway (allowed, blocked or failed). Never carries prompt text."""

    type: Literal["UsageRecorded.v1"] = "UsageRecorded.v1"
    request_id: str
    reservation_id: str | None = None
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None
    session_id: str | None = None
    pool_id: str | None = None
    quota_source: str | None = None
    model: str
    provider: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    cost_usd_micros: int = 0
    latency_ms: int = 0
    status: Literal["ok", "error", "blocked"] = "ok"
    http_status: int = 200
    error_code: str | None = None
    stream: bool = False
    privacy_strict: bool = False
    prompt_fingerprint: str | None = None

    @property
    def partition_key(self) -> str:
        """The Kafka key: the agent the detectors watch (the session, else the key, within the org), so one
        agent's events reach one consumer in order; a request of no org or key falls back to its own id."""
        if self.org_id and self.session_id:
            return f"{self.org_id}:s:{self.session_id}"
        if self.org_id and self.key_id:
            return f"{self.org_id}:k:{self.key_id}"
        return f"-:r:{self.request_id}"


class CreditTokens(Message):
    """Command to quota: raise a pool's limit by `amount` for a purchase (idempotent on event_id)."""

    type: Literal["CreditTokens.v1"] = "CreditTokens.v1"
    saga_id: str
    step: str
    purchase_id: str
    user_id: str
    pool_id: str | None = None
    amount: int
    unit: Literal["tokens", "usd"] = "tokens"

    @property
    def partition_key(self) -> str:
        """The Kafka key: the pool the command changes (the user's own pool when none is named), so one
        pool's credits and debits apply in the order they were sent."""
        return f"pool:{self.pool_id}" if self.pool_id else f"user:{self.user_id}"


class DebitTokens(Message):
    """Compensation command to quota: take back a credit made for `purchase_id`."""

    type: Literal["DebitTokens.v1"] = "DebitTokens.v1"
    saga_id: str
    step: str
    purchase_id: str
    user_id: str
    pool_id: str | None = None
    amount: int
    unit: Literal["tokens", "usd"] = "tokens"

    @property
    def partition_key(self) -> str:
        """The Kafka key: the pool the command changes (the user's own pool when none is named), so one
        pool's credits and debits apply in the order they were sent."""
        return f"pool:{self.pool_id}" if self.pool_id else f"user:{self.user_id}"


class TokensCredited(Message):
    """Reply from quota to a CreditTokens command."""

    type: Literal["TokensCredited.v1"] = "TokensCredited.v1"
    saga_id: str
    step: str
    purchase_id: str
    success: bool
    pool_id: str | None = None
    new_limit: int | None = None
    reason: str | None = None


class TokensDebited(Message):
    """Reply from quota to a DebitTokens command."""

    type: Literal["TokensDebited.v1"] = "TokensDebited.v1"
    saga_id: str
    step: str
    purchase_id: str
    success: bool
    pool_id: str | None = None
    new_limit: int | None = None
    reason: str | None = None


class _PurchaseEvent(Message):
    purchase_id: str
    user_id: str
    org_id: str | None = None
    amount: int
    unit: Literal["tokens", "usd"] = "tokens"
    price_usd_micros: int = 0
    reason: str | None = None


class PurchaseCompleted(_PurchaseEvent):
    """A purchase was paid for and credited."""

    type: Literal["PurchaseCompleted.v1"] = "PurchaseCompleted.v1"


class PurchaseFailed(_PurchaseEvent):
    """A purchase failed before anything was charged or credited."""

    type: Literal["PurchaseFailed.v1"] = "PurchaseFailed.v1"


class PurchaseCompensated(_PurchaseEvent):
    """A purchase failed part-way and every completed step was undone."""

    type: Literal["PurchaseCompensated.v1"] = "PurchaseCompensated.v1"


class QuotaThresholdReached(Message):
    """A pool crossed 80, 90 or 100 percent of its limit (once per period)."""

    type: Literal["QuotaThresholdReached.v1"] = "QuotaThresholdReached.v1"
    pool_id: str
    owner_type: Literal["user", "team", "org"]
    owner_id: str
    org_id: str | None = None
    percent: int
    limit: int
    used: int
    unit: Literal["tokens", "usd"] = "tokens"
    period_start: datetime | None = None


class RequestFreeze(Message):
    """Command to quota: freeze a session or key for `duration_s` seconds."""

    type: Literal["RequestFreeze.v1"] = "RequestFreeze.v1"
    target_type: Literal["session", "key", "user"]
    target_id: str
    org_id: str | None = None
    reason: str
    duration_s: int = 300


class AnomalyDetected(Message):
    """Analytics saw something unusual (loop, request rate, spend velocity, baseline ratio)."""

    type: Literal["AnomalyDetected.v1"] = "AnomalyDetected.v1"
    kind: Literal["loop", "request_rate", "spend_velocity", "baseline_ratio"]
    severity: Literal["info", "warning", "error", "critical"] = "warning"
    org_id: str | None = None
    # Optional, added for team-scoped alert routing.
    team_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None
    session_id: str | None = None
    value: float = 0.0
    threshold: float = 0.0
    detail: str = ""
    frozen: bool = False


class ApprovalRequested(Message):
    """A user asked their team's managers for more tokens (published on `quota.events`)."""

    type: Literal["ApprovalRequested.v1"] = "ApprovalRequested.v1"
    approval_id: str
    requester_user_id: str
    org_id: str | None = None
    team_id: str | None = None
    pool_id: str | None = None
    amount: int
    unit: Literal["tokens", "usd"] = "tokens"
    reason: str = ""


class ApprovalDecided(Message):
    """A manager or admin approved (with the amount granted) or rejected (with a reason) a request."""

    type: Literal["ApprovalDecided.v1"] = "ApprovalDecided.v1"
    approval_id: str
    requester_user_id: str
    approver_user_id: str
    org_id: str | None = None
    team_id: str | None = None
    pool_id: str | None = None
    decision: Literal["approved", "rejected"]
    amount: int = 0
    unit: Literal["tokens", "usd"] = "tokens"
    reason: str = ""


class VacationChanged(Message):
    """A user went on vacation (their unused personal pool becomes shareable) or came back."""

    type: Literal["VacationChanged.v1"] = "VacationChanged.v1"
    user_id: str
    org_id: str | None = None
    team_id: str | None = None
    on_vacation: bool


class FreezeChanged(Message):
    """Quota froze or unfroze a session, key or user (by admin API or by an analytics command)."""

    type: Literal["FreezeChanged.v1"] = "FreezeChanged.v1"
    target_type: Literal["session", "key", "user"]
    target_id: str
    org_id: str | None = None
    user_id: str | None = None
    frozen: bool
    reason: str = ""
    expires_at: datetime | None = None
    source: Literal["admin", "anomaly", "system"] = "admin"


class PlatformAlert(Message):
    """A Prometheus alert about the platform itself (deploy/prometheus/rules.yml), received from Alertmanager by
    the notifier (never published on Kafka). Concerns no org: only platform-wide subscriptions receive it."""

    type: Literal["PlatformAlert.v1"] = "PlatformAlert.v1"
    alertname: str = Field(max_length=200)
    status: Literal["firing", "resolved"]
    severity: str = Field(default="", max_length=50)
    summary: str = Field(default="", max_length=1000)
    description: str = Field(default="", max_length=2000)
    labels: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None


AnyMessage = Annotated[
    UsageRecorded
    | CreditTokens
    | DebitTokens
    | TokensCredited
    | TokensDebited
    | PurchaseCompleted
    | PurchaseFailed
    | PurchaseCompensated
    | QuotaThresholdReached
    | RequestFreeze
    | AnomalyDetected
    | ApprovalRequested
    | ApprovalDecided
    | VacationChanged
    | FreezeChanged
    | PlatformAlert,
    Field(discriminator="type"),
]

_adapter: TypeAdapter[AnyMessage] = TypeAdapter(AnyMessage)


def parse_message(raw: bytes | str) -> AnyMessage:
    """Parse a Kafka message value into its contract class; raises pydantic.ValidationError."""
    return _adapter.validate_json(raw)
