"""What an event says to a person (no I/O): severity, title, text, facts, who it concerns, its dedup key.

`DESCRIBERS` is the table from notifiable message type to the function that describes it; a type missing
from it notifies nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from leaky_common.events import (
    AnomalyDetected,
    ApprovalDecided,
    ApprovalRequested,
    FreezeChanged,
    Message,
    PlatformAlert,
    PurchaseCompensated,
    PurchaseCompleted,
    PurchaseFailed,
    QuotaThresholdReached,
    VacationChanged,
)

__all__ = ["DESCRIBERS", "NOTIFIABLE_TYPES", "Notification", "Severity", "describe", "event_type"]

Severity = Literal["info", "warning", "error", "critical"]


@dataclass(frozen=True, slots=True)
class Notification:
    """A channel-neutral rendering of one event."""

    event_id: str
    event_type: str
    severity: Severity
    title: str
    text: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    # Events with the same key notify once (one alert per threshold per period); None = no dedup.
    dedup_key: str | None = None


def event_type(message: Message) -> str:
    """The contract type name of a message (`PurchaseCompleted.v1`)."""
    return str(getattr(message, "type", ""))


def _base(message: Message) -> dict[str, Any]:
    return {"event_id": message.event_id, "event_type": event_type(message)}


def _usd(micros: int) -> str:
    return f"${micros / 1_000_000:,.6f}".rstrip("0").rstrip(".")


def _because(reason: str | None) -> str:
    return f": {reason}" if reason else "."


def _threshold(message: QuotaThresholdReached) -> Notification:
    exceeded = message.percent >= 100
    period = message.period_start.isoformat() if message.period_start else "-"
    return Notification(
        **_base(message),
        severity="error" if exceeded else "warning",
        title="Quota exceeded" if exceeded else f"Quota {message.percent}% used",
        text=f"{message.owner_type} {message.owner_id} used {message.used:,} of {message.limit:,}"
        f" {message.unit} ({message.percent}%).",
        facts=[("Pool", message.pool_id), ("Owner", f"{message.owner_type} {message.owner_id}")],
        org_id=message.org_id,
        team_id=message.owner_id if message.owner_type == "team" else None,
        user_id=message.owner_id if message.owner_type == "user" else None,
        dedup_key=f"threshold:{message.pool_id}:{message.percent}:{period}",
    )


def _anomaly(message: AnomalyDetected) -> Notification:
    target = message.session_id or message.key_id or message.org_id or "-"
    return Notification(
        **_base(message),
        severity=message.severity,
        title=f"Anomaly: {message.kind.replace('_', ' ')}" + (" (frozen)" if message.frozen else ""),
        text=message.detail or f"{message.kind} {message.value:g} over threshold {message.threshold:g}",
        facts=[
            ("Kind", message.kind),
            ("Target", target),
            ("Value", f"{message.value:g}"),
            ("Threshold", f"{message.threshold:g}"),
            ("Frozen", "yes" if message.frozen else "no"),
        ],
        org_id=message.org_id,
        team_id=message.team_id,
        user_id=message.user_id,
    )


def _freeze_severity(message: FreezeChanged) -> Severity:
    if not message.frozen:
        return "info"
    return "error" if message.source == "anomaly" else "warning"


def _freeze(message: FreezeChanged) -> Notification:
    verb = "frozen" if message.frozen else "unfrozen"
    facts = [("Target", f"{message.target_type} {message.target_id}"), ("Source", message.source)]
    if message.expires_at is not None:
        facts.append(("Expires", message.expires_at.isoformat()))
    return Notification(
        **_base(message),
        severity=_freeze_severity(message),
        title=f"{message.target_type.capitalize()} {verb}",
        text=f"{message.target_type} {message.target_id} {verb}" + _because(message.reason),
        facts=facts,
        org_id=message.org_id,
        user_id=message.user_id,
    )


def _approval_requested(message: ApprovalRequested) -> Notification:
    return Notification(
        **_base(message),
        severity="info",
        title="Token approval requested",
        text=f"{message.requester_user_id} asks for {message.amount:,} {message.unit}"
        + _because(message.reason),
        facts=[("Approval", message.approval_id), ("Requester", message.requester_user_id)],
        org_id=message.org_id,
        team_id=message.team_id,
        user_id=message.requester_user_id,
    )


def _approval_decided(message: ApprovalDecided) -> Notification:
    return Notification(
        **_base(message),
        severity="info",
        title=f"Token request {message.decision}",
        text=f"{message.approver_user_id} {message.decision} the request of {message.requester_user_id}"
        + (f" ({message.amount:,} {message.unit})" if message.decision == "approved" else "")
        + _because(message.reason),
        facts=[("Approval", message.approval_id), ("Approver", message.approver_user_id)],
        org_id=message.org_id,
        team_id=message.team_id,
        user_id=message.requester_user_id,
    )


def _vacation(message: VacationChanged) -> Notification:
    return Notification(
        **_base(message),
        severity="info",
        title="Vacation started" if message.on_vacation else "Vacation ended",
        text=f"{message.user_id} is {'on vacation' if message.on_vacation else 'back from vacation'}.",
        facts=[("User", message.user_id)],
        org_id=message.org_id,
        team_id=message.team_id,
        user_id=message.user_id,
    )


_PURCHASE_OUTCOMES: dict[type[Message], tuple[Severity, str]] = {
    PurchaseCompleted: ("info", "completed"),
    PurchaseFailed: ("warning", "failed"),
    PurchaseCompensated: ("error", "failed and was reversed"),
}


def _purchase(message: PurchaseCompleted | PurchaseFailed | PurchaseCompensated) -> Notification:
    severity, outcome = _PURCHASE_OUTCOMES[type(message)]
    return Notification(
        **_base(message),
        severity=severity,
        title=f"Purchase {outcome}",
        text=f"Purchase {message.purchase_id} of {message.amount:,} {message.unit}"
        f" ({_usd(message.price_usd_micros)}) {outcome}" + _because(message.reason),
        facts=[("Purchase", message.purchase_id), ("User", message.user_id)],
        org_id=message.org_id,
        user_id=message.user_id,
    )


# Alertmanager's severities (deploy/prometheus/rules.yml) as the notifier's; a resolved alert is info.
_ALERT_SEVERITY: dict[str, Severity] = {"page": "critical", "critical": "critical", "error": "error"}
# Labels shown as facts (the rest stay in the webhook payload): those of the rules' groupings.
_ALERT_FACTS = ("service", "app", "instance", "group", "topic", "provider", "model")


def _platform_alert(message: PlatformAlert) -> Notification:
    firing = message.status == "firing"
    severity: Severity = _ALERT_SEVERITY.get(message.severity, "warning") if firing else "info"
    facts = [("Status", message.status), ("Severity", message.severity or "-")]
    facts += [
        (label.capitalize(), message.labels[label]) for label in _ALERT_FACTS if label in message.labels
    ]
    if message.starts_at is not None:
        facts.append(("Since", message.starts_at.isoformat()))
    return Notification(
        **_base(message),
        severity=severity,
        title=f"{'Alert' if firing else 'Resolved'}: {message.alertname}",
        text=message.summary or message.alertname,
        facts=facts,
    )


# Each describer takes the message type it is listed under.
DESCRIBERS: Mapping[type[Message], Callable[[Any], Notification]] = {
    QuotaThresholdReached: _threshold,
    AnomalyDetected: _anomaly,
    FreezeChanged: _freeze,
    ApprovalRequested: _approval_requested,
    ApprovalDecided: _approval_decided,
    VacationChanged: _vacation,
    PurchaseCompleted: _purchase,
    PurchaseFailed: _purchase,
    PurchaseCompensated: _purchase,
    PlatformAlert: _platform_alert,
}

NOTIFIABLE_TYPES: frozenset[str] = frozenset(str(cls.model_fields["type"].default) for cls in DESCRIBERS)


def describe(message: Message) -> Notification | None:
    """The notification for a notifiable event, or None for events nobody is told about."""
    describer = DESCRIBERS.get(type(message))
    return describer(message) if describer is not None else None
