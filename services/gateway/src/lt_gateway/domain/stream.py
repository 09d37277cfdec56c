"""What a streamed answer sends the client, chunk by chunk, and what it is charged.

The last chunk carries usage and cost: the usage chunk when the client asked for `include_usage`, else the
finish chunk (held back until usage is known). A stream that reports no usage is charged what was counted.
"""

from __future__ import annotations

from typing import Any

import orjson

from lt_gateway.domain.call import Call, counted
from lt_gateway.domain.usage import StreamChunk, Usage

DONE = b"data: [DONE]\n\n"


def sse(body: dict[str, Any]) -> bytes:
    """One server-sent event carrying `body`."""
    return b"data: " + orjson.dumps(body) + b"\n\n"


class StreamAccount:
    """Turns one upstream stream's chunks into the client's events and keeps count of its usage."""

    __slots__ = ("call", "counted", "held", "include_usage", "name", "prompt", "sent_final", "usage")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.counted = 0
        self.usage: Usage | None = None
        self.prompt = Usage(call.parsed.prompt_tokens, 0)
        self.held: dict[str, Any] | None = None
        self.sent_final = False
        self.name = call.parsed.model
        self.include_usage = call.parsed.include_usage

    def feed(self, chunk: StreamChunk) -> bytes | None:
        """The event to send for `chunk`, if any."""
        body = chunk.body
        self.counted += chunk.completion_tokens
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.prompt_usage is not None:
            self.prompt = chunk.prompt_usage
        choices = body.get("choices")
        if not choices:
            return self._usage_only(body)
        if not self.include_usage and choices[0].get("finish_reason"):
            if self.usage is None:
                self.held = body
                return None
            self.sent_final = True
            return self.final_chunk(body, self.usage)
        body["model"] = self.name
        return sse(body)

    def _usage_only(self, body: dict[str, Any]) -> bytes | None:
        usage = self.usage
        if usage is not None and self.include_usage:
            self.sent_final = True
            return self.final_chunk(body, usage)
        if usage is not None and self.held is not None:
            held, self.held = self.held, None
            self.sent_final = True
            return self.final_chunk(held, usage)
        return None

    def close(self, first: StreamChunk) -> bytes | None:
        """The final usage event, if the stream ended without one having been sent."""
        if self.sent_final:
            return None
        # The upstream reported no usage: count what was streamed.
        final = self.usage or counted(self.prompt, self.counted)
        template = self.held or {
            "id": first.body.get("id"), "object": first.body.get("object", "chat.completion.chunk"),
            "created": first.body.get("created"), "choices": [],
        }  # fmt: skip
        self.usage = final
        return self.final_chunk(template, final)

    def settled(self) -> Usage:
        """The usage to charge: as reported, else as counted so far (also for a stream cut short)."""
        return self.usage if self.usage is not None else counted(self.prompt, self.counted)

    def final_chunk(self, chunk: dict[str, Any], usage: Usage) -> bytes:
        """`chunk` as the last event: the client's model name, usage and cost."""
        call = self.call
        chunk["model"] = call.parsed.model
        chunk["usage"] = usage.openai()
        chunk["leaky_tokens"] = call.cost_field(call.cost(usage))
        return sse(chunk)
