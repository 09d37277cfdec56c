"""Response headers: request id, OpenAI-style and IETF rate-limit headers, cost headers."""

from __future__ import annotations

from leaky_common.contracts import RateLimitState

# The window the IETF RateLimit-Policy advertises; buckets are sized per minute by default.
_WINDOW_S = 60


def _reset(seconds: float) -> str:
    return f"{max(seconds, 0.0):.3f}s"


def ratelimit_headers(rl: RateLimitState) -> dict[str, str]:
    """`x-ratelimit-*` (OpenAI) plus `RateLimit` / `RateLimit-Policy` (IETF draft, structured fields)."""
    return {
        "x-ratelimit-limit-requests": str(rl.limit_requests),
        "x-ratelimit-remaining-requests": str(rl.remaining_requests),
        "x-ratelimit-reset-requests": _reset(rl.reset_requests_s),
        "x-ratelimit-limit-tokens": str(rl.limit_tokens),
        "x-ratelimit-remaining-tokens": str(rl.remaining_tokens),
        "x-ratelimit-reset-tokens": _reset(rl.reset_tokens_s),
        "ratelimit-policy": f'"requests";q={rl.limit_requests};w={_WINDOW_S}, "tokens";q={rl.limit_tokens};w={_WINDOW_S}',
        "ratelimit": (
            f'"requests";r={rl.remaining_requests};t={int(rl.reset_requests_s + 0.999)}, '
            f'"tokens";r={rl.remaining_tokens};t={int(rl.reset_tokens_s + 0.999)}'
        ),
    }
