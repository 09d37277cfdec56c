"""Pure rules of the quota service: API keys, admission outcomes. No I/O."""

from __future__ import annotations

import fnmatch
import hashlib
import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = [
    "KEY_PREFIX_LEN",
    "AdmitDenied",
    "AdmitGranted",
    "Period",
    "generate_api_key",
    "hash_api_key",
    "key_prefix",
    "model_matches",
    "new_id",
    "parse_admit_result",
    "period_of",
    "retry_after_seconds",
    "thresholds_crossed",
]

KEY_PREFIX_LEN = 11  # "lt-" plus 8 random characters: enough to recognise a key, useless to guess it


def new_id() -> str:
    """A fresh uuid hex id."""
    return uuid.uuid4().hex


def generate_api_key() -> str:
    """A new secret API key `lt-<43 urlsafe chars>` (32 random bytes)."""
    return "lt-" + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """Hex sha256 of the key: the only form stored or cached."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_prefix(api_key: str) -> str:
    """The visible part of a key shown in listings."""
    return api_key[:KEY_PREFIX_LEN]


def retry_after_seconds(retry_ms: int) -> int:
    """Whole seconds for `Retry-After`, never below 1."""
    return max(1, math.ceil(retry_ms / 1000))


THRESHOLDS = (80, 90, 100)


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


def model_matches(pattern: str, model: str) -> bool:
    """True if `model` is in a pool's or key's model scope ('' or '*' = every model; globs allowed)."""
    return pattern in ("", "*") or fnmatch.fnmatchcase(model, pattern)


def thresholds_crossed(used: int, limit: int) -> list[int]:
    """The announcement percentages (80/90/100) that `used` has reached on a pool of `limit`."""
    if limit <= 0:
        return []
    return [p for p in THRESHOLDS if used * 100 >= limit * p]


@dataclass(frozen=True)
class AdmitGranted:
    """The admission script reserved `reserved` tokens, of which `granted_output` for output."""

    reserved: int
    granted_output: int
    limit_requests: int
    remaining_requests: int
    reset_requests_ms: int
    limit_tokens: int
    remaining_tokens: int
    reset_tokens_ms: int
    source: str = "personal"
    reserved_usd: int = 0


@dataclass(frozen=True)
class AdmitDenied:
    """Why the admission script said no."""

    reason: Literal["frozen", "rate_limited", "quota", "no_pool"]
    # frozen: what is frozen; rate_limited: which bucket; quota: which cap (counter label); no_pool: redis key
    detail: str = ""
    retry_ms: int = 0
    remaining: int = 0
    reason_text: str = ""


def parse_admit_result(raw: list[object]) -> AdmitGranted | AdmitDenied:
    """Turn the admission script's reply (a flat list of strings/ints) into an outcome."""
    tag = str(raw[0])
    if tag == "ok":
        n = [int(str(v)) for v in raw[1:9]]
        return AdmitGranted(
            reserved=n[0],
            granted_output=n[1],
            limit_requests=n[2],
            remaining_requests=n[3],
            reset_requests_ms=n[4],
            limit_tokens=n[5],
            remaining_tokens=n[6],
            reset_tokens_ms=n[7],
            source=str(raw[9]) if len(raw) > 9 else "personal",
            reserved_usd=int(str(raw[10])) if len(raw) > 10 else 0,
        )
    if tag == "frozen":
        return AdmitDenied("frozen", detail=str(raw[1]), reason_text=str(raw[2]) if len(raw) > 2 else "")
    if tag == "rate":
        return AdmitDenied("rate_limited", detail=str(raw[1]), retry_ms=int(str(raw[2])))
    if tag == "quota":
        return AdmitDenied("quota", detail=str(raw[1]), remaining=int(str(raw[2])))
    if tag == "nopool":
        return AdmitDenied("no_pool", detail=str(raw[1]))
    raise ValueError(f"unexpected admission result {raw!r}")
