"""Freezes: which of a target's live freezes Redis holds, and how a session is named there."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from lt_quota.domain.records import FreezeRecord

__all__ = ["longest_freeze", "session_target", "ttl_ms"]


def session_target(org_id: str | None, session_id: str) -> str:
    """A session's id in Redis: `<org>/<session>` (`-/<session>` for a freeze that names no org). Session
    ids are the client's, so a session's freeze is kept per org."""
    return f"{org_id or '-'}/{session_id}"


def longest_freeze(live: Sequence[FreezeRecord]) -> FreezeRecord:
    """The freeze that lasts longest: the last one without expiry, else the one expiring last."""
    forever = [f for f in live if f.expires_at is None]
    return forever[-1] if forever else max(live, key=lambda f: f.expires_at or datetime.max)


def ttl_ms(expires_at: datetime | None, now_ms: int) -> int | None:
    """Milliseconds a freeze has left (None: until lifted)."""
    return None if expires_at is None else int(expires_at.timestamp() * 1000) - now_ms
