"""The messages a detection sends: an `AnomalyDetected` alert and, where configured, a `RequestFreeze`."""

from __future__ import annotations

from leaky_common.events import AnomalyDetected, RequestFreeze, UsageRecorded
from lt_analytics.domain.detection import Detection
from lt_analytics.domain.thresholds import Thresholds

__all__ = ["anomaly_alert", "freeze_command"]


def anomaly_alert(event: UsageRecorded, detection: Detection, limits: Thresholds) -> AnomalyDetected:
    """The alert for `detection`, caused by `event`; an org-wide one names no team, user, key or session."""
    per_agent = detection.target_type != "org"
    return AnomalyDetected(
        producer="analytics",
        causation_id=event.event_id,
        correlation_id=event.request_id,
        kind=detection.kind,
        severity=detection.severity,
        org_id=event.org_id,
        team_id=event.team_id if per_agent else None,
        user_id=event.user_id if per_agent else None,
        key_id=event.key_id if per_agent else None,
        session_id=event.session_id if per_agent else None,
        value=float(detection.value),
        threshold=float(detection.threshold),
        detail=detection.detail,
        frozen=detection.freezes(limits),
    )


def freeze_command(
    event: UsageRecorded, detection: Detection, alert: AnomalyDetected, limits: Thresholds
) -> RequestFreeze | None:
    """The freeze command quota receives for a detection that freezes its session or key (else None)."""
    if not alert.frozen or detection.target_type == "org":
        return None
    return RequestFreeze(
        producer="analytics",
        causation_id=alert.event_id,
        correlation_id=event.request_id,
        target_type=detection.target_type,
        target_id=detection.target_id,
        org_id=event.org_id,
        reason=detection.detail,
        duration_s=limits.freeze_duration_s,
    )
