"""Prices as integers: LiteLLM's USD-per-token floats become micro-dollars per million tokens, exactly.

Cost = ceil(tokens * price / 1e6) stays exact in integers (see `ModelSpec.cost_usd_micros`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

# LiteLLM provider names kept in the shipped table.
KEPT_PROVIDERS = frozenset(
    {
        "openai",
        "text-completion-openai",
        "azure",
        "anthropic",
        "gemini",
        "dashscope",
        "deepseek",
        "groq",
        "mistral",
        "ollama",
        "together_ai",
        "xai",
    }
)
KEPT_MODES = frozenset({"chat", "completion", "embedding", "responses"})


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices (micro-dollars per million tokens) and limits."""

    provider: str
    mode: str
    input: int
    output: int
    cache_read: int | None
    cache_write: int | None
    max_output_tokens: int | None
    max_input_tokens: int | None


class PriceLookup(Protocol):
    """Anything that finds a model's price (the shipped table, or a test's)."""

    def get(self, model: str, provider: str | None = None) -> Price | None:
        """The price of `model`, trying `provider/model` first when a provider prefix is given."""
        ...


def _micros_per_mtok(usd_per_token: Any) -> int | None:
    if not isinstance(usd_per_token, int | float) or isinstance(usd_per_token, bool):
        return None
    return int((Decimal(str(usd_per_token)) * 10**12).to_integral_value())


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def trim(litellm_map: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The entries of LiteLLM's map the gateway can use, converted to integer prices."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in sorted(litellm_map.items()):
        if not isinstance(entry, dict) or entry.get("litellm_provider") not in KEPT_PROVIDERS:
            continue
        if entry.get("mode") not in KEPT_MODES:
            continue
        price_in = _micros_per_mtok(entry.get("input_cost_per_token"))
        if price_in is None:
            continue
        out[name] = {
            "provider": entry["litellm_provider"],
            "mode": entry["mode"],
            "input": price_in,
            "output": _micros_per_mtok(entry.get("output_cost_per_token")) or 0,
            "cache_read": _micros_per_mtok(entry.get("cache_read_input_token_cost")),
            "cache_write": _micros_per_mtok(entry.get("cache_creation_input_token_cost")),
            "max_output_tokens": _int_or_none(entry.get("max_output_tokens")),
            "max_input_tokens": _int_or_none(entry.get("max_input_tokens")),
        }
    return out


def format_usd(micros: int) -> str:
    """Micro-dollars as a decimal string with six places, for headers and bodies."""
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    return f"{sign}{micros // 1_000_000}.{micros % 1_000_000:06d}"


ZERO_COST = format_usd(0)
