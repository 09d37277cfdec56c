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
        self.prompt = Usage(call.parsed.estimated_prompt(call.spec.provider, call.spec.upstream_model), 0)
        # Finish chunks held back until usage is known (one per choice when `n` > 1).
        self.held: list[dict[str, Any]] = []
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
            self.held.append(body)
            return None if self.usage is None else self._release(self.usage)
        body["model"] = self.name
        return sse(body)

    def _release(self, usage: Usage) -> bytes:
        """The held finish chunks, the last one carrying usage and cost."""
        *before, last = self.held
        self.held = []
        self.sent_final = True
        for body in before:
            body["model"] = self.name
        return b"".join(map(sse, before)) + self.final_chunk(last, usage)

    def _usage_only(self, body: dict[str, Any]) -> bytes | None:
        usage = self.usage
        if usage is not None and self.include_usage:
            self.sent_final = True
            return self.final_chunk(body, usage)
        if usage is not None and self.held:
            return self._release(usage)
        return None

    def close(self, first: StreamChunk) -> bytes | None:
        """The final usage event, if the stream ended without one having been sent."""
        if self.sent_final:
            return None
        # The upstream reported no usage: count what was streamed.
        final = self.usage or counted(self.prompt, self.counted)
        self.usage = final
        if self.held:
            return self._release(final)
        template = {
            "id": first.body.get("id"), "object": first.body.get("object", "chat.completion.chunk"),
            "created": first.body.get("created"), "choices": [],
        }  # fmt: skip
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
