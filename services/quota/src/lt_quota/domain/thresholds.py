"""Usage thresholds: a pool's owners hear once per period when it reaches 80, 90 and 100% of its limit."""

from __future__ import annotations

__all__ = ["ANNOUNCED_OWNERS", "THRESHOLDS", "thresholds_crossed", "thresholds_reached"]

THRESHOLDS = (80, 90, 100)
# Key caps and session budgets are the caller's own guard rails: nobody is told about them.
ANNOUNCED_OWNERS = ("user", "team", "org")


def thresholds_crossed(used: int, limit: int) -> list[int]:
    """The announcement percentages (80/90/100) that `used` has reached on a pool of `limit`."""
    if limit <= 0:
        return []
    return [p for p in THRESHOLDS if used * 100 >= limit * p]


def thresholds_reached(used: int, charge: int, limit: int) -> list[int]:
    """The percentages that a charge of `charge`, bringing a pool to `used`, reached for the first time."""
    before = set(thresholds_crossed(used - charge, limit))
    return [p for p in thresholds_crossed(used, limit) if p not in before]
