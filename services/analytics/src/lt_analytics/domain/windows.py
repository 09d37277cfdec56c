"""Time windows: the days a report covers and the baseline's per-window token sums."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

__all__ = ["PERIOD_DAYS", "baseline_since", "day_window_since", "window_start", "window_sums"]

# Leaderboard periods, in UTC days ending today.
PERIOD_DAYS = {"daily": 1, "weekly": 7, "monthly": 30}


def window_start(today: date, days: int) -> date:
    """First day of a window of `days` days ending with (and including) `today`."""
    if days < 1:
        raise ValueError("days must be at least 1")
    return today - timedelta(days=days - 1)


def day_window_since(now: datetime, days: int) -> datetime:
    """UTC midnight of the first day of a window of `days` days ending today."""
    return datetime.combine(window_start(now.date(), days), datetime.min.time(), UTC)


def baseline_since(now: datetime, window_minutes: int, windows: int) -> datetime:
    """Start of the oldest of `windows` windows before the current one (all ending at `now`)."""
    return now - timedelta(minutes=window_minutes) * (windows + 1)


def window_sums(
    minutes: Iterable[tuple[datetime, int]], now: datetime, window_minutes: int, windows: int
) -> tuple[int, list[int]]:
    """Tokens per window from per-minute totals: the current window (ending at `now`) and each one before."""
    window = timedelta(minutes=window_minutes)
    sums = [0] * (windows + 1)
    for minute, tokens in minutes:
        index = int((now - minute) // window)
        if 0 <= index <= windows:
            sums[index] += tokens
    return sums[0], sums[1:]
