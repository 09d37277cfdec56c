"""Routable models: one deployment's provider, upstream name, limits and prices, and who may call it.

A routing-file entry (see `adapters.model_table`) maps a public model name to a provider, the upstream model
(or Azure deployment), a base URL, the env var holding the provider key, and optional price overrides and
fallbacks. Prices default to the pricing table (LiteLLM's model map, see `adapters.pricing_table`).
Prices are integer micro-dollars per million tokens, so cost = ceil(tokens * price / 1e6) stays exact.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from leaky_common.auth import Principal
from leaky_common.model_access import model_allowed
from lt_gateway.domain.pricing import PriceLookup

ProviderKind = Literal["mock", "openai", "azure", "anthropic", "gemini", "qwen", "openai_compatible"]
Mode = Literal["chat", "completion", "embedding"]

# Where each provider lives unless the routing file says otherwise.
DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
    "qwen": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
}
# The LiteLLM provider prefix to try first in the pricing table.
_PRICING_PROVIDER: dict[str, str] = {"gemini": "gemini", "qwen": "dashscope", "azure": "azure"}

# mock-gpt is priced like gpt-4o-mini ($0.15 / $0.60 per million tokens).
BUILTIN: list[dict[str, object]] = [
    {
        "name": "mock-gpt",
        "provider": "mock",
        "upstream_model": "mock-gpt",
        "input_usd_micros_per_mtok": 150_000,
        "output_usd_micros_per_mtok": 600_000,
        "cached_input_usd_micros_per_mtok": 75_000,
        "max_output_tokens": 16_384,
        "context_window": 128_000,
    },
    {
        "name": "mock-embedding",
        "provider": "mock",
        "mode": "embedding",
        "upstream_model": "mock-embedding",
        "input_usd_micros_per_mtok": 20_000,
        "output_usd_micros_per_mtok": 0,
        "max_output_tokens": 1,
        "context_window": 8_191,
    },
]


class ModelSpec(BaseModel):
    """One routable model (a deployment of it at one provider)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    provider: ProviderKind
    upstream_model: str
    mode: Mode = "chat"
    base_url: str | None = None
    api_key_env: str | None = None
    # Azure OpenAI: the `api-version` query parameter (upstream_model is the deployment name).
    api_version: str | None = None
    input_usd_micros_per_mtok: int = Field(ge=0)
    output_usd_micros_per_mtok: int = Field(ge=0)
    cached_input_usd_micros_per_mtok: int | None = Field(default=None, ge=0)
    cache_write_usd_micros_per_mtok: int | None = Field(default=None, ge=0)
    max_output_tokens: int = Field(default=4096, ge=1)
    context_window: int = Field(default=128_000, ge=1)
    # Other model names tried in order when this deployment fails with 429/5xx/timeout before answering.
    fallbacks: tuple[str, ...] = ()
    timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)

    def resolved_base_url(self) -> str:
        """The base URL to call (the routing file's, else the provider's public one)."""
        url = self.base_url or DEFAULT_BASE_URLS.get(self.provider)
        if url is None:
            raise ValueError(f"model {self.name}: provider {self.provider} needs a base_url")
        return url.rstrip("/")

    def cost_usd_micros(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> int:
        """Exact integer cost, rounded up to the micro-dollar. `prompt_tokens` includes cached ones."""
        cached = min(cached_tokens, prompt_tokens)
        written = min(cache_write_tokens, prompt_tokens - cached)
        cached_price = self.cached_input_usd_micros_per_mtok
        if cached_price is None:
            cached_price = self.input_usd_micros_per_mtok
        write_price = self.cache_write_usd_micros_per_mtok
        if write_price is None:
            write_price = self.input_usd_micros_per_mtok
        numerator = (
            (prompt_tokens - cached - written) * self.input_usd_micros_per_mtok
            + cached * cached_price
            + written * write_price
            + completion_tokens * self.output_usd_micros_per_mtok
        )
        return -(-numerator // 1_000_000)


def resolve_entry(raw: dict[str, Any], pricing: PriceLookup) -> ModelSpec:
    """A routing-file entry with prices and limits filled from the pricing table where not given."""
    entry = dict(raw)
    lookup = entry.pop("pricing_model", None) or entry.get("upstream_model") or entry.get("name")
    price = pricing.get(str(lookup), _PRICING_PROVIDER.get(str(entry.get("provider"))))
    if price is not None:
        entry.setdefault("input_usd_micros_per_mtok", price.input)
        entry.setdefault("output_usd_micros_per_mtok", price.output)
        entry.setdefault("cached_input_usd_micros_per_mtok", price.cache_read)
        entry.setdefault("cache_write_usd_micros_per_mtok", price.cache_write)
        if price.max_output_tokens:
            entry.setdefault("max_output_tokens", price.max_output_tokens)
        if price.max_input_tokens:
            entry.setdefault("context_window", price.max_input_tokens)
        if price.mode in ("completion", "embedding"):
            entry.setdefault("mode", price.mode)
    elif "input_usd_micros_per_mtok" not in entry:
        raise ValueError(
            f"model {entry.get('name')!r}: {lookup!r} is not in the pricing table; "
            "set input_usd_micros_per_mtok and output_usd_micros_per_mtok (or pricing_model)"
        )
    return ModelSpec.model_validate(entry)


def may_use(principal: Principal, spec: ModelSpec) -> bool:
    """Whether the key may call `spec` (the one allowed-models matcher, shared with quota)."""
    return model_allowed(principal.allowed_models, spec.name)
