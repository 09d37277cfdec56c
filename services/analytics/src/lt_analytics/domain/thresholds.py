"""Detector thresholds: their defaults and limits, the overrides an API call sets, and how they layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GLOBAL", "Kind", "ThresholdOverrides", "Thresholds", "effective_thresholds"]

Kind = Literal["loop", "request_rate", "spend_velocity", "baseline_ratio"]
# The org_id of the global override row.
GLOBAL = "*"


class Thresholds(BaseModel):
    """Effective detector settings for one org (env defaults, then the global row, then the org's row)."""

    model_config = ConfigDict(frozen=True)

    # Loop: the same prompt fingerprint `loop_consecutive` times in a row, or `loop_window_count` times
    # within `loop_window_s`, per session (per key when the request had no session; a key's `loop_consecutive`
    # repeats must also fall within `loop_window_s`, see detection.extend_run).
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


def effective_thresholds(
    defaults: Thresholds, overrides: Mapping[str, ThresholdOverrides], org_id: str | None
) -> Thresholds:
    """Defaults, then the global override row, then the org's row (none for the global level)."""
    effective = defaults.apply(overrides.get(GLOBAL))
    if org_id is not None and org_id != GLOBAL:
        effective = effective.apply(overrides.get(org_id))
    return effective
