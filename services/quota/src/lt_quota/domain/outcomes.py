"""What the admission script answers: a grant or the reason for a denial."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["AdmitDenied", "AdmitGranted", "parse_admit_result", "retry_after_seconds"]


def retry_after_seconds(retry_ms: int) -> int:
    """Whole seconds for `Retry-After`, never below 1."""
    return max(1, math.ceil(retry_ms / 1000))


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
    # Less than twice this reservation stays free on some counter or token bucket: the gateway must wait for
    # the release before the answer's last bytes (otherwise it sends it without waiting).
    snug: bool = True


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
            snug=int(str(raw[12])) != 0 if len(raw) > 12 else True,
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
