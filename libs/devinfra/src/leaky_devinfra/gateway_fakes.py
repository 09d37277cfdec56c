"""In-process stand-ins for what the gateway's chat handler talks to, for its unit tests: a quota client that
grants every request, a usage sink that keeps the events, and a chat request as the ASGI server would hand it
over. Only `leaky_common` contracts here (libs/devinfra imports no service); each test builds its handler."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from leaky_common.auth import Principal
from leaky_common.contracts import AdmitRequest, AdmitResponse, RateLimitState
from leaky_common.events import UsageRecorded

__all__ = ["GrantingQuota", "RecordingSink", "chat_request"]


class GrantingQuota:
    """Authenticates any key as u1/o1/k1 and grants 50 output tokens from `source`; releases succeed."""

    def __init__(self, source: str = "personal") -> None:
        self.source = source

    async def authenticate(self, api_key: str) -> Principal:
        return Principal(user_id="u1", org_id="o1", key_id="k1")

    async def release(self, reservation_id: str, tokens: int, cost: int, timeout_s: float) -> bool:
        return True

    async def admit(self, request: AdmitRequest) -> AdmitResponse:
        rl = RateLimitState(
            limit_requests=600, remaining_requests=599, reset_requests_s=0.1,
            limit_tokens=1000, remaining_tokens=900, reset_tokens_s=1.0,
        )  # fmt: skip
        return AdmitResponse(
            reservation_id="res_1", principal=Principal(user_id="u1", org_id="o1", key_id="k1"), pool_id="p1",
            quota_source=self.source, reserved_tokens=100, granted_output_tokens=50, ratelimit=rl,
        )  # fmt: skip


class RecordingSink:
    """The usage sink, keeping what it is given."""

    def __init__(self) -> None:
        self.events: list[UsageRecorded] = []

    def record(self, event: UsageRecorded) -> None:
        self.events.append(event)


def chat_request(content: str = "hi", *, stream: bool = False) -> Request:
    """`POST /v1/chat/completions` for mock-gpt (max_tokens 40) with the key `lt-test`."""
    raw = orjson.dumps(
        {
            "model": "mock-gpt",
            "messages": [{"role": "user", "content": content}],
            "stream": stream,
            "max_tokens": 40,
        }
    )
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
             "headers": [(b"authorization", b"Bearer lt-test")]}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    return Request(scope, receive)
