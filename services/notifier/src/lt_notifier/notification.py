"""What an event says to a person (no I/O): severity, title, text, facts, who it concerns, its dedup key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from leaky_common.events import (
    AnomalyDetected,
    ApprovalDecided,
    ApprovalRequested,
    FreezeChanged,
    Message,
    PurchaseCompensated,
    PurchaseCompleted,
    PurchaseFailed,
    QuotaThresholdReached,
    VacationChanged,
)

__all__ = ["Notification", "Severity", "describe"]

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


def _usd(micros: int) -> str:
    return f"${micros / 1_000_000:,.6f}".rstrip("0").rstrip(".")


def describe(message: Message) -> Notification | None:
    """The notification for a notifiable event, or None for events nobody is told about."""
    base = {"event_id": message.event_id, "event_type": str(getattr(message, "type", ""))}
    match message:
        case QuotaThresholdReached():
            exceeded = message.percent >= 100
            period = message.period_start.isoformat() if message.period_start else "-"
            return Notification(
                **base,
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
        case AnomalyDetected():
            target = message.session_id or message.key_id or message.org_id or "-"
            return Notification(
                **base,
                severity=message.severity,
                title=f"Anomaly: {message.kind.replace('_', ' ')}" + (" (frozen)" if message.frozen else ""),
                text=message.detail
                or f"{message.kind} {message.value:g} over threshold {message.threshold:g}",
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
        case FreezeChanged():
            verb = "frozen" if message.frozen else "unfrozen"
            facts = [("Target", f"{message.target_type} {message.target_id}"), ("Source", message.source)]
            if message.expires_at is not None:
                facts.append(("Expires", message.expires_at.isoformat()))
            return Notification(
                **base,
                severity=("error" if message.source == "anomaly" else "warning")
                if message.frozen
                else "info",
                title=f"{message.target_type.capitalize()} {verb}",
                text=f"{message.target_type} {message.target_id} {verb}"
                + (f": {message.reason}" if message.reason else "."),
                facts=facts,
                org_id=message.org_id,
                user_id=message.user_id,
            )
        case ApprovalRequested():
            return Notification(
                **base,
                severity="info",
                title="Token approval requested",
                text=f"{message.requester_user_id} asks for {message.amount:,} {message.unit}"
                + (f": {message.reason}" if message.reason else "."),
                facts=[("Approval", message.approval_id), ("Requester", message.requester_user_id)],
                org_id=message.org_id,
                team_id=message.team_id,
                user_id=message.requester_user_id,
            )
        case ApprovalDecided():
            return Notification(
                **base,
                severity="info",
                title=f"Token request {message.decision}",
                text=f"{message.approver_user_id} {message.decision} the request of {message.requester_user_id}"
                + (f" ({message.amount:,} {message.unit})" if message.decision == "approved" else "")
                + (f": {message.reason}" if message.reason else "."),
                facts=[("Approval", message.approval_id), ("Approver", message.approver_user_id)],
                org_id=message.org_id,
                team_id=message.team_id,
                user_id=message.requester_user_id,
            )
        case VacationChanged():
            return Notification(
                **base,
                severity="info",
                title="Vacation started" if message.on_vacation else "Vacation ended",
                text=f"{message.user_id} is {'on vacation' if message.on_vacation else 'back from vacation'}.",
                facts=[("User", message.user_id)],
                org_id=message.org_id,
                team_id=message.team_id,
                user_id=message.user_id,
            )
        case PurchaseCompleted() | PurchaseFailed() | PurchaseCompensated():
            outcome = {
                "PurchaseCompleted.v1": ("info", "completed"),
                "PurchaseFailed.v1": ("warning", "failed"),
                "PurchaseCompensated.v1": ("error", "failed and was reversed"),
            }[base["event_type"]]
            return Notification(
                **base,
                severity=outcome[0],  # type: ignore[arg-type]
                title=f"Purchase {outcome[1]}",
                text=f"Purchase {message.purchase_id} of {message.amount:,} {message.unit}"
                f" ({_usd(message.price_usd_micros)}) {outcome[1]}"
                + (f": {message.reason}" if message.reason else "."),
                facts=[("Purchase", message.purchase_id), ("User", message.user_id)],
                org_id=message.org_id,
                user_id=message.user_id,
            )
    return None
