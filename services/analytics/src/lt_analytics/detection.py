"""Anomaly rules (no I/O): thresholds and their overrides, which detections freeze, severities, efficiency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EFFICIENCY_SCALE",
    "GLOBAL",
    "Detection",
    "Kind",
    "ThresholdOverrides",
    "Thresholds",
    "baseline_ratio",
    "efficiency",
]

Kind = Literal["loop", "request_rate", "spend_velocity", "baseline_ratio"]
# The org_id of the global override row.
GLOBAL = "*"
# Per-request efficiency (completion / prompt) is kept as an integer in units of 1e-4 (4 decimal places).
EFFICIENCY_SCALE = 10_000


class Thresholds(BaseModel):
    """Effective detector settings for one org (env defaults, then the global row, then the org's row)."""

    model_config = ConfigDict(frozen=True)

    # Loop: the same prompt fingerprint `loop_consecutive` times in a row, or `loop_window_count` times
    # within `loop_window_s`, per session (per key when the request had no session).
    loop_consecutive: int = Field(default=4, ge=2)
    loop_window_count: int = Field(default=10, ge=2)
    loop_window_s: int = Field(default=60, ge=1, le=3600)
    # Request rate: more than `rate_max_requests` requests within `rate_window_s` per session/key.
    rate_max_requests: int = Field(default=100, ge=1)
    rate_window_s: int = Field(default=60, ge=1, le=3600)
    # Spend velocity: more than this much real cost (micro-dollars) within the last 60 s per session/key.
    spend_max_usd_micros_per_minute: int = Field(default=1_000_000, ge=1)
    # Baseline ratio (per org): tokens of the current window vs the mean of the previous windows.
    baseline_window_minutes: int = Field(default=60, ge=1, le=1440)
    baseline_windows: int = Field(default=4, ge=1, le=48)
    baseline_multiplier: float = Field(default=2.0, gt=1.0)
    baseline_min_tokens: int = Field(default=10_000, ge=0)
    # Which detections send a freeze command to quota, and for how long.
    freeze_on: frozenset[Kind] = frozenset({"loop", "request_rate", "spend_velocity"})
    freeze_duration_s: int = Field(default=300, ge=1, le=30 * 86400)

    def apply(self, overrides: ThresholdOverrides | None) -> Thresholds:
        """These thresholds with the fields `overrides` sets replaced."""
        if overrides is None:
            return self
        return Thresholds.model_validate(
            {**self.model_dump(), **overrides.model_dump(exclude_unset=True, exclude_none=True)}
        )


class ThresholdOverrides(BaseModel):
    """`PUT /v1/analytics/thresholds` body: any subset of the thresholds (unset = inherited)."""

    model_config = ConfigDict(extra="forbid")

    loop_consecutive: int | None = Field(default=None, ge=2)
    loop_window_count: int | None = Field(default=None, ge=2)
    loop_window_s: int | None = Field(default=None, ge=1, le=3600)
    rate_max_requests: int | None = Field(default=None, ge=1)
    rate_window_s: int | None = Field(default=None, ge=1, le=3600)
    spend_max_usd_micros_per_minute: int | None = Field(default=None, ge=1)
    baseline_window_minutes: int | None = Field(default=None, ge=1, le=1440)
    baseline_windows: int | None = Field(default=None, ge=1, le=48)
    baseline_multiplier: float | None = Field(default=None, gt=1.0)
    baseline_min_tokens: int | None = Field(default=None, ge=0)
    freeze_on: frozenset[Kind] | None = None
    freeze_duration_s: int | None = Field(default=None, ge=1, le=30 * 86400)


@dataclass(frozen=True, slots=True)
class Detection:
    """One anomaly found for a target (a session, a key or an org)."""

    kind: Kind
    target_type: Literal["session", "key", "org"]
    target_id: str
    value: float
    threshold: float
    detail: str
    # False for detections that re-arm by themselves (a consecutive-loop run restarts after firing).
    cools_down: bool = True

    @property
    def severity(self) -> Literal["warning", "error", "critical"]:
        """Loops and spend are errors (an agent burning money), rate and baseline are warnings."""
        if self.kind == "spend_velocity":
            return "critical"
        return "error" if self.kind == "loop" else "warning"

    def freezes(self, thresholds: Thresholds) -> bool:
        """Whether this detection sends a freeze command (sessions and keys only, never a whole org)."""
        return self.kind in thresholds.freeze_on and self.target_type in ("session", "key")


def efficiency(prompt_tokens: int, completion_tokens: int) -> int:
    """completion / prompt in units of 1e-4, rounded half up; 0 when there was no prompt."""
    if prompt_tokens <= 0:
        return 0
    return (completion_tokens * EFFICIENCY_SCALE * 2 + prompt_tokens) // (prompt_tokens * 2)


def baseline_ratio(current: int, previous: list[int]) -> tuple[float, float]:
    """(mean of the previous windows, current / mean); the ratio is 0 when there is no baseline."""
    if not previous:
        return 0.0, 0.0
    mean = sum(previous) / len(previous)
    return mean, (current / mean if mean > 0 else 0.0)
