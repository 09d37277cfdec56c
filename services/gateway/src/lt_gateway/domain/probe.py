"""The deep readiness probe's request: the smallest call a deployment answers (one output token)."""

from __future__ import annotations

from typing import Any

from lt_gateway.domain.models import ModelSpec

__all__ = ["PROBE_PROMPT", "probe_body"]

PROBE_PROMPT = "ping"


def probe_body(spec: ModelSpec) -> dict[str, Any]:
    """What `spec`'s deployment is sent by the probe, in the shape of its mode."""
    body: dict[str, Any] = {"model": spec.upstream_model}
    if spec.mode == "embedding":
        body["input"] = PROBE_PROMPT
        return body
    if spec.mode == "completion":
        body.update(prompt=PROBE_PROMPT, max_tokens=1)
        return body
    # OpenAI's reasoning models refuse the legacy max_tokens (as in domain.admission.upstream_body).
    field = "max_completion_tokens" if spec.provider in ("openai", "azure") else "max_tokens"
    body.update(messages=[{"role": "user", "content": PROBE_PROMPT}], **{field: 1})
    return body
