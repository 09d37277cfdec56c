"""Pure rules of the quota service: API keys, admission outcomes. No I/O."""

from __future__ import annotations

import hashlib
import math
import secrets
import uuid
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "KEY_PREFIX_LEN",
    "AdmitDenied",
    "AdmitGranted",
    "generate_api_key",
    "hash_api_key",
    "key_prefix",
    "new_id",
    "parse_admit_result",
    "retry_after_seconds",
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


@dataclass(frozen=True)
class AdmitDenied:
    """Why the admission script said no."""

    reason: Literal["frozen", "rate_limited", "quota", "no_pool"]
    detail: str = ""
    retry_ms: int = 0
    remaining: int = 0
    reason_text: str = ""


def parse_admit_result(raw: list[object]) -> AdmitGranted | AdmitDenied:
    """Turn the admission script's reply (a flat list of strings/ints) into an outcome."""
    tag = str(raw[0])
    if tag == "ok":
        n = [int(str(v)) for v in raw[1:9]]
        return AdmitGranted(*n)
    if tag == "frozen":
        return AdmitDenied("frozen", detail=str(raw[1]), reason_text=str(raw[2]) if len(raw) > 2 else "")
    if tag == "rate":
        return AdmitDenied("rate_limited", detail=str(raw[1]), retry_ms=int(str(raw[2])))
    if tag == "quota":
        return AdmitDenied("quota", remaining=int(str(raw[1])))
    if tag == "nopool":
        return AdmitDenied("no_pool")
    raise ValueError(f"unexpected admission result {raw!r}")
