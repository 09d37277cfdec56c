"""The key check before the expensive part of a request: nobody gets a prompt tokenized without a key quota
accepts. Quota's acceptance is remembered for a short while (by the key's hash), so the hot path pays a dict
look-up, not a second quota call; quota still authenticates every admission, so a key revoked meanwhile is
refused there."""

from __future__ import annotations

import hashlib
import time

import orjson

from leaky_common.errors import Forbidden, RateLimited, ServiceError, ServiceUnavailable, Unauthorized
from lt_gateway.adapters.quota_client import Denial, QuotaClient

_BY_STATUS: dict[int, type[ServiceError]] = {401: Unauthorized, 403: Forbidden, 429: RateLimited}


def denial_error(denial: Denial) -> ServiceError:
    """Quota's refusal as the gateway's own error (same status class, message and code)."""
    try:
        detail = orjson.loads(denial.body)["error"]
        message, code = str(detail["message"]), detail.get("code")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message, code = "refused by quota", None
    error = _BY_STATUS.get(denial.status, ServiceUnavailable)
    return error(message, code=code if isinstance(code, str) else None, headers=denial.headers)


class KeyCheck:
    """Authenticates an API key through quota once per `ttl_s` (0: every time)."""

    _MAX_ENTRIES = 100_000

    def __init__(self, quota: QuotaClient, ttl_s: float) -> None:
        self._quota = quota
        self._ttl_s = ttl_s
        self._accepted: dict[bytes, tuple[float, str]] = {}  # key hash -> (accepted until, the key's org)

    async def require(self, api_key: str) -> str:
        """The org of `api_key` if quota accepts it; raise its refusal (401/403/...) otherwise."""
        digest = hashlib.sha256(api_key.encode()).digest()
        now = time.monotonic()
        accepted = self._accepted.get(digest)
        if accepted is not None and accepted[0] > now:
            return accepted[1]
        answer = await self._quota.authenticate(api_key)
        if isinstance(answer, Denial):
            self._accepted.pop(digest, None)
            raise denial_error(answer)
        if self._ttl_s > 0:
            if len(self._accepted) >= self._MAX_ENTRIES:
                self._accepted.clear()
            self._accepted[digest] = (now + self._ttl_s, answer.org_id)
        return answer.org_id
