"""Calendar periods of pools, aligned to the org's time zone, and how long their hot counters live."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["Period", "counter_ttl_ms", "period_of"]

_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Period:
    """The calendar period a charge falls in: `key` names it ('' for pools without a period)."""

    key: str
    start: datetime | None
    end: datetime | None


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def period_of(period: str, now_ms: int, timezone: str) -> Period:
    """The daily/weekly (Monday)/monthly period containing `now_ms`, aligned to `timezone`'s calendar."""
    if period == "none":
        return Period("", None, None)
    tz = ZoneInfo(timezone)
    today = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(tz).date()
    if period == "daily":
        first, nxt, key = today, today + timedelta(days=1), f"d:{today.isoformat()}"
    elif period == "weekly":
        first = today - timedelta(days=today.weekday())
        nxt, key = first + timedelta(days=7), f"w:{first.isoformat()}"
    elif period == "monthly":
        first = today.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
        key = f"m:{first.year:04d}-{first.month:02d}"
    else:
        raise ValueError(f"unknown period {period!r}")
    return Period(key, _local_midnight(first, tz), _local_midnight(nxt, tz))


def counter_ttl_ms(period_end: datetime | None, now_ms: int) -> int:
    """How long a period's hot counter lives: a day past the period's end; 0 (forever) without a period."""
    if period_end is None:
        return 0
    return max(int(period_end.timestamp() * 1000) - now_ms + _DAY_MS, 0)
